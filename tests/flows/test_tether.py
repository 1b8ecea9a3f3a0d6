"""``flows.tether``: a process started through it ends when its parent ends, even by SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]

PARENT = """
import os, subprocess, sys, time
child = subprocess.Popen(
    [sys.executable, "-m", "flows.tether", str(os.getpid()), "time_sleeper"],
    start_new_session=True,
)
print(child.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.slow
def test_the_child_of_a_killed_parent_ends(tmp_path: Path) -> None:
    """The parent-death signal reaches a child in its own session (where no terminal's
    hangup would) when its parent is killed with SIGKILL."""
    (tmp_path / "time_sleeper.py").write_text("import time\ntime.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, cwd=REPO, env=env
    )
    child = None
    try:
        assert parent.stdout is not None
        child = psutil.Process(int(parent.stdout.readline()))
        time.sleep(0.5)  # the child is running its module, not still starting
        assert child.is_running() and os.getsid(child.pid) == child.pid
        parent.kill()
        parent.wait()
        child.wait(timeout=10)  # psutil.TimeoutExpired if it outlives its parent
    finally:
        parent.kill()
        parent.wait()
        if child is not None and child.is_running():
            child.kill()


WATCHED = """
import signal, sys, time
from flows import tether
if sys.argv[1] == "stuck":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a shutdown that never ends
tether.GRACE_S = 0.5
tether._watch(-1, signal.SIGTERM)  # -1: never the parent, as once it has died
time.sleep(30)
"""


def test_the_watchdog_signals_a_reparented_process_then_kills_it() -> None:
    """Where there is no parent-death signal the watchdog sends it once the parent changed;
    a process still running after the grace period is killed."""
    for how, status in (("ends", -signal.SIGTERM), ("stuck", -signal.SIGKILL)):
        done = subprocess.run([sys.executable, "-c", WATCHED, how], cwd=REPO, timeout=30)
        assert done.returncode == status, how
