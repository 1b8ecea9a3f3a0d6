"""Caching across runs: a second run into another directory that adds a defender reuses the
trained classifier and every gray-box adversarial chunk (Prefect reports them Cached);
changing an attack setting recomputes only that attack's chunks."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from flows.cli import main

pytestmark = pytest.mark.slow

BASE = [
    "--limit", "4", "--chunk-size", "2", "--workers", "1",
    "--attack", "none", "--attack", "fgsm", "--defender", "none",
]  # fmt: skip
VOLATILE = ["seconds", "worker", "run_id"]


def task_states(flow_run_name_fragment: str | None = None) -> Counter[tuple[str, str]]:
    """(task name, state name) counts of the latest ``ride-evaluate`` flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterId,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        (latest,) = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["ride-evaluate"])),
            sort=FlowRunSort.START_TIME_DESC,
            limit=1,
        )
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[latest.id]))
        )
    return Counter(
        (run.name.rsplit("-", 1)[0], run.state.name if run.state else "?") for run in runs
    )


def rows(out: Path, attack_prefix: str) -> pd.DataFrame:
    frame = pd.read_parquet(out / "results")
    frame = frame[frame["attack_id"].str.startswith(attack_prefix)]
    key = ["attack_id", "defender_id", "index"]
    return frame.drop(columns=VOLATILE).sort_values(key).reset_index(drop=True)


def test_a_second_run_reuses_the_classifier_and_the_adversarial_images(
    prefect_server: str, tmp_path: Path
) -> None:
    cache = ["--cache-dir", str(tmp_path / "cache")]
    first = tmp_path / "first"
    assert main(["run", "--out", str(first), *BASE, *cache]) == 0
    states = task_states()
    assert states[("train-classifier", "Completed")] == 1
    assert states[("adversarial-images", "Completed")] == 2  # two chunks

    # Another directory, one more defender: nothing that precedes the defence is redone.
    second = tmp_path / "second"
    assert main(["run", "--out", str(second), *BASE, "--defender", "median", *cache]) == 0
    states = task_states()
    assert states[("train-classifier", "Cached")] == 1
    assert states[("adversarial-images", "Cached")] == 2
    assert not states[("adversarial-images", "Completed")]
    assert (first / "classifier.pt").read_bytes() == (second / "classifier.pt").read_bytes()
    second_rows = rows(second, "fgsm")
    pd.testing.assert_frame_equal(
        rows(first, "fgsm"),
        second_rows[second_rows["defender_id"] == "none"].reset_index(drop=True),
    )

    # A changed attack setting: that attack is recomputed, the classifier still cached.
    third = tmp_path / "third"
    assert main(["run", "--out", str(third), *BASE, "--eps", "0.05", *cache]) == 0
    states = task_states()
    assert states[("train-classifier", "Cached")] == 1
    assert states[("adversarial-images", "Completed")] == 2
    assert not states[("adversarial-images", "Cached")]

    # --no-cache computes everything and asks the cache for nothing.
    fourth = tmp_path / "fourth"
    assert main(["run", "--out", str(fourth), *BASE, "--no-cache", *cache]) == 0
    states = task_states()
    assert not states[("train-classifier", "Cached")]
    assert not states[("adversarial-images", "Cached")]
    pd.testing.assert_frame_equal(rows(first, "fgsm"), rows(fourth, "fgsm"))
