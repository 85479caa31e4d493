"""The op table of the ONNX reader: one small rule per ONNX op type, keyed by ``op_type``.

A rule sees one node whose single input-dependent ("live") operand has the static shape
``ctx.shape`` (the batch dimension set to 1) and whose other operands are constants, and says
what the node does to the live tensor, on its entries flattened in C order:

* :class:`Restructure` — the same entries under a new shape (Flatten, Reshape, Squeeze, ...);
* :class:`Step` — an affine map ``y = x @ matrix + bias`` given one of three ways: a dense
  ``matrix`` (n_in, n_out), an elementwise ``scale`` (n_in,), or a linear ``apply`` function on a
  batch of row vectors (P, n_in) → (P, n_out) for structured maps (Conv, Transpose);
* :class:`Activation` — a ReLU;
* :class:`Value` — a constant (Shape of a live tensor, whose shape is static).

The traversal (:mod:`pacverify.onnx_io.reader`) composes the steps into the verifier's
:class:`~pacverify.network.Network`; rules never see more than their node.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx
import torch

from pacverify.errors import InputError, UnsupportedOperationError
from pacverify.onnx_io import _attrs

# Largest dense matrix (entries) a rule may build; Conv and broadcast MatMul are refused above it.
DEFAULT_MAX_DENSE_ENTRIES = 2**26


@dataclass(frozen=True)
class Context:
    """What a rule sees: the node, the live operand's position and shape, the constant operands."""

    node: onnx.NodeProto
    live_index: int
    shape: tuple[int, ...]
    consts: dict[int, np.ndarray]
    max_dense_entries: int
    attrs: dict = field(default_factory=dict)
    opset: int = 0  # the model's default-domain opset (operand vs attribute forms)

    @property
    def n_in(self) -> int:
        return int(np.prod(self.shape))

    def where(self) -> str:
        return f"node {self.node.name or '(unnamed)'} ({self.node.op_type})"

    def const(self, index: int, default=None) -> np.ndarray | None:
        return self.consts.get(index, default)

    def refuse(self, why: str) -> InputError:
        return InputError(f"{self.where()}: {why}")


@dataclass(frozen=True)
class Restructure:
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ConvSpec:
    """A 2-D convolution without bias on one sample (a 1-D one has height 1), as :class:`pacverify.network.Conv`
    takes it: ``kernel`` (C_out, C_in / groups, kh, kw), ``in_shape`` (C_in, H, W), ``pads`` (top, left, bottom,
    right)."""

    kernel: np.ndarray
    in_shape: tuple[int, int, int]
    stride: tuple[int, int]
    pads: tuple[int, int, int, int]
    dilation: tuple[int, int]
    groups: int


@dataclass(frozen=True)
class Step:
    shape: tuple[int, ...]
    bias: np.ndarray
    matrix: np.ndarray | None = None
    scale: np.ndarray | None = None
    apply: Callable[[np.ndarray], np.ndarray] | None = None
    conv: ConvSpec | None = None  # the map ``apply`` computes, when it is a convolution the verifier can keep native


@dataclass(frozen=True)
class Activation:
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Value:
    value: np.ndarray


Effect = Restructure | Step | Activation | Value


def _live_only(ctx: Context) -> None:
    if ctx.live_index != 0:
        raise ctx.refuse("the input-dependent tensor must be the first operand")


def _identity(ctx: Context) -> Effect:
    return Restructure(ctx.shape)


def _relu(ctx: Context) -> Effect:
    return Activation(ctx.shape)


def _flatten(ctx: Context) -> Effect:
    axis = _attrs.normalize_axis(ctx.attrs.get("axis", 1), len(ctx.shape))
    if not 0 <= axis <= len(ctx.shape):
        raise ctx.refuse(f"axis {ctx.attrs.get('axis')} is out of range for shape {ctx.shape}")
    return Restructure((int(np.prod(ctx.shape[:axis])), int(np.prod(ctx.shape[axis:]))))


