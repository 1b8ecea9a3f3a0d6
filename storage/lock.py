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

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path


class RunDirBusy(RuntimeError):
    """Another process is running on this run directory."""


_REENTRANT: set[tuple[int, int]] = set()
"""The lock files this process holds re-entrantly, by (device, inode). Process-wide because
the lock is: it belongs to this process's open file, whichever thread or code path took it."""


@contextmanager
def run_lock(root: Path, *, reentrant: bool = False) -> Iterator[None]:
    """Hold the run directory's lock for the body, or raise :class:`RunDirBusy`.

    With ``reentrant``, taking it again in this process while this body runs (the flow that
    ``ride run`` calls) succeeds at once and leaves the lock to this, the outer holder.
    Without, this process is refused like any other.
    """
    path = root / ".lock"
    with path.open("a+") as handle:
        stat = os.fstat(handle.fileno())
        key = (stat.st_dev, stat.st_ino)
        if key in _REENTRANT:  # the outer holder keeps the lock and releases it
            yield
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunDirBusy(
                f"{root} is in use by {holder}; wait for it or use another run directory"
            ) from None
        try:
            handle.seek(0)
            handle.truncate()
            started = datetime.now(UTC).isoformat(timespec="seconds")
            handle.write(f"ride run pid {os.getpid()} on {socket.gethostname()} since {started}\n")
            handle.flush()
            if reentrant:
                _REENTRANT.add(key)
            yield
        finally:
            _REENTRANT.discard(key)
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_unlocked(root: Path) -> None:
    """Raise :class:`RunDirBusy` when a run holds ``root``'s lock (a missing dir is free)."""
    if (root / ".lock").exists():
        with run_lock(root):
            pass
