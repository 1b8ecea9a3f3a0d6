"""Defenders: callables over (B, C, H, W) images in [0, 1] that return defended images.

Baselines (paper, "Defense Against Gray-Box Attack"): no defence, median filter, TV
minimisation (split-Bregman, Chambolle). Self-supervised (paper, "Self-Supervised Data
Estimation" and "Ablation Study"): RIDE and its variants DAE, DIP, I-DIP.

Every defender is one frozen dataclass of its settings, registered by name in
``ride.registry.DEFENDERS``: ``make_defender("ride", iters=300)(x_adv, seeds)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol

from torch import Tensor

from ride.defenders.base import CallableDefender, DefenderBase, settings_id
from ride.defenders.filters import (
    Median,
    NoDefence,
    TVBregman,
    TVChambolle,
    median,
    tv_bregman,
    tv_chambolle,
)
from ride.defenders.ride import (
    PRECISIONS,
    Precision,
    ReconstructionFCN,
    Ride,
    check_precision,
    ride,
)
from ride.registry import DEFENDERS, import_modules, with_execution
from ride.seeding import derive_seed

import_modules(__name__, __path__)  # a defender module added to this package registers itself

__all__ = [
    "DEFENDERS",
    "PRECISIONS",
    "CallableDefender",
    "Defender",
    "DefenderBase",
    "Median",
    "NoDefence",
    "Precision",
    "ReconstructionFCN",
    "Ride",
    "TVBregman",
    "TVChambolle",
    "build_defender",
    "defend_draws",
    "make_defender",
    "median",
    "ride",
    "settings_id",
    "tv_bregman",
    "tv_chambolle",
]


class Defender(Protocol):
    """A defender: ``x`` (B, C, H, W) in [0, 1] -> defended (B, C, H, W) in [0, 1].

    ``__call__(x, seeds)`` returns a tensor of x's shape and device, finite, in [0, 1], and
    never mutates ``x``. ``seeds`` gives one seed per image; RIDE seeds image i's network,
    noise and dropout masks with ``seeds[i]``. ``randomised`` False promises the same output
    whatever the seeds; ``differentiable`` True promises that autograd through ``__call__``
    gives the true gradient (a white-box attack then needs no BPDA approximation);
    ``cost_hint`` is the relative cost per image (1 = a median filter; None: unknown), used
    to order tasks and weigh the ETA. ``id`` names it in storage, ``params()`` records its
    settings with every result. :class:`DefenderBase` (``ride/defenders/base.py``, where the
    protocol is written out) gives all but ``__call__``, :class:`CallableDefender` all but
    the callable it wraps (a plugin that is a plain function); the pipeline checks every
    output (``pipeline/execution.py``).
    """

    @property
    def name(self) -> str: ...

    @property
    def randomised(self) -> bool: ...

    @property
    def differentiable(self) -> bool: ...

    @property
    def cost_hint(self) -> float | None: ...

    @property
    def id(self) -> str: ...

    def params(self) -> dict[str, float | int | bool | str]: ...

    def __call__(self, x: Tensor, seeds: Sequence[int] | None = None) -> Tensor: ...


def make_defender(name: str, **settings: Any) -> Defender:
    """Defender ``name`` (registered in ``DEFENDERS``) with ``settings`` over its defaults.

    ``dae`` is RIDE with alpha = 1, ``dip`` DIP with alpha = 1, ``idip`` DIP with the
    iterative update (paper, "Ablation Study on RIDE"): the name fixes those settings.
    """
    out: Defender = DEFENDERS[name].build(**settings)
    return out


def build_defender(
    defender: Defender,
    *,
    precision: Precision = "fp32",
    max_batch: int | Literal["auto"] | None = None,
) -> Defender:
    """``defender`` set to run at ``precision`` with at most ``max_batch`` images per fit
    (see ``ride``); defenders without such execution settings are returned unchanged."""
    check_precision(precision)
    return with_execution(defender, precision=precision, max_batch=max_batch)


def defend_draws(defender: Defender, x: Tensor, seeds: Sequence[int], draws: int) -> list[Tensor]:
    """``draws`` independent defences of ``x``: draw 0 uses ``seeds``, draw m the seeds
    derived from them and m (a deterministic defender gives the same image every time).

    The re-check of a final adversarial image (DiffPure's practice): a randomised defender
    can undo an attack by chance, so one draw flatters it.
    """
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be an int >= 1, got {draws!r}")
    return [
        defender(x, seeds if m == 0 else [derive_seed(int(s), "recheck", m) for s in seeds])
        for m in range(draws)
    ]
