"""The Zarr v3 image store of a run.

Arrays (all ``(N, C, H, W)`` float32 in [0, 1], chunked along N by one task's images):

- ``clean`` and ``labels`` (``(N,)`` int64),
- ``adv/<attack_id>`` (gray-box) or ``adv/<attack_id>/<defender_id>`` (white-box: the
  adversarial image depends on the defender; the iterate the attacker chose, which is
  evaluated) and ``final/<attack_id>/<defender_id>`` (the white-box attack's final output),
- ``defended/<attack_id>/<defender_id>``,
- ``predictions/<attack_id>`` (``(N, 2)`` int64: the clean and adversarial predictions).

Every array is created once, by one process, before any task writes; a task then writes
exactly one chunk (its ``[start, stop)`` rows), so no two processes ever write the same
chunk. A chunk counts as written only once its completion marker exists: the marker is
written after the chunk (and after the chunk was read back), so a crash mid-write leaves a
chunk that is simply recomputed. A marker is trusted only with its data: a marked chunk that
fails to decode, is missing (an unwritten chunk reads as the fill value: NaN, labels -1) or
holds the fill value loses its marker and counts as not written (:meth:`ImageStore.has_rows`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.errors import ContainsArrayError

from storage.files import Note, StorageError, touch_marker, writing
from storage.layout import RunLayout

__all__ = [
    "ImageStore",
    "Note",
    "StorageError",
    "adaptive_adv_name",
    "adaptive_final_name",
    "adv_name",
    "defended_name",
    "fill_problem",
    "predictions_name",
]


def adv_name(attack_id: str) -> str:
    return f"adv/{attack_id}"


def adaptive_adv_name(attack_id: str, defender_id: str) -> str:
    """Adversarial images of a white-box attack, which depend on the defender attacked: the
    iterate the attacker chose per image, the one evaluated."""
    return f"adv/{attack_id}/{defender_id}"


def adaptive_final_name(attack_id: str, defender_id: str) -> str:
    """A white-box attack's final output per image (its last-iterate evaluation)."""
    return f"final/{attack_id}/{defender_id}"


def defended_name(attack_id: str, defender_id: str) -> str:
    return f"defended/{attack_id}/{defender_id}"


def predictions_name(attack_id: str) -> str:
    """The classifier's predictions on the clean and the adversarial images of a gray-box
    attack (or ``none``): ``(N, 2)`` int64, made once per attack chunk, read by every
    defender of it."""
    return f"predictions/{attack_id}"


