"""The white-box section: Table-2 style rows of the attacks made per defender (BPDA,
BPDA+EOT, the adaptive attacks), and each defence's robust accuracy under its strongest
attack.

A white-box attacker queries the defender at every iterate with its own draws and submits,
per image, the iterate where they were least often correct; that image is then defended with
R fresh draws (``recheck_correct``: the robust accuracy, :mod:`analysis.tables`).
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from analysis.ensemble import per_image_ensemble
from analysis.intervals import Estimate
from analysis.tables import ADAPTIVE, ROBUST, check_current, column_estimate, none_first
from ride.attacks.adaptive import method_text

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
    order = {name: i for i, name in enumerate(none_first(table["defence"]))}
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
    for defence in none_first(table["defence"]):
        attack_id, robust = strongest[defence]
        how = methods.get((attack_id, defence), "gray-box")
        cells.append(f"{defence} {robust.text()} under {attack_id} ({how})")
    lines += [
        "",
        "Headline (robust accuracy under the strongest attack, per defence): "
        + "; ".join(cells)
        + ".",
    ]
    return lines + ensemble_lines(frame, list(none_first(table["defence"])))


def ensemble_lines(frame: pd.DataFrame, defences: list[str]) -> list[str]:
    """Per defence attacked by two or more attacks, the per-image worst case over them
    (:mod:`analysis.ensemble`), AutoAttack's robust accuracy of an ensemble."""
    cells = []
    for defence in defences:
        ensemble = per_image_ensemble(frame, defence)
        if ensemble is not None and len(ensemble.attacks) > 1:
            left = f"; left out: {', '.join(ensemble.left_out)}" if ensemble.left_out else ""
            cells.append(f"{defence} {ensemble.text()}{left}")
    if not cells:
        return []
    return [
        "",
        "Per image, the worst of the attacks (the attacker chooses from its own draws, the "
        "fresh draws score it; gray-box attacks take part only on a deterministic defence): "
        + "; ".join(cells)
        + ".",
    ]
