"""Small file helpers shared by the stores: durable atomic writes, write failures named in one
line, unreadable files set aside.

Every file of a run is written to a hidden temporary sibling, flushed and fsynced, renamed over
its name, and its folder fsynced: after a crash or a power cut a reader finds the old file or
the whole new one, never a torn or empty one under the real name. A write that fails (disk
full, read-only, no permission) raises :class:`WriteError`, which names the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO

Note = Callable[[str], object]
"""Where a store reports a stored chunk or file it found bad and dropped (a logger's
``warning``); the caller then recomputes it."""


class StorageError(RuntimeError):
    """A run directory's stores are inconsistent with what the run expects, or hold a file
    that cannot be read."""


class WriteError(OSError):
    """A file of the run could not be written (disk full, read-only, no permission).

    An ``OSError`` (``errno``, ``strerror``, ``filename``: the file meant, not a temporary),
    so code that handles ``OSError`` still does; ``str()`` is one line:
    ``cannot write PATH: No space left on device``. What was stored before stays valid: the
    write went to a temporary name, or to a chunk whose marker is written only after it.
    """

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Raise an ``OSError`` of the block as :class:`WriteError` naming ``path``."""
    try:
        yield
    except WriteError:
        raise
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise WriteError(error.errno, reason, str(path)) from error


def temporary_sibling(path: Path) -> Path:
    """A hidden name beside ``path`` (readers of the folder skip names starting with '.')."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def fsync_directory(folder: Path) -> None:
    """Flush ``folder``'s entries to disk (a rename in it is durable once this returns)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary file whose content becomes ``path`` when the block ends without error.

    Written to :func:`temporary_sibling`, flushed and fsynced, then renamed over ``path``,
    then ``path``'s folder is fsynced so the rename itself survives a power cut (fsyncing the
    folder before the rename would make only the temporary name durable). On any error the
    temporary is removed and the error raised as :class:`WriteError`; ``path`` is untouched.
    """
    tmp = temporary_sibling(path)
    with writing(path):
        try:
            with open(tmp, "wb") as file:
                yield file
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, path)
        except BaseException:
            with suppress(OSError):  # a read-only folder: nothing was written there either
                tmp.unlink(missing_ok=True)
            raise
        fsync_directory(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` durably, so that readers see the old file or the whole new
    one (:func:`atomic_file`); a failure is a :class:`WriteError`."""
    with atomic_file(path) as file:
        file.write(data)


def atomic_write_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON to ``path``, atomically (see ``atomic_write_bytes``)."""
    atomic_write_bytes(path, (json.dumps(value, indent=2) + "\n").encode())


def set_aside(path: Path) -> Path:
    """Rename the unreadable file ``path`` to ``_<name>.corrupt`` beside it
    (``_<name>.corrupt-2``... when that exists): kept for inspection, out of every reader's
    way (a ``*.parquet`` glob; ``pandas.read_parquet(folder)`` and pyarrow skip names
    starting with ``_``), and its task redone. Returns the new path."""
    target = path.with_name(f"_{path.name}.corrupt")
    copy = 1
    while target.exists():
        copy += 1
        target = path.with_name(f"_{path.name}.corrupt-{copy}")
    with writing(path):
        os.replace(path, target)
    return target
