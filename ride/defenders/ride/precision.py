"""Arithmetic of the RIDE fits: ``fp32``, ``tf32`` (CUDA) or ``bf16``.

The precision changes the defended images (it is part of a run's identity), not what the
paper's Alg. 2 computes: the network, the loss and the optimiser stay the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Literal

import torch

Precision = Literal["fp32", "tf32", "bf16"]

PRECISIONS: tuple[str, ...] = ("fp32", "tf32", "bf16")


def check_precision(precision: str, device: torch.device | str | None = None) -> None:
    """Raise ValueError unless ``precision`` is one of ``PRECISIONS`` (usable on ``device``)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from: {', '.join(PRECISIONS)}")
    if precision == "tf32" and device is not None and torch.device(device).type != "cuda":
        raise ValueError("precision 'tf32' needs a CUDA device (TensorFloat-32 is a GPU format)")


@contextmanager
def fit_precision(precision: str, device: torch.device) -> Iterator[None]:
    """The arithmetic of the RIDE fits run inside (and nothing else: flags are restored).

    - ``fp32``: IEEE arithmetic in the images' dtype; on CUDA, cuDNN's TF32 convolutions
      (PyTorch's default there) are switched off.
    - ``tf32`` (CUDA only): convolutions take TensorFloat-32 inputs (10-bit mantissa) and
      accumulate in float32; everything else float32.
    - ``bf16``: autocast: convolutions and activations in bfloat16; the parameters, Adam's
      moments, the loss and the returned image stay in the images' dtype (bfloat16 has
      float32's exponent range, so no loss scaling). Fast on GPUs and on CPUs with bf16
      instructions (AVX512-BF16, AMX); emulated, hence slow, on other CPUs.

    Example:
        >>> import torch
        >>> with fit_precision("bf16", torch.device("cpu")):
        ...     torch.is_autocast_enabled("cpu")
        True
        >>> torch.is_autocast_enabled("cpu")
        False
    """
    check_precision(precision, device)
    with ExitStack() as stack:
        if device.type == "cuda":
            conv = torch.backends.cudnn.conv  # type: ignore[attr-defined]  # not in the stubs
            stack.callback(setattr, conv, "fp32_precision", conv.fp32_precision)
            conv.fp32_precision = "tf32" if precision == "tf32" else "ieee"
        if precision == "bf16":
            # no weight-cast cache: it would keep the first step's bf16 weights for the
            # whole fit, which spans many optimiser steps
            stack.enter_context(
                torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)
            )
        yield
