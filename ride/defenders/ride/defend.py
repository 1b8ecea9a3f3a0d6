"""RIDE's defence of a batch: the checks on the images, each image's seed, and Alg. 2's
checkpoint loop over the fit engines (:mod:`ride.defenders.ride.engines`), in groups that fit
the memory budget (:mod:`ride.defenders.ride.memory`). :class:`Ride` calls :func:`ride`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from ride._checks import check_images, check_seeds, check_unit_range
from ride.defenders.ride.archs import ARCHS, Engine, check_engine, check_max_batch
from ride.defenders.ride.engines import BatchedEngine, FitEngine, ReferenceEngine, algorithm_2
from ride.defenders.ride.memory import max_batch_for, memory_budget_bytes
from ride.defenders.ride.precision import Precision, check_precision, fit_precision

if TYPE_CHECKING:
    from ride.defenders.ride.config import Ride


def _seed_list(seeds: Sequence[int] | None, b: int) -> list[int]:
    """One seed >= 0 per image; drawn from torch's default generator when ``seeds`` is None."""
    if seeds is None:
        return torch.randint(0, 2**63 - 1, (b,), dtype=torch.int64).tolist()
    seed_list = check_seeds(seeds, b)
    if any(s < 0 for s in seed_list):
        raise ValueError(f"seeds must be >= 0, got {seed_list}")
    return seed_list


def _checked_config(x: Tensor, defender: Ride, engine: Engine, precision: Precision) -> Ride:
    """``defender``'s settings for x (B, C, H, W) in [0, 1] (its ``arch`` taken from x's
    shape when None), once x, ``engine`` and ``precision`` are checked; ValueError else."""
    check_images(x)
    check_unit_range(x)
    check_engine(engine)
    check_precision(precision, x.device)
    cfg = defender.with_arch_for(x.shape[1:])
    assert cfg.arch is not None
    channels = ARCHS[cfg.arch][0][0]
    if x.shape[1] != channels:
        raise ValueError(f"RIDE arch {cfg.arch!r} expects {channels} channel(s), got {x.shape[1]}")
    return cfg


def ride(
    x: Tensor,
    defender: Ride,
    seeds: Sequence[int] | None = None,
    progress: Callable[[int, int], None] | None = None,
    *,
    engine: Engine = "batched",
    max_batch: int | Literal["auto"] | None = None,
    precision: Precision = "fp32",
) -> Tensor:
    """Defend a batch x (B, C, H, W) in [0, 1] with ``defender``'s settings (Alg. 2).

    Returns a new tensor. ``seeds[i]`` seeds image i's network init, noise and dropout masks;
    with ``seeds=None`` they are drawn from torch's default generator. Works under
    ``torch.no_grad()`` and inside an autograd graph (the fit runs under ``enable_grad``; the
    result is detached). ``progress(steps_done, steps_total)`` is called after every
    checkpoint of every image. A ``defender`` without ``arch`` takes it from x's shape.

    How the fits run is given here, not read from ``defender`` (``Ride.__call__`` passes its
    execution fields): ``engine="batched"`` (default) fits all B networks at once as one
    grouped convolution; ``"reference"`` fits them one by one (slow; same result up to
    floating-point rounding). ``max_batch`` caps how many images the batched engine fits at
    once (the rest follow in further groups); ``"auto"`` takes :func:`max_batch_for` of
    :func:`memory_budget_bytes`, so a GPU is not oversubscribed. ``precision`` (see
    :func:`fit_precision`): ``fp32`` (default), ``tf32`` (CUDA) or ``bf16``.

    Example:
        >>> import torch
        >>> from ride.defenders.ride import Ride
        >>> x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        >>> out = ride(x, Ride(iters=2, checkpoints=1), seeds=[0, 1])
        >>> out.shape, bool(out.min() >= 0 and out.max() <= 1)
        (torch.Size([2, 1, 28, 28]), True)
    """
    cfg = _checked_config(x, defender, engine, precision)
    b = x.shape[0]
    seed_list = _seed_list(seeds, b)
    if max_batch == "auto":
        max_batch = max_batch_for(cfg, x.shape[1:], memory_budget_bytes(x.device))
    check_max_batch(max_batch)
    if b == 0:
        return x.detach().clone()
    total = b * cfg.checkpoints * cfg.iters
    done = 0

    def step_progress(steps: int) -> None:
        nonlocal done
        done += steps
        if progress is not None:
            progress(done, total)

    group = b if max_batch is None or max_batch == "auto" else max_batch
    with torch.inference_mode(False), torch.enable_grad(), fit_precision(precision, x.device):
        return _defend_groups(x.detach().clone(), cfg, seed_list, engine, group, step_progress)


def _defend_groups(
    x: Tensor,
    cfg: Ride,
    seeds: list[int],
    engine: Engine,
    group: int,
    progress: Callable[[int], None],
) -> Tensor:
    """Alg. 2 on x (B, C, H, W): the batched engine ``group`` images at a time, the reference
    engine one by one."""
    make: type[FitEngine] = BatchedEngine
    if engine == "reference":
        make, group = ReferenceEngine, 1
    parts = [
        algorithm_2(make(x[i : i + group], cfg, seeds[i : i + group]), progress)
        for i in range(0, x.shape[0], group)
    ]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)  # (B, C, H, W)
