"""Bad values and bad places, through the real command line: each is one ``ride:`` line and
a non-zero exit before anything is written (no ``run.toml``, no ``images.zarr``), never a
traceback, a hang or a run folder poisoned so that the corrected command is refused.

The threats: numbers far out of range (a chunk of 10**12 images, a seed of 10**20), dataset
files that are corrupt past their headers (a gzip body, labels out of range, a 4000x1 PNG
that takes gigabytes to resize), files of a run folder or a preset that are garbage, places
that cannot hold a run or a cache (``/proc``, a folder under a regular file, the dataset's own
folder) and a scheduler address that is not one (``notaurl``, a web server's port).
"""

from __future__ import annotations

import gzip
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from datafiles import idx_bytes, write_imagenet, write_mnist

from faults.harness import (
    RUN_ARGS,
    assert_complete,
    assert_one_error_line,
    copy_run,
    environment,
    file_hashes,
    ride,
    ride_here,
    run,
)
from ride.classifiers import build_classifier, save_classifier

pytestmark = pytest.mark.slow

SMALL = ["--limit", "2", "--attack", "none", "--defender", "none", "--workers", "1"]
"""A run refused by its preflight: no more is needed."""


def assert_nothing_written(out: Path) -> None:
    assert not out.exists(), sorted(p.name for p in out.iterdir())


# ------------------------------------------------------------------ item 9: numeric bounds


@pytest.mark.parametrize(
    ("option", "value", "fragment"),
    [
        ("--chunk-size", str(10**12), "--chunk-size must be at most"),
        ("--seed", str(10**20), "--seed must fit in 64 bits"),
        ("--workers", str(10**6), "--workers must be at most 1024"),
        ("--attack-iters", str(10**12), "--attack-iters must be at most"),
    ],
)
def test_a_number_out_of_range_is_one_line_before_anything_is_written(
    tmp_path: Path, option: str, value: str, fragment: str
) -> None:
    """A chunk of 10**12 images or a seed of 10**20 passed the checks, crashed with
    tracebacks after ``run.toml`` and ``images.zarr`` were written, and the corrected command
    was then refused as "a different run"."""
    out = tmp_path / "run"
    ran = ride_here("run", "--out", str(out), *SMALL, option, value)
    assert_one_error_line(ran, 1, fragment, value)
    assert_nothing_written(out)


def test_the_corrected_numbers_then_run(tmp_path: Path, prefect_server: str) -> None:
    """Nothing was written by the refused commands, so the corrected one is not refused."""
    out = tmp_path / "run"
    assert ride_here("run", "--out", str(out), *RUN_ARGS, "--chunk-size", str(10**12)).code == 1
    assert ride_here("run", "--out", str(out), *RUN_ARGS, "--seed", str(10**20)).code == 1
    ran = run(out)
    assert ran.code == 0, ran.tail()
    assert_complete(out, {})


# ------------------------------------------------------------------ item 10: MNIST bodies


def mnist_folder(root: Path) -> Path:
    """Both MNIST splits, gzipped, a few images each."""
    write_mnist(root, "train", 20, seed=1, gz=True)
    write_mnist(root, "t10k", 10, seed=2, gz=True)
    return root / "MNIST" / "raw"


