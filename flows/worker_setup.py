"""Preload of the local Dask cluster's workers (``distributed.worker.preload``).

The worker processes of a local cluster are in ``ride``'s process group, so a terminal's
Ctrl-C, or a SIGTERM to the group, reaches them too. On Ctrl-C Python raised KeyboardInterrupt
inside the worker's event loop, which printed a traceback under ``ride``'s one line; on
SIGTERM the worker died, its nanny started a new one, and that one printed tracebacks as the
scheduler went away. A worker has nothing of its own to save (every stored chunk is written
atomically), and ``ride`` stops its cluster as it unwinds, so the worker ignores both and is
stopped by its nanny (asked to close, then SIGKILL); a worker whose ``ride`` died of SIGKILL
ends when its pipe to the nanny closes (Dask's own watch).
"""

from __future__ import annotations

import signal
import threading
from typing import Any

PRELOAD = __name__
"""The module name to give ``distributed.worker.preload``."""


def dask_setup(worker: Any) -> None:
    """Ignore SIGINT and SIGTERM in this worker process (Dask calls this as it starts)."""
    if threading.current_thread() is threading.main_thread():  # signal.signal's rule
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
