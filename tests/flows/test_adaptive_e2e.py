"""`ride run --attack adaptive` end to end through the real CLI, Prefect server and Dask
workers: each defender gets the attack it declares itself open to, and the report says so."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from flows.cli import main

pytestmark = pytest.mark.slow

ARGS = [
    "--limit", "4", "--chunk-size", "4", "--attack", "adaptive", "--eot", "2",
    "--attack-iters", "2", "--defender", "none", "--defender", "median",
    "--ride-iters", "2", "--ride-checkpoints", "1",
]  # fmt: skip
ADAPTIVE = "adaptive-eot2-eps0.1-step0.02-it2"


def test_adaptive_run_records_and_reports_the_method_per_defender(
    prefect_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), *ARGS]) == 0
    printed = capsys.readouterr().out

    results = pd.read_parquet(out / "results")
    assert set(results["status"]) == {"ok"} and set(results["attack_id"]) == {ADAPTIVE}
    methods = {
        defender: {(p["gradient"], p["draws"]) for p in map(json.loads, group["attack_params"])}
        for defender, group in results.groupby("defender_id")
    }
    assert methods == {"none": {("exact", 1)}, "median-k3": {("bpda", 1)}}
    steps = pd.read_parquet(out / "steps")
    assert sorted(steps["iteration"].unique()) == [0, 1, 2]
    assert (steps["adv_clean_linf"] <= 0.1 + 1e-6).all()

    report = (out / "report.md").read_text()
    for text in (report, printed):
        assert f"| none | digits | {ADAPTIVE} | Linf 0.1 |" in text
        assert "| 4 | exact gradient |" in text and "| 4 | BPDA |" in text
        assert "Headline (robust accuracy under the strongest attack, per defence): none " in text
        assert "(exact gradient); median-k3 " in text
