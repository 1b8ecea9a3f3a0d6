"""L-infinity attacks in [0, 1] pixel space: gray-box FGSM, PGD and APGD, white-box BPDA (+EOT).

Functions over tensors in :mod:`ride.attacks.functional` (``fgsm``, ``pgd``, ``bpda``,
``apgd``, ``apgd_through``); one class per attack in :mod:`ride.attacks.modules` (the adaptive
ones in :mod:`ride.attacks.adaptive`), registered by name in ``ride.registry.ATTACKS``:
``make_attack("pgd", eps=0.05, step=0.01)``.
"""

from __future__ import annotations

from typing import Any

from ride.attacks.adaptive import Adaptive, AdaptiveAPGDCE, AdaptiveAPGDDLR
from ride.attacks.functional import (
    BPDAStep,
    DefenderFn,
    apgd,
    apgd_checkpoints,
    apgd_through,
    bpda,
    bpda_identity,
    dlr_loss,
    draw_seeds,
    fgsm,
    pgd,
)
from ride.attacks.modules import APGDCE, APGDDLR, BPDA, BPDAEOT, FGSM, PGD, Attack, NoAttack
from ride.registry import ATTACKS, import_modules

import_modules(__name__, __path__)  # an attack module added to this package registers itself

__all__ = [
    "APGDCE",
    "APGDDLR",
    "ATTACKS",
    "BPDA",
    "BPDAEOT",
    "FGSM",
    "PGD",
    "Adaptive",
    "AdaptiveAPGDCE",
    "AdaptiveAPGDDLR",
    "Attack",
    "BPDAStep",
    "DefenderFn",
    "NoAttack",
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
]


def make_attack(name: str, **settings: Any) -> Attack:
    """Attack ``name`` (registered in ``ATTACKS``) with ``settings`` over its defaults."""
    out: Attack = ATTACKS[name].build(**settings)
    return out
