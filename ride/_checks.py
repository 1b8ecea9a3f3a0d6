"""Shared input checks and id formatting used by attacks and defenders."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping

import torch
from torch import Tensor


def check_images(x: Tensor, what: str = "x") -> None:
    """Raise ValueError unless ``x`` is a float tensor (B, C, H, W) without NaN."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{what} must have shape (B, C, H, W), got {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        raise ValueError(f"{what} must be a floating point tensor, got {x.dtype}")
    if bool(torch.isnan(x).any()):
        raise ValueError(f"{what} contains NaN")


def check_unit_range(x: Tensor, what: str = "x") -> None:
    """Raise ValueError unless every value of ``x`` lies in [0, 1]."""
    x = x.detach()
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise ValueError(
            f"{what} must lie in [0, 1], got [{float(x.min()):.4g}, {float(x.max()):.4g}]"
        )


def check_seeds(seeds: object, batch: int) -> list[int]:
    """Return ``seeds`` as a list of ints, one per image, or raise ValueError."""
    if isinstance(seeds, Tensor):
        seeds = seeds.tolist()
    try:
        out = [int(s) for s in seeds]  # type: ignore[attr-defined]
    except TypeError as err:
        raise ValueError(f"seeds must be a sequence of ints, got {type(seeds).__name__}") from err
    if len(out) != batch:
        raise ValueError(f"need one seed per image: got {len(out)} seeds for {batch} images")
    return out


def fmt_number(value: float | int) -> str:
    """Shortest exact text for a number in an id: 0.1 -> '0.1', 1.0 -> '1', 2000 -> '2000'."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def short_hash(settings: Mapping[str, object]) -> str:
    """8 hex characters of the sha256 of the settings as sorted JSON."""
    blob = json.dumps(dict(settings), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:8]


def check_finite_number(value: float, what: str) -> float:
    """Return ``value`` as float; ValueError when it is not a finite number."""
    try:
        out = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} must be a number, got {value!r}") from err
    if not math.isfinite(out):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return out
