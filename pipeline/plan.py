"""How a run is cut into tasks: which work each task does, and how many images it takes.

Two kinds of chunk task (``flows/evaluate.py`` submits them):

- an **attack chunk** per (gray-box attack or ``none``, row range): it makes the adversarial
  images once, classifies the clean and adversarial images once (stored as
  ``predictions/<attack>``, reused by every defender of the chunk), and runs every *cheap*
  defender (:func:`is_cheap`: the filters) on them in the same process;
- a **defence chunk** per (attack, costly defender, row range): RIDE and its family on a
  gray-box attack's images (reading the adversarial images and predictions its attack chunk
  stored), or any defender under a white-box attack, which attacks that defender inside the
  task.

How many images each task takes (:func:`task_rows`): a number given as ``--chunk-size`` for
every task, or with ``auto`` (the default) sized from the cost model below. Auto sizes are
powers of two and a defence chunk never takes more rows than its attack chunk, so every
defence chunk lies inside one attack chunk and every task writes whole Zarr chunks of its
own arrays (no two tasks ever write one chunk). The sizes depend only on what identifies the
run (the images, attacks, defenders and device), never on the number of workers: a resumed
run cuts its tasks exactly as before, so what is stored is found again. A grown run
(:mod:`pipeline.growth`) sizes them from its first extent (``first_limit``), so its new
images come in new tasks and its finished tasks are found again too.

The cost model counts work in *units*: 1 is a 3x3 median filter on one image (a defender's
``cost_hint``; RIDE: its Adam steps ``iters * checkpoints``); a classifier pass is taken as
``CLASSIFIER_PASS`` units and an attack iteration as one forward and backward pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pipeline.config import CHUNK_AUTO, RunConfig
from ride.attacks import Attack
from ride.datasets import dataset_shape
from ride.defenders import Defender

AUTO = CHUNK_AUTO
"""``--chunk-size auto``: each task's images from the cost model."""

CLASSIFIER_PASS = 1.0
"""Units of one classifier forward pass on one image (backward: as much again)."""
CHEAP = 100.0
"""A defender costing at most this many units per image runs inside its attack's chunk task."""
TASK_MIN_UNITS = 20_000.0
"""An auto-sized task holds at least this much work when it can, so its fixed overhead
(scheduling, loading the classifier, writing two files) stays small beside it; measured here,
that overhead is about 0.2 s, and 20,000 units of filters take about 2 s on MNIST."""
TASK_MAX_UNITS = 400_000.0
"""A costly auto-sized task holds at most this much work on the CPU (about 40 RIDE fits at the
paper's K = 2000, T = 5): a retried or interrupted task loses no more than that."""
MIN_TASKS = 8
"""A large job is cut into at least this many tasks per attack, so workers share it."""
MAX_ROWS = 4096
"""No task takes more images than this."""
TASK_IMAGE_BYTES = 256 * 2**20
"""Memory for the images an attack chunk holds at once (clean, adversarial, one defended
set, their distances: about ``IMAGE_COPIES`` copies)."""
IMAGE_COPIES = 5
GPU_TASK_BYTES = 16 * 2**30
"""On CUDA, a RIDE-family defence chunk is sized so its fits' working set
(``estimate_memory_bytes``) fills this much of the card: every image of the task fits at once."""


def defence_cost(defender: Defender | None) -> float:
    """Units to defend one image once: the defender's ``cost_hint``, else guessed from its
    params (``iters * checkpoints`` when it has them, else 1)."""
    hint = getattr(defender, "cost_hint", None)
    if hint is not None:
        return float(hint)
    settings = defender.params() if defender is not None else {}
    return float(int(settings.get("iters", 1)) * int(settings.get("checkpoints", 1)))


def is_cheap(defender: Defender) -> bool:
    """Does ``defender`` run inside its attack's chunk task (a filter), rather than in tasks
    of its own (RIDE and its family)?"""
    return defence_cost(defender) <= CHEAP


