"""Accuracy tables computed from the Parquet results only.

``pandas.read_parquet(run_dir + "/results")`` and DuckDB see the same rows, so every number
here can be recomputed by a reader of the results alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ride.attacks.adaptive import method_text

#: Attacks whose rows carry per-step tracking and a worst-case count (ride.attacks).
ADAPTIVE = (
    "bpda",
    "bpda-eot",
    "bpda-surrogate",
    "adaptive",
    "adaptive-apgd-ce",
    "adaptive-apgd-dlr",
)


def accuracy_table(frame: pd.DataFrame, column: str = "correct_defended") -> pd.DataFrame:
    """Top-1 accuracy and n per (attack, defender) over ``ok`` rows.

    Rows: attack ids, columns: defender ids; each ``none`` first, the others sorted. Each
    cell is a ``(accuracy, n)`` pair. ``column`` picks the count: ``correct_defended``
    (final image, one draw) or ``correct_worst`` (every iterate and re-check draw).
    """
    ok = frame[frame["status"] == "ok"]
    attacks = _none_first(ok["attack_id"])
    defenders = _none_first(ok["defender_id"])
    grouped = ok.groupby(["attack_id", "defender_id"])[column].agg(["mean", "count"])
    table = pd.DataFrame(index=pd.Index(attacks, name="attack"), columns=defenders, dtype=object)
    for (attack, defender), values in grouped.iterrows():
        table.loc[attack, defender] = (float(values["mean"]), int(values["count"]))
    return table


def _none_first(ids: pd.Series) -> list[str]:
    return sorted(set(ids), key=lambda name: (name != "none", name))


def clean_accuracy(frame: pd.DataFrame) -> tuple[float, int]:
    """Accuracy of the undefended classifier on the clean images, and how many images."""
    ok = frame[frame["status"] == "ok"].drop_duplicates("index")
    return (float(ok["correct_clean"].mean()) if len(ok) else float("nan"), len(ok))


def accuracy_report(frame: pd.DataFrame) -> str:
    """The markdown report: clean accuracy, the accuracy table and any failures."""
    if frame.empty:
        return "# RIDE evaluation\n\nNo results yet.\n"
    table = accuracy_table(frame)
    clean, n_clean = clean_accuracy(frame)
    dataset = ", ".join(sorted(frame["dataset"].unique()))
    lines = [
        "# RIDE evaluation",
        "",
        f"Dataset: {dataset}. Clean accuracy (no attack, no defence): {clean:.3f} (n={n_clean}).",
        "",
        "Top-1 accuracy of the defended images; rows: attack, columns: defender.",
        "",
        "| attack | " + " | ".join(str(c) for c in table.columns) + " |",
        "|---" * (len(table.columns) + 1) + "|",
    ]
    for attack, row in table.iterrows():
        cells = [
            "" if not isinstance(cell, tuple) else f"{cell[0]:.3f} (n={cell[1]})" for cell in row
        ]
        lines.append(f"| {attack} | " + " | ".join(cells) + " |")
    lines += sweep_section(frame)
    lines += whitebox_section(frame)
    lines += time_section(frame)
    failed = frame[frame["status"] == "failed"]
    if len(failed):
        lines += [
            "",
            f"{len(failed)} rows failed (status = 'failed'); first error: "
            f"{failed['error'].iloc[0]}",
        ]
    return "\n".join(lines) + "\n"


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
    }


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


def whitebox_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Table-2 style rows for the adaptive attacks: one per (defence, attack).

    Columns: defence, dataset, attack, distance (the L-infinity budget), final (accuracy on
    the final adversarial image, one defender draw), recheck (mean fraction of the re-check
    draws classified correctly), worst (correct at every iterate and every re-check draw), n,
    method (the attack this defence got, from ``attack_params``: ``BPDA``, ``BPDA + EOT 15``,
    ``exact gradient + EOT 15``, ...; the adaptive attack chooses it per defence).
    """
    columns = [
        "defence", "dataset", "attack", "distance", "final", "recheck", "worst", "n", "method"
    ]  # fmt: skip
    if "attack" not in frame:
        return pd.DataFrame(columns=columns)
    ok = frame[(frame["status"] == "ok") & frame["attack"].isin(ADAPTIVE)]
    rows = []
    for (attack_id, defender_id), group in ok.groupby(["attack_id", "defender_id"]):
        params = json.loads(group["attack_params"].iloc[0])
        eps = params.get("eps")
        rows.append(
            {
                "defence": defender_id,
                "dataset": ", ".join(sorted(group["dataset"].unique())),
                "attack": attack_id,
                "distance": f"Linf {eps}",
                "final": float(group["correct_defended"].mean()),
                "recheck": float(group["recheck_correct"].mean()),
                "worst": float(group["correct_worst"].mean()),
                "n": len(group),
                "method": _method(params),
            }
        )
    table = pd.DataFrame(rows, columns=columns)
    order = {name: i for i, name in enumerate(_none_first(table["defence"]))}
    return table.sort_values(
        ["attack", "defence"], key=lambda c: c.map(order) if c.name == "defence" else c
    ).reset_index(drop=True)


def _method(params: dict[str, Any]) -> str:
    """The attack a white-box row's defence got, from its ``attack_params``: the adaptive
    attack records its choice (``gradient``, ``draws``), BPDA+EOT its ``eot``."""
    draws = int(params.get("draws", params.get("eot", 1)))
    return method_text({"gradient": params.get("gradient", "bpda"), "draws": draws})


