"""Signals to a ``ride run`` that started its own temporary Prefect server, and two runs
started together on one directory.

A terminal sends Ctrl-C to its whole foreground process group: the tests do the same, on a
run started in its own session without ``PREFECT_API_URL`` (so it starts a temporary server),
once it has stored a result. The run must stop within seconds with one line and exit 130
(SIGTERM: 143), leave no process behind (its server runs in a session of its own, where the
group's signal does not reach it), and the same command must finish it, the rows stored
before the signal byte-identical. After a SIGKILL of the ``ride`` process alone, its server
and Dask workers must end by themselves.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from pathlib import Path

import psutil
import pytest

from faults.harness import (
    REPO,
    RUN_ARGS,
    Ran,
    assert_complete,
    assert_one_error_line,
    environment,
    file_hashes,
    ride,
)
from storage.lock import check_unlocked

pytestmark = pytest.mark.slow

SIGNAL_ARGS = [*RUN_ARGS, "--defender", "ride", "--ride-iters", "200"]
"""The small run plus RIDE chunks (a few seconds each on one worker), which are still running
when the first result is stored, however loaded the machine."""

SIGNAL_ROWS = 8 * 2 * 3
"""Result rows of a complete :data:`SIGNAL_ARGS` run."""

STOP_WITHIN_S = 20
"""How soon after Ctrl-C or SIGTERM the run must have exited (measured: 5-8 s; it hung
for minutes while its temporary server died first)."""

GONE_WITHIN_S = 10
"""How soon after the run's exit (or SIGKILL) every process of it must have ended."""


def own_server_env() -> dict[str, str]:
    """The session's environment without ``PREFECT_API_URL``: the run starts its own server."""
    return environment(PREFECT_API_URL="")


def launch(stack: ExitStack, out: Path, log: Path, args: list[str]) -> subprocess.Popen[bytes]:
    """Start ``ride run --out OUT ARGS`` on its own temporary server, in its own session,
    stdout to ``LOG.out`` and stderr to ``LOG.err``; whatever is left of it when ``stack``
    closes is killed."""
    command = [sys.executable, "-m", "flows.cli", "run", "--out", str(out), *args]
    with log.with_suffix(".out").open("wb") as stdout, log.with_suffix(".err").open("wb") as err:
        process = subprocess.Popen(
            command,
            stdout=stdout,
            stderr=err,
            cwd=REPO,
            env=own_server_env(),
            start_new_session=True,
        )
    stack.callback(kill_all, process)
    return process


def ran(process: subprocess.Popen[bytes], log: Path) -> Ran:
    """The finished ``process`` started by :func:`launch`, as the harness's checks take it."""
    assert process.returncode is not None
    stdout, stderr = (log.with_suffix(s).read_text(errors="replace") for s in (".out", ".err"))
    return Ran(process.returncode, stdout, stderr)


