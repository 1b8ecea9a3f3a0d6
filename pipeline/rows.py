"""The rows a chunk writes, built from the one declaration of their columns: the result
schema ``storage.results.SCHEMA`` and the step schema ``storage.steps.STEPS_SCHEMA``.

Every builder returns rows with exactly the schema's columns, in its order (:func:`complete`
raises on a missing or extra column, so a builder and its schema cannot drift apart
unnoticed); the distance columns are generated from the schema's ``DISTANCE_PAIRS`` x
``NORMS``; a failed row is the identity columns with every other column of the schema
empty.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import torch

from pipeline.config import RunConfig
from ride.attacks import Attack, BPDAStep
from ride.attacks.adaptive import ChoosesMethod
from ride.defenders import Defender
from ride.metrics import distances
from ride.robustness import Choice, majority_correct
from storage.results import DISTANCE_PAIRS, NORMS, SCHEMA, TIMING_COLUMNS
from storage.steps import STEPS_SCHEMA

Row = dict[str, Any]

PREDICTIONS = ("clean", "adv", "defended")
"""The images a result row classifies: ``pred_<kind>`` and ``correct_<kind>`` columns."""


def complete(row: Mapping[str, Any], schema: pa.Schema) -> Row:
    """``row`` in the column order of ``schema``; ValueError when the columns differ."""
    names = schema.names
    if set(row) != set(names):
        missing = sorted(set(names) - set(row))
        extra = sorted(set(row) - set(names))
        raise ValueError(f"row columns differ from the schema: missing {missing}, extra {extra}")
    return {name: row[name] for name in names}


def identity_columns(
    cfg: RunConfig, attack: Attack, defender: Defender, index: int, label: int
) -> Row:
    """What a result row is about: the run, the image, the attack and the defender.

    The params of an attack that chooses per defender (:class:`~ride.attacks.adaptive.Adaptive`,
    ``AdaptiveAPGD``: :class:`~ride.attacks.adaptive.ChoosesMethod`) also record the method
    it chose for this defender (``gradient``: exact or bpda, ``draws``); those of every other
    attack are its own params alone.
    """
    params: dict[str, Any] = dict(attack.params())
    if isinstance(attack, ChoosesMethod):
        params.update(attack.method(defender))
    return {
        "run_id": cfg.run_id,
        "dataset": cfg.dataset,
        "index": index,
        "label": label,
        "attack_id": attack.id,
        "attack": attack.name,
        "attack_params": json.dumps(params, sort_keys=True),
        "defender_id": defender.id,
        "defender": defender.name,
        "defender_params": json.dumps(defender.params(), sort_keys=True),
        "seed": cfg.seed,
    }


def distance_columns(
    clean: torch.Tensor, adversarial: torch.Tensor, defended: torch.Tensor
) -> list[dict[str, float]]:
    """Per image: the three distances of Fig. 7a (``DISTANCE_PAIRS``) in the three norms."""
    pairs = dict(
        zip(
            DISTANCE_PAIRS,
            (
                distances(adversarial, clean),
                distances(defended, clean),
                distances(defended, adversarial),
            ),
            strict=True,
        )
    )
    return [
        {f"{pair}_{norm}": float(pairs[pair][norm][i]) for pair in DISTANCE_PAIRS for norm in NORMS}
        for i in range(len(clean))
    ]


@dataclass(frozen=True)
class Timing:
    """Where a task's time went (seconds): ``compute`` (attack, defence, classification) and
    ``overhead`` inside the task (loading, storing, set-up); when it ran (Unix seconds)."""

    compute: float
    overhead: float
    started_at: float
    finished_at: float

    def scaled(self, share: float) -> Timing:
        """``share`` of the time (a defender's part of work its attack chunk did for all)."""
        return Timing(
            self.compute * share, self.overhead * share, self.started_at, self.finished_at
        )

    def plus_work(self, other: Timing) -> Timing:
        """This task's timing plus the compute and overhead of ``other``, work done in
        another task (whose start and finish are not this task's)."""
        return Timing(
            self.compute + other.compute,
            self.overhead + other.overhead,
            self.started_at,
            self.finished_at,
        )

    def plus(self, other: Timing) -> Timing:
        """This time and ``other``'s, from the earlier start to the later finish."""
        return Timing(
            self.compute + other.compute,
            self.overhead + other.overhead,
            min(self.started_at, other.started_at),
            max(self.finished_at, other.finished_at),
        )


def with_timing(rows: Sequence[Mapping[str, Any]], timing: Timing) -> list[Row]:
    """``rows`` with their timing columns (``storage.results.TIMING_COLUMNS``): each row an
    equal share of ``timing``'s seconds, and the task's start and finish."""
    share = 1 / max(1, len(rows))
    return [
        {
            **row,
            "compute_seconds": timing.compute * share,
            "overhead_seconds": timing.overhead * share,
            "task_started_at": timing.started_at,
            "task_finished_at": timing.finished_at,
        }
        for row in rows
    ]


@dataclass(frozen=True)
class Verdict:
    """What defending and classifying one chunk found, per image (:mod:`ride.robustness`).

    ``predictions``: class indices (B,) of the clean image, the evaluated adversarial image
    (``adv``) and its defended draw 0 (``defended``); ``draw_predictions``: (R, B), each fresh
    re-check draw on the evaluated image; ``final_draw_correct``: (R, B), each draw on the
    attack's final output classified correctly; ``choice`` (white-box attacks): the iterate
    the attacker chose and what its own draws saw.
    """

    seeds: Sequence[int]
    predictions: Mapping[str, torch.Tensor]
    draw_predictions: torch.Tensor
    final_draw_correct: torch.Tensor
    distances: Sequence[Mapping[str, float]]
    choice: Choice | None = None


def result_rows(
    cfg: RunConfig,
    attack: Attack,
    defender: Defender,
    start: int,
    labels: torch.Tensor,
    verdict: Verdict,
    *,
    seconds: float,
    worker: str,
    device: str,
) -> list[Row]:
    """The ``ok`` result rows of a chunk; ``seconds`` spent on it in all, shared equally."""
    rows = []
    same = identity_columns(cfg, attack, defender, start, 0)  # what every row shares
    draw_correct = verdict.draw_predictions == labels.view(1, -1)  # (R, B)
    majority = majority_correct(verdict.draw_predictions, labels)
    choice = verdict.choice
    for i in range(len(labels)):
        label = int(labels[i])
        row = {**same, "index": start + i, "label": label}
        row["defender_seed"] = verdict.seeds[i]
        for kind in PREDICTIONS:
            predicted = int(verdict.predictions[kind][i])
            row[f"pred_{kind}"] = predicted
            row[f"correct_{kind}"] = predicted == label
        every_draw = bool(draw_correct[:, i].all())
        row.update(
            recheck_draws=cfg.recheck,
            recheck_correct=float(draw_correct[:, i].float().mean()),
            recheck_majority=bool(majority[i]),
            final_correct=float(verdict.final_draw_correct[:, i].float().mean()),
            attacker_draws=None if choice is None else choice.attacker_draws,
            attacker_correct=None if choice is None else float(choice.attacker_correct[i]),
            chosen_iteration=None if choice is None else int(choice.iteration[i]),
            correct_every_draw=every_draw
            and (choice is None or bool(choice.every_draw_correct[i])),
            **verdict.distances[i],
            seconds=seconds / len(labels),
            **dict.fromkeys(TIMING_COLUMNS),  # filled when stored (with_timing)
            worker=worker,
            device=device,
            status="ok",
            error=None,
        )
        rows.append(complete(row, SCHEMA))
    return rows


def failed_rows(
    cfg: RunConfig,
    attack: Attack,
    defender: Defender,
    start: int,
    labels: Sequence[int],
    error: str,
) -> list[Row]:
    """The ``failed`` rows of a chunk: who and what, every measured column empty."""
    rows = []
    same = identity_columns(cfg, attack, defender, start, 0)  # what every row shares
    for i, label in enumerate(labels):
        row = {**same, "index": start + i, "label": int(label)}
        row.update(
            {column: None for column in SCHEMA.names if column not in row},
            status="failed",
            error=error,
        )
        rows.append(complete(row, SCHEMA))
    return rows


def step_rows(
    cfg: RunConfig,
    attack: Attack,
    defender: Defender,
    start: int,
    clean: torch.Tensor,
    labels: torch.Tensor,
    step: BPDAStep,
) -> list[Row]:
    """The ``steps/`` rows of one attack iterate, one per image: what the attacker saw."""
    columns = distance_columns(clean, step.adversarial, step.defended)
    rows = []
    for i in range(len(clean)):
        label = int(labels[i])
        row = {
            "run_id": cfg.run_id,
            "dataset": cfg.dataset,
            "index": start + i,
            "label": label,
            "attack_id": attack.id,
            "defender_id": defender.id,
            "iteration": step.iteration,
            "pred_adv": int(step.pred_adversarial[i]),
            "pred_defended": int(step.pred_defended[i]),
            "correct_adv": int(step.pred_adversarial[i]) == label,
            "correct_defended": int(step.pred_defended[i]) == label,
            "attacker_draws": step.attacker_draws,
            "attacker_correct": float(step.attacker_correct[i]),
            **columns[i],
        }
        rows.append(complete(row, STEPS_SCHEMA))
    return rows
