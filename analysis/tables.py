"""Accuracy tables computed from the Parquet results only.

``pandas.read_parquet(run_dir + "/results")`` and DuckDB see the same rows, so every number
here can be recomputed by a reader of the results alone.

Every accuracy is the robust accuracy unless named otherwise: the mean over images of
``recheck_correct``, the fraction of R fresh defender draws (seeded apart from every attacker
draw) that classify the evaluated image correctly; for a white-box attack that image is the
iterate the attacker chose, for the others the attack's output. For a deterministic defender
it is the plain top-1 accuracy. Each comes with its n and a 95% Wilson interval
(:mod:`analysis.intervals`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from analysis.intervals import Estimate, estimate
from ride.attacks.adaptive import method_text
from storage.files import StorageError

#: White-box attacks: made per defender, rows with the attacker's choice of iterate
#: (``chosen_iteration``, ``attacker_correct``) and per-step tracking (ride.attacks).
ADAPTIVE = (
    "bpda",
    "bpda-eot",
    "bpda-surrogate",
    "adaptive",
    "adaptive-apgd-ce",
    "adaptive-apgd-dlr",
)


ROBUST = "recheck_correct"
"""The robust accuracy's column (see the module's note)."""

DRAWS = {"recheck_correct": "recheck_draws", "final_correct": "recheck_draws",
         "attacker_correct": "attacker_draws"}  # fmt: skip
"""The draw count each per-image fraction is a fraction of (the other columns are 0/1)."""

CURRENT = ("recheck_majority", "final_correct", "correct_every_draw", "recheck_correct")
"""Columns every ``ok`` row has since ride-pipeline 0.4.0 (``recheck_correct`` before too);
white-box rows also have ``attacker_correct``."""


class OutdatedResults(StorageError):
    """Result rows written before ride-pipeline 0.4.0, without the columns the report reads
    (printed as one line by the command line, as every :class:`StorageError`)."""


def _outdated(column: str, where: str = "") -> OutdatedResults:
    return OutdatedResults(
        f"results written by ride-pipeline < 0.4.0 lack {column}{where}: rerun the run with "
        "ride-pipeline >= 0.4.0 (its robust accuracy is counted differently)"
    )


def check_current(frame: pd.DataFrame) -> None:
    """Raise :class:`OutdatedResults` (one line) when ``frame`` lacks a column of
    :data:`CURRENT`, or an ``ok`` row has none (a file written before 0.4.0 reads back with
    the new columns empty), or a white-box ``ok`` row has no ``attacker_correct``."""
    for column in CURRENT:
        if column not in frame.columns:
            raise _outdated(column)
    ok = frame[frame["status"] == "ok"]
    white = ok[ok["attack"].isin(ADAPTIVE)] if "attack" in ok.columns else ok.iloc[:0]
    checks = [(ok, column) for column in CURRENT]
    if len(white):
        if "attacker_correct" not in white.columns:
            raise _outdated("attacker_correct")
        checks.append((white, "attacker_correct"))
    for rows, column in checks:
        empty = rows[rows[column].isna()]
        if len(empty):
            first = empty.iloc[0]
            raise _outdated(
                column,
                f" ({len(empty)} of {len(rows)} rows, {first['attack_id']} x "
                f"{first['defender_id']} among them)",
            )


def column_estimate(rows: pd.DataFrame, column: str = ROBUST) -> Estimate:
    """The accuracy of ``column`` over ``rows`` (all counted: filter ``ok`` first): the mean
    of its per-image values, exact for fractions of their draws (:data:`DRAWS`), n and the
    95% Wilson interval."""
    draws = DRAWS.get(column)
    counts = rows[draws] if draws is not None and draws in rows.columns else None
    if counts is not None and counts.isna().any():
        counts = None  # the values count as they are
    return estimate(rows[column].astype(float), counts)


def accuracy_table(frame: pd.DataFrame, column: str = ROBUST) -> pd.DataFrame:
    """Accuracy per (attack, defender) over ``ok`` rows.

    Rows: attack ids, columns: defender ids; each ``none`` first, the others sorted. Each
    cell is an :class:`~analysis.intervals.Estimate` (mean, n, 95% Wilson interval), or NaN
    when the pair has no ok row. ``column`` picks the per-image value: ``recheck_correct``
    (the robust accuracy), ``recheck_majority``, ``final_correct``, ``correct_every_draw``,
    ``correct_defended`` (one draw).
    """
    check_current(frame)
    ok = frame[frame["status"] == "ok"]
    attacks = _none_first(ok["attack_id"])
    defenders = _none_first(ok["defender_id"])
    table = pd.DataFrame(index=pd.Index(attacks, name="attack"), columns=defenders, dtype=object)
    for (attack, defender), rows in ok.groupby(["attack_id", "defender_id"]):
        table.loc[attack, defender] = column_estimate(rows, column)
    return table


def _none_first(ids: pd.Series) -> list[str]:
    return sorted(set(ids), key=lambda name: (name != "none", name))


def clean_accuracy(frame: pd.DataFrame) -> Estimate | None:
    """Accuracy of the undefended classifier on the clean images (each image once), n and
    its interval; None without ok rows."""
    ok = frame[frame["status"] == "ok"].drop_duplicates("index")
    return column_estimate(ok, "correct_clean") if len(ok) else None


def accuracy_report(frame: pd.DataFrame) -> str:
    """The markdown report: clean accuracy, the robust accuracy table and any failures.

    :class:`OutdatedResults` for rows written before ride-pipeline 0.4.0."""
    if frame.empty:
        return "# RIDE evaluation\n\nNo results yet.\n"
    table = accuracy_table(frame)
    clean = clean_accuracy(frame)
    dataset = ", ".join(sorted(frame["dataset"].unique()))
    lines = [
        "# RIDE evaluation",
        "",
        f"Dataset: {dataset}. Clean accuracy (no attack, no defence): "
        f"{'n/a' if clean is None else clean.text()}.",
        "",
        "Robust accuracy of the defended images: per image, the fraction of the re-check "
        "draws (fresh defender draws) classified correctly, averaged over the images; the "
        "plain top-1 accuracy for a deterministic defender. Each with its 95% Wilson "
        "interval and n; rows: attack, columns: defender.",
        "",
        "| attack | " + " | ".join(str(c) for c in table.columns) + " |",
        "|---" * (len(table.columns) + 1) + "|",
    ]
    for attack, row in table.iterrows():
        cells = [cell.text() if isinstance(cell, Estimate) else "" for cell in row]
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


WHITEBOX_COLUMNS = (
    "defence", "dataset", "attack", "distance", "robust", "majority", "final", "every_draw",
    "attacker", "no_attack", "n", "method",
)  # fmt: skip


def whitebox_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Table-2 style rows for the white-box attacks: one per (defence, attack), over ``ok``
    rows. Columns (:data:`WHITEBOX_COLUMNS`):

    - defence, dataset, attack, distance (the L-infinity budget);
    - robust: the robust accuracy (mean ``recheck_correct``: the fraction of the R fresh
      draws correct on the iterate the attacker chose), an :class:`Estimate`;
    - majority: images whose majority vote over the R draws is correct
      (``recheck_majority``), an :class:`Estimate`;
    - final: the same fraction on the attack's final iterate (``final_correct``, the
      conventional last-iterate evaluation), an :class:`Estimate`;
    - every_draw: images correct at every re-check draw and every draw the attacker made at
      every iterate (``correct_every_draw``; falls as draws are added, attack or not);
    - attacker: the attacker's own view, the mean fraction of its draws correct at the
      iterate it chose (``attacker_correct``);
    - no_attack: the same defence's robust accuracy under the ``none`` attack in ``frame``
      (what randomness alone costs), an :class:`Estimate`; None when ``none`` was not run;
    - n: images (the n of robust, majority and final);
    - method: the attack this defence got, from ``attack_params`` (``BPDA``,
      ``BPDA + EOT 15``, ``exact gradient + EOT 15``, ...; the adaptive attack chooses it per
      defence).
    """
    if "attack" not in frame or not frame["attack"].isin(ADAPTIVE).any():
        return pd.DataFrame(columns=list(WHITEBOX_COLUMNS))
    check_current(frame)
    ok = frame[frame["status"] == "ok"]
    unattacked = ok[ok["attack_id"] == "none"]
    rows = []
    for (attack_id, defender_id), group in ok[ok["attack"].isin(ADAPTIVE)].groupby(
        ["attack_id", "defender_id"]
    ):
        params = json.loads(group["attack_params"].iloc[0])
        clean = unattacked[unattacked["defender_id"] == defender_id]
        rows.append(
            {
                "defence": defender_id,
                "dataset": ", ".join(sorted(group["dataset"].unique())),
                "attack": attack_id,
                "distance": f"Linf {params.get('eps')}",
                "robust": column_estimate(group, ROBUST),
                "majority": column_estimate(group, "recheck_majority"),
                "final": column_estimate(group, "final_correct"),
                "every_draw": column_estimate(group, "correct_every_draw").mean,
                "attacker": column_estimate(group, "attacker_correct").mean,
                "no_attack": column_estimate(clean, ROBUST) if len(clean) else None,
                "n": len(group),
                "method": _method(params),
            }
        )
    table = pd.DataFrame(rows, columns=list(WHITEBOX_COLUMNS))
    order = {name: i for i, name in enumerate(_none_first(table["defence"]))}
    return table.sort_values(
        ["attack", "defence"], key=lambda c: c.map(order) if c.name == "defence" else c
    ).reset_index(drop=True)


