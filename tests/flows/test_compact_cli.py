"""``ride compact DIR``: what it did in one line, idempotent, one-line errors."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from storage.results import SCHEMA, read_results, result_key, write_results

pytestmark = pytest.mark.slow  # each test runs `ride compact` as a subprocess

REPO = Path(__file__).resolve().parents[2]


def ride(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )


def make_run(root: Path) -> Path:
    """A run folder holding 2 attacks x 2 defenders x 2 tasks of 3 images (no real run)."""
    for attack_id in ("none", "fgsm-eps0.1"):
        for defender_id in ("none", "median-k3"):
            for start in (0, 3):
                rows = []
                for index in range(start, start + 3):
                    row = {name: None for name in SCHEMA.names}
                    row.update(
                        run_id="digits-abc", dataset="digits", index=index, label=index,
                        attack_id=attack_id, attack=attack_id.split("-")[0], attack_params="{}",
                        defender_id=defender_id, defender=defender_id.split("-")[0],
                        defender_params="{}", seed=0, status="ok", correct_defended=index % 2 == 0,
                    )  # fmt: skip
                    rows.append(row)
                write_results(
                    root / "results", result_key(attack_id, defender_id, start, start + 3), rows
                )
    return root


def hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_compact_says_what_it_did_and_a_second_call_nothing(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    before = read_results(run / "results").sort_values(["attack_id", "defender_id", "index"])
    done = ride("compact", str(run))
    assert done.returncode == 0, done.stderr
    assert "merged 8 per-task files (24 rows) into 4 partitions in " in done.stdout
    assert done.stdout.strip().endswith(" s") and not done.stderr
    after = read_results(run / "results").sort_values(["attack_id", "defender_id", "index"])
    pd.testing.assert_frame_equal(after.reset_index(drop=True), before.reset_index(drop=True))
    stored = hashes(run / "results")
    again = ride("compact", str(run))
    assert again.returncode == 0 and "nothing to compact" in again.stdout
    assert hashes(run / "results") == stored


def test_compact_errors_are_one_line(tmp_path: Path) -> None:
    missing = ride("compact", str(tmp_path / "nowhere"))
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"ride: error: {tmp_path / 'nowhere'} does not exist"
    (tmp_path / "empty").mkdir()
    not_run = ride("compact", str(tmp_path / "empty"))
    assert not_run.returncode == 1 and len(not_run.stderr.strip().splitlines()) == 1
    assert "has no results/ folder (not a `ride run` directory?)" in not_run.stderr
    run = make_run(tmp_path / "run")
    broken = run / "results" / f"{result_key('none', 'none', 3, 6)}.parquet"
    broken.write_bytes(broken.read_bytes()[:50])
    stored = hashes(run / "results")
    unreadable = ride("compact", str(run))
    assert unreadable.returncode == 1 and "Traceback" not in unreadable.stderr
    (line,) = unreadable.stderr.strip().splitlines()
    assert line.startswith("ride: error: ") and f"{broken} is unreadable" in line
    assert hashes(run / "results") == stored  # nothing changed


def test_compact_is_in_the_help() -> None:
    shown = ride("compact", "--help")
    assert shown.returncode == 0 and "hive-partitioned" in shown.stdout
    assert "compact" in ride("--help").stdout
