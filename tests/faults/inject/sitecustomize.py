"""The fault injector of ``tests/faults``: every Python process of a run imports it at start
when :func:`faults.harness.inject` puts this folder first on ``PYTHONPATH`` (the CLI and each
Dask worker it spawns), so a fault reaches the process that meets it.

Inert unless a ``RIDE_FAULT_*`` variable is set (nothing is patched then). The variables:

``RIDE_FAULT_WRITE_DIR=DIR``
    Opening a file under ``DIR`` for writing (``open``/``io.open``/``pathlib``, and
    ``os.open`` with a write or create flag) raises ``OSError(errno, strerror, path)``, as a
    full disk or a read-only mount does. Reads are untouched.
``RIDE_FAULT_WRITE_ERRNO=NAME``
    The ``errno`` name raised: ``ENOSPC`` (default), ``EROFS``, ``EACCES``...
``RIDE_FAULT_WRITE_AFTER=N``
    Only once ``N`` visible result files (``*.parquet`` not starting with ``.``) exist in
    ``RIDE_FAULT_COUNT_DIR`` (default ``DIR/results``): a disk that fills up after the run's
    ``N``-th result file. Default 0: from the start.

We run as root, for whom ``chmod`` stops nothing, so an unwritable folder is injected here too.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
from typing import Any


def _install_write_fault() -> None:
    folder = os.environ.get("RIDE_FAULT_WRITE_DIR")
    if not folder:
        return
    root = os.path.realpath(folder)
    code = getattr(errno, os.environ.get("RIDE_FAULT_WRITE_ERRNO") or "ENOSPC")
    after = int(os.environ.get("RIDE_FAULT_WRITE_AFTER") or "0")
    count_dir = os.environ.get("RIDE_FAULT_COUNT_DIR") or os.path.join(root, "results")

    def refused(path: Any) -> bool:
        if isinstance(path, int) or not isinstance(path, (str, bytes, os.PathLike)):
            return False  # a file descriptor: not a path we can place
        target = os.path.realpath(os.fsdecode(path))
        if target != root and not target.startswith(root + os.sep):
            return False
        if after <= 0:
            return True
        try:
            names = os.listdir(count_dir)
        except OSError:
            return False
        stored = sum(1 for n in names if n.endswith(".parquet") and not n.startswith("."))
        return stored >= after

    def fail(path: Any) -> None:
        raise OSError(code, os.strerror(code), os.fsdecode(path))

    real_open = io.open
    real_os_open = os.open
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def faulty_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if any(c in mode for c in "wax+") and refused(file):
            fail(file)
        return real_open(file, mode, *args, **kwargs)

    def faulty_os_open(path: Any, flags: int, mode: int = 0o777, *, dir_fd: Any = None) -> int:
        if flags & write_flags and dir_fd is None and refused(path):
            fail(path)
        return real_os_open(path, flags, mode, dir_fd=dir_fd)

    builtins.open = faulty_open
    io.open = faulty_open  # pathlib.Path.open calls io.open
    os.open = faulty_os_open  # type: ignore[assignment]  # Path.touch, lock files


_install_write_fault()
