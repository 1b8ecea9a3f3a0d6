"""Where a run's time went, from the timing columns of its result rows.

Each row carries its share of its task's time (``compute_seconds``, ``overhead_seconds``)
and when its task ran (``task_started_at``, ``task_finished_at``, Unix seconds;
:data:`storage.schema.TIMING_COLUMNS`). From these alone: the compute, the time inside tasks
spent loading and storing, the time between tasks (:func:`time_split`), and the wall time
while at least one task ran (:func:`busy_seconds`, which leaves out the pauses of a run grown
or resumed in several sessions).
"""

from __future__ import annotations

import pandas as pd


def time_split(frame: pd.DataFrame) -> dict[str, float] | None:
    """Where the run's worker time went (seconds): ``compute`` (attack, defence,
    classification), ``in_tasks`` (loading, storing, set-up inside the tasks) and
    ``between_tasks`` (each worker's span from its first task's start to its last task's end,
    less the time inside its tasks: scheduling, orchestration, waiting); ``workers`` and
    ``span`` (first start to last end). None when no row carries timing (rows written before
    0.3.0)."""
    columns = ["compute_seconds", "overhead_seconds", "task_started_at", "task_finished_at"]
    if not set(columns) <= set(frame.columns):
        return None
    timed = frame.dropna(subset=columns)
    if timed.empty:
        return None
    compute = float(timed["compute_seconds"].sum())
    in_tasks = float(timed["overhead_seconds"].sum())
    per_worker = timed.groupby("worker").agg(
        began=("task_started_at", "min"), ended=("task_finished_at", "max")
    )
    worker_time = float((per_worker["ended"] - per_worker["began"]).sum())
    return {
        "compute": compute,
        "in_tasks": in_tasks,
        "between_tasks": max(0.0, worker_time - compute - in_tasks),
        "workers": float(len(per_worker)),
        "span": float(timed["task_finished_at"].max() - timed["task_started_at"].min()),
        "busy": busy_seconds(timed["task_started_at"], timed["task_finished_at"]),
    }


def busy_seconds(started: pd.Series, finished: pd.Series) -> float:
    """Seconds during which at least one task ran: the length of the union of the tasks'
    ``[started, finished]`` intervals (a run grown in several sessions: their wall times
    added, the time between them left out)."""
    total, end = 0.0, float("-inf")
    for begin, stop in sorted(zip(started.astype(float), finished.astype(float), strict=True)):
        if begin > end:
            total += stop - begin
            end = stop
        elif stop > end:
            total += stop - end
            end = stop
    return total


def time_section(frame: pd.DataFrame) -> list[str]:
    """The report's "Where the time went" table (:func:`time_split`); empty without timing."""
    split = time_split(frame)
    if split is None:
        return []
    parts = {
        "compute: attack, defence, classification": split["compute"],
        "inside tasks: loading, storing, set-up": split["in_tasks"],
        "between tasks: scheduling, orchestration, waiting": split["between_tasks"],
    }
    total = sum(parts.values()) or 1.0
    lines = [
        "",
        "## Where the time went",
        "",
        f"Worker time of {split['workers']:.0f} worker(s), from the first task's start to the "
        f"last task's end ({split['span']:.1f} s; a resumed run also counts the pause between "
        "its sessions as waiting).",
        "",
        "| | seconds | share |",
        "|---|---|---|",
    ]
    lines += [
        f"| {what} | {seconds:.1f} | {seconds / total:.0%} |" for what, seconds in parts.items()
    ]
    return lines


def hours(seconds: float) -> str:
    """``seconds`` for a reader: in hours from one hour on, else in minutes."""
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def wall_time_line(split: dict[str, float], growth: list[dict[str, int]]) -> str:
    """The results page's wall-time line of a run (:func:`time_split`): the time while a task
    ran for a run grown in several sessions (``growth``: ``run.toml``'s record of them) or
    stopped and resumed, else the span from the first task's start to the last task's end;
    and the compute, on how many workers."""
    compute = f"{hours(split['compute'])} of compute on {split['workers']:.0f} worker(s)."
    if growth:
        sizes = " -> ".join(str(n) for n in [growth[0]["before"], *(g["after"] for g in growth)])
        return (
            f"- Wall time: {hours(split['busy'])} while a task ran (the run grew {sizes} "
            f"images, the time between its runs left out); {compute}"
        )
    if split["busy"] < 0.9 * split["span"]:  # stopped and resumed
        return (
            f"- Wall time: {hours(split['busy'])} while a task ran ({hours(split['span'])} "
            "from the first task's start to the last task's end: the run was stopped and "
            f"resumed); {compute}"
        )
    return (
        f"- Wall time: {hours(split['span'])} from the first task's start to the last "
        f"task's end; {compute}"
    )
