"""The per-image worst case over a run's attacks (AutoAttack's ensemble), sound for a
randomised defender.

AutoAttack (Croce and Hein, "Reliable evaluation of adversarial robustness with an ensemble
of diverse parameter-free attacks", ICML 2020) counts an image robust only when every attack
of the ensemble fails on it. The lowest of the attacks' mean accuracies, the headline this
replaces, is higher whenever different attacks break different images.

With a randomised defender the per-image minimum of the *evaluation* draws would choose on
the measurement itself and bias the estimate low. So the attacker chooses, per image, from
what it saw with its own draws (:mod:`ride.robustness`), and the chosen attack's image is
scored with its fresh re-check draws (``recheck_correct``), which no attacker draw shares:

- a white-box row's attacker view is ``attacker_correct``, the fraction of the attacker's
  draws classified correctly at the iterate it submitted;
- a gray-box row has no attacker draws. Against a deterministic defender (it declares
  ``randomised = False``, which the pipeline checks by defending twice) the attacker can
  compute the defence exactly, so its view is the outcome itself; against a randomised one
  (or one the registry does not know) the row takes no part, and :class:`Ensemble` says so.

Ties go to the attack listed first in ``order`` (a preset lists the paper's attack first; by
default the registry's order): an order fixed before any result is seen. Against a
deterministic defender the ensemble's accuracy is the per-image minimum, never above any
single attack's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from analysis.intervals import Estimate, estimate
from analysis.tables import ROBUST
from ride.attacks import ATTACKS
from ride.defenders import DEFENDERS


@dataclass(frozen=True)
class Ensemble:
    """One defence under the per-image worst case of its attacks.

    ``attacks``: the attacks that took part, in tie order; ``left_out``: the gray-box attacks
    that could not (a randomised defence); ``robust``: the accuracy over the ``n`` images every
    taking part attack finished; ``chosen``: per image index, the attack the attacker chose.
    """

    defender_id: str
    attacks: tuple[str, ...]
    left_out: tuple[str, ...]
    robust: Estimate
    chosen: pd.Series

    @property
    def n(self) -> int:
        return self.robust.n

    def text(self) -> str:
        """``0.700 [0.521, 0.833] n=30, worst of 3 attacks per image``."""
        return f"{self.robust.text()}, worst of {len(self.attacks)} attacks per image"


def declared_randomised(defender: str) -> bool:
    """Whether the registered defender ``defender`` declares itself randomised; True
    (the conservative answer) for a name the registry does not know (a plugin)."""
    if defender not in DEFENDERS:
        return True
    return bool(getattr(DEFENDERS[defender].cls, "randomised", True))


def attacker_view(rows: pd.DataFrame, randomised: bool) -> pd.Series | None:
    """Per row, what the attacker knows of its success (lower: better for it), or None when
    the attack gives it nothing sound to choose by (gray-box on a randomised defence)."""
    if rows["attacker_correct"].notna().all():  # a white-box attack: its own draws
        return rows["attacker_correct"].astype(float)
    return None if randomised else rows[ROBUST].astype(float)


def in_order(
    attack_ids: Iterable[str], names: Mapping[str, str], order: Sequence[str]
) -> list[str]:
    """``attack_ids`` in ``order`` (attack ids or names; ``names`` maps an id to its attack's
    name), those it does not list after them; ties by id."""
    rank = {name: i for i, name in enumerate(order)}

    def key(attack_id: str) -> tuple[int, str]:
        listed = min(rank.get(attack_id, len(rank)), rank.get(names[attack_id], len(rank)))
        return listed, attack_id

    return sorted(attack_ids, key=key)


def per_image_ensemble(
    frame: pd.DataFrame, defender_id: str, order: Sequence[str] = ()
) -> Ensemble | None:
    """The ensemble of ``defender_id``'s attacks in ``frame`` (``ok`` rows, ``none`` left
    out): per image, the attack with the lowest attacker view, ties to the earlier in
    ``order`` (attack names or ids, e.g. the run's attacks; empty: the registry's order of
    attack names; the rest by id), scored by its ``recheck_correct``.
    None when no attack can take part or no image was finished by all."""
    ok = frame[
        (frame["status"] == "ok")
        & (frame["defender_id"] == defender_id)
        & (frame["attack_id"] != "none")
    ]
    if ok.empty:
        return None
    randomised = declared_randomised(str(ok["defender"].iloc[0]) if "defender" in ok else "")
    views: dict[str, pd.Series] = {}
    robust: dict[str, pd.Series] = {}
    draws: dict[str, pd.Series] = {}
    left_out: list[str] = []
    for attack_id, rows in ok.groupby("attack_id"):
        rows = rows.set_index("index")
        view = attacker_view(rows, randomised)
        if view is None:
            left_out.append(str(attack_id))
            continue
        views[str(attack_id)], robust[str(attack_id)] = view, rows[ROBUST].astype(float)
        draws[str(attack_id)] = rows["recheck_draws"]
    if not views:
        return None
    names = dict(zip(ok["attack_id"], ok["attack"], strict=False))
    attacks = in_order(views, names, order or ATTACKS.names())
    seen = pd.DataFrame({a: views[a] for a in attacks}).dropna()  # (images, attacks)
    if seen.empty:
        return None
    chosen = seen.idxmin(axis=1)  # the first minimum: ties to the earlier attack
    values = [robust[a].loc[i] for i, a in chosen.items()]
    counts = [draws[a].loc[i] for i, a in chosen.items()]
    return Ensemble(
        defender_id, tuple(attacks), tuple(sorted(left_out)), estimate(values, counts), chosen
    )
