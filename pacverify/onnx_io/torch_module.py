"""Evaluate an ONNX classifier as a differentiable torch module (ONNX teachers, DESIGN.md §1 step 2).

Distillation needs the teacher's input gradients, which onnxruntime does not give. This module
interprets an ONNX graph with torch operations, one small function per op type in an explicit
table (:data:`OPS`); gradients then come from torch autograd. Unlike the verifier's reader it
accepts non-piecewise-linear ops (Sigmoid, Tanh, Softmax, Gelu, ...), because a teacher only needs
to be evaluated, never bounded. An op outside the table raises
:class:`~pacverify.errors.UnsupportedOperationError` naming it.

Why not onnx2torch: it imports torchvision, whose newest release requires a newer torch, so
installing it replaces a CPU torch with a different (CUDA) build.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from pacverify.errors import InputError, UnsupportedOperationError
from pacverify.onnx_io import _attrs
from pacverify.onnx_io._attrs import ints, normalize_axis

Tensors = list  # list[torch.Tensor | None], one entry per node input ('' inputs are None)


def _torch_dtype(onnx_type: int) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype=onnx.helper.tensor_dtype_to_np_dtype(onnx_type))).dtype


# ---------------------------------------------------------------- elementwise and linear algebra
def _gemm(x: Tensors, a: dict, opset: int) -> torch.Tensor:
    A = x[0].T if a.get("transA", 0) else x[0]
    B = x[1].T if a.get("transB", 0) else x[1]
    out = a.get("alpha", 1.0) * (A @ B)
    return out if len(x) < 3 or x[2] is None else out + a.get("beta", 1.0) * x[2]


def _div(x: Tensors, a: dict, opset: int) -> torch.Tensor:
    if not x[0].is_floating_point() and not x[1].is_floating_point():
        return torch.div(x[0], x[1], rounding_mode="trunc")
    return x[0] / x[1]


def _unary(fn: Callable) -> Callable:
    return lambda x, a, opset: fn(x[0])


def _binary(fn: Callable) -> Callable:
    return lambda x, a, opset: fn(x[0], x[1])


def _variadic(fn: Callable) -> Callable:
    def run(x: Tensors, a: dict, opset: int) -> torch.Tensor:
        out = x[0]
        for other in x[1:]:
            out = fn(out, other)
        return out
    return run


def _softmax(log: bool) -> Callable:
    def run(x: Tensors, a: dict, opset: int) -> torch.Tensor:
        fn = torch.log_softmax if log else torch.softmax
        if opset >= 13:
            return fn(x[0], dim=a.get("axis", -1))
        axis = normalize_axis(a.get("axis", 1), x[0].dim())  # before opset 13: softmax of the flattened 2-D view
        flat = x[0].reshape(math.prod(x[0].shape[:axis]), -1)
        return fn(flat, dim=1).reshape(x[0].shape)
    return run


def _clip(x: Tensors, a: dict, opset: int) -> torch.Tensor:
    lo = x[1] if len(x) > 1 and x[1] is not None else a.get("min")
    hi = x[2] if len(x) > 2 and x[2] is not None else a.get("max")
    return torch.clamp(x[0], min=lo, max=hi)


def _gelu(x: Tensors, a: dict, opset: int) -> torch.Tensor:
    return F.gelu(x[0], approximate=a.get("approximate", "none"))


# ---------------------------------------------------------------- convolution, normalisation, pooling
def _pads(x: torch.Tensor, a: dict, kernel: list[int], dilations: list[int]) -> list[int]:
    """ONNX pads [b_1, ..., b_k, e_1, ..., e_k] for the spatial dims, resolving auto_pad."""
    return _attrs.conv_pads(a, x.shape[2:], kernel, list(a.get("strides", [1] * len(kernel))), dilations)


def _padded(x: torch.Tensor, pads: list[int], value: float) -> tuple[torch.Tensor, list[int]]:
    """Apply asymmetric pads explicitly; return the input and the symmetric padding left to torch."""
    k = len(pads) // 2
    if pads[:k] == pads[k:]:
        return x, pads[:k]
    return F.pad(x, _attrs.torch_pad_widths(pads), value=value), [0] * k


def _conv(x: Tensors, a: dict, opset: int) -> torch.Tensor:
    k = x[1].dim() - 2
    kernel = list(x[1].shape[2:])
    dilations = list(a.get("dilations", [1] * k))
    data, padding = _padded(x[0], _pads(x[0], a, kernel, dilations), 0.0)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}.get(k)
    if conv is None:
        raise UnsupportedOperationError(f"Conv with {k} spatial dimensions is not supported")
    return conv(data, x[1], x[2] if len(x) > 2 else None, stride=list(a.get("strides", [1] * k)),
                padding=padding, dilation=dilations, groups=a.get("group", 1))


def _batchnorm(x: Tensors, a: dict, opset: int) -> torch.Tensor:
    shape = (1, -1) + (1,) * (x[0].dim() - 2)
    scale, bias, mean, var = (t.reshape(shape) for t in x[1:5])
    return (x[0] - mean) / torch.sqrt(var + a.get("epsilon", 1e-5)) * scale + bias


def _layernorm(x: Tensors, a: dict, opset: int) -> torch.Tensor:
    axis = normalize_axis(a.get("axis", -1), x[0].dim())
    dims = tuple(range(axis, x[0].dim()))
    mean = x[0].mean(dim=dims, keepdim=True)
    var = ((x[0] - mean) ** 2).mean(dim=dims, keepdim=True)
    out = (x[0] - mean) / torch.sqrt(var + a.get("epsilon", 1e-5)) * x[1]
    return out + x[2] if len(x) > 2 and x[2] is not None else out


def _pool(kind: str) -> Callable:
    def run(x: Tensors, a: dict, opset: int) -> torch.Tensor:
        kernel = list(a["kernel_shape"])
        k = len(kernel)
        dilations = list(a.get("dilations", [1] * k))
        strides = list(a.get("strides", [1] * k))
        pads = _pads(x[0], a, kernel, dilations)
        if kind == "max":
            data, padding = _padded(x[0], pads, -math.inf)
            max_pool: Callable[..., torch.Tensor] = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[k]
            return max_pool(data, kernel, strides, padding, dilations, ceil_mode=bool(a.get("ceil_mode", 0)))
        if pads[:k] != pads[k:] or any(d != 1 for d in dilations):
            raise UnsupportedOperationError("AveragePool with asymmetric pads or dilations is not supported")
        avg_pool: Callable[..., torch.Tensor] = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[k]
        return avg_pool(x[0], kernel, strides, pads[:k], ceil_mode=bool(a.get("ceil_mode", 0)),
                    count_include_pad=bool(a.get("count_include_pad", 0)))
    return run


def _global_pool(fn: Callable) -> Callable:
    return lambda x, a, opset: fn(x[0], dim=tuple(range(2, x[0].dim())), keepdim=True)


# ---------------------------------------------------------------- shapes and indexing
def _flatten(x: Tensors, a: dict, opset: int) -> torch.Tensor:
    axis = normalize_axis(a.get("axis", 1), x[0].dim())
    return x[0].reshape(math.prod(x[0].shape[:axis]), -1)


def _reshape(x: Tensors, a: dict, opset: int) -> torch.Tensor:
    shape = ints(x[1])
    if not a.get("allowzero", 0):
        shape = [x[0].shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x[0].reshape(shape)


def _axes(x: Tensors, a: dict, position: int) -> list[int] | None:
    return _attrs.axes(x[position] if len(x) > position else None, a)


def _squeeze(x: Tensors, a: dict, opset: int) -> torch.Tensor:
    axes = _axes(x, a, 1)
    if axes is None:
        return x[0].squeeze()
    return x[0].squeeze(tuple(normalize_axis(ax, x[0].dim()) for ax in axes))


def _unsqueeze(x: Tensors, a: dict, opset: int) -> torch.Tensor:
    out = x[0]
    axes = _axes(x, a, 1)
    if axes is None:
        raise InputError("Unsqueeze needs axes (an operand from opset 13, an attribute before)")
    rank = out.dim() + len(axes)
    for ax in sorted(normalize_axis(ax, rank) for ax in axes):
        out = out.unsqueeze(ax)
    return out


def _gather(x: Tensors, a: dict, opset: int) -> torch.Tensor:
    data, idx = x[0], x[1].long()
    axis = normalize_axis(a.get("axis", 0), data.dim())
    idx = torch.where(idx < 0, idx + data.shape[axis], idx)
    out = data.index_select(axis, idx.reshape(-1))
    return out.reshape(tuple(data.shape[:axis]) + tuple(idx.shape) + tuple(data.shape[axis + 1:]))


def _slice(x: Tensors, a: dict, opset: int) -> torch.Tensor:
    data = x[0]
    if opset < 10:
        starts, ends, axes, steps = a["starts"], a["ends"], a.get("axes"), None
    else:
        starts, ends = ints(x[1]), ints(x[2])
        axes = ints(x[3]) if len(x) > 3 and x[3] is not None else None
        steps = ints(x[4]) if len(x) > 4 and x[4] is not None else None
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * data.dim()
    for start, end, ax, step in zip(starts, ends, axes, steps, strict=True):
        if step < 1:
            raise UnsupportedOperationError("Slice with a negative step is not supported")
        size = data.shape[normalize_axis(ax, data.dim())]
        start = max(min(start + size if start < 0 else start, size), 0)
        end = max(min(end + size if end < 0 else end, size), 0)
        index[normalize_axis(ax, data.dim())] = slice(start, end, step)
    return data[tuple(index)]


def _split(x: Tensors, a: dict, opset: int) -> tuple[torch.Tensor, ...]:
    axis = normalize_axis(a.get("axis", 0), x[0].dim())
    sizes = ints(x[1]) if len(x) > 1 and x[1] is not None else list(a.get("split", []))
    if not sizes:
        parts = a.get("num_outputs") or a["_n_outputs"]
        return torch.tensor_split(x[0], parts, dim=axis)
    return torch.split(x[0], sizes, dim=axis)


def _reduce(fn: Callable) -> Callable:
    def run(x: Tensors, a: dict, opset: int) -> torch.Tensor:
        axes = _axes(x, a, 1)
        keep = bool(a.get("keepdims", 1))
        if not axes:
            if a.get("noop_with_empty_axes", 0):
                return x[0]
            axes = list(range(x[0].dim()))
        return fn(x[0], dim=tuple(normalize_axis(ax, x[0].dim()) for ax in axes), keepdim=keep)
    return run


def _constant(x: Tensors, a: dict, opset: int) -> torch.Tensor:
    if "value" in a:
        return torch.from_numpy(numpy_helper.to_array(a["value"]).copy())
    for key, dtype in (("value_float", torch.float32), ("value_floats", torch.float32),
                       ("value_int", torch.int64), ("value_ints", torch.int64)):
        if key in a:
            return torch.tensor(a[key], dtype=dtype)
    raise UnsupportedOperationError(f"Constant with attributes {sorted(a)} is not supported")


def _constant_of_shape(x: Tensors, a: dict, opset: int) -> torch.Tensor:
    value = torch.from_numpy(numpy_helper.to_array(a["value"]).copy()) if "value" in a else torch.zeros(1)
    return torch.full(ints(x[0]), value.item(), dtype=value.dtype, device=x[0].device)


def _pad(x: Tensors, a: dict, opset: int) -> torch.Tensor:
    pads = ints(x[1]) if opset >= 11 else list(a["pads"])
    value = float(x[2].item()) if len(x) > 2 and x[2] is not None else a.get("value", 0.0)
    rank = x[0].dim()
    axes = [normalize_axis(ax, rank) for ax in ints(x[3])] if len(x) > 3 and x[3] is not None else list(range(rank))
    k = len(axes)
    full = [0] * 2 * rank
    for i, ax in enumerate(axes):
        full[ax], full[rank + ax] = pads[i], pads[k + i]
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}.get(a.get("mode", "constant"))
    if mode is None:
        raise UnsupportedOperationError(f"Pad mode {a.get('mode')!r} is not supported")
    widths = _attrs.torch_pad_widths(full)
    while mode != "constant" and len(widths) > 2 and widths[-2:] == [0, 0]:
        widths = widths[:-2]  # torch pads only the last dims in these modes: drop the unpadded leading axes
    return F.pad(x[0], widths, mode=mode, value=value if mode == "constant" else None)


def _expand(x: Tensors, a: dict, opset: int) -> torch.Tensor:
    return x[0].expand(torch.broadcast_shapes(tuple(x[0].shape), tuple(ints(x[1]))))


def _shape(x: Tensors, a: dict, opset: int) -> torch.Tensor:
    dims = list(x[0].shape)[a.get("start", 0):a.get("end", None)]
    return torch.tensor(dims, dtype=torch.int64, device=x[0].device)


def _dropout(x: Tensors, a: dict, opset: int) -> tuple[torch.Tensor, torch.Tensor]:
    return x[0], torch.ones_like(x[0], dtype=torch.bool)


_SELU_ALPHA, _SELU_GAMMA = 1.67326319217681884765625, 1.05070102214813232421875

# One function per ONNX op type: fn(inputs, attributes, opset) -> tensor or tuple of tensors.
OPS: dict[str, Callable] = {
    "Gemm": _gemm, "MatMul": _binary(torch.matmul),
    "Add": _binary(torch.add), "Sub": _binary(torch.sub), "Mul": _binary(torch.mul), "Div": _div,
    "Pow": _binary(torch.pow), "Neg": _unary(torch.neg), "Abs": _unary(torch.abs), "Exp": _unary(torch.exp),
    "Log": _unary(torch.log), "Sqrt": _unary(torch.sqrt), "Reciprocal": _unary(torch.reciprocal),
    "Floor": _unary(torch.floor), "Ceil": _unary(torch.ceil), "Erf": _unary(torch.erf),
    "Sum": _variadic(torch.add), "Max": _variadic(torch.maximum), "Min": _variadic(torch.minimum),
    "Mean": lambda x, a, opset: _variadic(torch.add)(x, a, opset) / len(x),
    "Relu": _unary(torch.relu), "Sigmoid": _unary(torch.sigmoid), "Tanh": _unary(torch.tanh),
    "Softplus": _unary(F.softplus), "Softsign": _unary(F.softsign), "Gelu": _gelu,
    "LeakyRelu": lambda x, a, opset: F.leaky_relu(x[0], a.get("alpha", 0.01)),
    "Elu": lambda x, a, opset: F.elu(x[0], a.get("alpha", 1.0)),
    "Selu": lambda x, a, opset: a.get("gamma", _SELU_GAMMA) * torch.where(
        x[0] > 0, x[0], a.get("alpha", _SELU_ALPHA) * (torch.exp(x[0]) - 1)),
    "HardSigmoid": lambda x, a, opset: torch.clamp(a.get("alpha", 0.2) * x[0] + a.get("beta", 0.5), 0, 1),
    "HardSwish": _unary(F.hardswish), "PRelu": lambda x, a, opset: torch.where(x[0] >= 0, x[0], x[0] * x[1]),
    "Clip": _clip, "Softmax": _softmax(log=False), "LogSoftmax": _softmax(log=True),
    "Conv": _conv, "BatchNormalization": _batchnorm, "LayerNormalization": _layernorm,
    "MaxPool": _pool("max"), "AveragePool": _pool("avg"),
    "GlobalAveragePool": _global_pool(torch.mean), "GlobalMaxPool": _global_pool(torch.amax),
    "Flatten": _flatten, "Reshape": _reshape, "Squeeze": _squeeze, "Unsqueeze": _unsqueeze,
    "Transpose": lambda x, a, opset: x[0].permute(a.get("perm", list(reversed(range(x[0].dim()))))),
    "Concat": lambda x, a, opset: torch.cat([t for t in x if t is not None], dim=a["axis"]),
    "Split": _split, "Gather": _gather, "Slice": _slice, "Expand": _expand, "Pad": _pad,
    "Tile": lambda x, a, opset: x[0].repeat(ints(x[1])),
    "Shape": _shape, "Constant": _constant, "ConstantOfShape": _constant_of_shape,
    "Identity": _unary(lambda t: t), "Dropout": _dropout,
    "Cast": lambda x, a, opset: x[0].to(_torch_dtype(a["to"])),
    "ReduceMean": _reduce(torch.mean), "ReduceSum": _reduce(torch.sum),
    "ReduceMax": _reduce(torch.amax), "ReduceMin": _reduce(torch.amin),
    "Where": lambda x, a, opset: torch.where(x[0].bool(), x[1], x[2]),
    "Equal": _binary(torch.eq), "Greater": _binary(torch.gt), "Less": _binary(torch.lt),
    "Not": _unary(torch.logical_not),
}


def _attributes(node: onnx.NodeProto) -> dict:
    out = {}
    for attr in node.attribute:
        out[attr.name] = _attrs.text(onnx.helper.get_attribute_value(attr))
    out["_n_outputs"] = len(node.output)
    return out


class OnnxModule(torch.nn.Module):
    """A torch module computing an ONNX graph's single output from its single input.

    Initializers become buffers (they move with ``.to(device)``; they are not trained). The input
    is cast to the graph input's element type, and reshaped (row-major, as ``reshape``) to the graph's declared input
    shape when it has the same number of elements per point in another layout (:meth:`reshapes`). Gradients with respect to the input are exact for
    every op in :data:`OPS` (they are torch's own).
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        graph = model.graph
        self.opset = max((imp.version for imp in model.opset_import if imp.domain in ("", "ai.onnx")), default=0)
        unknown = sorted({n.op_type for n in graph.node if n.domain not in ("", "ai.onnx")}
                         | {n.op_type for n in graph.node if n.op_type not in OPS})
        if unknown:
            raise UnsupportedOperationError(
                f"the ONNX teacher uses op(s) pacverify cannot evaluate with gradients: {', '.join(unknown)}; "
                "give the teacher as TorchScript (torch.jit.save) or torch.export (.pt2) instead")
        init_names = {init.name for init in graph.initializer}
        inputs = [i for i in graph.input if i.name not in init_names]
        if len(inputs) != 1 or len(graph.output) < 1:
            raise InputError(f"an ONNX teacher must have exactly one input and an output (logits), "
                             f"this graph has {len(inputs)} inputs and {len(graph.output)} outputs")
        self.input_name = inputs[0].name
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in inputs[0].type.tensor_type.shape.dim]
        # the declared shape of one input (batch axis dropped) when every such axis is a fixed positive size
        self.input_shape: tuple[int, ...] | None = tuple(dims[1:]) if len(dims) >= 2 and all(
            d > 0 for d in dims[1:]) else None
        self.output_name = graph.output[0].name
        self.input_dtype = _torch_dtype(inputs[0].type.tensor_type.elem_type)
        self._names: dict[str, str] = {}
        for i, init in enumerate(graph.initializer):
            self.register_buffer(f"c{i}", torch.from_numpy(numpy_helper.to_array(init).copy()))
            self._names[init.name] = f"c{i}"
        self._nodes = [(n.op_type, list(n.input), list(n.output), _attributes(n)) for n in graph.node]

    def reshapes(self, shape: tuple[int, ...]) -> bool:
        """Whether inputs of per-point ``shape`` are reshaped to the declared :attr:`input_shape` (same element count,
        another layout: e.g. ACAS Xu's rows of 5 for its declared (1, 1, 5))."""
        return (self.input_shape is not None and tuple(shape) != self.input_shape
                and math.prod(shape) == math.prod(self.input_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() >= 1 and self.reshapes(tuple(x.shape[1:])):
            x = x.reshape((x.shape[0],) + tuple(self.input_shape or ()))
        env: dict[str, torch.Tensor] = {name: getattr(self, attr) for name, attr in self._names.items()}
        env[self.input_name] = x.to(self.input_dtype)
        for op, inputs, outputs, attrs in self._nodes:
            args = [env[name] if name else None for name in inputs]
            result = OPS[op](args, attrs, self.opset)
            if isinstance(result, torch.Tensor):
                result = (result,)
            # a node may omit optional outputs (Dropout's mask) that the op still computes
            for name, value in zip(outputs, result, strict=False):
                if name:
                    env[name] = value
        return env[self.output_name]


def onnx_to_torch(source: str | onnx.ModelProto) -> OnnxModule:
    """Load an ONNX model (path or ModelProto) as a differentiable :class:`OnnxModule` in eval mode."""
    if isinstance(source, onnx.ModelProto):
        model = source
    else:
        try:
            model = onnx.load(str(source))
        except Exception as exc:  # onnx raises DecodeError, OSError, ... for unreadable files
            raise InputError(f"{source} is not a readable ONNX model: {exc}") from None
    return OnnxModule(model).eval()
