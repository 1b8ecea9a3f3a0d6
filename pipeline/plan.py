"""How a run is cut into tasks: which work each task does, and how many images it takes.

Two kinds of chunk task (:class:`Task`; ``flows/evaluate.py`` submits them, :func:`plan`
lists them):

- an **attack chunk** per (gray-box attack or ``none``, row range): it makes the adversarial
  images once, classifies the clean and adversarial images once (stored as
  ``predictions/<attack>``, reused by every defender of the chunk), and runs every *cheap*
  defender (:func:`~pipeline.costs.is_cheap`: the filters) on them in the same process;
- a **defence chunk** per (attack, costly defender, row range): RIDE and its family on a
  gray-box attack's images (reading the adversarial images and predictions its attack chunk
  stored), or any defender under a white-box attack, which attacks that defender inside the
  task.

How many images each task takes (:func:`task_rows`): a number given as ``--chunk-size`` for
every task, or with ``auto`` (the default) sized from the cost model (:mod:`pipeline.costs`).
Auto sizes are powers of two and a defence chunk never takes more rows than its attack chunk,
so every defence chunk lies inside one attack chunk and every task writes whole Zarr chunks
of its own arrays (no two tasks ever write one chunk). The sizes depend only on what
identifies the run (the images, attacks, defenders and device), never on the number of
workers: a resumed run cuts its tasks exactly as before, so what is stored is found again. A
grown run (:mod:`pipeline.growth`) sizes them from its first extent (``first_limit``), so its
new images come in new tasks and its finished tasks are found again too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pipeline.costs import (
    attack_chunk_cost,
    defence_chunk_cost,
    is_gray_box,
    runs_in_attack_chunk,
)
from pipeline.run import Run
from pipeline.spec import CHUNK_AUTO
from ride.attacks import Attack
from ride.datasets import dataset_shape
from ride.defenders import Defender
from ride.defenders.ride import Ride, estimate_memory_bytes
from storage.results import result_key

AUTO = CHUNK_AUTO
"""``--chunk-size auto``: each task's images from the cost model."""

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
ATTACKS_FIRST = 10**12
"""Added to an attack chunk's Dask priority: every attack chunk runs before any defence."""


@dataclass(frozen=True)
class Task:
    """One chunk task: rows ``[start, stop)`` of the run's images under one attack.

    An attack chunk (``kind == "attack"``) makes the attack's images and predictions and
    runs ``defenders``, the cheap ones, on them. A defence chunk (``"defence"``) runs its
    one defender (:attr:`defender`) after ``upstream``, the attack chunk holding its rows
    (None under a white-box attack, which runs inside the task).
    """

    kind: Literal["attack", "defence"]
    attack: Attack
    defenders: tuple[Defender, ...]
    start: int
    stop: int
    upstream: Task | None = None

    @classmethod
    def attack_chunk(
        cls, attack: Attack, start: int, stop: int, defenders: Sequence[Defender] = ()
    ) -> Task:
        """The attack chunk of rows ``[start, stop)``, running the cheap ``defenders``."""
        return cls("attack", attack, tuple(defenders), start, stop)

    @classmethod
    def defence_chunk(
        cls, attack: Attack, defender: Defender, start: int, stop: int, upstream: Task | None = None
    ) -> Task:
        """The defence chunk of rows ``[start, stop)`` for ``defender``, after ``upstream``."""
        return cls("defence", attack, (defender,), start, stop, upstream)

    @property
    def is_attack_chunk(self) -> bool:
        return self.kind == "attack"

    @property
    def defender(self) -> Defender:
        """A defence chunk's one defender."""
        assert not self.is_attack_chunk
        return self.defenders[0]

    @property
    def label(self) -> str:
        what = self.attack.id if self.is_attack_chunk else f"{self.attack.id} x {self.defender.id}"
        return f"{what} rows {self.start}-{self.stop}"

    def results(self) -> list[tuple[Attack, Defender, int, int]]:
        """The (attack, defender, rows) results this task stores."""
        return [(self.attack, d, self.start, self.stop) for d in self.defenders]

    def result_key(self, defender: Defender) -> str:
        """The name of the result file of ``defender``'s rows of this task (and of its
        step file under a white-box attack)."""
        return result_key(self.attack.id, defender.id, self.start, self.stop)

    @property
    def cost(self) -> float:
        """Work in the cost model's units (:mod:`pipeline.costs`): per image, the attack
        chunk's attack, predictions and cheap defenders, or the defence chunk's fits."""
        rows = self.stop - self.start
        if self.is_attack_chunk:
            return attack_chunk_cost(self.attack, self.defenders) * rows
        return defence_chunk_cost(self.attack, self.defender) * rows

    @property
    def priority(self) -> int:
        """Dask priority (higher runs first): attack chunks first, the costliest of them
        first (the defence chunks wait on them), then the costliest defence chunks."""
        return ATTACKS_FIRST + round(self.cost) if self.is_attack_chunk else round(self.cost)


@dataclass(frozen=True)
class ChunkOutcome:
    """What a chunk task did: ``ran`` or ``skipped`` (already in storage).

    An attack chunk's outcome holds one outcome per cheap defender it ran (``defences``,
    each with its ``defender_id``)."""

    action: str
    seconds: float
    correct: int = 0
    count: int = 0
    defender_id: str | None = None
    defences: tuple[ChunkOutcome, ...] = ()


