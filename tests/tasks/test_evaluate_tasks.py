"""Chunk task logic, tested without Prefect (``task.fn`` and the plain helpers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ride.classifiers import build_classifier, save_classifier
from storage.images import ImageStore, adv_name
from storage.layout import RunLayout
from storage.results import SCHEMA
from tasks.config import RunConfig
from tasks.evaluate import (
    attack_chunk,
    chunk_ranges,
    defend_chunk,
    defend_rows,
    prepare_images,
)

CFG = RunConfig(
    limit=3, chunk_size=2, attacks=("fgsm",), defenders=("ride",), ride_iters=3,
    ride_checkpoints=2,
)  # fmt: skip
VOLATILE = {"seconds", "worker"}


def test_chunk_ranges_cover_every_image_once() -> None:
    assert chunk_ranges(5, 2) == [(0, 2), (2, 4), (4, 5)]
    assert chunk_ranges(4, 10) == [(0, 4)]


def test_rows_of_a_chunk_equal_rows_of_its_images_one_by_one() -> None:
    """Per-image seeds: a chunk's results do not depend on the chunk size (up to float32
    rounding: the batched RIDE engine's grouped convolution rounds differently per size)."""
    torch.manual_seed(0)
    model = build_classifier("mnist-cnn").eval()
    clean = torch.rand(3, 1, 28, 28)
    labels = torch.tensor([1, 2, 3])
    adv = (clean + 0.05).clamp(0, 1)
    attack = CFG.attack_configs()[0]
    defender = CFG.defender_configs()[0]
    together, rows = defend_rows(CFG, attack, defender, 0, clean, labels, adv, model)
    for i in range(3):
        alone, row = defend_rows(
            CFG, attack, defender, i, clean[i : i + 1], labels[i : i + 1], adv[i : i + 1], model
        )
        torch.testing.assert_close(alone[0], together[i], atol=1e-5, rtol=0)
        for key, value in row[0].items():
            if key in VOLATILE:
                continue
            if isinstance(value, float):
                assert value == pytest.approx(rows[i][key], abs=1e-5), key
            else:
                assert value == rows[i][key], key
    assert set(rows[0]) == set(SCHEMA.names)
    assert rows[1]["index"] == 1 and rows[1]["label"] == 2


def test_attack_then_defend_tasks_store_images_and_rows(tmp_path: Path) -> None:
    out = str(tmp_path)
    layout = RunLayout(tmp_path)
    save_classifier(build_classifier("mnist-cnn"), layout.classifier, "mnist-cnn")
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
    frame = pd.read_parquet(layout.results)
    assert list(frame["index"]) == [2] and frame["status"].item() == "ok"
    assert frame["adv_clean_linf"].item() <= attack.eps + 1e-6
