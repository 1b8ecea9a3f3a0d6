"""The overhead benchmark does the same work both ways, checks that the accuracies agree and
ends with one JSON line (run here on small files in MNIST's format)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datafiles import write_mnist

from benchmarks.pipeline_overhead import main
from ride.classifiers import build_classifier, save_classifier

pytestmark = pytest.mark.slow


def test_the_benchmark_compares_a_plain_loop_with_ride_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "mnist"
    write_mnist(data, "train", 8, seed=1, gz=True)
    write_mnist(data, "t10k", 12, seed=2, gz=True)
    weights = tmp_path / "classifier.pt"
    save_classifier(build_classifier("mnist-cnn", seed=0), weights, "mnist-cnn")
    code = main(
        ["--sizes", "12", "--data-dir", str(data), "--weights", str(weights),
         "--workers", "1", "--chunk-size", "6", "--work", str(tmp_path / "work")]
    )  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    summary = json.loads(lines[-1])
    (only,) = summary["runs"]
    assert only["images"] == 12 and only["same_accuracies"] is True
    assert only["result_files"] == 3 * 3  # compacted: one file per attack x defender
    # The ratio of the unrounded times; the printed times are rounded to 0.01 s.
    plain, piped = only["plain_s"], only["ride_run_s"]
    assert (
        piped / (plain + 0.005) - 0.01 <= only["ratio"] <= piped / max(plain - 0.005, 1e-3) + 0.01
    )
    assert only["ratio"] > 1
    assert lines[-2].startswith("| 12 |")
    assert not (tmp_path / "work" / "run-12").exists()  # the run folder is removed