def _reshape(ctx: Context) -> Effect:
    _live_only(ctx)
    given = ctx.const(1)
    if given is None:
        raise ctx.refuse("the target shape must be a constant")
    target = [int(v) for v in given.reshape(-1)]
    if not ctx.attrs.get("allowzero", 0):
        target = [ctx.shape[i] if v == 0 and i < len(ctx.shape) else v for i, v in enumerate(target)]
    if target.count(-1) > 1:
        raise ctx.refuse(f"target shape {target} has more than one -1")
    if -1 in target:
        known = int(np.prod([v for v in target if v != -1]))
        if known == 0 or ctx.n_in % known:
            raise ctx.refuse(f"cannot reshape {ctx.shape} to {target}")
        target[target.index(-1)] = ctx.n_in // known
    if int(np.prod(target)) != ctx.n_in:
        raise ctx.refuse(f"cannot reshape {ctx.shape} (batch 1) to {tuple(target)}; shapes that fix a batch "
                         f"size other than 1 are not supported")
    return Restructure(tuple(target))


def _squeeze(ctx: Context) -> Effect:
    _live_only(ctx)
    axes = _attrs.axes(ctx.const(1), ctx.attrs)
    if axes is None:
        return Restructure(tuple(d for d in ctx.shape if d != 1))
    axes = [_attrs.normalize_axis(a, len(ctx.shape)) for a in axes]
    if any(not 0 <= a < len(ctx.shape) or ctx.shape[a] != 1 for a in axes):
        raise ctx.refuse(f"cannot squeeze axes {axes} of shape {ctx.shape}")
    return Restructure(tuple(d for i, d in enumerate(ctx.shape) if i not in axes))


def _unsqueeze(ctx: Context) -> Effect:
    _live_only(ctx)
    axes = _attrs.axes(ctx.const(1), ctx.attrs)
    if not axes:
        raise ctx.refuse("Unsqueeze needs axes")
    rank = len(ctx.shape) + len(axes)
    shape = list(ctx.shape)
    for a in sorted(_attrs.normalize_axis(a, rank) for a in axes):
        shape.insert(a, 1)
    return Restructure(tuple(shape))


def _shape(ctx: Context) -> Effect:
    rank = len(ctx.shape)
    start, end = ctx.attrs.get("start", 0), ctx.attrs.get("end", rank)
    return Value(np.array(ctx.shape, dtype=np.int64)[slice(start, end)])


def _transpose(ctx: Context) -> Effect:
    perm = ctx.attrs.get("perm", list(reversed(range(len(ctx.shape)))))
    order = np.arange(ctx.n_in).reshape(ctx.shape).transpose(perm).reshape(-1)
    shape = tuple(ctx.shape[p] for p in perm)
    return Step(shape, np.zeros(ctx.n_in), apply=lambda x: x[:, order])


def _broadcast_const(ctx: Context, value: np.ndarray) -> np.ndarray:
    """A constant broadcast to the live shape; refusing broadcasts that would enlarge the live tensor."""
    value = np.asarray(value, dtype=np.float64)
    try:
        out = np.broadcast_shapes(ctx.shape, value.shape)
    except ValueError:
        raise ctx.refuse(f"cannot broadcast a constant of shape {value.shape} to {ctx.shape}") from None
    if tuple(out) != tuple(ctx.shape):
        raise ctx.refuse(f"a constant of shape {value.shape} would enlarge the input-dependent tensor "
                         f"{ctx.shape} to {tuple(out)}; not supported")
    return np.broadcast_to(value, ctx.shape).reshape(-1)


def _add(ctx: Context) -> Effect:
    c = _broadcast_const(ctx, ctx.consts[1 - ctx.live_index])
    return Step(ctx.shape, c, scale=np.ones(ctx.n_in))


def _sub(ctx: Context) -> Effect:
    c = _broadcast_const(ctx, ctx.consts[1 - ctx.live_index])
    if ctx.live_index == 0:
        return Step(ctx.shape, -c, scale=np.ones(ctx.n_in))
    return Step(ctx.shape, c, scale=-np.ones(ctx.n_in))


def _neg(ctx: Context) -> Effect:
    return Step(ctx.shape, np.zeros(ctx.n_in), scale=-np.ones(ctx.n_in))


def _mul(ctx: Context) -> Effect:
    return Step(ctx.shape, np.zeros(ctx.n_in), scale=_broadcast_const(ctx, ctx.consts[1 - ctx.live_index]))


def _div(ctx: Context) -> Effect:
    if ctx.live_index != 0:
        raise UnsupportedOperationError(f"{ctx.where()}: dividing by an input-dependent tensor is not affine; "
                                        f"unsupported")
    divisor = _broadcast_const(ctx, ctx.consts[1])
    if (divisor == 0).any():
        raise ctx.refuse("division by a constant that contains zeros")
    return Step(ctx.shape, np.zeros(ctx.n_in), scale=1.0 / divisor)


