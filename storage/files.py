"""Small file helpers shared by the stores: durable atomic writes, write failures named in one
line, unreadable files set aside.

Every file of a run is written to a hidden temporary sibling, flushed and fsynced, renamed over
its name, and its folder fsynced: after a crash or a power cut a reader finds the old file or
the whole new one, never a torn or empty one under the real name. A write that fails (disk
full, read-only, no permission) raises :class:`WriteError`, which names the file.

Run folders and caches may live where others can write, so nothing written follows a name
planted there: the temporary is created exclusively under an unpredictable name
(``tempfile.mkstemp``: ``O_CREAT | O_EXCL | O_NOFOLLOW``), and the rename replaces a
symbolic link at the final name instead of writing through it.
"""

from __future__ import annotations

import json
import os
import tempfile
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


TEMPORARY_SUFFIX = ".tmp"
"""The suffix of a temporary being written: ``.<name>.<random>.tmp`` (:func:`atomic_file`)."""


def temporary_prefix(path: Path) -> str:
    """How the hidden temporaries of ``path`` start (readers of a folder skip names starting
    with '.'); a random part and :data:`TEMPORARY_SUFFIX` follow."""
    return f".{path.name}."


def _umask() -> int:
    """This process's umask, read without changing it (``os.umask`` sets it, even for a
    moment, for every thread of the process)."""
    with suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file (``tempfile.mkstemp`` makes 0600)."""
    return 0o666 & ~_umask()


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

    Written to a new hidden temporary beside ``path`` (created exclusively, under an
    unpredictable name: a name planted there, a symbolic link included, is never opened),
    given the mode a new file gets, flushed and fsynced, then renamed over ``path`` (a
    symbolic link there is replaced, not followed), then ``path``'s folder is fsynced so the
    rename itself survives a power cut (fsyncing the folder before the rename would make only
    the temporary name durable). On any error the temporary is removed and the error raised
    as :class:`WriteError`; ``path`` is untouched.
    """
    with writing(path):
        fd, name = tempfile.mkstemp(
            dir=path.parent, prefix=temporary_prefix(path), suffix=TEMPORARY_SUFFIX
        )
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as file:
                os.fchmod(file.fileno(), new_file_mode())
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


def touch_marker(path: Path) -> None:
    """Make ``path`` an empty regular file (a done marker), never through a symbolic link
    planted at its name (``O_NOFOLLOW``: such a link is removed and the marker made in its
    place). Not fsynced: a marker is trusted only with the data it marks, which its reader
    checks. A failure is a :class:`WriteError`."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    with writing(path):
        try:
            fd = os.open(path, flags, 0o666)
        except OSError:
            if not path.is_symlink():
                raise
            path.unlink()
            fd = os.open(path, flags | os.O_EXCL, 0o666)
        os.close(fd)


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
