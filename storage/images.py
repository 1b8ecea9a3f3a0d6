"""The Zarr v3 image store of a run.

Arrays (all ``(N, C, H, W)`` float32 in [0, 1], chunked along N by one task's images):

- ``clean`` and ``labels`` (``(N,)`` int64),
- ``adv/<attack_id>`` (gray-box) or ``adv/<attack_id>/<defender_id>`` (BPDA: the
  adversarial image depends on the defender),
- ``defended/<attack_id>/<defender_id>``.

Every array is created once, by one process, before any task writes; a task then writes
exactly one chunk (its ``[start, stop)`` rows), so no two processes ever write the same
chunk. A chunk counts as written only once its completion marker exists: the marker is
written after the chunk, so a crash mid-write leaves a chunk that is simply recomputed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.errors import ContainsArrayError

from storage.layout import RunLayout


class StorageError(RuntimeError):
    """A run directory's image store is inconsistent with what the run expects."""


def adv_name(attack_id: str) -> str:
    return f"adv/{attack_id}"


def adaptive_adv_name(attack_id: str, defender_id: str) -> str:
    """Adversarial images of an adaptive attack, which depend on the defender attacked."""
    return f"adv/{attack_id}/{defender_id}"


def defended_name(attack_id: str, defender_id: str) -> str:
    return f"defended/{attack_id}/{defender_id}"


class ImageStore:
    """Reads and writes the image arrays of one run directory."""

    def __init__(self, layout: RunLayout) -> None:
        self.layout = layout

    def _group(self, mode: str) -> zarr.Group:
        return zarr.open_group(str(self.layout.images), mode=mode)  # type: ignore[arg-type]

    def ensure_array(
        self,
        name: str,
        shape: tuple[int, ...],
        chunk_rows: int,
        dtype: str = "float32",
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        """Create ``name`` if absent; if present it must have this shape, chunking and dtype."""
        group = self._group("a")
        chunks = (chunk_rows, *shape[1:])
        fill: float | int = np.nan if dtype.startswith("float") else -1
        try:
            group.create_array(
                name,
                shape=shape,
                chunks=chunks,
                dtype=dtype,
                fill_value=fill,
                attributes=dict(attrs or {}),
            )
        except ContainsArrayError:
            existing = group[name]
            assert isinstance(existing, zarr.Array)
            if (
                tuple(existing.shape) != shape
                or tuple(existing.chunks) != chunks
                or existing.dtype != np.dtype(dtype)
            ):
                raise StorageError(
                    f"{self.layout.images}/{name} has shape {existing.shape}, chunks "
                    f"{existing.chunks}, dtype {existing.dtype}; this run expects {shape}, "
                    f"{chunks}, {dtype}"
                ) from None

    def write_rows(self, name: str, start: int, data: np.ndarray) -> None:
        """Write rows ``[start, start + len(data))`` of ``name`` and mark that chunk done."""
        array = self._group("r+")[name]
        assert isinstance(array, zarr.Array)
        array[start : start + len(data)] = data
        self._marker(name, start).parent.mkdir(parents=True, exist_ok=True)
        self._marker(name, start).touch()

    def read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        array = self._group("r")[name]
        assert isinstance(array, zarr.Array)
        return np.asarray(array[start:stop])

    def has_rows(self, name: str, start: int) -> bool:
        """True when the chunk starting at ``start`` was written completely."""
        return self._marker(name, start).exists()

    def array(self, name: str) -> zarr.Array:
        array = self._group("r")[name]
        assert isinstance(array, zarr.Array)
        return array

    def _marker(self, name: str, start: int) -> Path:
        return self.layout.done / name / f"{start:09d}"
