"""Sampling the evaluated images into the clean Zarr array, and the arrays of a run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from datafiles import write_imagenet

from pipeline.config import RunConfig
from pipeline.sampling import chunk_ranges, evaluated_rows, prepare_images
from ride.datasets import imagenet_files, load_digits, sample_per_class
from storage.images import ImageStore, StorageError, adaptive_adv_name, adv_name, defended_name
from storage.layout import RunLayout


def test_chunk_ranges_cover_every_image_once() -> None:
    assert chunk_ranges(5, 2) == [(0, 2), (2, 4), (4, 5)]
    assert chunk_ranges(4, 10) == [(0, 4)]
    assert chunk_ranges(0, 3) == []


def test_the_first_limit_test_images_are_written_with_every_array(tmp_path: Path) -> None:
    cfg = RunConfig.from_mapping(
        {"limit": 5, "chunk_size": 2, "attacks": ["none", "fgsm", "bpda"],
         "defenders": ["none", "median"]}
    )  # fmt: skip
    layout = RunLayout(tmp_path)
    assert prepare_images(layout, cfg) == 5
    store = ImageStore(layout)
    test = load_digits("test")
    np.testing.assert_array_equal(store.read_rows("clean", 0, 5), test.images[:5].numpy())
    np.testing.assert_array_equal(store.read_rows("labels", 0, 5), test.labels[:5].numpy())
    assert all(store.has_rows("labels", start) for start, _ in chunk_ranges(5, 2))
    fgsm, bpda = cfg.attack_configs()[1:]
    names = [adv_name(fgsm.id)]
    for defender in cfg.defender_configs():
        names.append(adaptive_adv_name(bpda.id, defender.id))
    names += [defended_name(a.id, "median-k3") for a in cfg.attack_configs()]
    for name in names:
        array = store.array(name)
        assert array.shape == (5, 1, 28, 28) and array.chunks == (2, 1, 28, 28)
    assert store.array(adv_name(fgsm.id)).attrs["eps"] == 0.1
    assert not (layout.images / adv_name("none")).exists()
    assert not (layout.images / defended_name(fgsm.id, "none")).exists()

    # A resumed run finds the arrays and skips the stored chunks; another chunking is refused.
    store.write_rows("clean", 0, np.zeros((2, 1, 28, 28), dtype=np.float32))
    assert prepare_images(layout, cfg) == 5
    assert not store.read_rows("clean", 0, 2).any()  # not rewritten
    with pytest.raises(StorageError, match="chunks"):
        prepare_images(layout, RunConfig.from_mapping({"limit": 5, "chunk_size": 3}))


def test_imagenet_files_are_sampled_once_and_recorded(tmp_path: Path) -> None:
    data = write_imagenet(tmp_path / "val", {"n01": [(240, 250)] * 3, "n02": [(260, 230)] * 3})
    cfg = RunConfig.from_mapping({"dataset": "imagenet", "data_dir": str(data), "limit": 3})
    layout = RunLayout(tmp_path / "run")
    layout.root.mkdir()
    n, rows = evaluated_rows(layout, cfg)
    picked = sample_per_class(imagenet_files(data), 2, seed=0)[:3]
    recorded = json.loads(layout.sources.read_text())["files"]
    assert n == 3 and [tuple(item) for item in recorded] == picked
    images, labels = rows(1, 3)
    assert images.shape == (2, 3, 224, 224) and images.dtype == np.float32
    assert list(labels) == [label for _, label in picked[1:3]]
    (data / "n01" / picked[0][0].split("/")[-1]).rename(data / "n01" / "moved.JPEG")
    assert evaluated_rows(layout, cfg)[0] == 3  # the recorded list, not a new sample


def test_imagenet_needs_its_folder(tmp_path: Path) -> None:
    cfg = RunConfig.from_mapping({"dataset": "imagenet"})
    with pytest.raises(ValueError, match=r"^data_dir is required for dataset imagenet$"):
        evaluated_rows(RunLayout(tmp_path), cfg)


def test_a_grown_imagenet_run_extends_its_recorded_files(tmp_path: Path) -> None:
    data = write_imagenet(tmp_path / "val", {"n01": [(240, 250)] * 3, "n02": [(260, 230)] * 3})
    settings = {"dataset": "imagenet", "data_dir": str(data), "limit": 2}
    layout = RunLayout(tmp_path / "run")
    layout.root.mkdir()
    assert evaluated_rows(layout, RunConfig.from_mapping(settings))[0] == 2
    grown = RunConfig.from_mapping({**settings, "limit": 4, "first_limit": 2})
    assert evaluated_rows(layout, grown)[0] == 4
    recorded = [tuple(item) for item in json.loads(layout.sources.read_text())["files"]]
    assert recorded == sample_per_class(imagenet_files(data), 2, seed=0)[:4]
    # A folder whose sample no longer starts with the recorded files cannot grow the run.
    first = data / recorded[0][0]
    first.rename(first.with_name("moved.JPEG"))
    with pytest.raises(ValueError, match="not the first of the sample"):
        evaluated_rows(layout, RunConfig.from_mapping({**settings, "limit": 6, "first_limit": 2}))


def test_one_image_per_class_is_said_once_when_the_run_samples(tmp_path: Path) -> None:
    import logging

    data = write_imagenet(tmp_path / "val", {"n01": [(240, 250)], "n02": [(260, 230)] * 2})
    cfg = RunConfig.from_mapping({"dataset": "imagenet", "data_dir": str(data), "limit": 3})
    layout = RunLayout(tmp_path / "run")
    layout.root.mkdir()
    said: list[str] = []

    class Collect(logging.Logger):
        def warning(self, msg: object, *args: object, **kwargs: object) -> None:
            said.append(str(msg))

    assert evaluated_rows(layout, cfg, Collect("test"))[0] == 3
    assert said == [
        "ImageNet folder: 1 of 2 classes have fewer than 2 images (the paper samples 2 per "
        "class); each gives what it has: 3 images instead of 4"
    ]
    evaluated_rows(layout, cfg, Collect("test"))  # a resume reads sources.json: said no more
    assert len(said) == 1