def _float(ctx: Context, index: int) -> np.ndarray:
    value = ctx.const(index)
    if value is None:
        raise ctx.refuse(f"operand {index} must be a constant")
    return np.asarray(value, dtype=np.float64)


def _left_product(ctx: Context, shape: tuple[int, ...], right: np.ndarray, transpose: bool) -> Step:
    """``op(X) @ right`` for live X of 2-D ``shape``: rows of X (after ``transpose``) times a constant."""
    rows = shape[1] if transpose else shape[0]
    out_shape = (rows, right.shape[1])
    if rows == 1 and (not transpose or shape[0] == right.shape[0]):
        return Step(out_shape, np.zeros(right.shape[1]), matrix=right)

    def apply(x: np.ndarray) -> np.ndarray:
        x = x.reshape(-1, *shape)
        x = np.swapaxes(x, 1, 2) if transpose else x
        return (x @ right).reshape(x.shape[0], -1)
    return Step(out_shape, np.zeros(rows * right.shape[1]), apply=apply)


def _right_product(ctx: Context, shape: tuple[int, ...], left: np.ndarray, transpose: bool) -> Step:
    """``left @ op(X)`` for live X of 2-D ``shape`` and a constant matrix ``left``."""
    cols = shape[0] if transpose else shape[1]
    out_shape = (left.shape[0], cols)
    if cols == 1:
        return Step(out_shape, np.zeros(left.shape[0]), matrix=left.T)

    def apply(x: np.ndarray) -> np.ndarray:
        x = x.reshape(-1, *shape)
        x = np.swapaxes(x, 1, 2) if transpose else x
        return (left @ x).reshape(x.shape[0], -1)
    return Step(out_shape, np.zeros(left.shape[0] * cols), apply=apply)


def _gemm(ctx: Context) -> Effect:
    """Y = alpha · op(A) · op(B) + beta · C, one of A, B input-dependent (ONNX Gemm, all attribute forms)."""
    if len(ctx.shape) != 2 or ctx.live_index == 2:
        raise ctx.refuse(f"Gemm needs a 2-D input-dependent operand A or B, got shape {ctx.shape} at operand "
                         f"{ctx.live_index}")
    alpha, beta = float(ctx.attrs.get("alpha", 1.0)), float(ctx.attrs.get("beta", 1.0))
    trans_a, trans_b = bool(ctx.attrs.get("transA", 0)), bool(ctx.attrs.get("transB", 0))
    if ctx.live_index == 0:
        right = _float(ctx, 1)
        right = alpha * (right.T if trans_b else right)
        inner, expected = ctx.shape[0 if trans_a else 1], right.shape[0]
        step = _left_product(ctx, ctx.shape, right, trans_a)
    else:
        left = _float(ctx, 0)
        left = alpha * (left.T if trans_a else left)
        inner, expected = ctx.shape[1 if trans_b else 0], left.shape[1]
        step = _right_product(ctx, ctx.shape, left, trans_b)
    if inner != expected:
        raise ctx.refuse(f"inner dimensions do not match: input {ctx.shape} and a constant of inner size {expected}")
    if len(ctx.node.input) > 2 and ctx.node.input[2]:
        c = beta * _float(ctx, 2)
        try:
            bias = np.broadcast_to(c, step.shape).reshape(-1)
        except ValueError:
            raise ctx.refuse(f"C of shape {c.shape} does not broadcast to {step.shape}") from None
        step = Step(step.shape, bias.copy(), step.matrix, step.scale, step.apply)
    return step


