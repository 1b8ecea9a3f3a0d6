"""One run per directory: a second run is refused, a killed run leaves nothing locked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage.lock import RunDirBusy, check_unlocked, run_lock

HOLD = """
import sys, time
from pathlib import Path
from storage.lock import run_lock
with run_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(60)
"""

CHECK = """
import sys
from pathlib import Path
from storage.lock import RunDirBusy, check_unlocked
try:
    check_unlocked(Path(sys.argv[1]))
except RunDirBusy:
    sys.exit(3)
"""


def test_second_holder_is_refused_with_who_holds_it(tmp_path: Path) -> None:
    busy = pytest.raises(RunDirBusy, match=f"in use by ride run pid {os.getpid()}")
    with run_lock(tmp_path), busy:
        check_unlocked(tmp_path)
    check_unlocked(tmp_path)  # released on exit


def test_a_reentrant_holder_takes_it_again_and_others_are_still_refused(tmp_path: Path) -> None:
    """``ride run`` holds the lock re-entrantly around the flow, which takes it again."""
    refused = [sys.executable, "-c", CHECK, str(tmp_path)]
    root = Path(__file__).resolve().parents[2]
    with run_lock(tmp_path, reentrant=True):
        with run_lock(tmp_path):  # the flow, in the same process
            check_unlocked(tmp_path)
        check_unlocked(tmp_path)  # the inner exit left the lock held
        other = subprocess.run(refused, capture_output=True, text=True, cwd=root)
        assert other.returncode == 3, other.stderr
    with run_lock(tmp_path), pytest.raises(RunDirBusy):  # not re-entrant: refused
        check_unlocked(tmp_path)
    assert subprocess.run(refused, cwd=root).returncode == 0  # released on exit


def test_a_killed_holder_leaves_the_directory_free(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirBusy, match=f"pid {holder.pid}"):
            check_unlocked(tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    deadline = time.monotonic() + 5
    while True:
        try:
            with run_lock(tmp_path):
                break
        except RunDirBusy:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_missing_directory_is_free(tmp_path: Path) -> None:
    check_unlocked(tmp_path / "nothing")