def _method(params: dict[str, Any]) -> str:
    """The attack a white-box row's defence got, from its ``attack_params``: the adaptive
    attack records its choice (``gradient``, ``draws``), BPDA+EOT its ``eot``."""
    draws = int(params.get("draws", params.get("eot", 1)))
    return method_text({"gradient": params.get("gradient", "bpda"), "draws": draws})


def strongest_attacks(frame: pd.DataFrame) -> dict[str, tuple[str, Estimate]]:
    """Per defender id, the attack (every attack of ``frame`` but ``none``) with the lowest
    robust accuracy over ``ok`` rows, and that accuracy: the defence's robust accuracy, as
    on its card. Ties go to a white-box attack, then to the later attack id."""
    check_current(frame)
    ok = frame[(frame["status"] == "ok") & (frame["attack_id"] != "none")]
    white = set(ok.loc[ok["attack"].isin(ADAPTIVE), "attack_id"]) if "attack" in ok else set()
    found: dict[str, tuple[str, Estimate]] = {}
    for (attack_id, defender_id), rows in sorted(
        ok.groupby(["attack_id", "defender_id"]),
        key=lambda item: (item[0][0] in white, item[0][0]),
    ):
        robust = column_estimate(rows, ROBUST)
        best = found.get(str(defender_id))
        if best is None or robust.mean <= best[1].mean:
            found[str(defender_id)] = (str(attack_id), robust)
    return found


