"""One ``ride run`` per run directory at a time.

The lock is an advisory ``flock`` on ``DIR/.lock``, held for as long as the run's process
lives: the kernel releases it when the process ends, however it ends, so a crashed or
killed run never leaves a directory locked. The file records who holds it, for the message.
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


@contextmanager
def run_lock(root: Path) -> Iterator[None]:
    """Hold the run directory's lock for the body, or raise :class:`RunDirBusy`."""
    path = root / ".lock"
    with path.open("a+") as handle:
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
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_unlocked(root: Path) -> None:
    """Raise :class:`RunDirBusy` when a run holds ``root``'s lock (a missing dir is free)."""
    if (root / ".lock").exists():
        with run_lock(root):
            pass
