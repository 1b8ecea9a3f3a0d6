"""The chunk tasks are thin wrappers of ``pipeline/``: what they add is Prefect's (names,
retries, the cache of reusable results); the work is tested in ``tests/pipeline``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.chunks import gray_box_images
from pipeline.classifier import train_state
from pipeline.config import RunConfig
from ride.classifiers import build_classifier, save_classifier
from storage.images import ImageStore, adv_name
from storage.layout import RunLayout
from tasks.cache import adversarial_images, for_run, trained_classifier_state
from tasks.evaluate import (
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
        trained_classifier_state: ("train-classifier", 1),
        adversarial_images: ("adversarial-images", 2),
    }
    for task, (name, retries) in tasks.items():
        assert (task.name, task.retries) == (name, retries)


def test_the_cached_tasks_run_the_pipeline_functions_and_no_cache_calls_them_plainly() -> None:
    assert adversarial_images.fn is gray_box_images
    assert trained_classifier_state.fn is train_state
    uncached = RunConfig.from_mapping({"cache": False})
    assert for_run(adversarial_images, uncached) is gray_box_images
    cached = for_run(adversarial_images, CFG)
    assert cached.persist_result and cached.cache_policy is not None


def test_attack_then_defend_tasks_store_images_and_rows(
    prefect_server: str, tmp_path: Path
) -> None:
    """(The attack task's cached sub-task talks to the session's Prefect server.)"""
    out = str(tmp_path)
    layout = RunLayout(tmp_path)
    save_classifier(build_classifier("mnist-cnn"), layout.classifier, "mnist-cnn")
    claim_run.fn(out, CFG)
    assert layout.run_toml.exists()
    assert prepare_images.fn(out, CFG) == 3
    attack, defender = CFG.attack_configs()[0], CFG.defender_configs()[0]
    assert attack_chunk.fn(out, CFG, attack, 2, 3).action == "ran"
    assert attack_chunk.fn(out, CFG, attack, 2, 3).action == "skipped"
    store = ImageStore(layout)
    clean = store.read_rows("clean", 2, 3)
    adv = store.read_rows(adv_name(attack.id), 2, 3)
    assert np.abs(adv - clean).max() <= attack.eps + 1e-6
    outcome = defend_chunk.fn(out, CFG, attack, defender, 2, 3)
    assert (outcome.action, outcome.count) == ("ran", 1)
    assert defend_chunk.fn(out, CFG, attack, defender, 2, 3).action == "skipped"
    record_failure.fn(out, CFG, attack, defender, 0, 2, "attack failed: boom")
    frame = pd.read_parquet(layout.results).sort_values("index")
    assert list(frame["index"]) == [0, 1, 2]
    assert list(frame["status"]) == ["failed", "failed", "ok"]
