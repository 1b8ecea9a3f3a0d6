"""The Zarr image store: arrays created once, one chunk per write, completion markers."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from storage.files import WriteError
from storage.images import ImageStore, StorageError, adv_name, defended_name
from storage.layout import RunLayout


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(RunLayout(tmp_path))


def test_names_follow_the_design() -> None:
    assert adv_name("fgsm-eps0.1") == "adv/fgsm-eps0.1"
    assert defended_name("fgsm-eps0.1", "median-k3") == "defended/fgsm-eps0.1/median-k3"


def test_write_then_read_rows_and_markers(store: ImageStore) -> None:
    store.ensure_array("adv/pgd", (5, 1, 4, 4), chunk_rows=2, attrs={"eps": 0.1})
    assert not store.has_rows("adv/pgd", 2)
    rows = np.random.default_rng(0).random((2, 1, 4, 4), dtype=np.float32)
    store.write_rows("adv/pgd", 2, rows)
    assert store.has_rows("adv/pgd", 2) and not store.has_rows("adv/pgd", 0)
    np.testing.assert_array_equal(store.read_rows("adv/pgd", 2, 4), rows)
    assert np.isnan(store.read_rows("adv/pgd", 0, 2)).all()  # never written: NaN, not zeros
    array = zarr.open_array(str(store.layout.images / "adv/pgd"), mode="r")
    assert array.metadata.zarr_format == 3
    assert dict(array.attrs) == {"eps": 0.1} and array.chunks == (2, 1, 4, 4)


def test_ensure_array_is_idempotent_and_checks_shape(store: ImageStore) -> None:
    store.ensure_array("clean", (5, 1, 4, 4), chunk_rows=2)
    store.write_rows("clean", 0, np.ones((2, 1, 4, 4), np.float32))
    store.ensure_array("clean", (5, 1, 4, 4), chunk_rows=2)  # a resume: data kept
    assert store.read_rows("clean", 0, 2).sum() == 32
    with pytest.raises(StorageError, match="this run expects"):
        store.ensure_array("clean", (6, 1, 4, 4), chunk_rows=2)


def chunk_file(store: ImageStore, name: str, index: int) -> Path:
    """The file of chunk ``index`` of a 4-d array (Zarr v3's default key: c/i/0/0/0)."""
    return store.layout.images / name / "c" / str(index) / "0" / "0" / "0"


@pytest.fixture
def written(store: ImageStore) -> np.ndarray:
    """``adv/pgd`` of 4 rows in chunks of 2, both written and marked."""
    store.ensure_array("adv/pgd", (4, 1, 4, 4), chunk_rows=2)
    rows = np.random.default_rng(0).random((4, 1, 4, 4), dtype=np.float32)
    store.write_rows("adv/pgd", 0, rows[:2])
    store.write_rows("adv/pgd", 2, rows[2:])
    return rows


def test_a_marked_chunk_that_is_missing_loses_its_marker(
    store: ImageStore, written: np.ndarray
) -> None:
    chunk_file(store, "adv/pgd", 1).unlink()  # reads as NaN, the fill value, from now on
    notes: list[str] = []
    assert not store.has_rows("adv/pgd", 2, notes.append)
    assert "rows 2-4 holds 32 NaN value(s)" in notes[0] and "recomputed" in notes[0]
    assert not store._marker("adv/pgd", 2).exists()
    assert store.has_rows("adv/pgd", 0)  # the other chunk is trusted still
    store.write_rows("adv/pgd", 2, written[2:])  # recomputed
    assert store.has_rows("adv/pgd", 2)


def test_a_marked_chunk_that_does_not_decode_loses_its_marker(
    store: ImageStore, written: np.ndarray
) -> None:
    chunk_file(store, "adv/pgd", 0).write_bytes(os.urandom(200))
    notes: list[str] = []
    assert not store.has_rows("adv/pgd", 0, notes.append)
    assert "chunk at row 0 does not decode" in notes[0]
    assert store.has_rows("adv/pgd", 2)


def test_a_marked_chunk_holding_nan_or_unwritten_labels_loses_its_marker(
    store: ImageStore, written: np.ndarray
) -> None:
    array = zarr.open_array(str(store.layout.images / "adv/pgd"), mode="r+")
    array[3, 0, 0, 0] = np.nan  # one pixel written as the fill value
    assert not store.has_rows("adv/pgd", 2)
    store.ensure_array("labels", (4,), chunk_rows=2, dtype="int64")
    store.write_rows("labels", 0, np.array([3, 1]))
    (store.layout.images / "labels" / "c" / "0").unlink()  # a 1-d array's chunk 0
    assert not store.has_rows("labels", 0)  # reads as -1, the labels' fill value


def test_rows_holding_the_fill_value_are_refused(store: ImageStore) -> None:
    store.ensure_array("adv/pgd", (2, 1, 4, 4), chunk_rows=2)
    rows = np.zeros((2, 1, 4, 4), np.float32)
    rows[1, 0, 2, 2] = np.nan
    with pytest.raises(ValueError, match=r"refusing to store .* holds 1 NaN"):
        store.write_rows("adv/pgd", 0, rows)
    assert not store._marker("adv/pgd", 0).exists()


def test_a_failed_chunk_write_names_the_array_and_leaves_no_marker(
    store: ImageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.ensure_array("adv/pgd", (2, 1, 4, 4), chunk_rows=2)
    real_open = io.open

    def full(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if "w" in mode and "/c/" in str(file):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(io, "open", full)  # zarr writes a chunk through pathlib -> io.open
    with pytest.raises(WriteError, match=r"images\.zarr/adv/pgd: No space left on device"):
        store.write_rows("adv/pgd", 0, np.zeros((2, 1, 4, 4), np.float32))
    assert not store._marker("adv/pgd", 0).exists()