class ImageStore:
    """Reads and writes the image arrays of one run directory."""

    def __init__(self, layout: RunLayout) -> None:
        self.layout = layout

    def _group(self, mode: str) -> zarr.Group:
        return zarr.open_group(str(self.layout.images), mode=mode)  # type: ignore[arg-type]

    def check_opens(self) -> None:
        """Nothing when the run has no ``images.zarr`` yet or when it opens with every group
        and array in it; else a :class:`~storage.files.StorageError` of one line (garbage
        written over a ``zarr.json`` would otherwise fail the run's every start)."""
        if not self.layout.images.exists():
            return
        try:
            self._group("r").members(max_depth=None)
        except Exception as error:  # any metadata that does not parse
            text = (str(error).splitlines() or [""])[0]
            raise StorageError(
                f"{self.layout.images} does not open ({type(error).__name__}: {text}); move "
                "it away and rerun to sample the images again"
            ) from None

    def ensure_array(
        self,
        name: str,
        shape: tuple[int, ...],
        chunk_rows: int,
        dtype: str = "float32",
        attrs: Mapping[str, Any] | None = None,
        grow: bool = False,
    ) -> None:
        """Create ``name`` if absent; if present it must have this shape, chunking and dtype,
        except that with ``grow`` (a grown run) an array of fewer rows is resized to
        ``shape`` (its stored rows kept, the new ones unwritten)."""
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
            fewer = existing.shape[0] < shape[0] and tuple(existing.shape[1:]) == shape[1:]
            if grow and fewer and tuple(existing.chunks) == chunks:
                with writing(self.layout.images / name):
                    existing.resize(shape)
                return
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

    def held_images(self) -> int | None:
        """How many images the run's ``clean`` array holds; None before it is created."""
        if not self.layout.images.exists():
            return None
        try:
            return int(self.array("clean").shape[0])
        except KeyError:
            return None

    def write_rows(self, name: str, start: int, data: np.ndarray) -> None:
        """Write rows ``[start, start + len(data))`` of ``name``, check that they read back
        as written, and mark that chunk done.

        Data holding the array's fill value (NaN; -1 for labels) is refused with a
        ValueError: it would read as an unwritten chunk. A failed write (disk full,
        read-only) is a :class:`~storage.files.WriteError` naming the array; the chunk then
        has no marker and counts as not written.
        """
        array = self._group("r+")[name]
        assert isinstance(array, zarr.Array)
        where = f"{self.layout.images / name} rows {start}-{start + len(data)}"
        expected = np.asarray(data, dtype=array.dtype)
        problem = fill_problem(expected, array.fill_value)
        if problem is not None:
            raise ValueError(f"refusing to store {where}: {problem}")
        with writing(self.layout.images / name):
            array[start : start + len(data)] = expected
        if not np.array_equal(self.read_rows(name, start, start + len(data)), expected):
            raise StorageError(f"{where} read back different from what was written")
        marker = self._marker(name, start)
        with writing(marker):
            marker.parent.mkdir(parents=True, exist_ok=True)
        touch_marker(marker)

    def read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        array = self._group("r")[name]
        assert isinstance(array, zarr.Array)
        return np.asarray(array[start:stop])

    def has_rows(self, name: str, start: int, note: Note | None = None) -> bool:
        """True when the chunk starting at ``start`` was written completely and reads back.

        Its marker says it was written; its data must also decode and hold no fill value (a
        deleted chunk reads as all fill). A marked chunk that does not loses its marker, so
        it counts as not written and is recomputed; ``note`` gets one line saying why.
        """
        marker = self._marker(name, start)
        if not marker.exists():
            return False
        problem = self.chunk_problem(name, start)
        if problem is None:
            return True
        with writing(marker):
            marker.unlink(missing_ok=True)
        if note is not None:
            note(f"{problem}; its done marker is dropped and the chunk recomputed")
        return False

    def covers(self, name: str, start: int, stop: int, note: Note | None = None) -> bool:
        """True when every chunk of ``name`` holding a row of ``[start, stop)`` was written
        completely and reads back (:meth:`has_rows`); a task may read rows of a chunk that
        another task, taking more rows, wrote."""
        rows = int(self.array(name).chunks[0])
        first = start - start % rows
        return all(self.has_rows(name, at, note) for at in range(first, stop, rows))

    def chunk_problem(self, name: str, start: int) -> str | None:
        """Why the stored chunk of ``name`` starting at ``start`` cannot be trusted (it does
        not decode, or holds the fill value: missing or never written); None when it reads
        back whole."""
        try:
            array = self.array(name)
            stop = min(start + array.chunks[0], array.shape[0])
            where = f"{self.layout.images / name} rows {start}-{stop}"
            data = np.asarray(array[start:stop])
        except Exception as error:  # any decoding failure: the chunk is not usable
            text = (str(error).splitlines() or [""])[0]
            return f"{self.layout.images / name} chunk at row {start} does not decode " + (
                f"({type(error).__name__}: {text})" if text else f"({type(error).__name__})"
            )
        problem = fill_problem(data, array.fill_value)
        return None if problem is None else f"{where} {problem}"

    def array(self, name: str) -> zarr.Array:
        array = self._group("r")[name]
        assert isinstance(array, zarr.Array)
        return array

    def _marker(self, name: str, start: int) -> Path:
        return self.layout.done / name / f"{start:09d}"


def fill_problem(data: np.ndarray, fill: Any) -> str | None:
    """What in ``data`` reads as never written: NaN in a float array (its fill value), the
    fill value in an integer one; None when nothing."""
    if np.issubdtype(data.dtype, np.floating):
        missing = int(np.isnan(data).sum())
        what = "NaN"
    else:
        missing = int((data == fill).sum())
        what = f"the fill value {fill}"
    if not missing:
        return None
    return f"holds {missing} {what} value(s) (missing or never written)"