def _matmul(ctx: Context) -> Effect:
    """numpy-style matmul of the input-dependent tensor with a constant 1-D or 2-D operand."""
    other = _float(ctx, 1 - ctx.live_index)
    shape = ctx.shape
    if other.ndim > 2 or len(shape) == 0:
        raise ctx.refuse(f"MatMul with a constant of shape {other.shape} and an input of shape {shape} is not "
                         f"supported (the constant must be 1-D or 2-D)")
    vector = other.ndim == 1
    other2 = other.reshape(-1, 1) if vector and ctx.live_index == 0 else other.reshape(1, -1) if vector else other
    if ctx.live_index == 0:
        lead, k = shape[:-1], shape[-1]
        if k != other2.shape[0]:
            raise ctx.refuse(f"inner dimensions do not match: {shape} @ {other.shape}")
        out = lead + (() if vector else (other2.shape[1],))
        if int(np.prod(lead)) == 1:
            return Step(out, np.zeros(int(np.prod(out))), matrix=other2)
        size = int(np.prod(lead)) * k * other2.shape[1]
        _check_size(ctx, size)
        return Step(out, np.zeros(int(np.prod(out))),
                    apply=lambda x: (x.reshape(-1, *lead, k) @ other2).reshape(x.shape[0], -1))
    matrix_shape = shape if len(shape) >= 2 else shape + (1,)
    if matrix_shape[-2] != other2.shape[1]:
        raise ctx.refuse(f"inner dimensions do not match: {other.shape} @ {shape}")
    out = matrix_shape[:-2] + ((other2.shape[0],) if not vector else ()) + ((matrix_shape[-1],) if len(shape) >= 2
                                                                              else ())
    if int(np.prod(matrix_shape[:-2])) * matrix_shape[-1] == 1:
        return Step(out, np.zeros(int(np.prod(out))), matrix=other2.T)
    return Step(out, np.zeros(int(np.prod(out))),
                apply=lambda x: (other2 @ x.reshape(-1, *matrix_shape)).reshape(x.shape[0], -1))


def _check_size(ctx: Context, entries: int) -> None:
    if entries > ctx.max_dense_entries:
        raise ctx.refuse(f"its dense matrix would have {entries} entries, more than the limit "
                         f"max_dense_entries={ctx.max_dense_entries}; only small conv students are supported")


