"""White-box run end to end: `ride run --attack bpda --attack bpda-eot` through the real
Prefect server and Dask workers, the step table, the report and figures, and resume."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from flows.cli import main
from storage.results import VOLATILE_COLUMNS
from storage.steps import STEPS_SCHEMA

pytestmark = pytest.mark.slow

ARGS = [
    "--limit", "4", "--chunk-size", "2", "--workers", "2", "--no-compact",
    "--attack", "bpda", "--attack", "bpda-eot", "--eot", "2", "--attack-iters", "2",
    "--recheck", "2",
    "--defender", "none", "--defender", "median", "--defender", "ride",
    "--ride-iters", "5", "--ride-checkpoints", "1",
]  # fmt: skip
BPDA = "bpda-eps0.1-step0.02-it2"
EOT = "bpda-eot2-eps0.1-step0.02-it2"
RIDE = "ride-K5-T1-a0.9-s0.5"
VOLATILE = list(VOLATILE_COLUMNS)


def test_white_box_run_report_figures_and_resume(
    prefect_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), *ARGS]) == 0
    printed = capsys.readouterr().out
    assert "## White-box attacks (BPDA, BPDA+EOT)" in printed
    assert "Headline (robust accuracy under the strongest attack, per defence): none " in printed

    results = pd.read_parquet(out / "results")
    assert len(results) == 2 * 3 * 4 and set(results["status"]) == {"ok"}
    assert (results["recheck_draws"] == 2).all()
    assert not (results["correct_every_draw"] & ~results["correct_defended"]).any()
    assert results["chosen_iteration"].between(0, 2).all()  # the attacker's pick of 0..iters
    assert results["attacker_draws"].isin([1, 2]).all()  # BPDA 1, BPDA+EOT 2

    steps = pd.read_parquet(out / "steps")
    assert list(steps.columns) == STEPS_SCHEMA.names
    counts = steps.groupby(["attack_id", "defender_id", "index"])["iteration"].apply(sorted)
    assert len(counts) == 2 * 3 * 4 and all(list(c) == [0, 1, 2] for c in counts)
    # Through the identity defender BPDA is PGD: adversarial and defended predictions agree.
    none = steps[steps["defender_id"] == "none"]
    assert (none["pred_adv"] == none["pred_defended"]).all()
    assert (none["defended_adv_linf"] == 0).all()
    assert (steps["adv_clean_linf"] <= 0.1 + 1e-6).all()

    for name in ("accuracy_by_iteration.png", "distances.png", "examples.png"):
        assert (out / "figures" / name).stat().st_size > 10_000
    for attack in (BPDA, EOT):
        for defender in ("none", "median-k3", RIDE):
            assert (out / "images.zarr" / "adv" / attack / defender / "zarr.json").exists()

    # Resume: a BPDA x RIDE chunk lost its results, another its results and step rows.
    (out / "results" / f"{EOT}__{RIDE}__0000000-0000002.parquet").unlink()
    (out / "results" / f"{BPDA}__{RIDE}__0000002-0000004.parquet").unlink()
    (out / "steps" / f"{BPDA}__{RIDE}__0000002-0000004.parquet").unlink()
    assert main(["run", "--out", str(out), *ARGS]) == 0
    resumed = pd.read_parquet(out / "results")
    key = ["attack_id", "defender_id", "index"]
    pd.testing.assert_frame_equal(
        results.drop(columns=VOLATILE).sort_values(key).reset_index(drop=True),
        resumed.drop(columns=VOLATILE).sort_values(key).reset_index(drop=True),
    )
    pd.testing.assert_frame_equal(
        steps.sort_values([*key, "iteration"]).reset_index(drop=True),
        pd.read_parquet(out / "steps").sort_values([*key, "iteration"]).reset_index(drop=True),
    )
