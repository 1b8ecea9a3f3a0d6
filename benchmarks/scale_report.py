"""What the scale simulation (:mod:`benchmarks.scale_simulation`) reports: one
:class:`Measurement` per variant (wall seconds, CPU seconds per process, whether the results
add up), the most tasks per second each process could carry at that CPU cost per task, which
one caps the rate, and the printed table and JSON summary of them all (:func:`report`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

COMPONENTS = ("flow", "server", "scheduler", "workers")
"""The processes whose CPU time is read: this process (the flow and its Dask client), the
Prefect API server, the Dask scheduler, and all Dask worker processes together."""


@dataclass
class Measurement:
    """One variant's figures: wall seconds until every task finished (``done_s``) and until
    the Prefect server had recorded them all (``recorded_s``, Dask alone: ``done_s``), CPU
    seconds per component, and the check of the results' sum."""

    variant: str
    tasks: int
    submit_s: float
    done_s: float
    recorded_s: float
    cpu: dict[str, float]
    correct: bool

    @property
    def tasks_per_s(self) -> float:
        """End-to-end rate: tasks over the seconds until they were all recorded."""
        return self.tasks / self.recorded_s

    def ms_per_task(self) -> dict[str, float]:
        return {name: 1000 * seconds / self.tasks for name, seconds in self.cpu.items()}

    def bounds(self, workers: int, cores: int) -> dict[str, float]:
        """Most tasks per second each component (and the machine) could carry at this
        variant's CPU cost per task."""
        per = self.ms_per_task()
        out = {}
        for name, ms in per.items():
            capacity = min(workers, cores) if name == "workers" else 1
            out[name] = 1000 * capacity / ms if ms > 0 else float("inf")
        total = sum(per.values())
        out["machine"] = 1000 * cores / total if total > 0 else float("inf")
        return out

    def limit(self, workers: int, cores: int) -> str:
        """The component whose bound is smallest (``machine``: all cores are busy)."""
        bounds = self.bounds(workers, cores)
        return min(bounds, key=bounds.__getitem__)


def report(rows: list[Measurement], workers: int, cores: int, db_bytes: int) -> dict[str, Any]:
    """Print the table and return the JSON summary."""
    floor = next((r for r in rows if r.variant == "dask"), None)
    print(
        f"Scale simulation: {rows[0].tasks} tiny tasks per variant, {workers} dask worker "
        f"processes (1 thread each), {cores} CPU cores, Prefect server on SQLite"
    )
    header = (
        f"{'variant':>13} {'tasks/s':>8} {'done s':>7} {'recorded s':>10} {'submit s':>8} "
        + " ".join(f"{name + ' ms':>11}" for name in COMPONENTS)
        + f" {'vs dask':>8} {'limit':>9} {'ample cores':>17} {'ok':>3}"
    )
    print(header)
    out_rows = [_report_row(r, floor, workers, cores) for r in rows]
    print(
        "ms columns: CPU milliseconds per task of each process; limit: the component whose "
        "CPU cost per task caps the rate first (one core each for flow, server and scheduler; "
        f"min(workers, cores) for the workers; machine: all {cores} cores); ample cores: the "
        "same with a core for every process. "
        f"SQLite grew to {db_bytes / 2**20:.1f} MiB."
    )
    return {
        "benchmark": "scale_simulation",
        "workers": workers,
        "cores": cores,
        "sqlite_mib": round(db_bytes / 2**20, 2),
        "rows": out_rows,
    }


def _report_row(
    r: Measurement, floor: Measurement | None, workers: int, cores: int
) -> dict[str, Any]:
    """Print the table's row of ``r`` (``floor``: the ``dask`` variant, if it ran) and return
    its JSON row."""
    per = r.ms_per_task()
    ratio = floor.tasks_per_s / r.tasks_per_s if floor else None
    limit = r.limit(workers, cores)
    # With a core for every process (flow, server, scheduler, each worker): what caps then.
    ample = r.bounds(workers, workers + 3)
    ample.pop("machine")
    ample_limit = min(ample, key=ample.__getitem__)
    ample_text = f"{ample_limit} {ample[ample_limit]:.0f}/s"
    print(
        f"{r.variant:>13} {r.tasks_per_s:>8.1f} {r.done_s:>7.1f} {r.recorded_s:>10.1f} "
        f"{r.submit_s:>8.1f} "
        + " ".join(f"{per[name]:>11.2f}" for name in COMPONENTS)
        + (f" {ratio:>7.1f}x" if ratio else f" {'-':>8}")
        + f" {limit:>9} {ample_text:>17} {'yes' if r.correct else 'NO':>3}"
    )
    bounds = r.bounds(workers, cores)
    return {
        "variant": r.variant,
        "tasks": r.tasks,
        "tasks_per_s": round(r.tasks_per_s, 2),
        "done_s": round(r.done_s, 2),
        "recorded_s": round(r.recorded_s, 2),
        "submit_s": round(r.submit_s, 2),
        "cpu_ms_per_task": {k: round(v, 3) for k, v in per.items()},
        "bound_tasks_per_s": {k: round(v, 1) for k, v in bounds.items()},
        "slower_than_dask": None if ratio is None else round(ratio, 2),
        "limit": limit,
        "limit_with_ample_cores": ample_limit,
        "tasks_per_s_with_ample_cores": round(ample[ample_limit], 1),
        "correct": r.correct,
    }