def whitebox_section(frame: pd.DataFrame) -> list[str]:
    """The markdown lines of the white-box section (empty without white-box attacks)."""
    table = whitebox_rows(frame)
    if table.empty:
        return []
    lines = [
        "",
        "## White-box attacks (BPDA, BPDA+EOT)",
        "",
        "The attacker queries the defender at every iterate with its own draws and submits, "
        "per image, the iterate where they were least often correct (ties: the later one); "
        "that image is then defended with R fresh draws (seeds no attacker draw uses).",
        "",
        "- robust: the robust accuracy, the fraction of the R fresh draws classified "
        "correctly on the submitted iterate, averaged over the images.",
        "- majority: images whose majority vote over the R fresh draws is the label (strictly "
        "the most frequent prediction).",
        "- final: the same fraction of R fresh draws, on the attack's final iterate (the "
        "usual last-iterate evaluation).",
        "- every draw: images correct at every fresh draw and at every draw the attacker made "
        "at every iterate; it falls as draws are added even without an attack.",
        "- attacker: the attacker's own view, the fraction of its draws correct at the "
        "iterate it submitted.",
        "- no attack: the same defence's robust accuracy under the 'none' attack, what "
        "randomness alone costs (blank when 'none' was not run).",
        "- n: images, the n of robust, majority and final; intervals are 95% Wilson.",
        "- method: the attack the defence got (the adaptive attack follows the exact gradient "
        "through a defence that declares itself differentiable, else BPDA, and averages EOT "
        "draws on one that declares itself randomised).",
        "",
        "| defence | dataset | attack | distance | robust | majority | final | every draw "
        "| attacker | no attack | n | method |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.itertuples(index=False):
        no_attack = "" if row.no_attack is None else row.no_attack.text()
        lines.append(
            f"| {row.defence} | {row.dataset} | {row.attack} | {row.distance} | "
            f"{row.robust.text(with_n=False)} | {row.majority.text(with_n=False)} | "
            f"{row.final.text(with_n=False)} | {row.every_draw:.3f} | {row.attacker:.3f} | "
            f"{no_attack} | {row.n} | {row.method} |"
        )
    methods = {(r.attack, r.defence): r.method for r in table.itertuples(index=False)}
    strongest = strongest_attacks(frame)
    cells = []
    for defence in _none_first(table["defence"]):
        attack_id, robust = strongest[defence]
        how = methods.get((attack_id, defence), "gray-box")
        cells.append(f"{defence} {robust.text()} under {attack_id} ({how})")
    lines += [
        "",
        "Headline (robust accuracy under the strongest attack, per defence): "
        + "; ".join(cells)
        + ".",
    ]
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


def sweep_table(frame: pd.DataFrame, sweep: Sweep, column: str = ROBUST) -> pd.DataFrame:
    """Accuracy of one sweep: rows attack ids (``none`` first), columns the sweep's labels.

    Each cell is an :class:`~analysis.intervals.Estimate` of ``column`` (by default the
    robust accuracy) over ``ok`` rows, or NaN when nothing was stored.
    """
    check_current(frame)
    ok = frame[(frame["status"] == "ok") & frame["defender_id"].isin(list(sweep.columns))]
    attacks = _none_first(ok["attack_id"])
    table = pd.DataFrame(
        index=pd.Index(attacks, name="attack"), columns=list(sweep.columns.values()), dtype=object
    )
    for (attack, defender), rows in ok.groupby(["attack_id", "defender_id"]):
        table.loc[attack, sweep.columns[defender]] = column_estimate(rows, column)
    return table


def sweep_section(frame: pd.DataFrame) -> list[str]:
    """Markdown lines of the sweeps, one table per swept family as in the paper's Tables 4-6:
    a row per attack, the robust accuracy at each value with its interval and n, the best
    value of the row in bold (ties all bold). Empty without sweeps."""
    sweeps = find_sweeps(frame)
    if not sweeps:
        return []
    lines = [
        "",
        "## Sweeps",
        "",
        "Robust accuracy of the defended images at each value of a swept setting, with its "
        "95% Wilson interval and n; the best value for each attack in bold (the paper's "
        "Tables 4-6).",
    ]
    for sweep in sweeps:
        table = sweep_table(frame, sweep)
        lines += [
            "",
            f"### {sweep.family}: {', '.join(sweep.settings)}",
            "",
            "| attack | " + " | ".join(table.columns) + " |",
            "|---" * (len(table.columns) + 1) + "|",
        ]
        for attack, row in table.iterrows():
            cells = [cell if isinstance(cell, Estimate) else None for cell in row]
            best = max((cell.mean for cell in cells if cell is not None), default=None)
            texts = ["" if cell is None else cell.text(bold=cell.mean == best) for cell in cells]
            lines.append(f"| {attack} | " + " | ".join(texts) + " |")
    return lines