def is_gray_box(attack: Attack) -> bool:
    """An attack whose images do not depend on the defender (and ``none``): made once per
    attack chunk and shared by every defender."""
    return not attack.adaptive


def attack_cost(attack: Attack) -> float:
    """Units to attack one image gray-box: a forward and backward pass per iteration."""
    if attack.name == "none":
        return 0.0
    iters: Any = getattr(attack, "iters", 1)
    return 2 * CLASSIFIER_PASS * (iters if isinstance(iters, int) else 1)


def adaptive_fits(attack: Attack, defender: Defender) -> int:
    """Defender calls per image of a white-box attack on ``defender``: its iterations times
    its draws per gradient, plus the final defence."""
    from pipeline.whitebox import attack_draws, attack_iters  # white-box detail, kept local

    return attack_iters(attack) * attack_draws(attack, defender) + 1


def attack_chunk_cost(attack: Attack, defenders: Sequence[Defender]) -> float:
    """Units per image of an attack chunk: the attack, the clean and adversarial
    classification, and each cheap defender with the classification of its output."""
    cheap = [d for d in defenders if is_cheap(d)]
    return (
        attack_cost(attack)
        + 2 * CLASSIFIER_PASS
        + sum(defence_cost(d) + CLASSIFIER_PASS for d in cheap)
    )


def defence_chunk_cost(attack: Attack, defender: Defender) -> float:
    """Units per image of a defence chunk: the defender's fits (many under a white-box
    attack) and the classification of each."""
    fits = adaptive_fits(attack, defender) if attack.adaptive else 1
    return fits * (defence_cost(defender) + 2 * CLASSIFIER_PASS)


def task_rows(cfg: RunConfig, n_images: int, attack: Attack, defender: Defender | None) -> int:
    """Images per task: of ``attack``'s attack chunks (``defender`` None), or of its defence
    chunks for ``defender``. ``cfg.chunk_size`` when it is a number; with ``auto`` a power of
    two from the cost model (module docstring).

    On CUDA a RIDE-family defence chunk takes as many images as fit the card at once
    (``GPU_TASK_BYTES``), not a share of the job: one GPU fits them together.
    """
    if cfg.chunk_size != AUTO:
        return int(cfg.chunk_size)
    n_images = sizing_images(cfg, n_images)
    memory = _memory_rows(cfg)
    group = _auto_rows(n_images, attack_chunk_cost(attack, cfg.defender_configs()), memory)
    if defender is None:
        return group
    ceiling = group if is_gray_box(attack) else memory  # inside its attack chunk
    cost = defence_chunk_cost(attack, defender)
    fit_bytes = _fit_bytes(cfg, defender)
    if cfg.device == "cuda" and fit_bytes is not None:
        fill = _pow2_floor(GPU_TASK_BYTES / fit_bytes)
        return max(1, min(fill, ceiling, _pow2_ceil(n_images)))
    return _auto_rows(n_images, cost, min(ceiling, _pow2_floor(TASK_MAX_UNITS / cost)))


def defence_rows(cfg: RunConfig, n_images: int, attack: Attack, defender: Defender) -> int:
    """Images per task that stores ``defender``'s results under ``attack``: the attack chunk
    for a cheap defender of a gray-box attack (it runs there), else its own defence chunk."""
    if runs_in_attack_chunk(attack, defender):
        return task_rows(cfg, n_images, attack, None)
    return task_rows(cfg, n_images, attack, defender)


def left_out_pairs(cfg: RunConfig) -> list[tuple[Attack, Defender]]:
    """The (attack, defender) pairs of ``cfg`` that the attack cannot attack
    (:meth:`~ride.attacks.Attack.applies_to`): a run makes no task and no row for them."""
    return [
        (attack, defender)
        for attack in cfg.attack_configs()
        for defender in cfg.defender_configs()
        if not attack.applies_to(defender)
    ]