def _conv(ctx: Context) -> Effect:
    """Conv (1-D or 2-D, any strides, pads, dilations, groups): its map on rows, and its :class:`ConvSpec` (the
    reader keeps it native, or builds its dense matrix, as the graph allows)."""
    _live_only(ctx)
    weight = _float(ctx, 1)
    bias = ctx.const(2)
    spatial = len(ctx.shape) - 2
    if spatial not in (1, 2) or ctx.shape[0] != 1 or weight.ndim != spatial + 2:
        raise ctx.refuse(f"only 1-D and 2-D convolutions of one sample are supported, got input {ctx.shape} and "
                         f"weight {weight.shape}")
    strides = list(ctx.attrs.get("strides", [1] * spatial))
    dilations = list(ctx.attrs.get("dilations", [1] * spatial))
    group = int(ctx.attrs.get("group", 1))
    pads = _attrs.conv_pads(ctx.attrs, ctx.shape[2:], weight.shape[2:], strides, dilations)
    conv = torch.nn.functional.conv1d if spatial == 1 else torch.nn.functional.conv2d
    w = torch.as_tensor(weight)
    torch_pad = _attrs.torch_pad_widths(pads)

    def apply(x: np.ndarray) -> np.ndarray:
        out = []
        step = max(1, ctx.max_dense_entries // max(ctx.n_in, 1))
        for start in range(0, x.shape[0], step):
            chunk = torch.as_tensor(x[start:start + step]).reshape(-1, *ctx.shape[1:])
            chunk = torch.nn.functional.pad(chunk, torch_pad)
            out.append(conv(chunk, w, None, strides, 0, dilations, group).reshape(chunk.shape[0], -1).numpy())
        return np.concatenate(out)

    try:
        probe = conv(torch.nn.functional.pad(torch.zeros(1, *ctx.shape[1:], dtype=torch.float64), torch_pad),
                     w, None, strides, 0, dilations, group)
    except RuntimeError as exc:
        raise ctx.refuse(f"invalid convolution: {exc}") from None
    out_shape = tuple(probe.shape)
    b = np.zeros(out_shape) if bias is None else np.broadcast_to(
        np.asarray(bias, dtype=np.float64).reshape((1, -1) + (1,) * spatial), out_shape)
    if spatial == 1:
        spec = ConvSpec(weight[:, :, None, :], (ctx.shape[1], 1, ctx.shape[2]), (1, strides[0]),
                        (0, pads[0], 0, pads[1]), (1, dilations[0]), group)
    else:
        spec = ConvSpec(weight, (ctx.shape[1], ctx.shape[2], ctx.shape[3]), (strides[0], strides[1]),
                        (pads[0], pads[1], pads[2], pads[3]), (dilations[0], dilations[1]), group)
    return Step(out_shape, np.array(b).reshape(-1), apply=apply, conv=spec)


def _batchnorm(ctx: Context) -> Effect:
    """Inference-mode BatchNormalization: y = scale · (x − mean) / sqrt(var + eps) + B, per channel (axis 1)."""
    _live_only(ctx)
    if ctx.attrs.get("training_mode", 0) or len(ctx.node.output) > 1:
        raise ctx.refuse("training-mode BatchNormalization is not supported (export the model in eval mode)")
    scale, beta, mean, var = (_float(ctx, i) for i in range(1, 5))
    if len(ctx.shape) < 2 or scale.shape != (ctx.shape[1],):
        raise ctx.refuse(f"per-channel parameters of shape {scale.shape} do not fit input {ctx.shape}")
    factor = scale / np.sqrt(var + float(ctx.attrs.get("epsilon", 1e-5)))
    expand = (1, -1) + (1,) * (len(ctx.shape) - 2)
    s = np.broadcast_to(factor.reshape(expand), ctx.shape).reshape(-1)
    b = np.broadcast_to((beta - mean * factor).reshape(expand), ctx.shape).reshape(-1)
    return Step(ctx.shape, b.copy(), scale=s.copy())


def _affine_via_evaluator(op_type: str) -> Callable[[Context], Effect]:
    """The rule of an op that is affine in its live operand (AveragePool, GlobalAveragePool, Pad, ReduceMean,
    ReduceSum: averages, copies and sums of entries, plus constants), lowered through the torch evaluator of ONNX
    teachers (:mod:`pacverify.onnx_io.torch_module`, which onnxruntime agreement tests cover): ``bias = f(0)`` and
    the linear part ``f(x) − f(0)`` applied to rows. A node that mixes the batch rows (a reduction or padding over
    the batch axis) is refused: its output must have one row per input row, each depending on its own row only."""
    from pacverify.onnx_io.torch_module import OPS as EVALUATOR
    from pacverify.onnx_io.torch_module import _attributes

    run = EVALUATOR[op_type]

    def rule(ctx: Context) -> Effect:
        _live_only(ctx)
        operands = [None if i not in ctx.consts else torch.as_tensor(np.array(ctx.consts[i]))
                    for i in range(1, len(ctx.node.input))]
        attrs = _attributes(ctx.node)  # as the evaluator reads them (strings decoded)

        def f(rows: np.ndarray) -> np.ndarray:
            x = torch.as_tensor(np.asarray(rows, dtype=np.float64)).reshape(-1, *ctx.shape[1:])
            try:
                out = run([x, *operands], attrs, ctx.opset)
            except UnsupportedOperationError as exc:
                raise ctx.refuse(str(exc)) from None
            if out.dim() == 0 or out.shape[0] != x.shape[0]:
                raise ctx.refuse("it mixes the rows of the batch (a reduction or padding over axis 0), which a "
                                 "classifier of one input per row does not do")
            return out.reshape(x.shape[0], -1).numpy()

        probe = np.random.default_rng(0).normal(size=(2, ctx.n_in))
        together, apart = f(probe), np.concatenate([f(probe[:1]), f(probe[1:])])
        if not np.allclose(together, apart, rtol=1e-12, atol=1e-12):
            raise ctx.refuse("its output rows depend on other rows of the batch")
        x = torch.zeros((1, *ctx.shape[1:]), dtype=torch.float64)
        out_shape = (1, *run([x, *operands], attrs, ctx.opset).shape[1:])
        zero = f(np.zeros((1, ctx.n_in)))
        return Step(out_shape, zero[0].copy(), apply=lambda rows: f(rows) - zero)

    return rule


OPS: dict[str, Callable[[Context], Effect]] = {
    "Identity": _identity,
    "Relu": _relu,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Shape": _shape,
    "Transpose": _transpose,
    "Add": _add,
    "Sub": _sub,
    "Neg": _neg,
    "Mul": _mul,
    "Div": _div,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Conv": _conv,
    "BatchNormalization": _batchnorm,
    **{op: _affine_via_evaluator(op) for op in ("AveragePool", "GlobalAveragePool", "Pad", "ReduceMean", "ReduceSum")},
}


def rule_for(node: onnx.NodeProto) -> Callable[[Context], Effect]:
    """The rule of ``node``'s op type; UnsupportedOperationError naming the op and node when there is none."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in OPS:
        raise UnsupportedOperationError(
            f"unsupported ONNX operation {node.op_type!r} in node {node.name or '(unnamed)'}; the verifier supports "
            f"{', '.join(sorted(OPS))} (and constant subgraphs)")
    return OPS[node.op_type]
