"""The graph of a feed-forward image classifier as a small description, and MobileNetV2's.

A :class:`Graph` is a list of operations (:class:`Conv`, :class:`Add`, :class:`Mean`,
:class:`Flatten`) over numbered values: value 0 is the scaled input image, value ``k + 1`` the
output of operation ``k``. :mod:`ride.classifiers.tflite_reader` reads one from a TFLite file,
:class:`ride.classifiers.tflite_net.GraphNet` runs one in float32, and
:func:`mobilenet_v2_graph` builds MobileNetV2 1.0 (Sandler et al., "MobileNetV2: Inverted
Residuals and Linear Bottlenecks", CVPR 2018, Table 2), the graph a file must hold to load as
``imagenet-mobilenet-v2`` (:func:`graph_difference` says where another one differs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ACTIVATIONS: tuple[str, ...] = ("NONE", "RELU", "RELU6")
"""The fused activations the network runs (TFLite's ``ActivationFunctionType`` names)."""

MOBILENET_V2_BLOCKS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
"""MobileNetV2's bottleneck stages (Sandler et al., Table 2): expansion factor, output
channels, blocks, stride of the first block."""

MOBILENET_V2_INPUT = (1 / 127.5, 127)
"""Input quantisation of the MobileNetV2 file: the network sees ``(pixel - 127) / 127.5``."""

MOBILENET_V2_FILE = "mobilenet_v2_1.0_224_ptq.tflite"


@dataclass(frozen=True)
class Conv:
    """A convolution of value ``source`` and its fused activation. ``groups ==
    in_channels`` is a depthwise convolution; ``same`` is TensorFlow's "SAME" padding, else
    "VALID" (none)."""

    source: int
    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    same: bool = True
    activation: str = "NONE"


@dataclass(frozen=True)
class Add:
    """The sum of two values (``sources`` sorted) and its fused activation."""

    sources: tuple[int, int]
    activation: str = "NONE"


@dataclass(frozen=True)
class Mean:
    """The mean over height and width of value ``source``; ``keep_dims`` keeps them as 1."""

    source: int
    keep_dims: bool = True


@dataclass(frozen=True)
class Flatten:
    """Value ``source`` reshaped to (batch, features), in TensorFlow's (H, W, C) order."""

    source: int


Op = Conv | Add | Mean | Flatten


@dataclass(frozen=True)
class Graph:
    """A feed-forward network as a list of operations. Value 0 is the (scaled) input image,
    value ``k + 1`` the output of ``ops[k]``; ``output`` is the value returned. The input
    image ``x`` in [0, 1] is fed as ``input_scale * (255 x - input_zero_point)``."""

    ops: tuple[Op, ...]
    output: int
    input_scale: float
    input_zero_point: int
    in_channels: int = 3


def sources_of(op: Op) -> tuple[int, ...]:
    """The values ``op`` reads."""
    return op.sources if isinstance(op, Add) else (op.source,)


def output_conv(graph: Graph) -> int | None:
    """Index in ``graph.ops`` of the convolution that gives the output through means and
    flattens only (its channels are the classes), or None."""
    value = graph.output
    while value > 0:
        op = graph.ops[value - 1]
        if isinstance(op, Conv):
            return value - 1
        if isinstance(op, Add):
            break
        value = op.source
    return None


def mobilenet_v2_graph(num_classes: int) -> Graph:
    """MobileNetV2 1.0 as TensorFlow's ``mobilenet_v2_1.0_224`` builds it: a stride-2 3 x 3
    convolution to 32 channels, the bottleneck blocks of :data:`MOBILENET_V2_BLOCKS` (1 x 1
    expansion unless the factor is 1, 3 x 3 depthwise, linear 1 x 1 projection, a residual
    addition where the block keeps its shape), a 1 x 1 convolution to 1,280 channels, the
    spatial mean and a 1 x 1 convolution to ``num_classes`` logits; ReLU6 everywhere except
    the projections and the logits.

    Example:
        >>> graph = mobilenet_v2_graph(1001)
        >>> len(graph.ops), sum(isinstance(op, Add) for op in graph.ops)
        (65, 10)
    """
    ops: list[Op] = []

    def conv(channels: int, kernel: int = 1, stride: int = 1, activation: str = "RELU6") -> int:
        size, step = (kernel, kernel), (stride, stride)
        ops.append(Conv(len(ops), width, channels, size, step, activation=activation))
        return channels

    def depthwise(stride: int) -> None:
        step = (stride, stride)
        ops.append(Conv(len(ops), width, width, (3, 3), step, groups=width, activation="RELU6"))

    width = 3
    width = conv(32, kernel=3, stride=2)
    for expansion, channels, blocks, first_stride in MOBILENET_V2_BLOCKS:
        for block in range(blocks):
            stride = first_stride if block == 0 else 1
            block_input, block_width = len(ops), width
            if expansion != 1:
                width = conv(width * expansion)
            depthwise(stride)
            width = conv(channels, activation="NONE")
            if stride == 1 and block_width == channels:
                ops.append(Add((block_input, len(ops))))
    width = conv(1280)
    ops.append(Mean(len(ops), keep_dims=True))
    conv(num_classes, activation="NONE")
    ops.append(Flatten(len(ops)))
    scale, zero_point = MOBILENET_V2_INPUT
    return Graph(tuple(ops), len(ops), scale, zero_point)


def graph_difference(found: Graph, expected: Graph) -> str | None:
    """Where ``found`` first differs from ``expected`` (one line), or None when they are the
    same network."""
    for i, (a, b) in enumerate(zip(found.ops, expected.ops, strict=False)):
        if a != b:
            return f"operation {i} is {_short(a)}, expected {_short(b)}"
    if len(found.ops) != len(expected.ops):
        return f"{len(found.ops)} operations, expected {len(expected.ops)}"
    if found.output != expected.output:
        return f"its output is value {found.output}, expected {expected.output}"
    if found.in_channels != expected.in_channels:
        return f"{found.in_channels} input channels, expected {expected.in_channels}"
    if found.input_zero_point != expected.input_zero_point or not np.isclose(
        found.input_scale, expected.input_scale, rtol=1e-5, atol=0.0
    ):
        return (
            f"input quantisation scale {found.input_scale:.6g}, zero point "
            f"{found.input_zero_point}; expected {expected.input_scale:.6g}, "
            f"{expected.input_zero_point}"
        )
    return None


def _short(op: Op) -> str:
    if isinstance(op, Conv):
        kind = "depthwise conv" if op.groups == op.in_channels > 1 else "conv"
        return (
            f"{kind} {op.kernel[0]}x{op.kernel[1]}/{op.stride[0]} {op.in_channels}->"
            f"{op.out_channels} {op.activation} of value {op.source}"
        )
    return repr(op)
