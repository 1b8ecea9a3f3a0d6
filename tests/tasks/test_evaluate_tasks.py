"""The chunk tasks are thin wrappers of ``pipeline/``: what they add is Prefect's (names,
retries, the run logger); the work is tested in ``tests/pipeline``."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline.config import RunConfig
from pipeline.plan import Task
from pipeline.run import Run
from ride.classifiers import build_classifier, save_classifier
from storage.files import WriteError
from storage.images import ImageStore, adv_name
from storage.layout import RunLayout
from tasks import evaluate
from tasks.evaluate import (
    Unwritable,
    attack_chunk,
    claim_run,
    defend_chunk,
    prepare_classifier,
    prepare_images,
    record_failure,
    report,
)

CFG = RunConfig.from_mapping(
    {"limit": 3, "chunk_size": 2, "attacks": ["fgsm"], "defenders": ["ride"],
     "ride_iters": 3, "ride_checkpoints": 2}
)  # fmt: skip


def test_tasks_keep_their_names_and_retries() -> None:
    tasks = {
        claim_run: ("claim-run-dir", 0),
        prepare_images: ("prepare-images", 2),
        prepare_classifier: ("prepare-classifier", 1),
        attack_chunk: ("attack-chunk", 2),
        defend_chunk: ("defend-chunk", 2),
        record_failure: ("record-failure", 0),
        report: ("report", 0),
    }
    for task, (name, retries) in tasks.items():
        assert (task.name, task.retries) == (name, retries)


@pytest.mark.slow
def test_attack_then_defend_tasks_store_images_and_rows(
    prefect_server: str, tmp_path: Path
) -> None:
    out = str(tmp_path)
    layout = RunLayout(tmp_path)
    save_classifier(build_classifier("mnist-cnn"), layout.classifier, "mnist-cnn")
    claim_run.fn(out, CFG)
    assert layout.run_toml.exists()
    assert prepare_images.fn(out, CFG) == 3
    run = Run.of(layout, CFG, 3)
    attack, defender = run.attacks[0], run.defenders[0]
    assert attack_chunk.fn(run, Task.attack_chunk(attack, 2, 3)).action == "ran"
    assert attack_chunk.fn(run, Task.attack_chunk(attack, 2, 3)).action == "skipped"
    store = ImageStore(layout)
    clean = store.read_rows("clean", 2, 3)
    adv = store.read_rows(adv_name(attack.id), 2, 3)
    assert np.abs(adv - clean).max() <= attack.eps + 1e-6
    outcome = defend_chunk.fn(run, Task.defence_chunk(attack, defender, 2, 3))
    assert (outcome.action, outcome.count) == ("ran", 1)
    assert defend_chunk.fn(run, Task.defence_chunk(attack, defender, 2, 3)).action == "skipped"
    record_failure.fn(run, Task.defence_chunk(attack, defender, 0, 2), "attack failed: boom")
    frame = pd.read_parquet(layout.results).sort_values("index")
    assert list(frame["index"]) == [0, 1, 2]
    assert list(frame["status"]) == ["failed", "failed", "ok"]


def test_a_failed_write_is_returned_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    """Disk full: the task returns the one line (no retry, no traceback from Prefect)."""

    def full(*args: Any, **kwargs: Any) -> None:
        raise WriteError(errno.ENOSPC, "No space left on device", "/out/results/x.parquet")

    for name in ("attack_chunk", "defend_chunk"):
        monkeypatch.setattr(evaluate.chunks, name, full)
    monkeypatch.setattr(evaluate.store, "record_failure", full)
    run = Run.of(RunLayout(Path("/out")), CFG, 3)
    attack, defender = run.attacks[0], run.defenders[0]
    line = Unwritable("cannot write /out/results/x.parquet: No space left on device")
    assert attack_chunk.fn(run, Task.attack_chunk(attack, 0, 2)) == line
    assert defend_chunk.fn(run, Task.defence_chunk(attack, defender, 0, 2)) == line
    assert record_failure.fn(run, Task.defence_chunk(attack, defender, 0, 2), "boom") == line


def test_a_chunk_task_s_inputs_hash_for_prefect_and_differ_per_task() -> None:
    """Prefect hashes a task's inputs into its cache key (JSON, else cloudpickle): the run
    and the task must hash, and two tasks of one run must not share a key."""
    from prefect.utilities.hashing import hash_objects

    from pipeline.plan import plan

    run = Run.of(RunLayout(Path("/out")), CFG, 3)
    keys = {hash_objects(run, task, raise_on_failure=True) for task in plan(run)}
    assert len(keys) == len(plan(run)) > 1
