"""The harness itself: a finished run copied and rerun is all "already stored"."""

from __future__ import annotations

from pathlib import Path

import pytest

from faults.harness import assert_complete, copy_run, file_hashes, run

pytestmark = pytest.mark.slow


def test_a_copied_finished_run_reruns_to_the_same_results(
    finished_run: Path, tmp_path: Path
) -> None:
    out = copy_run(finished_run, tmp_path / "run")
    before = file_hashes(out / "results")
    ran = run(out)
    assert ran.code == 0, ran.tail()
    assert "already stored" in ran.stderr
    assert_complete(out, before)
