"""`ride run` on the real dataset formats (tiny files written here in the exact on-disk
layouts): MNIST IDX files, CIFAR-10 python batches and an ImageNet validation folder with
a torchvision ResNet50 weight file; and the one-line preflight errors of bad data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import zarr
from datafiles import write_cifar, write_imagenet, write_mnist

from flows.cli import main
from ride.classifiers import build_classifier, save_classifier
from ride.datasets import imagenet_files, sample_per_class

CHEAP = [
    "--limit", "4", "--chunk-size", "2", "--workers", "2",
    "--attack", "none", "--attack", "fgsm", "--defender", "none", "--defender", "median",
]  # fmt: skip
IDS = {
    ("none", "none"),
    ("none", "median-k3"),
    ("fgsm-eps0.1", "none"),
    ("fgsm-eps0.1", "median-k3"),
}

# class folder -> (width, height) of its JPEGs: odd sizes, portrait and landscape
IMAGENET = {
    "n01440764": [(300, 260), (256, 400), (231, 229)],
    "n01443537": [(500, 375)],
    "n01484850": [(260, 300), (241, 333), (330, 250)],
}


def mnist_dir(root: Path) -> Path:
    write_mnist(root, "train", 20, seed=1, gz=True)
    write_mnist(root, "t10k", 8, seed=2, gz=True)
    return root


def resnet50_weights(path: Path, classes: int) -> Path:
    """A randomly initialised ResNet50 saved as torchvision saves its weight files."""
    model = build_classifier("resnet50", num_classes=classes, seed=0)
    torch.save(model.net.state_dict(), path)  # type: ignore[union-attr]
    return path


def run(out: Path, *args: str) -> int:
    return main(["run", "--out", str(out), *CHEAP, *args])


def check_rows(out: Path, dataset: str, shape: tuple[int, ...]) -> pd.DataFrame:
    frame = pd.read_parquet(out / "results")
    assert len(frame) == 4 * 4 and set(frame["status"]) == {"ok"}
    assert set(zip(frame["attack_id"], frame["defender_id"], strict=True)) == IDS
    assert set(frame["dataset"]) == {dataset}
    assert sorted(frame["index"].unique()) == [0, 1, 2, 3]
    clean = np.asarray(zarr.open_group(str(out / "images.zarr"), mode="r")["clean"])
    assert clean.shape == (4, *shape) and clean.min() >= 0 and clean.max() <= 1
    return frame


@pytest.mark.slow
def test_mnist_run(prefect_server: str, tmp_path: Path) -> None:
    data = mnist_dir(tmp_path / "data")
    out = tmp_path / "run"
    assert run(out, "--dataset", "mnist", "--data-dir", str(data)) == 0
    frame = check_rows(out, "mnist", (1, 28, 28))
    labels = np.asarray(zarr.open_group(str(out / "images.zarr"), mode="r")["labels"])
    assert labels.tolist() == write_mnist(tmp_path / "again", "t10k", 8, 2, False)[1][:4].tolist()
    assert frame["label"].isin(labels).all()
    info = json.loads((out / "classifier.json").read_text())  # trained on the 20 train images
    assert (info["classifier"], info["test_images"]) == ("mnist-cnn", 8)
    assert not (out / "sources.json").exists()


@pytest.mark.slow
def test_cifar10_run(prefect_server: str, tmp_path: Path) -> None:
    data = write_cifar(tmp_path / "data", test=6, train_per_batch=4)
    out = tmp_path / "run"
    assert run(out, "--dataset", "cifar10", "--data-dir", str(data)) == 0
    check_rows(out, "cifar10", (3, 32, 32))
    info = json.loads((out / "classifier.json").read_text())
    assert (info["classifier"], info["test_images"]) == ("cifar-resnet18", 6)


@pytest.mark.slow
def test_imagenet_run_records_its_files_and_reuses_them(
    prefect_server: str, tmp_path: Path
) -> None:
    data = write_imagenet(tmp_path / "val", IMAGENET)
    weights = resnet50_weights(tmp_path / "resnet50-random.pth", classes=3)
    out = tmp_path / "run"
    args = ["--dataset", "imagenet", "--weights", str(weights), "--no-compact"]  # task files
    assert run(out, *args, "--data-dir", str(data)) == 0
    frame = check_rows(out, "imagenet", (3, 224, 224))
    picked = sample_per_class(imagenet_files(data), 2, seed=0)[:4]
    recorded = json.loads((out / "sources.json").read_text())
    assert [tuple(item) for item in recorded["files"]] == picked
    assert sorted(set(zip(frame["index"], frame["label"], strict=True))) == [
        (i, label) for i, (_, label) in enumerate(picked)
    ]
    info = json.loads((out / "classifier.json").read_text())
    assert (info["classifier"], info["test_images"]) == ("resnet50", 4)
    assert info["measured_on"] == "the run's images"
    images = out / "images.zarr"
    clean = np.asarray(zarr.open_group(str(images), mode="r")["clean"])
    before = {p.name: p.read_bytes() for p in (out / "results").glob("*.parquet")}

    # Resume from another mount of the data, which meanwhile holds more images: a fresh
    # sample would differ, the run reads its recorded list. Chunk 2-4 of the clean images is
    # made to be decoded again, and its results recomputed.
    moved = tmp_path / "mnt" / "val"
    shutil.move(str(data), str(moved))
    write_imagenet(moved, {cls: [(250, 250)] * 3 for cls in IMAGENET}, suffix=".png")
    assert sample_per_class(imagenet_files(moved), 2, seed=0)[:4] != picked
    for name in ("clean", "labels"):
        (out / ".done" / name / f"{2:09d}").unlink()
    for key in [k for k in before if "0000002-0000004" in k]:
        (out / "results" / key).unlink()
    assert run(out, *args, "--data-dir", str(moved)) == 0
    assert json.loads((out / "sources.json").read_text()) == recorded
    again = np.asarray(zarr.open_group(str(images), mode="r")["clean"])
    assert np.array_equal(again, clean)
    after = pd.read_parquet(out / "results")
    key = ["attack_id", "defender_id", "index"]
    columns = [*key, "label", "pred_clean", "pred_adv", "pred_defended"]
    pd.testing.assert_frame_equal(
        after[columns].sort_values(key).reset_index(drop=True),
        frame[columns].sort_values(key).reset_index(drop=True),
    )


# ------------------------------------------------------------------------------ preflight errors


@pytest.fixture
def data(tmp_path: Path) -> dict[str, Path]:
    mnist = mnist_dir(tmp_path / "mnist")
    raw = mnist / "MNIST" / "raw"
    bad_mnist = tmp_path / "bad-mnist" / "MNIST" / "raw"
    shutil.copytree(raw, bad_mnist)
    gz = bad_mnist / "t10k-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-40])
    cifar = write_cifar(tmp_path / "cifar", test=2, train_per_batch=1)
    bad_cifar = write_cifar(tmp_path / "bad-cifar", test=2, train_per_batch=1)
    (bad_cifar / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    imagenet = write_imagenet(tmp_path / "val", {"n01": [(240, 250)], "n02": [(260, 230)]})
    five = tmp_path / "five-classes.pt"
    save_classifier(build_classifier("mnist-cnn", num_classes=5), five, "mnist-cnn")
    return {
        "MNIST": mnist,
        "BAD_MNIST": tmp_path / "bad-mnist",
        "CIFAR": cifar,
        "BAD_CIFAR": bad_cifar,
        "IMAGENET": imagenet,
        "NOPE": tmp_path / "nope",
        "FIVE": five,
        "R50_3": resnet50_weights(tmp_path / "r50-3.pth", classes=3),
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "mnist"], "--data-dir is required for dataset mnist"),
        (["--dataset", "mnist", "--data-dir", "NOPE"], "MNIST directory not found: "),
        (["--dataset", "cifar10", "--data-dir", "NOPE"], "CIFAR-10 directory not found: "),
        (["--dataset", "imagenet", "--data-dir", "NOPE"], "ImageNet directory not found: "),
        (["--dataset", "mnist", "--data-dir", "CIFAR"], "MNIST file t10k-images-idx3-ubyte"),
        (["--dataset", "mnist", "--data-dir", "BAD_MNIST"], "t10k-images-idx3-ubyte.gz has"),
        (["--dataset", "cifar10", "--data-dir", "BAD_CIFAR"], "is not a CIFAR-10 batch pickle"),
        (["--dataset", "imagenet", "--data-dir", "MNIST"], "no images"),
        (["--dataset", "mnist", "--data-dir", "MNIST", "--classifier", "cifar-resnet18"],
         "classifier cifar-resnet18 expects (3,32,32) inputs but dataset mnist has (1,28,28)"),
        (["--dataset", "cifar10", "--data-dir", "CIFAR", "--classifier", "resnet50"],
         "classifier resnet50 expects (3,224,224) inputs but dataset cifar10 has (3,32,32)"),
        (["--dataset", "mnist", "--data-dir", "MNIST", "--weights", "FIVE"],
         "classifier mnist-cnn has 5 classes but dataset mnist has 10"),
        (["--dataset", "imagenet", "--data-dir", "IMAGENET", "--weights", "R50_3"],
         "classifier resnet50 has 3 classes but dataset imagenet in "),
        (["--dataset", "imagenet", "--data-dir", "IMAGENET"],
         "--weights: classifier resnet50 needs ImageNet weights; give a torchvision weight file "
         "or put resnet50-0676ba61.pth or resnet50-11ad3fa6.pth in "),
    ],
)  # fmt: skip
def test_bad_data_fails_fast_with_one_line_and_writes_nothing(
    tmp_path: Path,
    data: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no cached weights
    out = tmp_path / "out"
    code = main(["run", "--out", str(out), "--limit", "2", *(str(data.get(a, a)) for a in args)])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.startswith("ride: error: ") and message in err and len(err.splitlines()) == 1
    assert not out.exists()


@pytest.mark.slow
def test_torchvision_weights_are_found_in_the_torch_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.cli import preflight

    home = tmp_path / "torch-home"
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    resnet50_weights(checkpoints / "resnet50-0676ba61.pth", classes=2)
    monkeypatch.setenv("TORCH_HOME", str(home))
    imagenet = write_imagenet(tmp_path / "val", {"n01": [(240, 250)], "n02": [(260, 230)]})
    preflight(tmp_path / "out", {"dataset": "imagenet", "data_dir": str(imagenet)})
    assert not (tmp_path / "out").exists()
