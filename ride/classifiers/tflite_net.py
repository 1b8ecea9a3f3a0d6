"""A quantised TFLite image classifier as a float, differentiable PyTorch network:
``imagenet-mobilenet-v2``, read from ``mobilenet_v2_1.0_224_ptq.tflite``.

The file's graph is read generically, operator by operator (:func:`read_tflite`, in
:mod:`ride.classifiers.tflite_reader`), into a small description (:class:`Graph`, in
:mod:`ride.classifiers.tflite_graph`: convolutions, additions, spatial means, a flatten), and
its int8 weights and int32 biases are dequantised, ``scale * (q - zero_point)`` per output
channel. :class:`GraphNet` runs such a description in float32, in PyTorch's NCHW layout:

- convolutions (``CONV_2D``; ``DEPTHWISE_CONV_2D`` as a convolution with one group per input
  channel) with TensorFlow's "SAME" padding: ``ceil(size / stride)`` outputs, the padding
  split in two with the odd row or column at the bottom or right; their fused ReLU / ReLU6;
- ``ADD`` (with its fused activation), ``MEAN`` over height and width, ``RESHAPE`` to
  (batch, features);
- ``QUANTIZE`` / ``DEQUANTIZE`` are the identity in float, and the graph's final ``SOFTMAX``
  is left out: the network returns its input, the logits.

The network takes images in [0, 1] like every classifier here and applies the file's input
quantisation itself: it sees ``scale * (255 x - zero_point)`` (MobileNetV2: ``(255 x - 127) /
127.5``, about [-1, 1]). Being float, it differs slightly from the integer arithmetic of the
TFLite runtime (a few predictions in a hundred, on the shared ImageNet sample), and it has
gradients, which the white-box attacks need.

The registry builds the network from :func:`mobilenet_v2_graph` (Sandler et al.,
"MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018, Table 2); a file is
loaded only when the graph read from it is exactly that one with 1,001 outputs, index 0
being the "background" class, which is dropped: the network gives the 1,000 ImageNet classes
in sorted-synset order (torchvision's). Reading a file needs the package ``tflite`` (the
``imagenet`` extra).
"""

from __future__ import annotations

from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from ride.classifiers.errors import CheckpointError
from ride.classifiers.tflite_graph import (
    ACTIVATIONS,
    MOBILENET_V2_BLOCKS,
    MOBILENET_V2_FILE,
    MOBILENET_V2_INPUT,
    Add,
    Conv,
    Flatten,
    Graph,
    Mean,
    Op,
    graph_difference,
    mobilenet_v2_graph,
    output_conv,
    sources_of,
)
from ride.classifiers.tflite_reader import (
    TFLITE_IDENTIFIER,
    ZIP_LOCAL_HEADER,
    is_tflite,
    read_tflite,
)
from ride.seeding import generator_for

