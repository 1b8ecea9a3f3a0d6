"""The MNIST, CIFAR-10 and ImageNet readers on tiny files in the exact on-disk formats."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from datafiles import cifar_batch, idx_bytes, noise_image, write_cifar, write_mnist
from PIL import Image
from torchvision import transforms

import ride.datasets.imagenet as imagenet_module
from ride.datasets import (
    DATASETS,
    DatasetError,
    ImageSet,
    check_dataset,
    dataset_num_classes,
    dataset_shape,
    imagenet_files,
    load_cifar10,
    load_dataset,
    load_imagenet_images,
    load_mnist,
    sample_per_class,
)

# ----------------------------------------------------------------------------------- MNIST files


@pytest.fixture
def mnist_dir(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """``MNIST/raw`` with raw test files (5 items) and gzipped train files (7 items)."""
    images, labels = write_mnist(tmp_path, "t10k", 5, seed=1, gz=False)
    write_mnist(tmp_path, "train", 7, seed=2, gz=True)
    return tmp_path, images, labels


def test_mnist_layouts_shapes_and_exact_values(
    mnist_dir: tuple[Path, np.ndarray, np.ndarray],
) -> None:
    root, images, labels = mnist_dir
    for data_dir in (root, root / "MNIST", root / "MNIST" / "raw"):
        data = load_mnist(data_dir, "test")
        assert data.name == "mnist" and data.num_classes == 10
        assert data.images.shape == (5, 1, 28, 28) and data.images.dtype == torch.float32
        assert torch.equal(data.images[:, 0], torch.from_numpy(images.astype(np.float32) / 255))
        assert data.labels.dtype == torch.int64
        assert data.labels.tolist() == labels.tolist()
    train = load_dataset("mnist", "train", data_dir=root)  # gzipped files
    assert train.images.shape == (7, 1, 28, 28)
    assert float(train.images.min()) >= 0.0 and float(train.images.max()) <= 1.0
    first = load_dataset("mnist", "test", data_dir=root, limit=2)
    assert torch.equal(first.images, load_mnist(root, "test").images[:2])
    check_dataset("mnist", root, "test")
    check_dataset("mnist", root, "train")


def test_mnist_missing(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="MNIST directory not found"):
        load_mnist(tmp_path / "nope", "test")
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte\[\.gz\] not found"):
        load_mnist(tmp_path, "test")
    with pytest.raises(DatasetError, match="data_dir is required for dataset mnist"):
        load_dataset("mnist", "test")
    with pytest.raises(DatasetError, match="data_dir is required for dataset cifar10"):
        check_dataset("cifar10", None)


def test_mnist_truncated(mnist_dir: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, _, _ = mnist_dir
    path = root / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    for call in (lambda: load_mnist(root, "test"), lambda: check_dataset("mnist", root)):
        with pytest.raises(DatasetError, match=r"has 3926 bytes, expected 3936") as info:
            call()
        assert "\n" not in str(info.value)
    gz = root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-100])
    with pytest.raises(DatasetError, match=r"cannot read .*train-images"):
        load_mnist(root, "train")
    with pytest.raises(DatasetError, match="train-images"):
        check_dataset("mnist", root, "train")


def test_mnist_wrong_magic_and_counts(mnist_dir: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, images, _ = mnist_dir
    raw = root / "MNIST" / "raw"
    (raw / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(4, dtype=np.uint8)))
    with pytest.raises(DatasetError, match="holds 5 images but its labels file holds 4 labels"):
        load_mnist(root, "test")
    with pytest.raises(DatasetError, match="holds 5 images but its labels file holds 4 labels"):
        check_dataset("mnist", root)
    # an image file where the labels file should be: magic 2051, not 2049
    (raw / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(images))
    with pytest.raises(DatasetError, match="magic number 2051, expected 2049"):
        load_mnist(root, "test")
    (raw / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(5, dtype=np.uint8)))
    (raw / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((5, 27, 27), np.uint8)))
    for call in (lambda: load_mnist(root, "test"), lambda: check_dataset("mnist", root)):
        with pytest.raises(DatasetError, match="27x27 images, expected 28x28"):
            call()
    (raw / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.full(5, 10, dtype=np.uint8)))
    (raw / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(images))
    with pytest.raises(DatasetError, match=r"holds label 10, expected 0..9"):
        load_mnist(root, "test")
    (raw / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00")
    with pytest.raises(DatasetError, match="too short for an IDX header"):
        load_mnist(root, "test")


# -------------------------------------------------------------------------------- CIFAR-10 files


@pytest.fixture
def cifar_dir(tmp_path: Path) -> Path:
    """``cifar-10-batches-py`` with a 4-image test batch and five 3-image train batches."""
    return write_cifar(tmp_path, test=4, train_per_batch=3)


def test_cifar_shapes_and_exact_values(cifar_dir: Path) -> None:
    expected = cifar_batch(4, 0)
    data_rows = expected[b"data"]
    assert isinstance(data_rows, np.ndarray)
    for data_dir in (cifar_dir, cifar_dir / "cifar-10-batches-py"):
        data = load_cifar10(data_dir, "test")
        assert data.name == "cifar10" and data.num_classes == 10
        assert data.images.shape == (4, 3, 32, 32) and data.images.dtype == torch.float32
        assert data.labels.tolist() == expected[b"labels"]
        # rows are channel-major: 1024 red, 1024 green, 1024 blue values, each row by row
        i, c, r, col = 2, 1, 5, 7
        assert float(data.images[i, c, r, col]) == pytest.approx(
            data_rows[i, c * 1024 + r * 32 + col] / 255.0
        )
        flat = torch.from_numpy(data_rows.astype(np.float32) / 255.0)
        assert torch.equal(data.images.flatten(1), flat)
    train = load_dataset("cifar10", "train", data_dir=cifar_dir)
    assert train.images.shape == (15, 3, 32, 32)
    assert train.labels[:3].tolist() == cifar_batch(3, 1)[b"labels"]
    assert train.labels[12:].tolist() == cifar_batch(3, 5)[b"labels"]
    assert len(load_dataset("cifar10", "train", data_dir=cifar_dir, limit=4)) == 4
    assert len(load_dataset("cifar10", "test", data_dir=cifar_dir, limit=0)) == 0
    check_dataset("cifar10", cifar_dir, "train")
    check_dataset("cifar10", cifar_dir, "test")


def test_cifar_missing(tmp_path: Path, cifar_dir: Path) -> None:
    with pytest.raises(DatasetError, match="CIFAR-10 directory not found"):
        load_cifar10(tmp_path / "nope", "test")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"CIFAR-10 batches not found in .*empty"):
        load_cifar10(tmp_path / "empty", "test")
    (cifar_dir / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match=r"CIFAR-10 batch not found: .*data_batch_3"):
        check_dataset("cifar10", cifar_dir, "train")


_SIDE_EFFECTS: list[str] = []


def _record(what: str) -> None:
    _SIDE_EFFECTS.append(what)


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (_record, ("ran",))


def test_cifar_bad_pickles(cifar_dir: Path) -> None:
    path = cifar_dir / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(b"this is not a pickle at all")
    with pytest.raises(DatasetError, match="is not a CIFAR-10 batch pickle") as info:
        load_cifar10(cifar_dir, "test")
    assert "\n" not in str(info.value)
    path.write_bytes(pickle.dumps({b"images": np.zeros((2, 3072), np.uint8)}))
    with pytest.raises(DatasetError, match=r"lacks keys b'data' and b'labels'"):
        check_dataset("cifar10", cifar_dir)
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DatasetError, match="lacks keys"):
        load_cifar10(cifar_dir, "test")
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DatasetError, match=r"has shape \(2, 100\), expected \(N, 3072\)"):
        load_cifar10(cifar_dir, "test")
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}))
    with pytest.raises(DatasetError, match="holds 2 images but 1 labels"):
        load_cifar10(cifar_dir, "test")
    path.write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.float32), b"labels": [0]}))
    with pytest.raises(DatasetError, match="must be a uint8 array"):
        load_cifar10(cifar_dir, "test")
    # a pickle that would call a function: refused by the restricted unpickler, never run
    path.write_bytes(pickle.dumps({b"data": _Evil(), b"labels": [0]}))
    with pytest.raises(DatasetError, match="is not a CIFAR-10 batch pickle: UnpicklingError"):
        load_cifar10(cifar_dir, "test")
    assert _SIDE_EFFECTS == []


# -------------------------------------------------------------------------------- ImageNet files


# class folder -> (width, height) of its images; the first class also holds a gray JPEG
_CLASSES: dict[str, list[tuple[int, int]]] = {
    "n01440764": [(300, 260), (256, 400), (224, 224)],
    "n01443537": [(500, 375)],
    "n01484850": [(260, 300), (240, 240), (330, 250), (256, 256)],
}


@pytest.fixture
def imagenet_dir(tmp_path: Path) -> Path:
    """Class subfolders of PNG images of varying sizes, plus one grayscale JPEG."""
    rng = np.random.default_rng(0)
    root = tmp_path / "val"
    for cls, sizes in _CLASSES.items():
        (root / cls).mkdir(parents=True)
        for i, (w, h) in enumerate(sizes):
            noise_image(rng, w, h).save(root / cls / f"ILSVRC2012_val_{cls[-3:]}{i}.PNG")
    noise_image(rng, 280, 250, "L").save(root / "n01440764" / "gray.JPEG", quality=90)
    (root / "n01440764" / "notes.txt").write_text("not an image")
    (root / "n01443537" / ".hidden.png").write_bytes(b"")
    return root


def test_imagenet_files_folder_layout(imagenet_dir: Path) -> None:
    files = imagenet_files(imagenet_dir)
    assert [p for p, _ in files] == sorted(p for p, _ in files)
    assert len(files) == 9  # 4 + 1 + 4 images; the .txt and hidden file are skipped
    assert {label for _, label in files} == {0, 1, 2}
    for path, label in files:
        assert path.split("/")[0] == sorted(_CLASSES)[label]
    assert ("n01440764/gray.JPEG", 0) in files


def test_sample_per_class(imagenet_dir: Path) -> None:
    files = imagenet_files(imagenet_dir)
    picked = sample_per_class(files, per_class=2, seed=0)
    assert [label for _, label in picked] == [0, 0, 1, 2, 2]  # the single-image class gives 1
    assert len({p for p, _ in picked}) == 5
    assert sample_per_class(files, 2, seed=0) == picked
    assert sample_per_class(list(reversed(files)), 2, seed=0) == picked  # input order is moot
    assert any(sample_per_class(files, 2, seed=s) != picked for s in range(1, 4))
    assert len(sample_per_class(files, 10, seed=0)) == 9
    with pytest.raises(ValueError, match="per_class must be >= 1"):
        sample_per_class(files, 0, seed=0)


def test_load_imagenet_images_matches_torchvision_eval_transform(imagenet_dir: Path) -> None:
    files = imagenet_files(imagenet_dir)
    images = load_imagenet_images(imagenet_dir, files)
    assert images.shape == (9, 3, 224, 224) and images.dtype == torch.float32
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    reference = transforms.Compose(
        [transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()]
    )
    for i, (name, _) in enumerate(files):
        with Image.open(imagenet_dir / name) as im:
            expected = reference(im.convert("RGB"))
        assert torch.allclose(images[i], expected, atol=1e-6), name
    gray = images[[n for n, _ in files].index("n01440764/gray.JPEG")]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])


def test_constant_image_keeps_exact_values(tmp_path: Path) -> None:
    Image.new("RGB", (300, 260), (10, 200, 30)).save(tmp_path / "a.png")
    image = load_imagenet_images(tmp_path, [("a.png", 0)])[0]
    for channel, value in enumerate((10, 200, 30)):
        assert torch.all(image[channel] == value / 255.0)
    small = load_imagenet_images(tmp_path, [("a.png", 0)], size=8, resize=16)
    assert small.shape == (1, 3, 8, 8)


def test_flat_layout_with_labels_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for i in range(5):
        noise_image(rng, 230 + i, 240).save(tmp_path / f"ILSVRC2012_val_{i:08d}.JPEG")
    lines = ["# filename class_index", ""]
    lines += [f"ILSVRC2012_val_{i:08d}.JPEG {[7, 3, 7, 0, 3][i]}" for i in range(5)]
    (tmp_path / "labels.txt").write_text("\n".join(lines) + "\n")
    files = imagenet_files(tmp_path)
    assert files == [(f"ILSVRC2012_val_{i:08d}.JPEG", [7, 3, 7, 0, 3][i]) for i in range(5)]
    data = load_dataset("imagenet", "test", seed=0, data_dir=tmp_path)
    assert data.num_classes == 8  # largest label + 1
    assert data.labels.tolist() == [0, 3, 3, 7, 7]
    assert data.sources is not None and len(data.sources) == 5
    assert data.images.shape == (5, 3, 224, 224)
    other = tmp_path / "elsewhere.txt"
    other.write_text("ILSVRC2012_val_00000001.JPEG 2\n")
    assert imagenet_files(tmp_path, other) == [("ILSVRC2012_val_00000001.JPEG", 2)]
    other.write_text("ILSVRC2012_val_00000001.JPEG two\n")
    with pytest.raises(DatasetError, match=r"elsewhere\.txt:1: expected '<filename> <class_"):
        imagenet_files(tmp_path, other)
    other.write_text("missing.JPEG 2\n")
    with pytest.raises(DatasetError, match=r"elsewhere\.txt:1: image .*missing\.JPEG not found"):
        imagenet_files(tmp_path, other)
    other.write_text("ILSVRC2012_val_00000001.JPEG 2\nILSVRC2012_val_00000001.JPEG 2\n")
    with pytest.raises(DatasetError, match="listed twice"):
        imagenet_files(tmp_path, other)
    with pytest.raises(DatasetError, match="labels file not found"):
        imagenet_files(tmp_path, tmp_path / "nope.txt")


def test_load_dataset_imagenet(imagenet_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = load_dataset("imagenet", "test", seed=0, data_dir=imagenet_dir)
    picked = sample_per_class(imagenet_files(imagenet_dir), 2, seed=0)
    assert data.name == "imagenet" and data.num_classes == 3
    assert data.sources == tuple(p for p, _ in picked)
    assert data.labels.tolist() == [label for _, label in picked]
    assert data.images.shape == (5, 3, 224, 224)
    # limit decodes only the first items
    decoded: list[int] = []
    real = imagenet_module.load_imagenet_images

    def spy(data_dir: Path, files: list[tuple[str, int]]) -> torch.Tensor:
        decoded.append(len(files))
        return real(data_dir, files)

    monkeypatch.setattr(imagenet_module, "load_imagenet_images", spy)
    first = load_dataset("imagenet", "test", seed=0, data_dir=imagenet_dir, limit=2)
    assert decoded == [2]
    assert torch.equal(first.images, data.images[:2])
    assert data.sources is not None and first.sources == data.sources[:2]
    # a recorded list is used as given
    recorded = [("n01484850/ILSVRC2012_val_8503.PNG", 2), ("n01443537/ILSVRC2012_val_5370.PNG", 1)]
    again = load_dataset("imagenet", "test", data_dir=imagenet_dir, files=recorded)
    assert again.sources == tuple(p for p, _ in recorded) and again.labels.tolist() == [2, 1]
    check_dataset("imagenet", imagenet_dir, files=recorded)
    with pytest.raises(DatasetError, match=r"has label 1, but .* says 2"):
        load_dataset("imagenet", "test", data_dir=imagenet_dir, files=[(recorded[0][0], 1)])
    with pytest.raises(DatasetError, match=r"recorded image x.png is not in ImageNet directory"):
        load_dataset("imagenet", "test", data_dir=imagenet_dir, files=[("x.png", 1)])
    with pytest.raises(DatasetError, match="only the validation images"):
        load_dataset("imagenet", "train", data_dir=imagenet_dir)


def test_imagenet_errors(tmp_path: Path, imagenet_dir: Path) -> None:
    with pytest.raises(DatasetError, match="ImageNet directory not found"):
        imagenet_files(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"no class folders and no labels.txt"):
        imagenet_files(tmp_path / "empty")
    with pytest.raises(DatasetError, match="data_dir is required for dataset imagenet"):
        load_dataset("imagenet", "test")
    # corrupt JPEGs: garbage after the JPEG marker, and a truncated file
    cls = imagenet_dir / "n01443537"
    (cls / "garbage.JPEG").write_bytes(b"\xff\xd8\xff\xe0" + b"garbage" * 20)
    buffer = io.BytesIO()
    noise_image(np.random.default_rng(2), 256, 256).save(buffer, format="JPEG")
    (cls / "truncated.JPEG").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    for name in ("garbage.JPEG", "truncated.JPEG"):
        with pytest.raises(DatasetError, match=f"cannot decode image .*{name}") as info:
            load_imagenet_images(imagenet_dir, [(f"n01443537/{name}", 1)])
        assert "\n" not in str(info.value)
    with pytest.raises(DatasetError, match=r"cannot open image .*garbage.JPEG"):
        check_dataset("imagenet", imagenet_dir, files=[("n01443537/garbage.JPEG", 1)])
    good = ("n01443537/ILSVRC2012_val_5370.PNG", 1)
    recorded = [good, ("n01443537/truncated.JPEG", 1)]
    assert (
        len(load_dataset("imagenet", "test", data_dir=imagenet_dir, files=recorded, limit=1)) == 1
    )
    with pytest.raises(DatasetError, match="image not found"):
        load_imagenet_images(imagenet_dir, [("n01443537/none.png", 1)])


# ------------------------------------------------------------------------------------- registry


def test_registry_and_digits_limit() -> None:
    assert DATASETS.names() == ("digits", "mnist", "cifar10", "imagenet")
    assert dataset_shape("mnist") == (1, 28, 28) and dataset_num_classes("mnist") == 10
    assert dataset_shape("digits") == (1, 28, 28)
    assert dataset_shape("cifar10") == (3, 32, 32) and dataset_num_classes("cifar10") == 10
    assert dataset_shape("imagenet") == (3, 224, 224) and dataset_num_classes("imagenet") == 1000
    with pytest.raises(ValueError, match="unknown dataset 'x'; choose from: digits, mnist"):
        dataset_shape("x")
    digits = load_dataset("digits", "test", seed=0, limit=3)
    assert len(digits) == 3 and digits.sources is None
    check_dataset("digits", None)
    with pytest.raises(ValueError, match="limit must be >= 0"):
        load_dataset("digits", "test", limit=-1)
    with pytest.raises(ValueError, match="sources must name 2 files, got 1"):
        ImageSet("x", torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.int64), 2, ("a",))


@pytest.mark.parametrize("name", ["../outside/x.JPEG", "/etc/x.JPEG", "a/../../x.JPEG", "~/x.JPEG"])
def test_labels_file_paths_may_not_leave_the_data_folder(tmp_path: Path, name: str) -> None:
    """Refused on the text, even when the file it names exists and is an image."""
    data, outside = tmp_path / "val", tmp_path / "outside"
    data.mkdir()
    outside.mkdir()
    noise_image(np.random.default_rng(0), 8, 8).save(outside / "x.JPEG")
    noise_image(np.random.default_rng(1), 8, 8).save(data / "in.JPEG")
    (data / "labels.txt").write_text(f"in.JPEG 0\n{name} 1\n")
    with pytest.raises(DatasetError, match=r"labels\.txt:2: image path .* leaves the data folder"):
        imagenet_files(data)
    with pytest.raises(DatasetError, match="leaves the data folder"):
        load_imagenet_images(data, [(name, 1)])
