"""The cross-run cache stores arrays and tensors in formats that load without running code,
and refuses (never executes) anything else found under a key."""

from __future__ import annotations

import os
import pickle
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from storage.cache import CacheEntryRefused, ResultCache


class Payload:
    """Unpickling this object creates ``marker``: proof that a planted pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, ...]]:
        return (os.system, (f"touch {self.marker}",))


def test_arrays_and_tensors_round_trip(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "cache")
    array = np.random.default_rng(0).random((2, 1, 4, 4), dtype=np.float32)
    state = {"w": torch.arange(6.0).view(2, 3), "b": torch.zeros(2)}
    assert cache.load_array("k", array.shape) is None
    assert cache.load_tensors("k") is None
    cache.save_array("k", array)
    cache.save_tensors("k", state)
    np.testing.assert_array_equal(cache.load_array("k", array.shape), array)
    loaded = cache.load_tensors("k")
    assert loaded is not None and set(loaded) == {"w", "b"}
    assert torch.equal(loaded["w"], state["w"])


def test_the_cache_folder_is_created_private(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "cache")
    cache.save_array("k", np.zeros((1, 1), np.float32))
    assert stat.S_IMODE((tmp_path / "cache").stat().st_mode) == 0o700
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.name.startswith(".")]


def test_a_pickled_array_is_refused_and_never_run(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "cache")
    cache.save_array("k", np.zeros((1, 1), np.float32))
    marker = tmp_path / "ran"
    planted = np.array([Payload(marker)], dtype=object)
    np.save(cache.array_path("k"), planted, allow_pickle=True)
    with pytest.raises(CacheEntryRefused, match="allow_pickle"):
        cache.load_array("k", (1,))
    assert not marker.exists()


def test_a_pickled_tensor_file_is_refused_and_never_run(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "cache")
    cache.save_tensors("k", {"w": torch.zeros(1)})
    marker = tmp_path / "ran"
    torch.save({"w": Payload(marker)}, cache.tensors_path("k"))
    with pytest.raises(CacheEntryRefused, match="Unpickling"):
        cache.load_tensors("k")
    cache.tensors_path("k").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(CacheEntryRefused):
        cache.load_tensors("k")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("stored", "why"),
    [
        (np.zeros((2, 1), np.float32), "expected float32 \\(1, 1\\)"),
        (np.zeros((1, 1), np.float64), "expected float32"),
        (np.full((1, 1), np.nan, np.float32), "NaN"),
    ],
)
def test_an_array_that_is_not_what_its_key_promises_is_refused(
    tmp_path: Path, stored: np.ndarray, why: str
) -> None:
    cache = ResultCache(tmp_path / "cache")
    cache.save_array("k", stored)
    with pytest.raises(CacheEntryRefused, match=why):
        cache.load_array("k", (1, 1))


def test_truncated_files_are_refused(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "cache")
    cache.save_array("k", np.zeros((4, 4), np.float32))
    cache.save_tensors("k", {"w": torch.zeros(4)})
    for path in (cache.array_path("k"), cache.tensors_path("k")):
        path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CacheEntryRefused):
        cache.load_array("k", (4, 4))
    with pytest.raises(CacheEntryRefused):
        cache.load_tensors("k")
    cache.tensors_path("k").write_bytes(b"")
    with pytest.raises(CacheEntryRefused):
        cache.load_tensors("k")