__all__ = [
    "ACTIVATIONS",
    "MOBILENET_V2_BLOCKS",
    "MOBILENET_V2_FILE",
    "MOBILENET_V2_INPUT",
    "TFLITE_IDENTIFIER",
    "ZIP_LOCAL_HEADER",
    "Add",
    "Conv",
    "Flatten",
    "Graph",
    "GraphNet",
    "Mean",
    "Op",
    "graph_difference",
    "is_tflite",
    "mobilenet_v2_graph",
    "mobilenet_v2_state",
    "output_conv",
    "read_tflite",
    "same_padding",
    "sources_of",
]


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's "SAME" padding of one dimension: (before, after), the odd one after.

    Example:
        >>> same_padding(224, 3, 2, 1), same_padding(112, 3, 1, 1), same_padding(7, 1, 1, 1)
        ((0, 1), (1, 1), (0, 0))
    """
    span = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + span - size, 0)
    return total // 2, total - total // 2


def _activate(x: Tensor, activation: str) -> Tensor:
    if activation == "RELU6":
        return F.relu6(x)
    if activation == "RELU":
        return F.relu(x)
    return x


class GraphNet(nn.Module):
    """The float network of a :class:`Graph`: input (B, C, H, W) in [0, 1], output
    ``values[graph.output]`` (MobileNetV2: logits (B, num_classes)). One ``nn.Conv2d`` per
    convolution, in order, as ``convs.<i>``; untrained weights are seeded (He normal, zero
    biases). ``num_classes``: the channels of the convolution that gives the output (through
    means and flattens), else None.

    Example:
        >>> import torch
        >>> net = GraphNet(mobilenet_v2_graph(1000))
        >>> net(torch.zeros(1, 3, 224, 224)).shape, net.num_classes
        (torch.Size([1, 1000]), 1000)
        >>> sum(p.numel() for p in net.parameters())
        3487816
    """

    def __init__(self, graph: Graph, seed: int = 0) -> None:
        super().__init__()
        for op in graph.ops:
            if isinstance(op, Conv | Add) and op.activation not in ACTIVATIONS:
                raise ValueError(f"unknown activation {op.activation!r}")
        self.graph = graph
        convs = [op for op in graph.ops if isinstance(op, Conv)]
        self.convs = nn.ModuleList(
            nn.Conv2d(
                op.in_channels,
                op.out_channels,
                op.kernel,
                stride=op.stride,
                dilation=op.dilation,
                groups=op.groups,
            )
            for op in convs
        )
        self._layer = {
            i: n for n, i in enumerate(i for i, op in enumerate(graph.ops) if isinstance(op, Conv))
        }
        self._last_use: dict[int, int] = {}
        for i, op in enumerate(graph.ops):
            for value in sources_of(op):
                self._last_use[value] = i
        head = output_conv(graph)
        conv = None if head is None else graph.ops[head]
        self.num_classes = conv.out_channels if isinstance(conv, Conv) else None
        gen = generator_for(seed)
        for layer in self.convs:
            assert isinstance(layer, nn.Conv2d) and layer.bias is not None
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", generator=gen)
            nn.init.zeros_(layer.bias)

    def _conv(self, i: int, op: Conv, x: Tensor) -> Tensor:
        layer = self.convs[self._layer[i]]
        assert isinstance(layer, nn.Conv2d)
        padding = (0, 0)
        if op.same:
            top, bottom = same_padding(x.shape[-2], op.kernel[0], op.stride[0], op.dilation[0])
            left, right = same_padding(x.shape[-1], op.kernel[1], op.stride[1], op.dilation[1])
            if (top, left) == (bottom, right):
                padding = (top, left)
            else:
                x = F.pad(x, (left, right, top, bottom))
        y = F.conv2d(x, layer.weight, layer.bias, op.stride, padding, op.dilation, op.groups)
        return _activate(y, op.activation)

    def forward(self, x: Tensor) -> Tensor:
        graph = self.graph
        values: dict[int, Tensor] = {
            0: (x * 255.0 - graph.input_zero_point) * graph.input_scale  # (B, C, H, W)
        }
        for i, op in enumerate(graph.ops):
            if isinstance(op, Conv):
                out = self._conv(i, op, values[op.source])
            elif isinstance(op, Add):
                out = _activate(values[op.sources[0]] + values[op.sources[1]], op.activation)
            elif isinstance(op, Mean):
                out = values[op.source].mean(dim=(2, 3), keepdim=op.keep_dims)
            else:
                h = values[op.source]
                out = (h.permute(0, 2, 3, 1) if h.ndim == 4 else h).reshape(h.shape[0], -1)
            for value in sources_of(op):  # free what no later operation reads
                if self._last_use[value] == i and value != graph.output:
                    values.pop(value, None)
            values[i + 1] = out
        return values[graph.output]


def mobilenet_v2_state(path: Path, name: str) -> dict[str, Tensor]:
    """The state of classifier ``name`` (a :class:`GraphNet` of ``mobilenet_v2_graph(1000)``)
    from the TFLite MobileNetV2 file ``path``: its graph must be MobileNetV2's with 1,001
    outputs, whose first, "background", is dropped. CheckpointError (one line) otherwise."""
    graph, state = read_tflite(path)
    problem = graph_difference(graph, mobilenet_v2_graph(1001))
    if problem is not None:
        raise CheckpointError(
            f"TFLite file {path} does not hold the MobileNetV2 1.0 with 1,001 outputs that "
            f"{name!r} loads ({MOBILENET_V2_FILE}): {problem}"
        )
    head = sum(isinstance(op, Conv) for op in graph.ops) - 1
    for key in (f"convs.{head}.weight", f"convs.{head}.bias"):
        state[key] = state[key][1:]  # drop "background"
    return state
