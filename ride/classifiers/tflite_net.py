"""A quantised TFLite image classifier as a float, differentiable PyTorch network:
``imagenet-mobilenet-v2``, read from ``mobilenet_v2_1.0_224_ptq.tflite``.

The file's graph is read generically, operator by operator (:func:`read_tflite`), into a
small description (:class:`Graph`: convolutions, additions, spatial means, a flatten), and
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

import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ride.classifiers.errors import CheckpointError, first_line, optional_import
from ride.seeding import generator_for

ACTIVATIONS: tuple[str, ...] = ("NONE", "RELU", "RELU6")
"""The fused activations the network runs (TFLite's ``ActivationFunctionType`` names)."""

TFLITE_IDENTIFIER = b"TFL3"
"""The flatbuffer file identifier of a TFLite model, at bytes 4-8 of the file."""

ZIP_LOCAL_HEADER = b"PK\x03\x04"
"""The start of a file in a zip archive (TFLite metadata appends its files as one)."""

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


# ---------------------------------------------------------------------------- reading a file


def is_tflite(head: bytes) -> bool:
    """Whether the first bytes of a file are those of a TFLite flatbuffer."""
    return head[4:8] == TFLITE_IDENTIFIER


class _Reader:
    """One subgraph of a parsed TFLite model: tensors, constant data, operator options."""

    def __init__(self, tflite: Any, raw: bytes, path: Path) -> None:
        self.tflite, self.raw, self.path = tflite, raw, path
        self.model = tflite.Model.GetRootAsModel(raw, 0)
        if self.model.SubgraphsLength() != 1:
            raise CheckpointError(
                f"TFLite file {path} holds {self.model.SubgraphsLength()} subgraphs, not one"
            )
        self.graph = self.model.Subgraphs(0)
        names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
        self.opcodes = []
        for i in range(self.model.OperatorCodesLength()):
            code = self.model.OperatorCodes(i)
            number = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
            self.opcodes.append(names.get(number, f"builtin {number}"))
        types = vars(tflite.TensorType)
        self.dtypes = {
            types["FLOAT32"]: np.float32,
            types["INT32"]: np.int32,
            types["UINT8"]: np.uint8,
            types["INT8"]: np.int8,
        }

    def fail(self, what: str) -> CheckpointError:
        return CheckpointError(f"TFLite file {self.path}: {what}")

    def shape(self, tensor: int) -> tuple[int, ...]:
        return tuple(int(d) for d in self.graph.Tensors(tensor).ShapeAsNumpy())

    def quantisation(self, tensor: int) -> tuple[np.ndarray, np.ndarray, int] | None:
        """(scales, zero points, axis) of a quantised tensor, else None."""
        q = self.graph.Tensors(tensor).Quantization()
        if q is None or q.ScaleLength() == 0:
            return None
        zero = q.ZeroPointAsNumpy() if q.ZeroPointLength() else np.zeros(1, dtype=np.int64)
        return q.ScaleAsNumpy().astype(np.float64), zero.astype(np.float64), q.QuantizedDimension()

    def data(self, tensor: int) -> np.ndarray | None:
        """The constant data of ``tensor`` (its dtype, its shape), or None for an activation."""
        t = self.graph.Tensors(tensor)
        buffer = self.model.Buffers(t.Buffer())
        offset = int(getattr(buffer, "Offset", lambda: 0)())
        if offset > 1:  # a large model's data after the flatbuffer
            raw = self.raw[offset : offset + int(buffer.Size())]
        elif buffer.DataLength() == 0:
            return None
        else:
            raw = buffer.DataAsNumpy().tobytes()
        dtype = self.dtypes.get(t.Type())
        if dtype is None:
            raise self.fail(f"tensor {tensor} has an unsupported type {t.Type()}")
        shape = self.shape(tensor)
        count = int(np.prod(shape))
        if len(raw) != count * np.dtype(dtype).itemsize:
            raise self.fail(
                f"tensor {tensor} of shape {shape} holds {len(raw)} bytes: the file is damaged"
            )
        return np.frombuffer(raw, dtype=dtype).reshape(shape)

    def dequantised(self, tensor: int) -> np.ndarray:
        """The float32 value of the constant ``tensor``: ``scale * (q - zero_point)`` along
        its quantised axis, or its own values when it is float."""
        values = self.data(tensor)
        if values is None:
            raise self.fail(f"weight tensor {tensor} holds no data")
        if values.dtype == np.float32:
            return values
        quant = self.quantisation(tensor)
        if quant is None:
            raise self.fail(f"integer weight tensor {tensor} has no quantisation parameters")
        scale, zero, axis = quant
        if scale.size > 1:
            if not 0 <= axis < values.ndim or values.shape[axis] != scale.size:
                raise self.fail(f"tensor {tensor} has {scale.size} scales along axis {axis}")
            view = [1] * values.ndim
            view[axis] = -1
            scale, zero = scale.reshape(view), zero.reshape(view)
        out = scale * (values.astype(np.float64) - zero)
        if not np.isfinite(out).all():
            raise self.fail(f"tensor {tensor} holds NaN or infinite values")
        return out.astype(np.float32)

    def options(self, op: Any, kind: str) -> Any:
        """The builtin options of operator ``op`` as a ``tflite.<kind>`` table."""
        table = op.BuiltinOptions()
        if table is None:
            raise self.fail(f"an operator has no {kind}")
        options = getattr(self.tflite, kind)()
        options.Init(table.Bytes, table.Pos)
        return options

    def activation(self, code: int) -> str:
        kinds = vars(self.tflite.ActivationFunctionType).items()
        names = {v: k for k, v in kinds if not k.startswith("_")}
        name = names.get(code, str(code))
        if name not in ACTIVATIONS:
            raise self.fail(f"fused activation {name} is not supported")
        return str(name)


def read_tflite(path: Path) -> tuple[Graph, dict[str, Tensor]]:
    """The graph of the TFLite file ``path`` and the float state of its :class:`GraphNet`
    (``convs.<i>.weight`` / ``.bias``). CheckpointError (one line) when the package ``tflite``
    is missing or the file is not a TFLite model, is damaged, or uses an operator, activation
    or layout that is not supported."""
    path = Path(path)
    tflite = optional_import("tflite", path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"cannot read {path}: {first_line(err)}") from err
    if not is_tflite(raw[:8]):
        raise CheckpointError(f"{path} is not a TFLite flatbuffer")
    try:
        reader = _Reader(tflite, raw, path)
        read = _read_graph(reader)
        _check_appended_zip(reader)
    except CheckpointError:
        raise
    except Exception as err:  # a damaged flatbuffer fails anywhere, with any error
        raise CheckpointError(
            f"cannot read TFLite file {path} (damaged or truncated): {first_line(err)}"
        ) from err
    return read


def _check_appended_zip(r: _Reader) -> None:
    """A TFLite file with metadata may carry files (its labels) in a zip archive after the
    flatbuffer: when one starts after the last constant's data, it must read whole, or the
    file is truncated (the weights come before it and would load as if nothing were
    missing)."""
    end = 0
    for i in range(r.model.BuffersLength()):
        buffer = r.model.Buffers(i)
        if buffer.DataLength():  # the data vector, field 0 of the Buffer table
            end = max(end, buffer._tab.Vector(buffer._tab.Offset(4)) + buffer.DataLength())
    if r.raw.find(ZIP_LOCAL_HEADER, end) < 0:
        return
    try:
        with zipfile.ZipFile(io.BytesIO(r.raw)) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise r.fail(f"the archive after its model is cut (damaged or truncated): {err}") from err
    if bad is not None:
        raise r.fail(f"file {bad} of the archive after its model is damaged")


def _read_graph(r: _Reader) -> tuple[Graph, dict[str, Tensor]]:
    g = r.graph
    if g.InputsLength() != 1 or g.OutputsLength() != 1:
        raise r.fail(f"{g.InputsLength()} inputs and {g.OutputsLength()} outputs, not one each")
    image, result = int(g.Inputs(0)), int(g.Outputs(0))
    shape = r.shape(image)
    quant = r.quantisation(image)
    kind = g.Tensors(image).Type()
    types = vars(r.tflite.TensorType)
    if len(shape) != 4 or quant is None or kind not in (types["UINT8"], types["INT8"]):
        raise r.fail(f"its input {shape} is not a quantised (1, H, W, C) image")
    input_zero = int(quant[1][0]) + (128 if kind == types["INT8"] else 0)  # for pixels 0..255
    value: dict[int, int] = {image: 0}  # tensor -> value id
    ops: list[Op] = []
    state: dict[str, Tensor] = {}
    softmax_seen = False

    def read(tensor: int, i: int) -> int:
        if tensor not in value:
            raise r.fail(f"operator {i} reads tensor {tensor}, which no earlier operator writes")
        return value[tensor]

    def add_conv(conv: Conv, weight: np.ndarray, bias: np.ndarray | None) -> None:
        n = sum(isinstance(op, Conv) for op in ops)
        state[f"convs.{n}.weight"] = torch.from_numpy(weight.copy())
        state[f"convs.{n}.bias"] = torch.from_numpy(
            np.zeros(conv.out_channels, np.float32) if bias is None else bias.copy()
        )
        ops.append(conv)

    handlers: dict[str, Callable[[Any, list[int], list[int], int], None]] = {}

    def conv_2d(op: Any, ins: list[int], outs: list[int], i: int) -> None:
        o = r.options(op, "Conv2DOptions")
        w = r.dequantised(ins[1])  # (out, kh, kw, in)
        if w.ndim != 4:
            raise r.fail(f"operator {i}: CONV_2D weights of shape {w.shape}")
        bias = r.dequantised(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
        conv = Conv(
            read(ins[0], i),
            w.shape[3],
            w.shape[0],
            (w.shape[1], w.shape[2]),
            (o.StrideH(), o.StrideW()),
            (o.DilationHFactor(), o.DilationWFactor()),
            same=o.Padding() == r.tflite.Padding.SAME,
            activation=r.activation(o.FusedActivationFunction()),
        )
        add_conv(conv, w.transpose(0, 3, 1, 2), bias)  # (out, in, kh, kw)

    def depthwise_conv_2d(op: Any, ins: list[int], outs: list[int], i: int) -> None:
        o = r.options(op, "DepthwiseConv2DOptions")
        w = r.dequantised(ins[1])  # (1, kh, kw, in * multiplier)
        channels = r.shape(ins[0])[-1]
        if w.ndim != 4 or w.shape[0] != 1 or w.shape[3] % channels:
            raise r.fail(f"operator {i}: DEPTHWISE_CONV_2D weights of shape {w.shape}")
        bias = r.dequantised(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
        conv = Conv(
            read(ins[0], i),
            channels,
            w.shape[3],
            (w.shape[1], w.shape[2]),
            (o.StrideH(), o.StrideW()),
            (o.DilationHFactor(), o.DilationWFactor()),
            groups=channels,
            same=o.Padding() == r.tflite.Padding.SAME,
            activation=r.activation(o.FusedActivationFunction()),
        )
        add_conv(conv, w[0].transpose(2, 0, 1)[:, None], bias)  # (out, 1, kh, kw)

    def add(op: Any, ins: list[int], outs: list[int], i: int) -> None:
        o = r.options(op, "AddOptions")
        a, b = sorted((read(ins[0], i), read(ins[1], i)))
        if r.shape(ins[0]) != r.shape(ins[1]):
            raise r.fail(f"operator {i}: ADD of shapes {r.shape(ins[0])} and {r.shape(ins[1])}")
        ops.append(Add((a, b), r.activation(o.FusedActivationFunction())))

    def mean(op: Any, ins: list[int], outs: list[int], i: int) -> None:
        axes = r.data(ins[1])
        if axes is None or sorted(int(a) for a in axes.reshape(-1)) != [1, 2]:
            raise r.fail(f"operator {i}: MEAN over axes other than height and width")
        ops.append(Mean(read(ins[0], i), bool(r.options(op, "ReducerOptions").KeepDims())))

    def reshape(op: Any, ins: list[int], outs: list[int], i: int) -> None:
        if len(r.shape(outs[0])) != 2:
            raise r.fail(f"operator {i}: RESHAPE to {r.shape(outs[0])}, not (batch, features)")
        ops.append(Flatten(read(ins[0], i)))

    handlers.update(
        CONV_2D=conv_2d,
        DEPTHWISE_CONV_2D=depthwise_conv_2d,
        ADD=add,
        MEAN=mean,
        RESHAPE=reshape,
    )
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        name = r.opcodes[op.OpcodeIndex()]
        ins = [int(t) for t in op.InputsAsNumpy()]
        outs = [int(t) for t in op.OutputsAsNumpy()]
        if len(outs) != 1:
            raise r.fail(f"operator {i} ({name}) has {len(outs)} outputs")
        if name in ("QUANTIZE", "DEQUANTIZE"):  # the identity in float
            value[outs[0]] = read(ins[0], i)
        elif name == "SOFTMAX":  # left out: the network returns the logits
            value[outs[0]] = read(ins[0], i)
            softmax_seen = True
        elif name not in handlers:
            raise r.fail(f"operator {i} is {name}, which is not supported")
        elif softmax_seen:
            raise r.fail(f"operator {i} ({name}) comes after the SOFTMAX")
        else:
            handlers[name](op, ins, outs, i)
            value[outs[0]] = len(ops)
    output = read(result, g.OperatorsLength())
    graph = Graph(tuple(ops), output, float(quant[0][0]), input_zero, shape[3])
    return graph, state


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
