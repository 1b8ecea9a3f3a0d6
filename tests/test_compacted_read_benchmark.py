"""The compacted-read benchmark runs at a tiny size and reports its figures."""

from __future__ import annotations

import json

import pytest

from benchmarks.compacted_read import main


@pytest.mark.slow
def test_benchmark_prints_a_table_and_a_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    summary = main(["--rows", "400", "--repeat", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("400 rows, 40 per-task files")
    assert [line.split()[0] for line in lines[1:4]] == ["layout", "flat", "compacted"]
    assert json.loads(lines[-1]) == summary
    assert summary["rows"] == 400 and summary["flat_files"] == 40
    assert summary["flat_read_s"] > 0 and summary["compacted_read_s"] > 0  # type: ignore[operator]
