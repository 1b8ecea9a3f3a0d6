"""The Zarr image store: arrays created once, one chunk per write, completion markers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

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