def runs_in_attack_chunk(attack: Attack, defender: Defender) -> bool:
    """Does ``defender`` run inside ``attack``'s attack chunks (no task of its own)?"""
    return is_gray_box(attack) and is_cheap(defender)


def clean_rows(cfg: RunConfig, n_images: int) -> int:
    """Rows per chunk of the clean images and labels (one process writes them; tasks only
    read): ``cfg.chunk_size``, or with ``auto`` as many as an attack chunk may hold."""
    if cfg.chunk_size != AUTO:
        return int(cfg.chunk_size)
    return max(1, min(_memory_rows(cfg), _pow2_ceil(sizing_images(cfg, n_images))))


def sizing_images(cfg: RunConfig, n_images: int) -> int:
    """The images the task sizes are computed from: the run's, or for a grown run those of
    its first extent (``first_limit``)."""
    return n_images if cfg.first_limit is None else min(n_images, cfg.first_limit)


def task_sizes(cfg: RunConfig, n_images: int) -> dict[str, int]:
    """Rows per task of every array the run writes, by what writes it: ``clean`` and each
    attack chunk and defence chunk (:func:`task_rows`)."""
    sizes = {"clean images": clean_rows(cfg, n_images)}
    for attack in cfg.attack_configs():
        defenders = [d for d in cfg.defender_configs() if attack.applies_to(d)]
        if is_gray_box(attack):
            sizes[f"{attack.id} attack chunks"] = task_rows(cfg, n_images, attack, None)
        for defender in defenders:
            if not runs_in_attack_chunk(attack, defender):
                rows = task_rows(cfg, n_images, attack, defender)
                sizes[f"{attack.id} x {defender.id} chunks"] = rows
    return sizes


def row_ranges(
    n_images: int, rows: int, within: tuple[int, int] | None = None
) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of ``rows`` images covering ``n_images`` (or only the range
    ``within``, which starts at a multiple of ``rows``)."""
    first, last = within if within is not None else (0, n_images)
    return [(start, min(start + rows, last)) for start in range(first, last, rows)]


def _auto_rows(n_images: int, cost: float, ceiling: int) -> int:
    """Enough images that a task holds ``TASK_MIN_UNITS`` of work, or, for a large job, the
    images of one of ``MIN_TASKS`` tasks, whichever is more; at most ``ceiling`` and no more
    than the images there are (all powers of two)."""
    by_overhead = _pow2_ceil(TASK_MIN_UNITS / max(cost, 1e-9))
    by_spread = _pow2_floor(n_images / MIN_TASKS)
    rows = min(max(by_overhead, by_spread), ceiling, _pow2_ceil(n_images))
    return max(1, rows)


def _memory_rows(cfg: RunConfig) -> int:
    """The most images an attack chunk holds in memory (``TASK_IMAGE_BYTES``), capped at
    ``MAX_ROWS``."""
    c, h, w = dataset_shape(cfg.dataset)
    image_bytes = 4 * c * h * w * IMAGE_COPIES
    return max(1, min(MAX_ROWS, _pow2_floor(TASK_IMAGE_BYTES / image_bytes)))


def _fit_bytes(cfg: RunConfig, defender: Defender) -> int | None:
    """Working set of one image's fit, for a RIDE-family defender; None for others."""
    from ride.defenders.ride import Ride, estimate_memory_bytes

    if not isinstance(defender, Ride):
        return None
    return estimate_memory_bytes(defender, dataset_shape(cfg.dataset), 1)


def _pow2_floor(value: float) -> int:
    """The largest power of two <= ``value`` (1 below 1)."""
    return 1 if value < 2 else 2 ** math.floor(math.log2(value))


def _pow2_ceil(value: float) -> int:
    """The smallest power of two >= ``value`` (1 below 1)."""
    return 1 if value <= 1 else 2 ** math.ceil(math.log2(value))
