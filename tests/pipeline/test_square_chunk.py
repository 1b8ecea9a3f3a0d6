"""A defence chunk under the Square attack through its defender (``square-eot``): the attack
runs inside the chunk, reports every iterate of every image, and its chosen images are the
ones evaluated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.chunks import defend_chunk
from pipeline.config import RunConfig
from pipeline.plan import Task
from pipeline.run import Run
from pipeline.sampling import prepare_images
from ride.classifiers import build_classifier, save_classifier
from ride.robustness import choose_iterations
from storage.images import ImageStore, adaptive_adv_name, adaptive_final_name
from storage.layout import RunLayout
from storage.results import read_results
from storage.steps import read_steps

SQUARE = RunConfig.from_mapping(
    {"limit": 3, "chunk_size": 3, "attacks": ["square-eot"], "eot": 2, "attack_iters": 4,
     "recheck": 2, "defenders": ["median", "ride"], "ride_iters": 3, "ride_checkpoints": 1}
)  # fmt: skip


def test_a_square_chunk_stores_its_images_one_step_row_per_iterate_and_its_results(
    tmp_path: Path,
) -> None:
    layout = RunLayout(tmp_path)
    save_classifier(build_classifier("mnist-cnn", seed=1), layout.classifier, "mnist-cnn")
    assert prepare_images(layout, SQUARE) == 3
    run = Run.of(layout, SQUARE, 3)
    attack = run.attacks[0]
    assert attack.id == "square-eot2-eps0.1-it4"
    for defender in run.defenders:
        task = Task.defence_chunk(attack, defender, 0, 3)
        assert defend_chunk(run, task).action == "ran"
        assert defend_chunk(run, task).action == "skipped"

    store = ImageStore(layout)
    clean = store.read_rows("clean", 0, 3)
    steps = read_steps(layout.steps)
    results = read_results(layout.results).set_index(["defender_id", "index"])
    assert set(results["status"]) == {"ok"} and len(results) == 2 * 3
    for defender in run.defenders:
        chosen = store.read_rows(adaptive_adv_name(attack.id, defender.id), 0, 3)
        final = store.read_rows(adaptive_final_name(attack.id, defender.id), 0, 3)
        for images in (chosen, final):
            assert np.abs(images - clean).max() <= attack.eps + 1e-6
            assert images.min() >= 0.0 and images.max() <= 1.0
        rows = steps[steps["defender_id"] == defender.id]
        assert len(rows) == 3 * (4 + 1)  # every image at iterates 0..iters
        assert set(rows["attacker_draws"]) == {2}  # eot draws per query, on either defender
        fractions = rows.pivot_table(
            index="iteration", columns="index", values="attacker_correct"
        )  # (iters + 1, images)
        iteration = choose_iterations(torch.tensor(fractions.to_numpy()))
        assert results.loc[defender.id]["chosen_iteration"].tolist() == iteration.tolist()
