"""RIDE's networks and engines by name: Table 3's conv chains (``ARCHS``), the variants, the
fit engines, and the checks on them. The modules of the fits (network, streams, memory,
engines) read these, never the defender itself, so none of them imports it at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

Variant = Literal["ride", "dae", "dip", "idip"]
Arch = Literal["mnist", "cifar", "imagenet"]
Engine = Literal["batched", "reference"]

VARIANTS: tuple[str, ...] = ("ride", "dae", "dip", "idip")
ENGINES: tuple[str, ...] = ("batched", "reference")

#: Table 3: conv channel chain and the (0-based) conv layers followed by dropout.
ARCHS: dict[str, tuple[tuple[int, ...], frozenset[int]]] = {
    "mnist": ((1, 16, 16, 16, 1), frozenset({1, 2})),  # dropout at conv2, conv3
    "cifar": ((3, 32, 32, 32, 32, 3), frozenset({1, 2})),  # dropout at conv2, conv3
    "imagenet": ((3, 32, 32, 32, 32, 32, 32, 32, 3), frozenset({3, 4, 5})),  # conv4-6
}

#: Largest side of a colour image that still takes the CIFAR network (32x32 in the paper).
CIFAR_MAX_SIDE = 64


def infer_arch(image_shape: Sequence[int]) -> Arch:
    """The Table 3 network for images of ``image_shape`` (C, H, W).

    One channel: MNIST's; three channels up to ``CIFAR_MAX_SIDE`` pixels a side: CIFAR-10's;
    larger colour images: ImageNet's.

    Example:
        >>> infer_arch((1, 28, 28)), infer_arch((3, 32, 32)), infer_arch((3, 224, 224))
        ('mnist', 'cifar', 'imagenet')
    """
    shape = tuple(int(v) for v in image_shape)
    if len(shape) == 3 and shape[0] == 1:
        return "mnist"
    if len(shape) == 3 and shape[0] == 3:
        return "cifar" if max(shape[1:]) <= CIFAR_MAX_SIDE else "imagenet"
    raise ValueError(
        f"no RIDE network (Table 3) for images of shape {shape}: "
        "need (1, H, W) or (3, H, W); set arch to choose one"
    )


def check_engine(engine: str) -> None:
    """Raise ValueError unless ``engine`` is one of ``ENGINES``."""
    if engine not in ENGINES:
        raise ValueError(f"unknown RIDE engine {engine!r}; choose from: {', '.join(ENGINES)}")


def check_max_batch(max_batch: object) -> None:
    """Raise ValueError unless ``max_batch`` is None, ``"auto"`` or an int >= 1."""
    if max_batch is None or max_batch == "auto":
        return
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"max_batch must be an int >= 1 or 'auto', got {max_batch!r}")
