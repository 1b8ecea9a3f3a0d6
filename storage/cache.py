"""The cache of results shared between runs, stored so that reading it runs no code.

Two kinds of results are reused across run directories (see ``pipeline/cache.py``): trained
classifiers (a state_dict of tensors) and chunks of gray-box adversarial images (a float32
array). Each entry is one file named by its key (a digest of everything the result depends
on): ``arrays/<key>.npy`` read with ``numpy.load(allow_pickle=False)`` and
``tensors/<key>.pt`` read with ``torch.load(weights_only=True)``. Neither loader unpickles
arbitrary objects, so a file planted in a shared cache folder can at worst be refused, never
executed. An entry that does not load, or is not what its key promises (shape, dtype,
values), counts as absent and is computed and written again.

Entries are written like every file of a run (``storage.files.atomic_file``: a hidden
temporary name, fsynced, renamed), so two workers that compute the same entry at once each
leave a whole file, and a failed write is a one-line ``WriteError``. The folder is created
private (mode 0700): whoever can write into a cache can change the results of every run that
reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from storage.files import atomic_file


class CacheEntryRefused(ValueError):
    """A cache file that does not load safely or is not what its key promises."""


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

    def load_array(
        self, key: str, shape: tuple[int, ...], dtype: str = "float32"
    ) -> np.ndarray | None:
        """The array stored under ``key``, or None when there is none.

        Raises :class:`CacheEntryRefused` for a file that holds objects (a pickle), fails
        to decode, has another shape or dtype, or holds a non-finite value.
        """
        path = self.array_path(key)
        if not path.exists():
            return None
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            raise CacheEntryRefused(f"{path}: {type(error).__name__}: {error}") from None
        if array.shape != shape or array.dtype != np.dtype(dtype):
            raise CacheEntryRefused(
                f"{path}: holds {array.dtype} {array.shape}, expected {dtype} {shape}"
            )
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise CacheEntryRefused(f"{path}: holds NaN or infinite values")
        return array

    def save_array(self, key: str, array: np.ndarray) -> None:
        """Store ``array`` under ``key`` as a plain ``.npy`` file (no pickle)."""
        path = self.array_path(key)
        _private_dir(path.parent.parent)
        path.parent.mkdir(exist_ok=True)

        with atomic_file(path) as file:
            np.save(file, np.ascontiguousarray(array), allow_pickle=False)

    def load_tensors(self, key: str) -> dict[str, torch.Tensor] | None:
        """The tensors stored under ``key`` (on the CPU), or None when there are none.

        Raises :class:`CacheEntryRefused` for a file that does not load with
        ``weights_only=True`` (any pickled object other than tensors and plain containers)
        or that is not a mapping of names to tensors.
        """
        path = self.tensors_path(key)
        if not path.exists():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # UnpicklingError, RuntimeError (bad zip), EOFError...
            first = (str(error).splitlines() or [""])[0]
            raise CacheEntryRefused(f"{path}: {type(error).__name__}: {first}") from None
        if not isinstance(state, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
        ):
            raise CacheEntryRefused(f"{path}: is not a mapping of names to tensors")
        return dict(state)

    def save_tensors(self, key: str, state: Mapping[str, torch.Tensor]) -> None:
        """Store ``state`` (names to tensors) under ``key``."""
        path = self.tensors_path(key)
        _private_dir(path.parent.parent)
        path.parent.mkdir(exist_ok=True)
        cpu = {name: value.detach().cpu() for name, value in state.items()}
        with atomic_file(path) as file:
            torch.save(cpu, file)
