"""Reading a TFLite file: its flatbuffer, operator by operator, into a :class:`Graph` and
the float state of its :class:`~ride.classifiers.tflite_net.GraphNet`.

:func:`read_tflite` reads the file's one subgraph generically: ``CONV_2D``,
``DEPTHWISE_CONV_2D``, ``ADD``, ``MEAN`` over height and width and ``RESHAPE`` to (batch,
features) become operations of the graph (:mod:`ride.classifiers.tflite_graph`);
``QUANTIZE`` / ``DEQUANTIZE`` are the identity in float and the final ``SOFTMAX`` is left out
(the network returns the logits). Int8 weights and int32 biases are dequantised, ``scale *
(q - zero_point)`` per output channel, and the input's quantisation becomes the graph's input
scale and zero point (for pixels 0..255). Anything else (another operator, activation or
layout, a damaged or truncated file) is a one-line CheckpointError. Reading needs the package
``tflite`` (the ``imagenet`` extra).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ride.classifiers.errors import CheckpointError, first_line, optional_import
from ride.classifiers.tflite_graph import ACTIVATIONS, Add, Conv, Flatten, Graph, Mean, Op

TFLITE_IDENTIFIER = b"TFL3"
"""The flatbuffer file identifier of a TFLite model, at bytes 4-8 of the file."""

ZIP_LOCAL_HEADER = b"PK\x03\x04"
"""The start of a file in a zip archive (TFLite metadata appends its files as one)."""


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


def _input_image(r: _Reader, image: int) -> tuple[tuple[int, ...], float, int]:
    """The shape (1, H, W, C) of the input tensor ``image``, its quantisation scale and its
    zero point for pixels 0..255 (an int8 input's is shifted by 128)."""
    shape = r.shape(image)
    quant = r.quantisation(image)
    kind = r.graph.Tensors(image).Type()
    types = vars(r.tflite.TensorType)
    if len(shape) != 4 or quant is None or kind not in (types["UINT8"], types["INT8"]):
        raise r.fail(f"its input {shape} is not a quantised (1, H, W, C) image")
    input_zero = int(quant[1][0]) + (128 if kind == types["INT8"] else 0)  # for pixels 0..255
    return shape, float(quant[0][0]), input_zero


def _read_graph(r: _Reader) -> tuple[Graph, dict[str, Tensor]]:
    """The graph of the subgraph ``r`` reads, and the float state of its convolutions."""
    g = r.graph
    if g.InputsLength() != 1 or g.OutputsLength() != 1:
        raise r.fail(f"{g.InputsLength()} inputs and {g.OutputsLength()} outputs, not one each")
    image, result = int(g.Inputs(0)), int(g.Outputs(0))
    shape, input_scale, input_zero = _input_image(r, image)
    builder = _GraphBuilder(r, image)
    for i in range(g.OperatorsLength()):
        builder.operator(i, g.Operators(i))
    output = builder.read(result, g.OperatorsLength())
    graph = Graph(tuple(builder.ops), output, input_scale, input_zero, shape[3])
    return graph, builder.state


Handler = Callable[[Any, list[int], list[int], int], None]
"""Reads one operator (its table, input and output tensors, its index) into the graph."""


class _GraphBuilder:
    """The operations read so far, the float state of their convolutions (``convs.<n>.weight``
    / ``.bias``) and which value of the graph each tensor holds (the input image: value 0)."""

    def __init__(self, r: _Reader, image: int) -> None:
        self.r = r
        self.value: dict[int, int] = {image: 0}  # tensor -> value id
        self.ops: list[Op] = []
        self.state: dict[str, Tensor] = {}
        self.softmax_seen = False
        self.handlers: dict[str, Handler] = {
            "CONV_2D": self.conv_2d,
            "DEPTHWISE_CONV_2D": self.depthwise_conv_2d,
            "ADD": self.add,
            "MEAN": self.mean,
            "RESHAPE": self.reshape,
        }

    def read(self, tensor: int, i: int) -> int:
        """The value operator ``i`` reads as ``tensor``."""
        if tensor not in self.value:
            raise self.r.fail(
                f"operator {i} reads tensor {tensor}, which no earlier operator writes"
            )
        return self.value[tensor]

    def operator(self, i: int, op: Any) -> None:
        """Read operator ``i``: an operation of the graph, or the identity (``QUANTIZE``,
        ``DEQUANTIZE``, the final ``SOFTMAX``)."""
        r = self.r
        name = r.opcodes[op.OpcodeIndex()]
        ins = [int(t) for t in op.InputsAsNumpy()]
        outs = [int(t) for t in op.OutputsAsNumpy()]
        if len(outs) != 1:
            raise r.fail(f"operator {i} ({name}) has {len(outs)} outputs")
        if name in ("QUANTIZE", "DEQUANTIZE"):  # the identity in float
            self.value[outs[0]] = self.read(ins[0], i)
        elif name == "SOFTMAX":  # left out: the network returns the logits
            self.value[outs[0]] = self.read(ins[0], i)
            self.softmax_seen = True
        elif name not in self.handlers:
            raise r.fail(f"operator {i} is {name}, which is not supported")
        elif self.softmax_seen:
            raise r.fail(f"operator {i} ({name}) comes after the SOFTMAX")
        else:
            self.handlers[name](op, ins, outs, i)
            self.value[outs[0]] = len(self.ops)

    def add_conv(self, conv: Conv, weight: np.ndarray, bias: np.ndarray | None) -> None:
        n = sum(isinstance(op, Conv) for op in self.ops)
        self.state[f"convs.{n}.weight"] = torch.from_numpy(weight.copy())
        self.state[f"convs.{n}.bias"] = torch.from_numpy(
            np.zeros(conv.out_channels, np.float32) if bias is None else bias.copy()
        )
        self.ops.append(conv)

    def conv_2d(self, op: Any, ins: list[int], outs: list[int], i: int) -> None:
        r = self.r
        o = r.options(op, "Conv2DOptions")
        w = r.dequantised(ins[1])  # (out, kh, kw, in)
        if w.ndim != 4:
            raise r.fail(f"operator {i}: CONV_2D weights of shape {w.shape}")
        bias = r.dequantised(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
        conv = Conv(
            self.read(ins[0], i),
            w.shape[3],
            w.shape[0],
            (w.shape[1], w.shape[2]),
            (o.StrideH(), o.StrideW()),
            (o.DilationHFactor(), o.DilationWFactor()),
            same=o.Padding() == r.tflite.Padding.SAME,
            activation=r.activation(o.FusedActivationFunction()),
        )
        self.add_conv(conv, w.transpose(0, 3, 1, 2), bias)  # (out, in, kh, kw)

    def depthwise_conv_2d(self, op: Any, ins: list[int], outs: list[int], i: int) -> None:
        r = self.r
        o = r.options(op, "DepthwiseConv2DOptions")
        w = r.dequantised(ins[1])  # (1, kh, kw, in * multiplier)
        channels = r.shape(ins[0])[-1]
        if w.ndim != 4 or w.shape[0] != 1 or w.shape[3] % channels:
            raise r.fail(f"operator {i}: DEPTHWISE_CONV_2D weights of shape {w.shape}")
        bias = r.dequantised(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
        conv = Conv(
            self.read(ins[0], i),
            channels,
            w.shape[3],
            (w.shape[1], w.shape[2]),
            (o.StrideH(), o.StrideW()),
            (o.DilationHFactor(), o.DilationWFactor()),
            groups=channels,
            same=o.Padding() == r.tflite.Padding.SAME,
            activation=r.activation(o.FusedActivationFunction()),
        )
        self.add_conv(conv, w[0].transpose(2, 0, 1)[:, None], bias)  # (out, 1, kh, kw)

    def add(self, op: Any, ins: list[int], outs: list[int], i: int) -> None:
        r = self.r
        o = r.options(op, "AddOptions")
        a, b = sorted((self.read(ins[0], i), self.read(ins[1], i)))
        if r.shape(ins[0]) != r.shape(ins[1]):
            raise r.fail(f"operator {i}: ADD of shapes {r.shape(ins[0])} and {r.shape(ins[1])}")
        self.ops.append(Add((a, b), r.activation(o.FusedActivationFunction())))

    def mean(self, op: Any, ins: list[int], outs: list[int], i: int) -> None:
        r = self.r
        axes = r.data(ins[1])
        if axes is None or sorted(int(a) for a in axes.reshape(-1)) != [1, 2]:
            raise r.fail(f"operator {i}: MEAN over axes other than height and width")
        source = self.read(ins[0], i)
        self.ops.append(Mean(source, bool(r.options(op, "ReducerOptions").KeepDims())))

    def reshape(self, op: Any, ins: list[int], outs: list[int], i: int) -> None:
        r = self.r
        if len(r.shape(outs[0])) != 2:
            raise r.fail(f"operator {i}: RESHAPE to {r.shape(outs[0])}, not (batch, features)")
        self.ops.append(Flatten(self.read(ins[0], i)))
