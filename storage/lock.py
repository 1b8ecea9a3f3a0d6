"""One ``ride run`` per run directory at a time.

The lock is an advisory ``flock`` on ``DIR/.lock``, held for as long as the run's process
lives: the kernel releases it when the process ends, however it ends, so a crashed or
killed run never leaves a directory locked. The file records who holds it, for the message.

A holder may make its lock re-entrant: ``ride run`` takes it before it starts a Prefect
server (so the second of two simultaneous runs fails before starting anything), and the flow
it then calls takes it again, as the flow must when started another way (a deployment, Python).
A second ``flock`` through a new ``open()`` would conflict with the first even in the same
process (the lock belongs to the open file description), so the process records what it holds.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from storage.layout import check_own_folders


class RunDirBusy(RuntimeError):
    """Another process is running on this run directory, or its lock file is not one."""


LOCK = ".lock"
"""The lock file under a run directory."""

_REENTRANT: set[tuple[int, int]] = set()
"""The lock files this process holds re-entrantly, by (device, inode). Process-wide because
the lock is: it belongs to this process's open file, whichever thread or code path took it."""


def _not_a_lock(path: Path, what: str) -> RunDirBusy:
    return RunDirBusy(
        f"{path} is {what}, not a lock file (planted?); it is left as it is: remove it once "
        f"you have checked that no run uses {path.parent}"
    )


def _open_lock(path: Path, create: bool) -> int:
    """A descriptor of the lock file ``path`` (created when ``create``), which is a regular
    file with one name: a symbolic link is not followed, anything else refused as
    :class:`RunDirBusy`. Nothing is written."""
    flags = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a planted FIFO
    flags |= (os.O_RDWR | os.O_CREAT) if create else os.O_RDONLY
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise _not_a_lock(path, "a symbolic link") from None
        if error.errno in (errno.EISDIR, errno.ENXIO, errno.EOPNOTSUPP):
            raise _not_a_lock(path, "not a regular file") from None
        if error.errno == errno.ENOENT:  # no run directory
            raise
        raise RunDirBusy(
            f"{path} cannot be opened as the lock of {path.parent} ({error.strerror})"
        ) from None
    info = os.fstat(fd)
    if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
        return fd
    os.close(fd)
    if stat.S_ISREG(info.st_mode):
        raise _not_a_lock(path, f"a file with {info.st_nlink} names (a hard link)")
    raise _not_a_lock(path, "not a regular file")


def _holder(fd: int) -> str:
    """Who holds the lock, as its holder wrote it (its first line, cut short)."""
    lines = os.pread(fd, 4096, 0).decode(errors="replace").strip().splitlines()
    return lines[0][:200] if lines else "another process"


def _busy(root: Path, fd: int) -> RunDirBusy:
    return RunDirBusy(
        f"{root} is in use by {_holder(fd)}; wait for it or use another run directory"
    )


@contextmanager
def run_lock(root: Path, *, reentrant: bool = False) -> Iterator[None]:
    """Hold the run directory's lock for the body, or raise :class:`RunDirBusy` (another
    holder, or a ``.lock`` that is not a lock file: see the module docstring), or
    :class:`~storage.files.StorageError` when a folder of the run is a symbolic link
    (:func:`~storage.layout.check_own_folders`).

    With ``reentrant``, taking it again in this process while this body runs (the flow that
    ``ride run`` calls) succeeds at once and leaves the lock to this, the outer holder.
    Without, this process is refused like any other.
    """
    fd = _open_lock(root / LOCK, create=True)
    try:
        info = os.fstat(fd)
        key = (info.st_dev, info.st_ino)
        if key in _REENTRANT:  # the outer holder keeps the lock and releases it
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(root, fd) from None
        try:
            check_own_folders(root)
            started = datetime.now(UTC).isoformat(timespec="seconds")
            line = f"ride run pid {os.getpid()} on {socket.gethostname()} since {started}\n"
            os.ftruncate(fd, 0)  # our own regular file, held: see _open_lock
            os.pwrite(fd, line.encode(), 0)
            if reentrant:
                _REENTRANT.add(key)
            yield
        finally:
            _REENTRANT.discard(key)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def check_unlocked(root: Path) -> None:
    """Raise :class:`RunDirBusy` when a run holds ``root``'s lock, or its ``.lock`` is not a
    lock file; raise :class:`~storage.files.StorageError` when a folder of the run is a
    symbolic link (:func:`~storage.layout.check_own_folders`). A missing dir or lock is free.
    Creates and writes nothing."""
    check_own_folders(root)
    path = root / LOCK
    if not os.path.lexists(path):
        return
    fd = _open_lock(path, create=False)
    try:
        info = os.fstat(fd)
        if (info.st_dev, info.st_ino) in _REENTRANT:  # held by this process's outer holder
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(root, fd) from None
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