def corrupt_body(path: Path) -> None:
    """Flip bytes in the middle of a gzip file: header and trailer (its length) intact."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(middle - 8, middle + 8):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_corrupt_mnist_gzip_body_is_found_before_anything_is_written(tmp_path: Path) -> None:
    """The preflight read only the headers and the gzip trailer: a body that does not
    decompress was found after ``run.toml`` was written (the README promises nothing is)."""
    raw = mnist_folder(tmp_path / "data")
    images = raw / "t10k-images-idx3-ubyte.gz"
    corrupt_body(images)
    out = tmp_path / "run"
    ran = ride_here(
        "run", "--dataset", "mnist", "--data-dir", str(tmp_path / "data"), "--out", str(out)
    )
    assert_one_error_line(ran, 1, str(images), "cannot read")
    assert_nothing_written(out)


def test_mnist_labels_out_of_range_are_found_before_anything_is_written(tmp_path: Path) -> None:
    raw = mnist_folder(tmp_path / "data")
    labels = raw / "train-labels-idx1-ubyte.gz"
    values = torch.arange(20, dtype=torch.uint8).numpy() % 12  # labels 10 and 11 among them
    labels.write_bytes(gzip.compress(idx_bytes(values)))
    out = tmp_path / "run"
    ran = ride_here(
        "run", "--dataset", "mnist", "--data-dir", str(tmp_path / "data"), "--out", str(out)
    )
    assert_one_error_line(ran, 1, str(labels), "holds label 10, expected 0..9")
    assert_nothing_written(out)


# ------------------------------------------------------------------ item 11: one line each


def test_a_garbage_images_zarr_root_is_one_line_on_every_rerun(
    finished_run: Path, tmp_path: Path
) -> None:
    """Garbage over the root ``images.zarr/zarr.json`` gave a traceback on every rerun."""
    out = copy_run(finished_run, tmp_path / "run")
    (out / "images.zarr" / "zarr.json").write_text("{ not json")
    before = file_hashes(out / "results")
    run_toml = (out / "run.toml").read_bytes()
    ran = run(out)
    assert_one_error_line(ran, 1, str(out / "images.zarr"), "does not open", "move it away")
    assert (out / "run.toml").read_bytes() == run_toml
    assert file_hashes(out / "results") == before


def test_a_cache_dir_under_a_regular_file_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = tmp_path / "run"
    ran = ride_here("run", "--out", str(out), *SMALL, "--cache-dir", str(blocker / "cache"))
    assert_one_error_line(ran, 1, "--cache-dir", f"{blocker} is not a directory")
    assert_nothing_written(out)


def test_out_in_proc_is_one_line() -> None:
    """``/proc`` is a folder, but no file can be made there (not even as root)."""
    ran = ride_here("run", "--out", "/proc", *SMALL)
    assert_one_error_line(ran, 1, "--out /proc")
    assert not Path("/proc/.lock").exists()


def test_a_preset_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    preset = tmp_path / "preset.toml"
    preset.write_bytes(b"seed = 1\n\xff\xfe = 2\n")
    out = tmp_path / "run"
    ran = ride_here("run", "--config", str(preset), "--out", str(out))
    assert_one_error_line(ran, 1, str(preset), "not UTF-8")
    assert_nothing_written(out)


def test_weights_whose_num_classes_is_not_a_number_are_one_line(tmp_path: Path) -> None:
    """A checkpoint saying ``num_classes = "ten"``: ``int("ten")`` was a traceback."""
    weights = tmp_path / "classifier.pt"
    save_classifier(build_classifier("mnist-cnn", num_classes=10), weights, "mnist-cnn")
    payload = torch.load(weights, weights_only=True)
    payload["num_classes"] = "ten"
    torch.save(payload, weights)
    out = tmp_path / "run"
    ran = ride_here("run", "--out", str(out), *SMALL, "--weights", str(weights))
    assert_one_error_line(ran, 1, str(weights), "num_classes must be an integer >= 2, got 'ten'")
    assert_nothing_written(out)


def test_a_scheduler_that_is_not_an_address_is_one_line_at_once(tmp_path: Path) -> None:
    """``RIDE_SCHEDULER=notaurl``: a traceback, after a 20 s wait at exit."""
    out = tmp_path / "run"
    began = time.monotonic()
    ran = ride("run", "--out", str(out), *SMALL, env=environment(RIDE_SCHEDULER="notaurl"))
    seconds = time.monotonic() - began
    assert_one_error_line(ran, 1, "$RIDE_SCHEDULER notaurl: not a Dask scheduler address")
    assert seconds < 15, f"took {seconds:.0f} s"
    assert_nothing_written(out)


# ------------------------------------------------------------------ item 12: a web server


@pytest.fixture
def web_server() -> Iterator[str]:
    """An HTTP server on a free port (as a Prefect server is): it listens, but it speaks
    HTTP, never Dask's protocol."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_scheduler_address_that_is_a_web_server_times_out_in_seconds(
    tmp_path: Path, web_server: str
) -> None:
    """The check's ``distributed.Client`` waited on the web server for minutes, silent."""
    out = tmp_path / "run"
    began = time.monotonic()
    ran = ride("run", "--out", str(out), *SMALL, "--scheduler", web_server, timeout=60)
    seconds = time.monotonic() - began
    assert_one_error_line(ran, 1, f"--scheduler {web_server}: no Dask scheduler answered")
    assert seconds < 20, f"took {seconds:.0f} s"
    assert_nothing_written(out)


# ------------------------------------------------------------------ items 13, 14: ImageNet


def test_an_absurdly_elongated_image_is_refused_by_name(tmp_path: Path) -> None:
    """A 4000x1 PNG (a hundred bytes) is resized to 256 x 1,024,000 before its crop: 1.7 GB
    for one image; found in the preflight from its header alone."""
    data = write_imagenet(tmp_path / "val", {"n01440764": [(64, 64)]})
    write_imagenet(data, {"n01443537": [(4000, 1)]}, suffix=".png")
    (png,) = (data / "n01443537").iterdir()
    out = tmp_path / "run"
    ran = ride_here("run", "--dataset", "imagenet", "--data-dir", str(data), "--out", str(out))
    assert_one_error_line(ran, 1, str(png), "4000x1", "elongated")
    assert_nothing_written(out)


@pytest.mark.parametrize("where", ["inside", "equal"])
def test_an_imagenet_out_inside_the_data_folder_is_refused(tmp_path: Path, where: str) -> None:
    """The run folder inside the data folder becomes a class of the dataset (its
    ``images.zarr`` a class folder), and the resume fails with a wrong-label message."""
    data = write_imagenet(tmp_path / "val", {"n01440764": [(64, 64)], "n01443537": [(64, 64)]})
    out = data / "run" if where == "inside" else data
    listed = sorted(p.name for p in data.iterdir())
    ran = ride_here("run", "--dataset", "imagenet", "--data-dir", str(data), "--out", str(out))
    assert_one_error_line(ran, 1, f"--out {out} is inside the data folder {data}")
    assert sorted(p.name for p in data.iterdir()) == listed