def plan(run: Run) -> list[Task]:
    """Every chunk task of the run: per gray-box attack (and ``none``) its attack chunks,
    each followed by the defence chunks of its rows for the costly defenders; per white-box
    attack, the defence chunks of every defender. The pairs an attack cannot attack are left
    out (:meth:`~pipeline.run.Run.left_out_pairs`)."""
    tasks: list[Task] = []
    for attack in run.attacks:
        defenders = run.attacked(attack)
        if not is_gray_box(attack):
            for defender in defenders:
                rows = task_rows(run, attack, defender)
                tasks.extend(
                    Task.defence_chunk(attack, defender, start, stop)
                    for start, stop in row_ranges(run.n_images, rows)
                )
            continue
        cheap = tuple(d for d in defenders if runs_in_attack_chunk(attack, d))
        costly = [d for d in defenders if not runs_in_attack_chunk(attack, d)]
        for start, stop in row_ranges(run.n_images, task_rows(run, attack, None)):
            upstream = Task.attack_chunk(attack, start, stop, cheap)
            tasks.append(upstream)
            for defender in costly:
                rows = task_rows(run, attack, defender)
                tasks.extend(
                    Task.defence_chunk(attack, defender, a, b, upstream)
                    for a, b in row_ranges(run.n_images, rows, within=(start, stop))
                )
    return tasks


def task_rows(run: Run, attack: Attack, defender: Defender | None) -> int:
    """Images per task: of ``attack``'s attack chunks (``defender`` None), or of its defence
    chunks for ``defender``. ``chunk_size`` when it is a number; with ``auto`` a power of
    two from the cost model (module docstring).

    On CUDA a RIDE-family defence chunk takes as many images as fit the card at once
    (``GPU_TASK_BYTES``), not a share of the job: one GPU fits them together.
    """
    cfg = run.cfg
    if cfg.chunk_size != AUTO:
        return int(cfg.chunk_size)
    n_images = sizing_images(run)
    memory = _memory_rows(run)
    group = _auto_rows(n_images, attack_chunk_cost(attack, run.defenders), memory)
    if defender is None:
        return group
    ceiling = group if is_gray_box(attack) else memory  # inside its attack chunk
    cost = defence_chunk_cost(attack, defender)
    fit_bytes = _fit_bytes(run, defender)
    if cfg.device == "cuda" and fit_bytes is not None:
        fill = _pow2_floor(GPU_TASK_BYTES / fit_bytes)
        return max(1, min(fill, ceiling, _pow2_ceil(n_images)))
    return _auto_rows(n_images, cost, min(ceiling, _pow2_floor(TASK_MAX_UNITS / cost)))


def defence_rows(run: Run, attack: Attack, defender: Defender) -> int:
    """Images per task that stores ``defender``'s results under ``attack``: the attack chunk
    for a cheap defender of a gray-box attack (it runs there), else its own defence chunk."""
    if runs_in_attack_chunk(attack, defender):
        return task_rows(run, attack, None)
    return task_rows(run, attack, defender)


def clean_rows(run: Run) -> int:
    """Rows per chunk of the clean images and labels (one process writes them; tasks only
    read): ``chunk_size``, or with ``auto`` as many as an attack chunk may hold."""
    if run.cfg.chunk_size != AUTO:
        return int(run.cfg.chunk_size)
    return max(1, min(_memory_rows(run), _pow2_ceil(sizing_images(run))))


def sizing_images(run: Run) -> int:
    """The images the task sizes are computed from: the run's, or for a grown run those of
    its first extent (``first_limit``)."""
    first = run.cfg.first_limit
    return run.n_images if first is None else min(run.n_images, first)


def task_sizes(run: Run) -> dict[str, int]:
    """Rows per task of every array the run writes, by what writes it: ``clean`` and each
    attack chunk and defence chunk (:func:`task_rows`)."""
    sizes = {"clean images": clean_rows(run)}
    for attack in run.attacks:
        if is_gray_box(attack):
            sizes[f"{attack.id} attack chunks"] = task_rows(run, attack, None)
        for defender in run.attacked(attack):
            if not runs_in_attack_chunk(attack, defender):
                rows = task_rows(run, attack, defender)
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


def _memory_rows(run: Run) -> int:
    """The most images an attack chunk holds in memory (``TASK_IMAGE_BYTES``), capped at
    ``MAX_ROWS``."""
    c, h, w = dataset_shape(run.cfg.dataset)
    image_bytes = 4 * c * h * w * IMAGE_COPIES
    return max(1, min(MAX_ROWS, _pow2_floor(TASK_IMAGE_BYTES / image_bytes)))


def _fit_bytes(run: Run, defender: Defender) -> int | None:
    """Working set of one image's fit, for a RIDE-family defender; None for others."""
    if not isinstance(defender, Ride):
        return None
    return estimate_memory_bytes(defender, dataset_shape(run.cfg.dataset), 1)


def _pow2_floor(value: float) -> int:
    """The largest power of two <= ``value`` (1 below 1)."""
    return 1 if value < 2 else 2 ** math.floor(math.log2(value))


def _pow2_ceil(value: float) -> int:
    """The smallest power of two >= ``value`` (1 below 1)."""
    return 1 if value <= 1 else 2 ** math.ceil(math.log2(value))
