"""The white-box attack of one chunk: BPDA (+EOT), APGD through the defender, or the
adaptive attacks (exact gradient or BPDA, EOT or one draw, as the defender declares), through
the defender it is evaluated on.

Its adversarial images depend on the defender, so the attack runs inside that defender's
chunk task. The attacker queries the defender at every iterate k = 0..iters (one ``steps/``
row per image and iterate, the data of the paper's Fig. 7) and submits, per image, the
iterate where its own draws were least often classified correctly (:mod:`ride.robustness`);
the chosen iterates are stored under ``adv/<attack>/<defender>``, the attack's final outputs
under ``final/<attack>/<defender>``. A resumed chunk whose attack was stored (both image
sets and the step file, all reading back whole) reuses it, the choice made again from the
step rows; a stored part that does not read back is dropped and the attack redone.
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
from ride.robustness import Choice, IterateChoice, choose_iterations
from ride.seeding import derive_seed, generator_for
from storage.files import Note
from storage.images import ImageStore, adaptive_adv_name, adaptive_final_name
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


@dataclass(frozen=True)
class WhiteBoxAttack:
    """What a white-box attack on one chunk produced: its final outputs ``final``
    (B, C, H, W), the iterates the attacker chose (``choice``, :mod:`ride.robustness`) and
    the step rows of iterates 0..iters, what the attacker saw at each."""

    final: torch.Tensor
    choice: Choice
    rows: list[Row]


def stored_attack(
    layout: RunLayout, chunk: WhiteBoxChunk, key: str, note: Note | None = None
) -> WhiteBoxAttack | None:
    """The chunk's attack as an earlier run stored it, when its chosen and final images and
    its step file (iters + 1 rows per image) all read back whole; None otherwise (a bad part
    is dropped, ``note`` is told). The choice is made again from the step rows."""
    store = ImageStore(layout)
    names = [
        name(chunk.attack.id, chunk.defender.id)
        for name in (adaptive_adv_name, adaptive_final_name)
    ]
    count = len(chunk.clean)
    iters = attack_iters(chunk.attack)
    if not (
        all(store.has_rows(name, chunk.start, note) for name in names)
        and steps_finished(layout.steps, key, count * (iters + 1), note)
    ):
        return None
    stored = read_steps(layout.steps, key).sort_values(["iteration", "index"])
    rows: list[Row] = stored.to_dict("records")
    fractions = torch.tensor(
        stored["attacker_correct"].to_numpy(dtype="float32").reshape(iters + 1, count)
    )  # (iters + 1, B)
    chosen, final = (
        torch.from_numpy(store.read_rows(name, chunk.start, chunk.start + count)).to(
            chunk.clean.device
        )
        for name in names
    )
    iteration = choose_iterations(fractions)
    choice = Choice(
        images=chosen,
        iteration=iteration,
        attacker_correct=fractions[iteration, torch.arange(count)],
        every_draw_correct=(fractions >= 1.0).all(dim=0),
        attacker_draws=int(stored["attacker_draws"].iloc[0]),
    )
    return WhiteBoxAttack(final, choice, rows)


def adaptive_attack(
    layout: RunLayout, chunk: WhiteBoxChunk, key: str, logger: Logger
) -> WhiteBoxAttack:
    """The white-box attack against the chunk's defender: its final outputs, the iterates
    the attacker chose (both stored) and the step rows of iterates 0..iters. Reuses a stored
    attack on resume."""
    stored = stored_attack(layout, chunk, key, logger.warning)
    if stored is not None:
        return stored
    cfg, attack, defender = chunk.cfg, chunk.attack, chunk.defender
    rows: list[Row] = []
    chooser = IterateChoice()

    def track(step: BPDAStep) -> None:
        rows.extend(step_rows(cfg, attack, defender, chunk.start, chunk.clean, chunk.labels, step))
        chooser.see(step.iteration, step.adversarial, step.attacker_correct, step.attacker_draws)
        correct = float(step.attacker_correct.sum())
        logger.info(
            "%s: iterate %d/%d, attacker's draws %.1f/%d correct",
            chunk.where,
            step.iteration,
            attack_iters(attack),
            correct,
            len(chunk.clean),
        )

    log_method(chunk, logger)
    seeds = defender_seeds(cfg, attack, defender, chunk.start, len(chunk.clean))
    generator = generator_for(
        attack_generator_seed(cfg, attack, defender, chunk.start), chunk.clean.device
    )
    final = attack.perturb(
        chunk.model,
        chunk.clean,
        chunk.labels,
        generator=generator,
        defender=executed_defender(cfg, defender),
        seeds=seeds,
        on_step=track,
    ).detach()
    expected = len(chunk.clean) * (attack_iters(attack) + 1)
    if len(rows) != expected:
        raise RuntimeError(
            f"{chunk.where}: the attack reported {len(rows)} iterate rows, expected {expected} "
            "(every image at iterates 0..iters)"
        )
    choice = chooser.choice()
    store = ImageStore(layout)
    store.write_rows(adaptive_final_name(attack.id, defender.id), chunk.start, final.cpu().numpy())
    store.write_rows(
        adaptive_adv_name(attack.id, defender.id), chunk.start, choice.images.cpu().numpy()
    )
    return WhiteBoxAttack(final, choice, rows)


def log_method(chunk: WhiteBoxChunk, logger: Logger) -> None:
    """Log the method an attack that chooses per defender (the adaptive ones) gives the
    chunk's defender, and the declarations it chose from."""
    attack, defender = chunk.attack, chunk.defender
    if isinstance(attack, ChoosesMethod):
        logger.info(
            "%s: %s (%s declares differentiable=%s, randomised=%s)",
            chunk.where,
            method_text(attack.method(defender)),
            defender.id,
            getattr(defender, "differentiable", False),
            getattr(defender, "randomised", False),
        )


def attack_generator_seed(cfg: RunConfig, attack: Attack, defender: Defender, start: int) -> int:
    """The seed of the white-box attack's own generator (its random starts and restarts) on
    the chunk at row ``start``: tagged, so that it is none of the defender's seeds (the
    evaluation draws of :func:`pipeline.execution.defender_seeds` and those derived from
    them; it once equalled the first image's evaluation seed)."""
    return derive_seed(cfg.seed, cfg.dataset, start, attack.id, defender.id, "attack-generator")


def attack_draws(attack: Attack, defender: object) -> int:
    """Defender draws the white-box ``attack`` averages per gradient against ``defender``
    (BPDA 1, BPDA+EOT ``eot``, the adaptive attack ``eot`` on a randomised defender, else 1)."""
    if isinstance(attack, ChoosesMethod):
        return attack.method(defender)["draws"]
    draws: Any = getattr(attack, "draws", 1)
    return draws if isinstance(draws, int) else 1


def attack_iters(attack: Attack) -> int:
    """The last iterate the white-box attack reports: its ``iters``, or, for one with
    ``restarts`` (the APGD attacks through a defender, which report every restart's iterates
    one after another: :class:`~ride.attacks.apgd.RestartSteps`), ``(iters + 1) * restarts
    - 1``. Its step rows hold iterates 0..attack_iters(attack) of every image."""
    iters: Any = getattr(attack, "iters", None)
    if not isinstance(iters, int):
        raise ValueError(f"attack {attack.id} is not iterative: it has no white-box steps")
    restarts: Any = getattr(attack, "restarts", 1)
    return (iters + 1) * (restarts if isinstance(restarts, int) else 1) - 1
