"""What a chunk task stores of a defence: its defended images and its result rows, with
the timing of the work that made them (:mod:`pipeline.timing`); and the ``failed`` rows of a
task that failed after its retries.

Images go first and are read back before they are marked done; the result file is written
last and whole (``storage.results``), so a result file that reads back says its chunk is
done (:mod:`storage.stored`).
"""

from __future__ import annotations

import torch

from pipeline.plan import Task
from pipeline.rows import Row, Timing, failed_rows, with_timing
from pipeline.run import Run
from pipeline.timing import Stopwatch
from ride.defenders import Defender
from storage.images import ImageStore, defended_name
from storage.layout import RunLayout
from storage.results import is_finished, write_results


def store_defence(
    layout: RunLayout,
    task: Task,
    defender: Defender,
    defended: torch.Tensor,
    rows: list[Row],
    clock: Stopwatch,
    *,
    common: Timing | None = None,
    sharers: int = 1,
    attack_work: Timing | None = None,
) -> None:
    """Store ``defender``'s results of ``task``: its defended images (read back before they
    are marked done), then its result rows with their timing (``clock``'s, plus a
    ``1 / sharers`` share of ``common``: the work of the attack chunk it ran in; plus
    ``attack_work``: its share of the work of an attack chunk that ran elsewhere,
    :func:`~pipeline.timing.attack_share`)."""
    if defender.id != "none":
        name = defended_name(task.attack.id, defender.id)
        ImageStore(layout).write_rows(name, task.start, defended.detach().cpu().numpy())
    timing = clock.timing()
    if common is not None:
        timing = timing.plus(common.scaled(1 / sharers))
    if attack_work is not None:
        timing = timing.plus_work(attack_work)
    write_results(layout.results, task.result_key(defender), with_timing(rows, timing))


def record_failure(run: Run, task: Task, error: str) -> None:
    """Write ``failed`` rows for each result of ``task``, whose task failed after its
    retries, unless its rows were stored (an attack chunk that failed on one defender
    stored the others)."""
    for defender in task.defenders:
        key = task.result_key(defender)
        if is_finished(run.layout.results, key, task.stop - task.start):
            continue
        labels = ImageStore(run.layout).read_rows("labels", task.start, task.stop)
        rows = failed_rows(
            run.cfg, task.attack, defender, task.start, [int(label) for label in labels], error
        )
        write_results(run.layout.results, key, rows)
