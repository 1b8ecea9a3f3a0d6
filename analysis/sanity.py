"""Did the attack do its job? The checks a reviewer of an adaptive-attack evaluation asks for
first (Carlini et al., "On evaluating adversarial robustness", 2019; Tramer et al., "On
adaptive attacks to adversarial example defenses", 2020), from a run's stored rows:

- **convergence**: the attacker's accuracy against the iteration, from the step rows. The
  attacker submits per image its best iterate so far, so its curve can only fall; when it
  still fell by more than one image's worth over the last half of the iterations, more
  iterations would lower it further and the robust accuracy is an upper bound;
- **the attack's own success**: the undefended classifier on the images the attacker
  submitted (``correct_adv``), beside the defended number;
- **gradient masking**: a defence whose robust accuracy under the white-box attacks is
  resolved above its accuracy under an attack that does not follow its gradient (gray-box:
  transfer from the undefended classifier; score-based) is masking the gradient, and its
  white-box number is not its robustness.

A failed check is printed as a line starting with **CHECK FAILED**.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analysis.paired import compare_to_reference
from analysis.tables import ROBUST

FAILED = "**CHECK FAILED**"


def best_so_far(steps: pd.DataFrame) -> pd.Series:
    """Per iteration k, the mean over images of the attacker's accuracy at its best iterate
    among 0..k (the lowest ``attacker_correct`` so far): what it would submit after k steps.
    ``steps``: the step rows of one (attack, defender)."""
    table = steps.pivot_table(index="iteration", columns="index", values="attacker_correct")
    return table.sort_index().cummin().mean(axis=1)  # (iterations,)


@dataclass(frozen=True)
class Convergence:
    """One (attack, defence)'s best-so-far curve at a few iterates, its n, and how far it
    fell over the last half of its iterations."""

    attack: str
    defence: str
    n: int
    curve: dict[int, float]
    fall: float

    @property
    def converged(self) -> bool:
        """Did the curve fall by at most one image's worth over the last half?"""
        return self.fall <= 1.0 / self.n + 1e-9


def convergence_rows(steps: pd.DataFrame) -> list[Convergence]:
    """Per (attack, defender) of ``steps``: the attacker's best-so-far accuracy at iterates
    0, K/4, K/2 and K (and 10, 20, 50, 100, 200 below K), and its fall over the last half."""
    rows: list[Convergence] = []
    for (attack_id, defender_id), group in steps.groupby(["attack_id", "defender_id"]):
        curve = best_so_far(group)
        last = int(curve.index.max())
        marks = {0, last // 4, last // 2, last} | {k for k in (10, 20, 50, 100, 200) if k < last}
        rows.append(
            Convergence(
                str(attack_id),
                str(defender_id),
                int(group["index"].nunique()),
                {k: float(curve.loc[k]) for k in sorted(marks) if k in curve.index},
                float(curve.loc[last // 2] - curve.loc[last]),
            )
        )
    return rows


def masking_lines(frame: pd.DataFrame) -> list[str]:
    """Per defence with white-box (``attacker_correct`` set) and other attacks on the same
    images: each other attack's robust accuracy minus the lowest white-box one, tested
    together (:func:`~analysis.paired.compare_to_reference`); a resolved fall below it is a
    failed check."""
    ok = frame[(frame["status"] == "ok") & (frame["attack_id"] != "none")]
    lines: list[str] = []
    for defender_id, rows in ok.groupby("defender_id"):
        white = rows.groupby("attack_id")["attacker_correct"].apply(lambda c: c.notna().all())
        if white.all() or not white.any():
            continue
        per_image = rows.pivot_table(index="index", columns="attack_id", values=ROBUST).dropna()
        if len(per_image) < 2:
            continue
        reference = str(per_image[list(white[white].index)].mean().idxmin())
        others = [str(a) for a in white[~white].index]
        comparisons = compare_to_reference(per_image[[reference, *others]], reference)
        for attack_id, comparison in comparisons.items():
            masked = comparison.resolved and comparison.mean < 0
            head = f"{FAILED} (gradient masking suspected)" if masked else "ok"
            lines.append(
                f"- {head}: {defender_id}, {attack_id} (no gradient through the defence) "
                f"minus the white-box {reference}: {comparison.text()}"
            )
    return lines


def success_lines(frame: pd.DataFrame) -> list[str]:
    """Per white-box (attack, defence): the undefended classifier's accuracy on the images
    the attacker submitted (the attack's own success) beside the defended robust accuracy."""
    if "correct_adv" not in frame:
        return []
    ok = frame[(frame["status"] == "ok") & frame["attacker_correct"].notna()]
    lines = []
    for (attack_id, defender_id), rows in ok.groupby(["attack_id", "defender_id"]):
        lines.append(
            f"- {defender_id} under {attack_id}: the undefended classifier gets "
            f"{rows['correct_adv'].astype(float).mean():.3f} of the submitted images right, "
            f"the defence {rows[ROBUST].astype(float).mean():.3f} (n={len(rows)})"
        )
    return lines


def sanity_section(frame: pd.DataFrame, steps: pd.DataFrame | None = None) -> list[str]:
    """The markdown lines of the sanity checks (empty without a white-box attack)."""
    if "attacker_correct" not in frame or not frame["attacker_correct"].notna().any():
        return []
    lines = ["", "## Sanity checks", ""]
    if steps is not None and not steps.empty:
        lines += [
            "Convergence: the attacker's accuracy at its best iterate so far, by iterate:",
            "",
        ]
        for row in convergence_rows(steps):
            curve = ", ".join(f"{k}: {v:.3f}" for k, v in row.curve.items())
            head = "ok" if row.converged else f"{FAILED} (not converged: an upper bound)"
            lines.append(
                f"- {head}: {row.defence} under {row.attack} (n={row.n}): {curve}; "
                f"fell {row.fall:.3f} over the last half"
            )
        lines.append("")
    lines += ["The attack's own success:", "", *success_lines(frame)]
    masking = masking_lines(frame)
    if masking:
        lines += ["", "Gradient masking (attacks that do not follow the defence's gradient):", ""]
        lines += masking
    return lines