def tree(pid: int) -> list[psutil.Process]:
    """Process ``pid`` and every process it started (its server, Dask workers...)."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def alive(process: psutil.Process) -> bool:
    """Running and not a zombie (an orphan's zombie may wait for a reaper that never comes)."""
    with suppress(psutil.NoSuchProcess):
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    return False


def group_members(pgid: int) -> list[psutil.Process]:
    """The living processes of process group ``pgid``."""
    members = []
    for process in psutil.process_iter():
        with suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(process.pid) == pgid and alive(process):
                members.append(process)
    return members


def left_behind(known: list[psutil.Process], groups: set[int]) -> list[str]:
    """What is still alive of ``known`` and of the process ``groups`` (a worker the nanny
    restarted after the snapshot is in the run's group)."""
    living = {p.pid: p for p in known if alive(p)}
    for pgid in groups:
        living.update((p.pid, p) for p in group_members(pgid))
    described = []
    for pid, process in sorted(living.items()):
        with suppress(psutil.Error):
            described.append(f"{pid}: {' '.join(command_line(process))[:120]}")
    return described


def wait_until_gone(known: list[psutil.Process], groups: set[int], timeout: float) -> float:
    """Wait until nothing of ``known`` and ``groups`` lives; fail listing what does.
    Returns the seconds waited."""
    began = time.monotonic()
    while left := left_behind(known, groups):
        if time.monotonic() - began > timeout:
            pytest.fail(f"still running {timeout} s on:\n" + "\n".join(left))
        time.sleep(0.1)
    return time.monotonic() - began


def kill_all(process: subprocess.Popen[bytes]) -> None:
    """Clean-up: SIGKILL whatever is left of ``process``, its group and what it started."""
    with suppress(psutil.Error):
        for child in tree(process.pid)[1:]:
            with suppress(psutil.Error):
                child.kill()
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def command_line(process: psutil.Process) -> list[str]:
    """``process``'s command line; empty once it has ended."""
    with suppress(psutil.Error):
        return process.cmdline()
    return []


def running_with_a_result(
    stack: ExitStack, out: Path, log: Path
) -> tuple[subprocess.Popen[bytes], list[psutil.Process], psutil.Process]:
    """Start :data:`SIGNAL_ARGS` on its own server; once a result is stored, return the run,
    its processes and its server, after checking that the server runs in a session of its
    own."""
    process = launch(stack, out, log, SIGNAL_ARGS)
    deadline = time.monotonic() + 240
    while not list((out / "results").glob("[!.]*.parquet")):
        assert process.poll() is None, f"ended before a result:\n{ran(process, log).tail()}"
        assert time.monotonic() < deadline, "no result stored after 240 s"
        time.sleep(0.05)
    processes = tree(process.pid)
    assert process.poll() is None, "the run ended before it could be signalled"
    servers = [p for p in processes if "uvicorn" in command_line(p)]
    assert len(servers) == 1, [command_line(p) for p in processes]
    assert os.getsid(servers[0].pid) == servers[0].pid != os.getsid(process.pid)
    return process, processes, servers[0]


def resume(out: Path, before: dict[str, str]) -> None:
    """The same command (on the session's server) finishes the run; rows stored before the
    fault are unchanged."""
    check_unlocked(out)
    again = ride("run", "--out", str(out), *SIGNAL_ARGS)
    assert again.code == 0, again.tail()
    assert_complete(out, before, rows=SIGNAL_ROWS)


@pytest.fixture
def timed() -> Iterator[None]:
    began = time.monotonic()
    yield
    print(f"wall time {time.monotonic() - began:.1f} s")


@pytest.mark.usefixtures("timed")
@pytest.mark.parametrize(
    ("signum", "code", "what"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
    ids=["ctrl-c", "sigterm"],
)
def test_a_signal_to_the_process_group_stops_the_run_and_its_own_server(
    prefect_server: str, tmp_path: Path, signum: signal.Signals, code: int, what: str
) -> None:
    """Ctrl-C (or SIGTERM) to the whole process group: exit 130 (143) within seconds with
    one line and no traceback, nothing left running, and the same command finishes the run."""
    out, log = tmp_path / "run", tmp_path / "signalled"
    with ExitStack() as stack:
        process, processes, server = running_with_a_result(stack, out, log)
        os.killpg(process.pid, signum)
        sent = time.monotonic()
        try:
            process.wait(timeout=STOP_WITHIN_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {STOP_WITHIN_S} s after {signum.name}")
        stopped = time.monotonic() - sent
        gone = wait_until_gone(processes, {process.pid, server.pid}, GONE_WITHIN_S)
    print(f"{signum.name}: exit after {stopped:.1f} s, every process gone {gone:.1f} s later")
    assert_one_error_line(ran(process, log), code, what, "rerun the same command to resume")
    before = file_hashes(out / "results")
    assert 0 < len(before) < SIGNAL_ROWS // 4  # one file per chunk
    resume(out, before)


@pytest.mark.usefixtures("timed")
def test_after_sigkill_of_the_run_alone_nothing_of_it_keeps_running(
    prefect_server: str, tmp_path: Path
) -> None:
    """SIGKILL of the ``ride`` process only (no unwinding, no terminal): its temporary server
    and its Dask workers end by themselves, and the same command finishes the run."""
    out, log = tmp_path / "run", tmp_path / "killed"
    with ExitStack() as stack:
        process, processes, server = running_with_a_result(stack, out, log)
        process.kill()
        assert process.wait(timeout=30) == -signal.SIGKILL
        gone = wait_until_gone(processes, {process.pid, server.pid}, GONE_WITHIN_S)
    print(f"SIGKILL: every process of the run gone {gone:.1f} s after")
    before = file_hashes(out / "results")
    assert 0 < len(before) < SIGNAL_ROWS // 4
    resume(out, before)


@pytest.mark.usefixtures("timed")
def test_the_second_of_two_simultaneous_runs_fails_on_the_lock_before_starting_a_server(
    tmp_path: Path,
) -> None:
    """Two ``ride run`` on one new ``--out`` at once, each to start its own server: one
    finishes, the other exits 1 with one line saying the directory is in use, without ever
    starting a server."""
    out = tmp_path / "run"
    with ExitStack() as stack:
        logs = [tmp_path / "first", tmp_path / "second"]
        processes = [launch(stack, out, log, RUN_ARGS) for log in logs]
        for process in processes:
            process.wait(timeout=300)
        results = sorted(
            (ran(p, log) for p, log in zip(processes, logs, strict=True)), key=lambda r: r.code
        )
    winner, loser = results
    assert winner.code == 0, winner.tail()
    assert_one_error_line(loser, 1, "in use")
    assert "Starting temporary server" not in loser.stderr, loser.tail()
    assert "Starting temporary server" in winner.stderr  # what the loser must not print
    assert_complete(out, {})
