"""The fault-injection suite's harness: the real ``ride`` command line in a subprocess, on
small runs, and the checks every fault test makes.

A fault test (1) copies a finished small run (:func:`copy_run`), (2) injects one fault, (3)
runs the real CLI (:func:`ride`) and checks what the user sees (:func:`assert_one_error_line`:
the exit status, one ``ride:`` line on stderr, no traceback), then (4) reruns to repair and
checks the run (:func:`assert_complete`: every row present exactly once, rows that were
finished before the fault byte-identical).

Faults inside the run's processes (a full disk after the first file) are injected by
``tests/faults/inject/sitecustomize.py``, which every Python process of the run (the CLI and
its Dask workers) imports when :func:`inject` puts its folder on ``PYTHONPATH``.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import traceback
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from storage.results import read_results

REPO = Path(__file__).resolve().parents[2]
INJECT = Path(__file__).resolve().parent / "inject"

RUN_ARGS = [
    "--limit", "8", "--chunk-size", "4", "--workers", "1", "--no-compact",
    "--attack", "none", "--attack", "fgsm", "--defender", "none", "--defender", "median",
]  # fmt: skip
"""The small run every fault test starts from: 2 chunks x 2 attacks x 2 defenders."""

EXPECTED_ROWS = 8 * 2 * 2
"""Result rows of a complete :data:`RUN_ARGS` run."""


@dataclass(frozen=True)
class Ran:
    """A finished ``ride`` command: exit status and its two streams."""

    code: int
    stdout: str
    stderr: str

    @property
    def ride_lines(self) -> list[str]:
        """The lines of stderr that ``ride`` itself wrote (Prefect's log lines aside)."""
        return [line for line in self.stderr.splitlines() if line.startswith("ride:")]

    def tail(self, lines: int = 40) -> str:
        return "\n".join((self.stdout + "\n" + self.stderr).splitlines()[-lines:])


def environment(**extra: str) -> dict[str, str]:
    """This process's environment (the session's Prefect API, cache and home) plus ``extra``;
    an ``extra`` value of ``""`` removes that variable."""
    env = {**os.environ, **extra}
    return {k: v for k, v in env.items() if v != ""}


def inject(**faults: str) -> dict[str, str]:
    """An environment in which every Python process of the run imports the fault injector
    (``tests/faults/inject/sitecustomize.py``) with ``faults`` (``RIDE_FAULT_*`` variables)."""
    path = os.pathsep.join(p for p in (str(INJECT), os.environ.get("PYTHONPATH", "")) if p)
    return environment(PYTHONPATH=path, **faults)


def ride(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> Ran:
    """Run ``python -m flows.cli ARGS`` to its end, in the repository, in its own session."""
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=REPO,
        env=environment() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
    )
    return Ran(done.returncode, done.stdout, done.stderr)


def ride_here(*args: str) -> Ran:
    """``ride ARGS`` through :func:`flows.cli.main` in this process, for a command that ends
    before any server or worker starts: a refusal by the preflight, ``ride report``, ``ride
    compact``. The same code from the argument parser to the exit status as :func:`ride`,
    without a fresh interpreter's seconds of imports; an exception that escapes ``main`` is
    written to stderr as a traceback, as the process would have written it. Commands that
    need their own environment, signals or servers use :func:`ride`."""
    from flows.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        try:
            code = main(list(args))
        except SystemExit as exit:  # argparse's usage errors
            code = exit.code if isinstance(exit.code, int) else 1
        except BaseException:
            traceback.print_exc(file=stderr)
            code = 1
    return Ran(code, stdout.getvalue(), stderr.getvalue())


def run(out: Path, *extra: str, env: dict[str, str] | None = None) -> Ran:
    """``ride run --out OUT`` with :data:`RUN_ARGS` (and ``extra``)."""
    return ride("run", "--out", str(out), *RUN_ARGS, *extra, env=env)


def assert_one_error_line(ran: Ran, code: int, *fragments: str) -> str:
    """Exit status ``code``, exactly one ``ride:`` line on stderr holding every fragment, and
    no traceback anywhere. Returns that line."""
    assert ran.code == code, f"exit {ran.code}, expected {code}:\n{ran.tail()}"
    assert "Traceback" not in ran.stderr + ran.stdout, ran.tail(80)
    assert len(ran.ride_lines) == 1, ran.tail()
    (line,) = ran.ride_lines
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


_ROWS: dict[str, pd.DataFrame] = {}
"""The rows of each per-task file :func:`file_hashes` saw, by sha256: a file that a
compaction (``storage.compact``) merged away is checked by its rows."""


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every visible per-task Parquet file in ``folder`` by name."""
    hashes = {}
    for path in sorted(folder.glob("*.parquet")):
        if path.name.startswith("."):
            continue
        data = path.read_bytes()
        hashes[path.name] = digest = hashlib.sha256(data).hexdigest()
        if digest not in _ROWS:
            try:
                _ROWS[digest] = pd.read_parquet(io.BytesIO(data))
            except Exception:  # a file a test broke on purpose: it is checked by its bytes
                continue
    return hashes


def copy_run(source: Path, target: Path) -> Path:
    """A copy of the finished run ``source`` (its lock file left behind)."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".lock"))
    return target


def assert_complete(out: Path, before: dict[str, str], rows: int = EXPECTED_ROWS) -> pd.DataFrame:
    """Every row of the run present exactly once with status ok, and every result file of
    ``before`` (name -> sha256, the files finished before the fault) unchanged: the same
    bytes, or, merged into the compacted partitions, the same rows there."""
    frame = read_results(out / "results")
    keys = frame[["attack_id", "defender_id", "index"]]
    assert len(frame) == rows, f"{len(frame)} rows, expected {rows}"
    assert not keys.duplicated().any(), "a row is present twice"
    assert (frame["status"] == "ok").all(), frame.loc[frame["status"] != "ok", "error"].tolist()
    after = file_hashes(out / "results")
    changed = sorted(name for name, digest in before.items() if after.get(name, digest) != digest)
    assert not changed, f"results finished before the fault changed: {changed}"
    for name in sorted(set(before) - set(after)):  # merged into a partition by a compaction
        rows = _ROWS[before[name]]
        found = rows.merge(frame, how="left", on=list(rows.columns), indicator=True)
        assert (found["_merge"] == "both").all(), f"rows of {name} changed when compacted"
    return frame
