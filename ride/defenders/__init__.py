"""Defenders: callables over (B, C, H, W) images in [0, 1] that return defended images.

Baselines (paper, "Defense Against Gray-Box Attack"): no defence, median filter, TV
minimisation (split-Bregman, Chambolle). Self-supervised (paper, "Self-Supervised Data
Estimation" and "Ablation Study"): RIDE and its variants DAE, DIP, I-DIP.

Usage: ``build_defender(defender_config("ride", iters=300))(x_adv, seeds)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any, Literal, Protocol

from torch import Tensor

from ride.defenders.filters import (
    Median,
    MedianConfig,
    NoDefence,
    NoDefenceConfig,
    TVBregman,
    TVBregmanConfig,
    TVChambolle,
    TVChambolleConfig,
    median,
    tv_bregman,
    tv_chambolle,
)
from ride.defenders.ride import (
    PRECISIONS,
    Precision,
    ReconstructionFCN,
    Ride,
    RideConfig,
    check_precision,
    ride,
)
from ride.seeding import derive_seed

__all__ = [
    "DEFENDERS",
    "PRECISIONS",
    "Defender",
    "DefenderConfig",
    "Median",
    "MedianConfig",
    "NoDefence",
    "NoDefenceConfig",
    "Precision",
    "ReconstructionFCN",
    "Ride",
    "RideConfig",
    "TVBregman",
    "TVBregmanConfig",
    "TVChambolle",
    "TVChambolleConfig",
    "build_defender",
    "defend_draws",
    "defender_config",
    "median",
    "ride",
    "tv_bregman",
    "tv_chambolle",
]

DEFENDERS: tuple[str, ...] = (
    "none",
    "median",
    "tv-bregman",
    "tv-chambolle",
    "ride",
    "dae",
    "dip",
    "idip",
)

DefenderConfig = NoDefenceConfig | MedianConfig | TVBregmanConfig | TVChambolleConfig | RideConfig


class Defender(Protocol):
    """A defender: ``x`` (B, C, H, W) in [0, 1] -> defended (B, C, H, W) in [0, 1].

    Never mutates ``x``. ``seeds`` gives one seed per image; deterministic defenders ignore
    it, RIDE seeds image i's network, noise and dropout masks with ``seeds[i]``.
    """

    @property
    def id(self) -> str: ...

    def __call__(self, x: Tensor, seeds: Sequence[int] | None = None) -> Tensor: ...


def build_defender(
    cfg: DefenderConfig,
    *,
    precision: Precision = "fp32",
    max_batch: int | Literal["auto"] | None = None,
) -> Defender:
    """The defender described by ``cfg``.

    ``precision`` and ``max_batch`` set how RIDE's fits run (see ``ride``); the filters
    always run in the images' own dtype.
    """
    check_precision(precision)
    if isinstance(cfg, NoDefenceConfig):
        return NoDefence(cfg)
    if isinstance(cfg, MedianConfig):
        return Median(cfg)
    if isinstance(cfg, TVBregmanConfig):
        return TVBregman(cfg)
    if isinstance(cfg, TVChambolleConfig):
        return TVChambolle(cfg)
    if isinstance(cfg, RideConfig):
        return Ride(cfg, precision=precision, max_batch=max_batch)
    raise ValueError(f"not a defender config: {type(cfg).__name__}")


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


_CONFIG_TYPES: dict[str, type[Any]] = {
    "none": NoDefenceConfig,
    "median": MedianConfig,
    "tv-bregman": TVBregmanConfig,
    "tv-chambolle": TVChambolleConfig,
    "ride": RideConfig,
    "dae": RideConfig,
    "dip": RideConfig,
    "idip": RideConfig,
}

#: Settings implied by the defender's name (the ablation variants of RIDE).
_IMPLIED: dict[str, dict[str, Any]] = {
    "ride": {"variant": "ride"},
    "dae": {"variant": "dae", "alpha": 1.0},
    "dip": {"variant": "dip", "alpha": 1.0},
    "idip": {"variant": "idip"},
}


def defender_config(name: str, **settings: Any) -> DefenderConfig:
    """Config of defender ``name`` (one of ``DEFENDERS``) with ``settings`` over its defaults.

    ``dae`` is RIDE with alpha = 1, ``dip`` DIP with alpha = 1, ``idip`` DIP with the
    iterative update (paper, "Ablation Study on RIDE").
    """
    if name not in _CONFIG_TYPES:
        raise ValueError(f"unknown defender {name!r}; choose from: {', '.join(DEFENDERS)}")
    cls = _CONFIG_TYPES[name]
    valid = [f.name for f in fields(cls) if f.name != "variant"]
    unknown = sorted(set(settings) - set(valid))
    if "variant" in settings and settings["variant"] != _IMPLIED.get(name, {}).get("variant"):
        unknown.append("variant")
    if unknown:
        raise ValueError(
            f"unknown setting(s) {', '.join(unknown)} for defender {name!r}; "
            f"valid: {', '.join(valid) or '(none)'}"
        )
    merged = {**_IMPLIED.get(name, {}), **settings}
    cfg: DefenderConfig = cls(**merged)
    return cfg
