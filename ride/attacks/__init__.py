"""L-infinity attacks in [0, 1] pixel space: gray-box FGSM, PGD and APGD, white-box BPDA (+EOT)
and the adaptive attacks, and the score-based Square attack, one module per family.

Each family module holds the attack as a function over tensors (``fgsm``, ``pgd``, ``bpda``,
``apgd``, ``apgd_through``, ``square``, ``square_through``: shapes and settings checked) and
as a class whose fields are its settings, registered by name in ``ride.registry.ATTACKS``:
``make_attack("pgd", eps=0.05, step=0.01)``.

- :mod:`~ride.attacks.base`: the checks, the projection, the sign-step walk, :class:`Attack`
  (its id written from its settings) and :class:`ThroughDefender`, the white-box base;
- :mod:`~ride.attacks.target`: the defender a white-box attack goes through
  (:class:`Target`), its seeded draws, and what the attacker sees (:class:`BPDAStep`);
- :mod:`~ride.attacks.fgsm`, :mod:`~ride.attacks.pgd`: Goodfellow et al. 2014, Madry et al.
  2017; :mod:`~ride.attacks.bpda`: BPDA and BPDA+EOT (Athalye, Carlini and Wagner, 2018);
- :mod:`~ride.attacks.apgd_walk`, :mod:`~ride.attacks.apgd`: APGD-CE and APGD-DLR (Croce and
  Hein, 2020), gray-box and through a defender;
- :mod:`~ride.attacks.adaptive`: the attack chosen per defender (exact gradient or BPDA, EOT
  or one draw); :mod:`~ride.attacks.surrogate`: BPDA through a short RIDE fit;
- :mod:`~ride.attacks.square`: the Square attack (Andriushchenko et al., 2020), a random search
  on the margin that queries no gradient, gray-box and through a defender (+EOT).
"""

from __future__ import annotations

from typing import Any

# isort: off
# The families register their classes when imported, in this order: the order of ATTACKS
# (``ride run --help``, the run keys). A module added to this package registers after them.
from ride.attacks.base import Attack, NoAttack, ThroughDefender
from ride.attacks.fgsm import FGSM, fgsm
from ride.attacks.pgd import PGD, pgd
from ride.attacks.bpda import BPDA, BPDAEOT, BPDASettings, bpda
from ride.attacks.apgd import APGD, APGDCE, APGDDLR, APGDSettings, apgd, apgd_through
from ride.attacks.adaptive import Adaptive, AdaptiveAPGDCE, AdaptiveAPGDDLR
from ride.attacks.surrogate import BPDASurrogate
from ride.attacks.square import Square, SquareEOT, SquareSettings, square, square_through

# isort: on
from ride.attacks.apgd_walk import apgd_checkpoints, dlr_loss
from ride.attacks.target import BPDAStep, DefenderFn, Target, bpda_identity, draw_seeds
from ride.registry import ATTACKS, import_modules

import_modules(__name__, __path__)  # an attack module added to this package registers itself

__all__ = [
    "APGD",
    "APGDCE",
    "APGDDLR",
    "ATTACKS",
    "BPDA",
    "BPDAEOT",
    "FGSM",
    "PGD",
    "APGDSettings",
    "Adaptive",
    "AdaptiveAPGDCE",
    "AdaptiveAPGDDLR",
    "Attack",
    "BPDASettings",
    "BPDAStep",
    "BPDASurrogate",
    "DefenderFn",
    "NoAttack",
    "Square",
    "SquareEOT",
    "SquareSettings",
    "Target",
    "ThroughDefender",
    "apgd",
    "apgd_checkpoints",
    "apgd_through",
    "bpda",
    "bpda_identity",
    "dlr_loss",
    "draw_seeds",
    "fgsm",
    "make_attack",
    "pgd",
    "square",
    "square_through",
]


def make_attack(name: str, **settings: Any) -> Attack:
    """Attack ``name`` (registered in ``ATTACKS``) with ``settings`` over its defaults."""
    out: Attack = ATTACKS[name].build(**settings)
    return out
