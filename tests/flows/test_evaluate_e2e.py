"""One end-to-end run through the real path: `ride run` -> temporary Prefect API server ->
local Dask cluster of two worker processes -> Zarr + Parquet, then resume and failures (of a
defence chunk, and of an attack chunk that defence chunks wait for)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from analysis.cards import validate_card
from flows.cli import main
from storage.results import SCHEMA

pytestmark = pytest.mark.slow

ARGS = [
    "--limit", "4", "--chunk-size", "2", "--workers", "2", "--no-compact",
    "--attack", "none", "--attack", "pgd",
    "--defender", "none", "--defender", "median", "--defender", "ride",
    "--ride-iters", "3", "--ride-checkpoints", "2",
]  # fmt: skip
PGD = "pgd-eps0.1-step0.02-it10"
RIDE = "ride-K3-T2-a0.9-s0.5"


def latest_artifact_markdown(key: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    assert artifacts, f"no artifact {key!r}"
    latest = max(artifacts, key=lambda artifact: str(artifact.created))
    return str(latest.data)


def snapshot(results: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(results.glob("*.parquet"))}


def test_run_resume_and_failed_chunk(prefect_server: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), *ARGS]) == 0

    # Parquet: one file per (attack, defender, chunk), one row per (image, attack, defender).
    results = out / "results"
    first = snapshot(results)
    assert len(first) == 2 * 3 * 2
    frame = pd.read_parquet(results)
    assert list(frame.columns) == SCHEMA.names
    assert len(frame) == 4 * 2 * 3 and set(frame["status"]) == {"ok"}
    assert (
        frame.groupby(["attack_id", "defender_id"])["index"]
        .apply(sorted)
        .map(list)
        .eq([[0, 1, 2, 3]] * 6)
        .all()
    )
    assert set(frame["defender_id"]) == {"none", "median-k3", RIDE}
    assert frame["seconds"].gt(0).all() and frame["error"].isna().all()
    none_none = frame[(frame.attack_id == "none") & (frame.defender_id == "none")]
    assert (none_none["pred_defended"] == none_none["pred_clean"]).all()
    assert json.loads(frame.loc[frame.attack_id == PGD, "attack_params"].iloc[0])["eps"] == 0.1

    # Zarr: clean, adversarial and defended arrays, complete, with the eps-ball respected.
    group = zarr.open_group(str(out / "images.zarr"), mode="r")
    clean = np.asarray(group["clean"])
    adv = np.asarray(group[f"adv/{PGD}"])
    assert clean.shape == (4, 1, 28, 28)
    assert np.abs(adv - clean).max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    for name in ("defended/none/median-k3", f"defended/{PGD}/{RIDE}", f"defended/{PGD}/median-k3"):
        array = np.asarray(group[name])
        assert array.shape == (4, 1, 28, 28) and not np.isnan(array).any()
    assert (out / "classifier.pt").exists() and (out / "run.toml").exists()
    report = (out / "report.md").read_text()
    assert "| attack | none | median-k3 | ride-K3-T2-a0.9-s0.5 |" in report
    assert latest_artifact_markdown("ride-accuracy") == report  # attached to the flow run
    validate_card(json.loads((out / "card.json").read_text()))  # the report step's card

    # Resume: the same command writes nothing new.
    assert main(["run", "--out", str(out), *ARGS]) == 0
    assert snapshot(results) == first

    # A chunk whose adversarial images are unusable (they decode, but hold inf, which the
    # median filter passes on against the defender protocol) fails after its retries, is
    # recorded as failed rows, and the run goes on; the exit status says so. (A chunk that
    # does not decode is recomputed instead: tests/faults/test_storage.py.)
    (results / f"{PGD}__median-k3__0000002-0000004.parquet").unlink()
    zarr.open_array(str(out / "images.zarr" / "adv" / PGD), mode="r+")[2:4] = np.inf
    chunk = out / "images.zarr" / "adv" / PGD / "c" / "1" / "0" / "0" / "0"
    assert main(["run", "--out", str(out), *ARGS]) == 3
    frame = pd.read_parquet(results)
    failed = frame[frame["status"] == "failed"]
    assert sorted(failed["index"]) == [2, 3] and failed["error"].str.len().gt(0).all()
    assert len(frame) == 24

    # Repairing the input (a deleted chunk loses its done marker and is recomputed) and
    # rerunning supersedes the failed rows.
    chunk.unlink()
    assert main(["run", "--out", str(out), *ARGS]) == 0
    frame = pd.read_parquet(results)
    assert len(frame) == 24 and set(frame["status"]) == {"ok"}
    repaired = snapshot(results)
    assert {k: v for k, v in repaired.items() if "median" not in k or "0000002" not in k} == {
        k: v for k, v in first.items() if "median" not in k or "0000002" not in k
    }

    # `ride report` reads only Parquet and writes report.md.
    assert main(["report", str(out)]) == 0

    # An attack chunk that fails (its clean rows hold inf, so its images come out NaN, which
    # the store refuses): the defence chunks waiting for it never run, and are recorded as
    # failed with the attack's error.
    for path in results.glob(f"{PGD}__*__0000002-0000004.parquet"):
        path.unlink()
    (out / ".done" / "adv" / PGD / f"{2:09d}").unlink()
    zarr.open_array(str(out / "images.zarr" / "clean"), mode="r+")[2:4] = np.inf
    assert main(["run", "--out", str(out), *ARGS]) == 3
    frame = pd.read_parquet(results)
    failed = frame[frame["status"] == "failed"]
    assert len(frame) == 24 and len(failed) == 3 * 2
    assert set(failed["attack_id"]) == {PGD} and sorted(set(failed["index"])) == [2, 3]
    assert failed["error"].str.startswith("attack failed: ").all()
    assert failed["error"].nunique() == 1 and len(failed["error"].iloc[0].splitlines()) == 1


def test_a_default_run_sizes_its_tasks_compacts_its_results_and_resumes_on_them(
    prefect_server: str, tmp_path: Path
) -> None:
    """With the defaults (``--chunk-size auto``, compaction at the end) the filters run in
    one attack chunk per attack, the results end as one file per (attack, defender), a rerun
    finds everything stored on that layout and changes no file, and the report says where
    the time went."""
    from storage.results import read_results

    out = tmp_path / "run"
    args = ["--limit", "6", "--workers", "1", "--attack", "none", "--attack", "fgsm",
            "--defender", "none", "--defender", "median"]  # fmt: skip
    assert main(["run", "--out", str(out), *args]) == 0
    results = out / "results"
    assert not list(results.glob("*.parquet"))  # no per-task file is left
    parts = sorted(p.relative_to(results) for p in results.rglob("*.parquet"))
    assert [p.parts[:2] for p in parts] == [
        (f"attack_id={a}", f"defender_id={d}")
        for a in ("fgsm-eps0.1", "none")
        for d in ("median-k3", "none")
    ]
    frame = read_results(results)
    assert len(frame) == 6 * 2 * 2 and set(frame["status"]) == {"ok"}
    # One attack chunk per attack: every row of an attack shares its task's start time.
    assert frame.groupby("attack_id")["task_started_at"].nunique().max() == 1
    before = {p: p.read_bytes() for p in results.rglob("*") if p.is_file()}
    assert main(["run", "--out", str(out), *args]) == 0
    assert {p: p.read_bytes() for p in results.rglob("*") if p.is_file()} == before
    assert "## Where the time went" in (out / "report.md").read_text()
    assert main(["report", str(out)]) == 0
