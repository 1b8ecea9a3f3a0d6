"""Run a Python module that ends when the process that started it ends, however it ends.

``python -m flows.tether PARENT_PID MODULE ARGS...`` runs ``python -m MODULE ARGS...`` in this
process after arranging a SIGTERM to it when process ``PARENT_PID`` (its parent) dies: on
Linux the kernel's parent-death signal (``prctl(PR_SET_PDEATHSIG)``, which also covers a
SIGKILL of the parent), elsewhere a watchdog thread that notices the child was reparented.
The watchdog also ends the process with SIGKILL when it has not ended
:data:`GRACE_S` seconds after its parent (a shutdown that hangs).

The temporary Prefect server runs in its own session, so that a terminal's Ctrl-C, sent to
the whole foreground process group, reaches only ``ride`` (which then stops the server after
its last call to it); without a terminal's session to end with it, the server would outlive
a killed ``ride``. See :func:`flows.server.prefect_api`.
"""

from __future__ import annotations

import ctypes
import os
import runpy
import signal
import sys
import threading
import time
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1
"""``prctl`` option: the signal this process gets when the thread that forked it ends."""

WATCH_INTERVAL_S = 0.5
"""How often the watchdog checks the parent."""

GRACE_S = 5.0
"""How long the orphaned process may take to end after its signal before SIGKILL."""


def _parent_death_signal(signum: int) -> bool:
    """Ask the kernel for ``signum`` when the parent dies; False where it cannot (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _watch(parent: int, signum: int | None) -> None:
    """Once this process is no longer ``parent``'s child, send it ``signum`` (None: the
    kernel sends it), and SIGKILL :data:`GRACE_S` seconds later."""
    while os.getppid() == parent:
        time.sleep(WATCH_INTERVAL_S)
    if signum is not None:
        os.kill(os.getpid(), signum)
    time.sleep(GRACE_S)
    os.kill(os.getpid(), signal.SIGKILL)


def die_with_parent(parent: int, signum: int = signal.SIGTERM) -> None:
    """Have this process get ``signum`` when its parent ``parent`` dies, and SIGKILL if it
    is still running :data:`GRACE_S` seconds later.

    The parent may already have died before the request was made (the child is then
    someone else's): that is checked after it, and the signal sent at once.
    """
    by_kernel = _parent_death_signal(signum)
    watched = None if by_kernel else signum
    threading.Thread(target=_watch, args=(parent, watched), daemon=True).start()
    if by_kernel and os.getppid() != parent:
        os.kill(os.getpid(), signum)


def main(argv: Sequence[str]) -> None:
    """``PARENT_PID MODULE ARGS...``: tie this process to ``PARENT_PID``, then run ``MODULE``
    as ``python -m`` would, with ``ARGS`` as its command line."""
    if len(argv) < 2 or not argv[0].isdigit():
        sys.exit("usage: python -m flows.tether PARENT_PID MODULE [ARGS...]")
    parent, module, *args = argv
    die_with_parent(int(parent))
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