def whitebox_section(frame: pd.DataFrame) -> list[str]:
    """The markdown lines of the white-box section (empty without adaptive attacks)."""
    table = whitebox_rows(frame)
    if table.empty:
        return []
    lines = [
        "",
        "## White-box attacks (BPDA, BPDA+EOT)",
        "",
        "final: accuracy on the final adversarial image, one defender draw. recheck: mean "
        "fraction of the re-check draws classified correctly. worst: correct at every attack "
        "iterate and every re-check draw, the honest count for a randomised defender. "
        "method: the attack the defence got (the adaptive attack follows the exact gradient "
        "through a defence that declares itself differentiable, else BPDA, and averages EOT "
        "draws on one that declares itself randomised).",
        "",
        "| defence | dataset | attack | distance | final | recheck | worst | n | method |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.itertuples(index=False):
        lines.append(
            f"| {row.defence} | {row.dataset} | {row.attack} | {row.distance} | "
            f"{row.final:.3f} | {row.recheck:.3f} | {row.worst:.3f} | {row.n} | {row.method} |"
        )
    adaptive = table[table["attack"].str.startswith("adaptive-")]
    eot = table[table["attack"].str.startswith("bpda-eot")]
    if not adaptive.empty:  # the attack each defence calls for, so the headline
        which = "the adaptive attack"
        cells = [f"{r.defence} {r.worst:.3f} ({r.method})" for r in adaptive.itertuples()]
    else:
        headline, which = (eot, "BPDA+EOT") if not eot.empty else (table, "BPDA")
        cells = [f"{r.defence} {r.worst:.3f}" for r in headline.itertuples()]
    lines += ["", f"Headline (worst case under {which}): " + ", ".join(cells) + "."]
    return lines


@dataclass(frozen=True)
class Sweep:
    """Defenders of one family evaluated at several values of their settings.

    ``settings`` names what varies (``("kernel",)`` for a median sweep); ``columns`` maps
    each defender id to its column label, in ascending order of the values.
    """

    family: str
    settings: tuple[str, ...]
    columns: dict[str, str]


def _label(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _order(value: Any) -> tuple[int, float, str]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def find_sweeps(frame: pd.DataFrame) -> list[Sweep]:
    """The swept defender families of ``frame``: those with several ids over ``ok`` rows,
    and the settings (from ``defender_params``) in which their ids differ."""
    if frame.empty or not {"defender", "defender_params"} <= set(frame.columns):
        return []
    ok = frame[frame["status"] == "ok"].drop_duplicates("defender_id")
    sweeps = []
    for family, group in ok.groupby("defender", sort=True):
        if len(group) < 2:
            continue
        params = {
            str(row.defender_id): json.loads(str(row.defender_params))
            for row in group.itertuples(index=False)
        }
        keys = sorted({key for p in params.values() for key in p})
        varying = tuple(
            key
            for key in keys
            if len({json.dumps(p.get(key), sort_keys=True) for p in params.values()}) > 1
        )
        if not varying:
            continue
        ids = sorted(params, key=lambda i: tuple(_order(params[i].get(k)) for k in varying))
        if len(varying) == 1:
            columns = {i: _label(params[i].get(varying[0])) for i in ids}
        else:
            columns = {
                i: ", ".join(f"{k}={_label(params[i].get(k))}" for k in varying) for i in ids
            }
        sweeps.append(Sweep(str(family), varying, columns))
    return sweeps


def sweep_table(
    frame: pd.DataFrame, sweep: Sweep, column: str = "correct_defended"
) -> pd.DataFrame:
    """Accuracy of one sweep: rows attack ids (``none`` first), columns the sweep's labels.

    Each cell is an ``(accuracy, n)`` pair over ``ok`` rows, or None when nothing was stored.
    """
    ok = frame[(frame["status"] == "ok") & frame["defender_id"].isin(list(sweep.columns))]
    attacks = _none_first(ok["attack_id"])
    grouped = ok.groupby(["attack_id", "defender_id"])[column].agg(["mean", "count"])
    table = pd.DataFrame(
        index=pd.Index(attacks, name="attack"), columns=list(sweep.columns.values()), dtype=object
    )
    for (attack, defender), values in grouped.iterrows():
        table.loc[attack, sweep.columns[defender]] = (float(values["mean"]), int(values["count"]))
    return table


def sweep_section(frame: pd.DataFrame) -> list[str]:
    """Markdown lines of the sweeps, one table per swept family as in the paper's Tables 4-6:
    a row per attack, the accuracy at each value, the best value of the row in bold (ties
    all bold). Empty without sweeps."""
    sweeps = find_sweeps(frame)
    if not sweeps:
        return []
    lines = [
        "",
        "## Sweeps",
        "",
        "Top-1 accuracy of the defended images at each value of a swept setting; the best "
        "value for each attack in bold (the paper's Tables 4-6).",
    ]
    for sweep in sweeps:
        table = sweep_table(frame, sweep)
        cells = [c for row in table.itertuples(index=False) for c in row if isinstance(c, tuple)]
        counts = sorted({n for _, n in cells})
        n_text = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        lines += [
            "",
            f"### {sweep.family}: {', '.join(sweep.settings)}",
            "",
            f"Images per cell: {n_text}.",
            "",
            "| attack | " + " | ".join(table.columns) + " |",
            "|---" * (len(table.columns) + 1) + "|",
        ]
        for attack, row in table.iterrows():
            values = [cell[0] for cell in row if isinstance(cell, tuple)]
            best = max(values) if values else None
            texts = []
            for cell in row:
                if not isinstance(cell, tuple):
                    texts.append("")
                elif cell[0] == best:
                    texts.append(f"**{cell[0]:.3f}**")
                else:
                    texts.append(f"{cell[0]:.3f}")
            lines.append(f"| {attack} | " + " | ".join(texts) + " |")
    return lines
