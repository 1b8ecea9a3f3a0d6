"""The sweep section: defenders of one family evaluated at several values of a setting
(median kernel sizes, TV weights), one table per family as in the paper's Tables 4-6.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from analysis.intervals import Estimate
from analysis.tables import ROBUST, check_current, column_estimate, none_first


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
    attacks = none_first(ok["attack_id"])
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
