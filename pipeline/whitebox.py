"""The white-box attack of one chunk: BPDA (+EOT), or the adaptive attack (exact gradient or
BPDA, EOT or one draw, as the defender declares), through the defender it is evaluated on.

Its adversarial images depend on the defender, so the attack runs inside that defender's
chunk task; it stores them under ``adv/<attack>/<defender>`` and tracks every iterate (one
``steps/`` row per image and iterate, the data of the paper's Fig. 7). A resumed chunk
whose attack was stored (images and step file, both reading back whole) reuses it instead of
attacking again; a stored part that does not read back is dropped and the attack redone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pipeline.config import RunConfig
from pipeline.execution import Logger, defender_seeds, executed_defender
from pipeline.rows import Row, step_rows
from ride.attacks import Attack, BPDAStep
from ride.attacks.adaptive import ChoosesMethod, method_text
from ride.defenders import Defender
from ride.seeding import derive_seed, generator_for
from storage.files import Note
from storage.images import ImageStore, adaptive_adv_name
from storage.layout import RunLayout
from storage.steps import read_steps, steps_finished


@dataclass(frozen=True)
class WhiteBoxChunk:
    """One chunk under a white-box attack: the run, the attack, the defender it attacks,
    the chunk's first row, its clean images and labels, and the classifier."""

    cfg: RunConfig
    attack: Attack
    defender: Defender
    start: int
    clean: torch.Tensor
    labels: torch.Tensor
    model: torch.nn.Module

    @property
    def where(self) -> str:
        stop = self.start + len(self.clean)
        return f"{self.attack.id} x {self.defender.id} rows {self.start}-{stop}"


def stored_attack(
    layout: RunLayout, chunk: WhiteBoxChunk, key: str, note: Note | None = None
) -> tuple[torch.Tensor, list[Row]] | None:
    """The chunk's adversarial images and step rows of iterates 0..iters-1, when an earlier
    run stored both and both read back whole (the step file with its iters + 1 rows per
    image); None otherwise (a bad part is dropped, ``note`` is told)."""
    name = adaptive_adv_name(chunk.attack.id, chunk.defender.id)
    store = ImageStore(layout)
    step_count = len(chunk.clean) * (attack_iters(chunk.attack) + 1)
    if not (
        store.has_rows(name, chunk.start, note)
        and steps_finished(layout.steps, key, step_count, note)
    ):
        return None
    stored = read_steps(layout.steps, key)
    stored = stored[stored["iteration"] < attack_iters(chunk.attack)]
    rows: list[Row] = stored.to_dict("records")
    adversarial = torch.from_numpy(
        store.read_rows(name, chunk.start, chunk.start + len(chunk.clean))
    )
    return adversarial.to(chunk.clean.device), rows


def adaptive_attack(
    layout: RunLayout, chunk: WhiteBoxChunk, key: str, logger: Logger
) -> tuple[torch.Tensor, list[Row]]:
    """The white-box attack against the chunk's defender: the final adversarial images (also
    stored) and the step rows of iterates 0..iters-1. Reuses a stored attack on resume."""
    stored = stored_attack(layout, chunk, key, logger.warning)
    if stored is not None:
        return stored
    cfg, attack, defender = chunk.cfg, chunk.attack, chunk.defender
    rows: list[Row] = []

    def track(step: BPDAStep) -> None:
        rows.extend(step_rows(cfg, attack, defender, chunk.start, chunk.clean, chunk.labels, step))
        correct = int((step.pred_defended == chunk.labels).sum())
        logger.info(
            "%s: iterate %d/%d, %d/%d defended correctly",
            chunk.where,
            step.iteration,
            attack_iters(attack),
            correct,
            len(chunk.clean),
        )

    if isinstance(attack, ChoosesMethod):
        logger.info(
            "%s: %s (%s declares differentiable=%s, randomised=%s)",
            chunk.where,
            method_text(attack.method(defender)),
            defender.id,
            getattr(defender, "differentiable", False),
            getattr(defender, "randomised", False),
        )
    seeds = defender_seeds(cfg, attack, defender, chunk.start, len(chunk.clean))
    generator = generator_for(
        derive_seed(cfg.seed, cfg.dataset, chunk.start, attack.id, defender.id),
        chunk.clean.device,
    )
    adversarial = attack.perturb(
        chunk.model,
        chunk.clean,
        chunk.labels,
        generator=generator,
        defender=executed_defender(cfg, defender),
        seeds=seeds,
        on_step=track,
    )
    ImageStore(layout).write_rows(
        adaptive_adv_name(attack.id, defender.id), chunk.start, adversarial.detach().cpu().numpy()
    )
    return adversarial, rows


def attack_draws(attack: Attack, defender: object) -> int:
    """Defender draws the white-box ``attack`` averages per gradient against ``defender``
    (BPDA 1, BPDA+EOT ``eot``, the adaptive attack ``eot`` on a randomised defender, else 1)."""
    if isinstance(attack, ChoosesMethod):
        return attack.method(defender)["draws"]
    draws: Any = getattr(attack, "draws", 1)
    return draws if isinstance(draws, int) else 1


def attack_iters(attack: Attack) -> int:
    """The attack's iterations (the adaptive attacks all walk ``iters`` steps)."""
    iters: Any = getattr(attack, "iters", None)
    if not isinstance(iters, int):
        raise ValueError(f"attack {attack.id} is not iterative: it has no white-box steps")
    return iters
