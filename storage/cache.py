"""The cache of results shared between runs, stored so that reading it runs no code.

Two kinds of results are reused across run directories (see ``pipeline/cache.py``): trained
classifiers (a state_dict of tensors) and chunks of gray-box adversarial images (a float32
array). Each entry is one file named by its key (a digest of everything the result depends
on): ``arrays/<key>.npy`` read with ``numpy.load(allow_pickle=False)`` and
``tensors/<key>.pt`` read with ``torch.load(weights_only=True)``. Neither loader unpickles
arbitrary objects, so a file planted in a shared cache folder can at worst be refused, never
executed.

Each entry carries the checksum written with it: the file is the saved array or tensors
followed by a trailer, ``\nride-sha256:<sha256 of what precedes, in hex>\n`` (a ``.npy``
file stays one that numpy reads; the trailer is cut off before loading). An entry is
refused when it does not load, has no trailer or does not match it (a file damaged, or
replaced by someone else), or is not what its caller expects: an array of another shape or
dtype, tensors of other names or shapes than the network they are for (when the caller gives
them), or any NaN or infinite value. Whoever can write the cache can rewrite a checksum too,
so those checks are made whatever the checksum says. A refused entry counts as absent: it is
computed and written again (the caller warns in one line). Entries written before the
checksum existed are refused once, and rewritten.

Entries are written like every file of a run (``storage.files.atomic_file``: a hidden
temporary name, fsynced, renamed), so two workers that compute the same entry at once each
leave a whole file with its own checksum, and a failed write is a one-line ``WriteError``.
The folder is created private (mode 0700): whoever can write into a cache can change the
results of every run that reads it.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from storage.files import atomic_file


class CacheEntryRefused(ValueError):
    """A cache file that does not load safely or is not what its key promises."""


TRAILER = b"\nride-sha256:"
"""What starts the checksum trailer of an entry; 64 hex digits and a newline follow."""

TRAILER_BYTES = len(TRAILER) + 64 + 1

Shapes = Mapping[str, tuple[int, ...]]
"""The names and shapes of the tensors an entry must hold (a network's state_dict)."""


def with_checksum(payload: bytes) -> bytes:
    """``payload`` followed by its checksum trailer (see the module docstring)."""
    return payload + TRAILER + hashlib.sha256(payload).hexdigest().encode() + b"\n"


def split_checksum(data: bytes) -> tuple[bytes, bool]:
    """An entry's payload and whether its trailer holds the payload's checksum; without a
    trailer, the whole of ``data`` and False."""
    payload, trailer = data[:-TRAILER_BYTES], data[-TRAILER_BYTES:]
    if len(data) < TRAILER_BYTES or not trailer.startswith(TRAILER):
        return data, False
    recorded = trailer[len(TRAILER) : -1].decode("ascii", errors="replace")
    return payload, recorded == hashlib.sha256(payload).hexdigest()


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [""])[0]


def _private_dir(path: Path) -> Path:
    """``path``, created (with its parents) readable and writable by this user only; an
    existing folder keeps its mode (a shared cache is set up on purpose)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class ResultCache:
    """The cache folder ``root`` (``--cache-dir``)."""

    root: Path

    def array_path(self, key: str) -> Path:
        return self.root / "arrays" / f"{key}.npy"

    def tensors_path(self, key: str) -> Path:
        return self.root / "tensors" / f"{key}.pt"

    def _read(self, path: Path) -> tuple[bytes, bool] | None:
        """The payload of the entry ``path`` and whether it matches its checksum
        (:func:`split_checksum`); None when there is no entry."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise CacheEntryRefused(f"{path}: {error.strerror or error}") from None
        return split_checksum(data)

    def _write(self, path: Path, payload: bytes) -> None:
        """Write the entry ``path``: ``payload`` and its checksum, atomically."""
        _private_dir(path.parent.parent)
        path.parent.mkdir(exist_ok=True)
        with atomic_file(path) as file:
            file.write(with_checksum(payload))

    def load_array(
        self, key: str, shape: tuple[int, ...], dtype: str = "float32"
    ) -> np.ndarray | None:
        """The array stored under ``key``, or None when there is none.

        Raises :class:`CacheEntryRefused` for a file that holds objects (a pickle), fails
        to decode, does not match its checksum, has another shape or dtype, or holds a
        non-finite value.
        """
        path = self.array_path(key)
        found = self._read(path)
        if found is None:
            return None
        data, checked = found
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            raise CacheEntryRefused(f"{path}: {type(error).__name__}: {error}") from None
        if not isinstance(array, np.ndarray):  # an .npz archive
            raise CacheEntryRefused(f"{path}: is not a single array")
        if not checked:
            raise CacheEntryRefused(f"{path}: has no checksum, or does not match it")
        if array.shape != shape or array.dtype != np.dtype(dtype):
            raise CacheEntryRefused(
                f"{path}: holds {array.dtype} {array.shape}, expected {dtype} {shape}"
            )
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise CacheEntryRefused(f"{path}: holds NaN or infinite values")
        return array

    def save_array(self, key: str, array: np.ndarray) -> None:
        """Store ``array`` under ``key`` as a plain ``.npy`` file (no pickle) and its
        checksum trailer."""
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
        self._write(self.array_path(key), buffer.getvalue())

    def load_tensors(
        self, key: str, shapes: Shapes | None = None
    ) -> dict[str, torch.Tensor] | None:
        """The tensors stored under ``key`` (on the CPU), or None when there are none.

        Raises :class:`CacheEntryRefused` for a file that does not load with
        ``weights_only=True`` (any pickled object other than tensors and plain containers),
        that is not a mapping of names to tensors, does not match its checksum, holds a NaN
        or infinite value, or (with ``shapes``) other names or shapes than ``shapes``.
        """
        path = self.tensors_path(key)
        found = self._read(path)
        if found is None:
            return None
        data, checked = found
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as error:  # UnpicklingError, RuntimeError (bad zip), EOFError...
            raise CacheEntryRefused(
                f"{path}: {type(error).__name__}: {_first_line(error)}"
            ) from None
        if not isinstance(state, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
        ):
            raise CacheEntryRefused(f"{path}: is not a mapping of names to tensors")
        if not checked:
            raise CacheEntryRefused(f"{path}: has no checksum, or does not match it")
        problem = tensors_problem(state, shapes)
        if problem is not None:
            raise CacheEntryRefused(f"{path}: {problem}")
        return dict(state)

    def save_tensors(self, key: str, state: Mapping[str, torch.Tensor]) -> None:
        """Store ``state`` (names to tensors) under ``key``, and its checksum trailer."""
        cpu = {name: value.detach().cpu() for name, value in state.items()}
        buffer = io.BytesIO()
        torch.save(cpu, buffer)
        self._write(self.tensors_path(key), buffer.getvalue())


def tensors_problem(state: Mapping[str, torch.Tensor], shapes: Shapes | None) -> str | None:
    """What makes ``state`` unfit, or None: a NaN or infinite value, or (with ``shapes``)
    a name missing or unexpected or a tensor of another shape."""
    if shapes is not None:
        missing = sorted(set(shapes) - set(state))
        unexpected = sorted(set(state) - set(shapes))
        if missing or unexpected:
            return f"holds other tensors (missing {missing[:3]}, unexpected {unexpected[:3]})"
        for name, shape in shapes.items():
            if tuple(state[name].shape) != tuple(shape):
                return f"{name} has shape {tuple(state[name].shape)}, expected {tuple(shape)}"
    for name, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return f"{name} holds NaN or infinite values"
    return None
