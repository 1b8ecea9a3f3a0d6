"""The bounds of every number a run takes, and the preflight's checks of bad places and
bad files: a ConfigError or PreflightError of one line naming its key, nothing written."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from datafiles import idx_bytes, write_imagenet, write_mnist

from pipeline.config import ConfigError, RunConfig, load_preset
from pipeline.preflight import PreflightError, preflight
from pipeline.settings import COUNT_MAX, INT_MAX
from ride.datasets import DatasetError, check_dataset
from ride.datasets.imagenet import MAX_ASPECT, check_image_size
from storage.runconfig import claim_run_dir

FAST = {"limit": 2, "attacks": ["none"], "defenders": ["none"]}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("seed", 2**63, "seed must fit in 64 bits"),
        ("seed", 10**20, "seed must fit in 64 bits"),
        ("limit", 2**64, "limit must fit in 64 bits"),
        ("chunk_size", 10**12, "chunk_size must be at most"),
        ("workers", 1025, "workers must be at most 1024"),
        ("threads", 10**9, "threads must be at most 1024"),
        ("recheck", COUNT_MAX + 1, "recheck must be at most"),
        ("attack_iters", 10**12, f"attack_iters must be at most {COUNT_MAX}"),
        ("ride_iters", COUNT_MAX + 1, f"ride_iters must be at most {COUNT_MAX}"),
        ("eps", float("inf"), "eps must be a finite number"),
        ("median_kernel", [3, 10**30], "median_kernel must fit in 64 bits"),
    ],
)
def test_a_number_out_of_bounds_is_a_config_error_naming_its_key(
    key: str, value: object, message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        RunConfig.from_mapping({key: value})
    assert error.value.key == key
    assert str(error.value).startswith(message)


def test_the_largest_values_in_bounds_are_accepted() -> None:
    cfg = RunConfig.from_mapping({"seed": INT_MAX, "workers": 1024, "ride_iters": COUNT_MAX})
    assert cfg.seed == INT_MAX


def test_the_chunk_bound_follows_the_image_size() -> None:
    assert RunConfig.from_mapping({"chunk_size": 1_000_000}).chunk_size == 1_000_000  # digits
    with pytest.raises(ConfigError, match="at most 7133 for dataset imagenet"):
        RunConfig.from_mapping({"dataset": "imagenet", "chunk_size": 10_000})


def test_a_preset_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    preset = tmp_path / "p.toml"
    preset.write_bytes(b"seed = 1\n# \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8") as error:
        load_preset(preset)
    assert error.value.key == "config"


def test_a_cache_dir_that_cannot_be_a_folder_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    settings = {**FAST, "cache_dir": str(blocker / "cache")}
    with pytest.raises(PreflightError) as error:
        preflight(tmp_path / "run", settings)
    assert error.value.key == "cache_dir"
    assert str(error.value) == f"cache_dir {blocker / 'cache'}: {blocker} is not a directory"
    preflight(tmp_path / "run", {**settings, "cache": False})  # no cache, nothing to check
    assert not (tmp_path / "run").exists()


def test_a_garbage_images_zarr_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    cfg = RunConfig.from_mapping(FAST)
    claim_run_dir(out / "run.toml", cfg.run_record(), cfg.identity(), "0.2.0")
    (out / "images.zarr").mkdir()
    (out / "images.zarr" / "zarr.json").write_text("garbage")
    with pytest.raises(PreflightError, match=r"images.zarr does not open \(JSONDecodeError"):
        preflight(out, FAST)


def test_an_out_inside_an_imagenet_folder_is_refused(tmp_path: Path) -> None:
    data = write_imagenet(tmp_path / "val", {"n01440764": [(64, 64)]})
    settings = {"dataset": "imagenet", "data_dir": str(data)}
    for out in (data, data / "run", data / "n01440764" / "deeper"):
        with pytest.raises(PreflightError, match="is inside the data folder") as error:
            preflight(out, settings)
        assert error.value.key == "out"


def test_image_sizes_worth_decoding() -> None:
    check_image_size(Path("a.png"), (500, 375))
    check_image_size(Path("a.png"), (int(20 * MAX_ASPECT), 20))
    for size, what in [((4000, 1), "elongated"), ((1, 0), "no pixels"), ((9000, 9000), "pixels")]:
        with pytest.raises(DatasetError, match=what):
            check_image_size(Path("a.png"), size)


def test_an_elongated_imagenet_image_is_found_by_the_check(tmp_path: Path) -> None:
    data = write_imagenet(tmp_path / "val", {"n01440764": [(4000, 1)]}, suffix=".png")
    with pytest.raises(DatasetError, match=r"ILSVRC2012_val_7640\.png is 4000x1 pixels"):
        check_dataset("imagenet", data)


def test_a_corrupt_mnist_body_and_bad_labels_are_found_by_the_check(tmp_path: Path) -> None:
    write_mnist(tmp_path, "t10k", 10, seed=0, gz=True)
    raw = tmp_path / "MNIST" / "raw"
    check_dataset("mnist", tmp_path)
    images = raw / "t10k-images-idx3-ubyte.gz"
    data = bytearray(images.read_bytes())
    data[len(data) // 2] ^= 0xFF  # the gzip trailer (the length) is left as it was
    images.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=f"cannot read {images}"):
        check_dataset("mnist", tmp_path)
    write_mnist(tmp_path, "t10k", 10, seed=0, gz=True)
    labels = raw / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes(np.array([1, 2, 250] + [0] * 7))))
    with pytest.raises(DatasetError, match=r"holds label 250, expected 0\.\.9 \(item 2\)"):
        check_dataset("mnist", tmp_path)


def test_a_file_longer_than_its_header_says_is_refused(tmp_path: Path) -> None:
    write_mnist(tmp_path, "t10k", 4, seed=0, gz=False)
    labels = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes() + bytes(1000))
    with pytest.raises(DatasetError, match="has 1012 bytes, expected 12"):
        check_dataset("mnist", tmp_path)
