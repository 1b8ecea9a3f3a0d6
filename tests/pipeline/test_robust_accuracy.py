"""The robust accuracy of a randomised defender (ride/robustness.py, pipeline/whitebox.py,
pipeline/chunks.py): the attacker's choice of iterate is kept apart from the evaluation, whose
fresh draws no attacker draw shares, and the statistic measures robustness, not randomness.

A toy world keeps the numbers known: an image's class is its mean grey level times 10
(rounded), the classifier reads exactly that, and the defender, with probability 0.3 per
draw (from the draw's seed alone), brightens the image by one class: a draw is right with
probability 0.7 whatever the attack.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from torch import Tensor, nn

import pipeline.chunks as chunks
import pipeline.whitebox as whitebox
from pipeline.chunks import defend_rows
from pipeline.config import RunConfig
from pipeline.rows import Row
from pipeline.whitebox import WhiteBoxChunk, adaptive_attack
from ride.attacks import BPDAEOT, NoAttack
from ride.defenders import DefenderBase
from storage.images import ImageStore, adaptive_adv_name, adaptive_final_name
from storage.layout import RunLayout

WRONG = 0.3  # the chance that one draw of the defender misleads the classifier
LOG = logging.getLogger("test_robust_accuracy")


class Grey(nn.Module):
    """Class = round(10 x mean grey level), as logits peaked at that class."""

    def forward(self, x: Tensor) -> Tensor:
        level = x.mean(dim=(1, 2, 3)) * 10  # (B,)
        return -((torch.arange(10, dtype=x.dtype).view(1, 10) - level.view(-1, 1)) ** 2)


@dataclass(frozen=True)
class Flaky(DefenderBase):
    """Right with probability 0.7 per draw; records every seed it is given."""

    seen: list[int] = field(default_factory=list, compare=False, repr=False)

    name: ClassVar[str] = "flaky"
    randomised: ClassVar[bool] = True
    cost_hint: ClassVar[float | None] = 1.0

    def __call__(self, x: Tensor, seeds: Sequence[int] | None = None) -> Tensor:
        assert seeds is not None
        self.seen.extend(int(s) for s in seeds)
        wrong = torch.tensor([random.Random(int(s)).random() < WRONG for s in seeds])
        return torch.where(wrong.view(-1, 1, 1, 1), (x + 0.1).clamp(0, 1), x)


def _images(count: int) -> tuple[Tensor, Tensor]:
    labels = torch.arange(count) % 8 + 1  # classes 1..8: a brightened one stays in range
    return (labels.float() / 10).view(-1, 1, 1, 1).expand(count, 1, 4, 4).clone(), labels


def _config(recheck: int) -> RunConfig:
    return RunConfig.from_mapping({"attacks": ["none"], "defenders": ["none"], "recheck": recheck})


def _mean(rows: list[Row], column: str) -> float:
    return sum(float(row[column]) for row in rows) / len(rows)


def _no_attack(recheck: int, count: int = 400) -> list[Row]:
    x, y = _images(count)
    _, rows = defend_rows(_config(recheck), NoAttack(), Flaky(), 0, x, y, x, Grey())
    return rows


def _white_box(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recheck: int, count: int = 200
) -> tuple[Flaky, list[Row], list[int], list[Row]]:
    """A 5-step BPDA with 3 draws per iterate and a budget too small to change a class:
    every iterate is, to the classifier, the clean image. Returns the defender, the result
    rows, the seeds the attacker used and its step rows."""
    defender = Flaky()
    for module in (chunks, whitebox):  # the defender as it is, seen by every call
        monkeypatch.setattr(module, "executed_defender", lambda cfg, d: defender)
    cfg, attack = _config(recheck), BPDAEOT(eps=1e-4, step=1e-4, iters=5, eot=3)
    layout = RunLayout(tmp_path)
    x, y = _images(count)
    store = ImageStore(layout)
    for name in (adaptive_adv_name, adaptive_final_name):
        store.ensure_array(name(attack.id, defender.id), tuple(x.shape), count)
    chunk = WhiteBoxChunk(cfg, attack, defender, 0, x, y, Grey())
    attacked = adaptive_attack(layout, chunk, "key", LOG)
    attacker_seeds = list(defender.seen)
    defender.seen.clear()
    _, rows = defend_rows(
        cfg, attack, defender, 0, x, y, attacked.choice.images, Grey(), whitebox=attacked
    )
    return defender, rows, attacker_seeds, attacked.rows


def test_without_an_attack_the_robust_accuracy_is_the_accuracy_per_draw_for_any_r() -> None:
    one, many = _no_attack(1), _no_attack(8)
    assert _mean(one, "recheck_correct") == pytest.approx(1 - WRONG, abs=0.06)
    assert _mean(many, "recheck_correct") == pytest.approx(1 - WRONG, abs=0.03)
    # the count that needs every draw right falls as draws are added: 0.7, then 0.7^8
    assert _mean(one, "correct_every_draw") == pytest.approx(1 - WRONG, abs=0.06)
    assert _mean(many, "correct_every_draw") < 0.12
    # the vote of 8 draws is right when at least 5 are (a 4-4 tie counts as wrong)
    at_least_5 = sum(math.comb(8, k) * 0.7**k * 0.3 ** (8 - k) for k in range(5, 9))
    assert _mean(many, "recheck_majority") == pytest.approx(at_least_5, abs=0.05)  # 0.806


def test_the_attackers_choice_does_not_bias_the_fresh_draws(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, rows, _, _ = _white_box(tmp_path, monkeypatch, recheck=4)
    # The attacker picks the iterate its own 3 draws liked least (1 - 0.7^3 of the images
    # show it a wrong draw somewhere): a chance event the fresh draws do not share.
    assert _mean(rows, "attacker_correct") < 0.6
    assert _mean(rows, "recheck_correct") == pytest.approx(1 - WRONG, abs=0.05)
    assert _mean(rows, "final_correct") == pytest.approx(1 - WRONG, abs=0.05)
    assert _mean(rows, "correct_every_draw") < 0.01  # right at 18 attacker + 4 fresh draws
    assert {row["attacker_draws"] for row in rows} == {3}


def test_the_evaluations_seeds_are_disjoint_from_every_attacker_draw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    defender, _, attacker_seeds, _ = _white_box(tmp_path, monkeypatch, recheck=4, count=20)
    evaluation_seeds = defender.seen
    assert len(attacker_seeds) == 20 * 6 * 3  # every image at iterates 0..5, 3 draws each
    assert len(evaluation_seeds) >= 20 * 4  # 4 fresh draws (more where the final differs)
    assert not set(attacker_seeds) & set(evaluation_seeds)
    assert len(set(attacker_seeds)) == len(attacker_seeds)  # no draw repeats another


def test_the_attacks_own_generator_is_seeded_apart_from_every_evaluation_draw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seeded: list[int] = []
    real = whitebox.generator_for

    def recording(seed: int, device: torch.device) -> torch.Generator:
        seeded.append(seed)
        return real(seed, device)

    monkeypatch.setattr(whitebox, "generator_for", recording)
    defender, _, attacker_seeds, _ = _white_box(tmp_path, monkeypatch, recheck=4, count=20)
    assert len(seeded) == 1  # one generator for the chunk's random starts and restarts
    assert seeded[0] not in set(defender.seen) | set(attacker_seeds)


def test_the_chosen_iterate_is_the_one_least_often_right_the_later_on_a_tie(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, rows, _, steps = _white_box(tmp_path, monkeypatch, recheck=1, count=40)
    assert sorted({step["iteration"] for step in steps}) == list(range(6))  # 0..iters
    for row in rows:
        seen = {s["iteration"]: s["attacker_correct"] for s in steps if s["index"] == row["index"]}
        lowest = min(seen.values())
        assert row["attacker_correct"] == pytest.approx(lowest)
        assert row["chosen_iteration"] == max(k for k, v in seen.items() if v == lowest)
        assert row["correct_every_draw"] <= (lowest == 1.0)
