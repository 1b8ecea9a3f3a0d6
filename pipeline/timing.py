"""Where a chunk task's time goes, as its result rows record it (``compute_seconds``,
``overhead_seconds``, ``task_started_at``, ``task_finished_at``).

A task times itself with a :class:`Stopwatch`: compute (the attack, the defence, the
classification) and the rest (loading, storing, set-up). Each result row carries its share
of the work that made it: an attack chunk's attack and shared predictions are split over
the cheap defenders it ran; an attack chunk that ran none (every defender of its attack has
tasks of its own) keeps its timing in a file (:func:`write_attack_timing`), and each defence
chunk of its rows adds its share of it (:func:`attack_share`). The run's time split then
counts every task's work once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path

from pipeline.costs import runs_in_attack_chunk
from pipeline.plan import Task
from pipeline.rows import Timing
from pipeline.run import Run
from storage.files import atomic_write_json, writing
from storage.layout import RunLayout
from storage.results import result_key

ATTACK_CHUNK = "attack-chunk"
"""The defender part of the name of an attack chunk's timing file (:func:`attack_timing_path`)."""


class Stopwatch:
    """Splits a task's wall time into compute (attack, defence, classification) and the rest
    (loading, storing, set-up): ``with clock.compute(): ...`` around the compute."""

    def __init__(self) -> None:
        self.began = time.perf_counter()
        self.started_at = time.time()
        self.computing = 0.0

    @contextmanager
    def compute(self) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.computing += time.perf_counter() - began

    def elapsed(self) -> float:
        return time.perf_counter() - self.began

    def timing(self) -> Timing:
        """This task's timing so far (a share of it: :meth:`Timing.scaled`)."""
        total = self.elapsed()
        return Timing(
            compute=self.computing,
            overhead=max(0.0, total - self.computing),
            started_at=self.started_at,
            finished_at=time.time(),
        )


def attack_timing_path(layout: RunLayout, task: Task) -> Path:
    """Where the attack chunk ``task`` keeps its timing when it ran no defender."""
    return layout.timing / f"{result_key(task.attack.id, ATTACK_CHUNK, task.start, task.stop)}.json"


def write_attack_timing(layout: RunLayout, task: Task, timing: Timing) -> None:
    """Keep the timing of the attack chunk ``task``, which ran no defender (one file per
    chunk, written whole or not at all), so that its work is counted in the run's time split."""
    path = attack_timing_path(layout, task)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, asdict(timing))


def attack_share(run: Run, task: Task, note: Callable[[str], None]) -> Timing | None:
    """The part of the work of the attack chunk holding the rows of the defence chunk
    ``task`` that ``task`` carries: its rows' fraction of the chunk, split evenly over the
    run's defenders with tasks of their own. None when no attack chunk kept its timing (a
    cheap defender's rows carry it) or its file does not read (``note`` is told: timing is
    not worth failing a chunk)."""
    attack, start, stop = task.attack, task.start, task.stop
    for path in sorted(run.layout.timing.glob(f"{attack.id}__{ATTACK_CHUNK}__*.json")):
        try:
            first, last = (int(part) for part in path.stem.rsplit("__", 1)[1].split("-"))
        except ValueError:
            continue  # not a chunk's file
        if not first <= start < last:
            continue
        try:
            kept = json.loads(path.read_text())
            timing = Timing(*(float(kept[f.name]) for f in fields(Timing)))
        except (OSError, ValueError, TypeError, KeyError) as error:
            note(f"{path.name} does not read ({error}); its attack's time is not counted")
            return None
        sharers = sum(1 for d in run.defenders if not runs_in_attack_chunk(attack, d))
        return timing.scaled((stop - start) / (last - first) / max(1, sharers))
    return None
