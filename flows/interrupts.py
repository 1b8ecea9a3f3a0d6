"""Stopping a run on Ctrl-C (SIGINT) or SIGTERM, wherever the signal lands.

The default SIGINT handler raises KeyboardInterrupt in whatever the main thread is running,
and some library code on the way (task submission, waits on futures) can swallow it: the run
then went on to its end. The command line installs :func:`install`, whose handler also
records the request, and the flow calls :func:`raise_if_requested` between tasks, so a
swallowed signal still stops the run at the next finished task.
"""

from __future__ import annotations

import signal


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch scheduler's preemption, ``kill PID``): stop like Ctrl-C does."""


_REQUESTED: list[type[KeyboardInterrupt]] = []  # signals are process-wide: so is this record


def _on_signal(signum: int, frame: object) -> None:
    kind: type[KeyboardInterrupt] = Terminated if signum == signal.SIGTERM else KeyboardInterrupt
    _REQUESTED.append(kind)
    raise kind


def install() -> None:
    """Handle SIGINT and SIGTERM in this (main) thread; forget earlier requests."""
    _REQUESTED.clear()
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)


def raise_if_requested() -> None:
    """Raise the stop a signal asked for, if one did (a no-op outside the command line)."""
    if _REQUESTED:
        raise _REQUESTED[0]()
