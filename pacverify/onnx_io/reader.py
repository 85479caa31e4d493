"""ONNX → :class:`~pacverify.network.Network`: the traversal (the op rules live in :mod:`.ops`).

The graph is read at batch size 1 (a dynamic batch dimension is set to 1; a fixed batch of 1 is
kept), which defines the function of one point that the verifier bounds. Walking the nodes in
their (topological) order, the reader keeps every input-dependent tensor as an affine function
``x_seg @ R + b`` of the output of the last layer emitted (or of the network input), composing each node's
affine step into it; a ReLU turns the pending affine map into an :class:`Affine` layer followed by
a :class:`Relu`. Nodes whose inputs are all constant are evaluated with onnx's reference runtime
(constant folding). Consecutive affine steps are folded into one matrix when the product is no
larger than its factors (cheap products only); otherwise the pending map is emitted as its own
:class:`Affine` layer.

Graphs that are not a chain (a residual ``Add``/``Sub`` of two input-dependent tensors, a ``Concat`` of branches, a
tensor used again after a later ReLU) are lowered to the same chain, exactly: at each ReLU, every other
input-dependent tensor that a later node still reads is *carried* through the ReLU layer as the pair
``relu(q), relu(−q)`` (``q = relu(q) − relu(−q)``), or as ``relu(q)`` alone when q is known to be non-negative
(a ReLU's output, as the skip connections of residual networks are), where the bound routines' relaxation of the
carried neurons is exact (they are stable). Two tensors on the same layer then add, subtract or concatenate as
affine maps. MaxPool is lowered the same way, as a tournament of ``max(a, b) = b + relu(a − b)`` (:func:`_maxpool`).

A convolution whose dense matrix would have more than ``native_conv_entries`` entries is kept as a convolution
(:class:`~pacverify.network.Conv`) where the graph allows: applied to a layer's output (or a slice of it) or to the
input scaled per channel (a normalisation), followed by per-channel scales and shifts (BatchNorm, folded into it) up
to the next ReLU, or by another linear step (it is then a layer of its own). A residual block stays native too: the
skip is carried through the block's first ReLU as an identity on a slice of that layer's output, and ``conv2(h) + x``
is a sum of native maps on two slices (:mod:`pacverify.onnx_io.terms`); such layers become
:class:`~pacverify.network.Block` layers. Where a native map meets a Concat or a MaxPool, or a step other than a
per-channel scale while other tensors are carried, it is built as its dense matrix (refused above
``max_dense_entries``).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from pacverify.errors import InputError
from pacverify.network import Affine, Block, Conv, Network, Relu
from pacverify.onnx_io import ops, terms

# Convolutions whose dense matrix would have more entries are kept native (module docstring).
NATIVE_CONV_ENTRIES = 2**22

SHAPE_ONLY = ("Shape", "Size")  # ops that read a tensor's static shape, not its values


@dataclass(frozen=True)
class _Pending:
    """An affine map ``x @ R + b`` from the segment input (n_seg,) to a live tensor of ``shape``.

    ``R`` is None (identity), a 1-D scale vector (diagonal), a dense (n_seg, n) matrix, or a sum of native maps on
    slices of the segment input (:class:`terms.Terms`: convolutions, identities; ``limit`` and ``origin`` then say
    how large its dense matrix may be built, and for which node the error names).
    """

    shape: tuple[int, ...]
    R: np.ndarray | terms.Terms | None
    b: np.ndarray
    segment: int
    nonneg: bool = False  # every entry is ≥ 0 for every input (a ReLU output, a max of ReLU outputs, ...)
    limit: int = ops.DEFAULT_MAX_DENSE_ENTRIES
    origin: str = ""

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def segment_width(self) -> int:
        """n_seg, the width of the layer output (or network input) the map starts from."""
        if isinstance(self.R, terms.Terms):
            return self.R.width
        return self.R.shape[0] if self.R is not None and self.R.ndim == 2 else self.size

    def is_identity(self) -> bool:
        return self.R is None and not self.b.any()

    def dense(self, where: str = "") -> np.ndarray:
        """The (n_seg, n) matrix of the map; InputError (naming ``where``, else the node that made a convolution)
        when it would have more than ``limit`` entries."""
        if isinstance(self.R, np.ndarray) and self.R.ndim == 2:
            return self.R
        entries = self.segment_width() * self.size
        if entries > self.limit:
            native = isinstance(self.R, terms.Terms)
            raise InputError(f"{(self.origin if native else '') or where or 'a tensor'}: "
                             f"{_too_dense(entries, self.limit, native)}")
        if self.R is None:
            return np.eye(self.size)
        if isinstance(self.R, terms.Terms):
            return terms.dense(self.R, self.size)
        return np.diag(self.R)

    def as_terms(self) -> terms.Terms:
        """The map as :class:`terms.Terms` (one term on the whole segment input, unless it is one already)."""
        if isinstance(self.R, terms.Terms):
            return self.R
        return terms.Terms((terms.Term(0, self.segment_width(), self.R),), self.segment_width())


def load_network(source: str | os.PathLike | bytes | onnx.ModelProto, *, dtype: torch.dtype = torch.float64,
                 device=None, max_dense_entries: int = ops.DEFAULT_MAX_DENSE_ENTRIES,
                 native_conv_entries: int = NATIVE_CONV_ENTRIES) -> Network:
    """Read a ReLU network from ONNX — a chain, or a graph with residual Add/Sub and Concat (module docstring) —
    and lower it to affine layers and ReLUs.

    ``source`` is a path, the serialised bytes or a ``ModelProto``. The result computes, for one
    point, what the ONNX graph computes at batch size 1 (checked against onnxruntime in the tests);
    its input is the model input flattened in C order. ``max_dense_entries`` caps the size of the
    dense matrices a Conv or broadcast MatMul becomes; a Conv whose matrix would have more than
    ``native_conv_entries`` entries is kept native where the graph allows (module docstring).

    Raises InputError for an unreadable or invalid file, several inputs or outputs, dynamic
    dimensions other than the batch dimension, two input-dependent operands of an op other than Add, Sub (of one
    shape) and Concat; UnsupportedOperationError
    (a kind of InputError) naming the op type and node for an op without a rule.
    """
    model = _load_model(source)
    graph = model.graph
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in consts]
    if len(inputs) != 1:
        raise InputError(f"the model must have exactly one input, it has {len(inputs)} "
                         f"({', '.join(i.name for i in inputs)})")
    if len(graph.output) != 1:
        raise InputError(f"the model must have exactly one output, it has {len(graph.output)}")
    full_shape, batch = _input_shape(inputs[0])
    opsets = list(model.opset_import)
    live = {inputs[0].name: _Pending(full_shape, None, np.zeros(int(np.prod(full_shape))), 0)}
    layers: list = []
    out_name = graph.output[0].name
    # the last node that reads each tensor's values (Shape and Size read only its static shape: no need to carry it)
    last_use = {name: i for i, node in enumerate(graph.node) if node.op_type not in SHAPE_ONLY for name in node.input}
    last_use[out_name] = len(graph.node)
    for index, node in enumerate(graph.node):
        needed = {name for name, pending in live.items() if last_use.get(name, -1) > index}
        _visit(node, live, consts, layers, opsets, (max_dense_entries, native_conv_entries), needed)
    if out_name not in live:
        raise InputError(f"the model output {out_name!r} does not depend on the input")
    final = live[out_name]
    _require_current(final, layers, f"the output {out_name!r}")
    if not final.is_identity() or not any(isinstance(layer, Affine) for layer in layers):
        layers.append(_affine(final))
    torch_layers = tuple(layer if isinstance(layer, Relu) else _torch_layer(layer[0], layer[1], dtype, device) for layer in layers)
    per_sample = full_shape[1:] if batch != "none" else full_shape
    meta = {"batch": batch, "onnx_input_shape": ((None,) if batch == "dynamic" else ()) + full_shape[
        1 if batch == "dynamic" else 0:], "output_shape": final.shape,
            "opset": max((o.version for o in opsets if o.domain in ("", "ai.onnx")), default=0)}
    return Network(torch_layers, tuple(per_sample) or (1,), inputs[0].name, out_name, meta)


def onnx_input(net: Network, points: np.ndarray) -> np.ndarray:
    """Points (B, n) reshaped to what the ONNX model's input takes (for onnxruntime), as float32.

    Models with a fixed batch of 1 (or none) take one point at a time: B must then be 1.
    """
    points = np.asarray(points, dtype=np.float32)
    batch = net.meta.get("batch", "dynamic")
    if batch == "dynamic":
        return points.reshape(points.shape[0], *net.input_shape)
    if points.shape[0] != 1:
        raise InputError(f"this model takes one point at a time (input shape {net.meta['onnx_input_shape']}), "
                         f"got {points.shape[0]}")
    return points.reshape(net.meta["onnx_input_shape"])


def _load_model(source) -> onnx.ModelProto:
    try:
        if isinstance(source, onnx.ModelProto):
            model = source
        elif isinstance(source, (bytes, bytearray)):
            model = onnx.load_from_string(bytes(source))
        else:
            model = onnx.load(os.fspath(source))
    except FileNotFoundError:
        raise InputError(f"ONNX file not found: {os.fspath(source)}") from None
    except (OSError, TypeError) as exc:
        raise InputError(f"could not read the ONNX model: {exc}") from None
    except Exception as exc:  # protobuf DecodeError and friends: a truncated or corrupt file
        raise InputError(f"not a readable ONNX model (truncated or corrupt file?): {type(exc).__name__}: {exc}") \
            from None
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:  # onnx raises InferenceError / ValidationError / C++ errors
        raise InputError(f"invalid ONNX model: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") \
            from None


def _input_shape(value_info: onnx.ValueInfoProto) -> tuple[tuple[int, ...], str]:
    """The input's shape with the batch dimension set to 1, and the batch kind: dynamic, fixed or none."""
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        raise InputError(f"the model input {value_info.name!r} has no shape")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    if not dims:
        raise InputError(f"the model input {value_info.name!r} is a scalar")
    rest = [d for d in dims[1:] if d is not None and d > 0]
    if len(rest) != len(dims) - 1:
        raise InputError(f"the model input {value_info.name!r} has dynamic dimensions {dims} other than the batch "
                         f"dimension; only the first dimension may be dynamic")
    first = dims[0]
    if first is None or first <= 0:
        return (1, *rest), "dynamic"
    return (first, *rest), ("fixed" if first == 1 and rest else "none")


def _visit(node: onnx.NodeProto, live: dict, consts: dict, layers: list, opsets: list, limits: tuple[int, int],
           needed: set[str]) -> None:
    """Apply one node. ``needed``: the live tensors that a later node (or the output) still reads; ``limits``:
    (max_dense_entries, native_conv_entries)."""
    max_entries = limits[0]
    names = list(node.input)
    unknown = [n for n in names if n and n not in live and n not in consts]
    if unknown:
        raise InputError(f"node {node.name or node.op_type} uses tensor {unknown[0]!r} that nothing produces")
    live_at = [i for i, n in enumerate(names) if n in live]
    if not live_at:
        for name, value in zip(node.output, _fold(node, consts, opsets), strict=True):
            consts[name] = value
        return
    for i in live_at:
        if node.op_type not in SHAPE_ONLY:
            _require_current(live[names[i]], layers, f"node {node.name or node.op_type}")
    where = f"node {node.name or node.op_type} ({node.op_type})"
    if node.op_type == "MaxPool" and len(live_at) == 1:
        _maxpool(node, live[names[0]], live, layers, {name: live[name] for name in needed}, where, limits)
        return
    if len(live_at) > 1 or node.op_type == "Concat":
        live[node.output[0]] = _combine(node, [live.get(n) if n in live else consts.get(n) for n in names if n],
                                        where, limits)
        return
    rule = ops.rule_for(node)
    pending = live[names[live_at[0]]]
    ctx = ops.Context(node, live_at[0], pending.shape, {i: consts[n] for i, n in enumerate(names) if n in consts},
                      max_entries, {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute},
                      max((o.version for o in opsets if o.domain in ("", "ai.onnx")), default=0))
    carried = {name: live[name] for name in needed}  # what must survive this node (carried through a ReLU)
    try:
        _apply_effect(rule(ctx), node, pending, live, consts, layers, limits, ctx, carried)
    except InputError:
        raise
    except (ValueError, IndexError, KeyError, TypeError, RuntimeError) as exc:  # malformed node attributes/operands
        raise ctx.refuse(f"cannot lower this node: {type(exc).__name__}: {exc}") from None


def _combine(node: onnx.NodeProto, operands: list, where: str, limits: tuple[int, int]) -> _Pending:
    """``Add``/``Sub`` of two live tensors of one shape, or ``Concat`` of live tensors and constants: one affine map
    of the current segment (every operand is on it: :func:`_visit` carried them there). A sum stays a sum of native
    maps (:func:`terms.add`) when either operand is one and its dense matrix would be large."""
    live = [o for o in operands if isinstance(o, _Pending)]
    segment = live[0].segment
    size = live[0].segment_width()
    if node.op_type in ("Add", "Sub") and len(operands) == 2 and len(live) == 2:
        a, b = live
        if a.shape != b.shape:
            raise InputError(f"{where}: adds input-dependent tensors of shapes {a.shape} and {b.shape}; only equal "
                             f"shapes are supported")
        sign = 1.0 if node.op_type == "Add" else -1.0
        if any(isinstance(o.R, terms.Terms) for o in live) and size * a.size > limits[1]:
            R = terms.add(a.as_terms(), b.as_terms(), sign)
            if R is not None:
                return _Pending(a.shape, R, a.b + sign * b.b, segment, limit=limits[0],
                                origin=a.origin or b.origin)
        return _Pending(a.shape, a.dense(where) + sign * b.dense(where), a.b + sign * b.b, segment)
    if node.op_type != "Concat":
        raise InputError(f"{where} combines {len(live)} input-dependent tensors; only Add, Sub (two of one shape) "
                         f"and Concat can")
    axis_attr = next((a for a in node.attribute if a.name == "axis"), None)
    if axis_attr is None:
        raise InputError(f"{where}: Concat needs an axis")
    shapes = [o.shape if isinstance(o, _Pending) else np.shape(o) for o in operands]
    rank = len(shapes[0])
    axis = onnx.helper.get_attribute_value(axis_attr)
    axis = axis + rank if axis < 0 else axis
    if axis == 0 or any(len(shape) != rank for shape in shapes):
        raise InputError(f"{where}: Concat along the batch axis, or of tensors of different ranks, is not supported")
    columns, biases, index, offset = [], [], [], 0
    for operand, shape in zip(operands, shapes, strict=True):
        n = int(np.prod(shape))
        if isinstance(operand, _Pending):
            columns.append(operand.dense(where))
            biases.append(operand.b)
        else:
            columns.append(np.zeros((size, n)))
            biases.append(np.asarray(operand, dtype=np.float64).reshape(-1))
        index.append(np.arange(offset, offset + n).reshape(shape))
        offset += n
    order = np.concatenate(index, axis=axis)
    flat = order.reshape(-1)
    return _Pending(tuple(order.shape), np.hstack(columns)[:, flat], np.concatenate(biases)[flat], segment,
                    all(o.nonneg for o in live) and len(live) == len(operands))


def _maxpool(node: onnx.NodeProto, pending: _Pending, live: dict, layers: list, carried: dict, where: str,
             limits: tuple[int, int]) -> None:
    """MaxPool (1-D or 2-D; strides, pads, auto_pad, dilations, ceil_mode), lowered exactly: each window's maximum is a
    tournament of pairwise ``max(a, b) = b + relu(a − b)``, one ReLU layer per round (⌈log2 k⌉ rounds for k-entry
    windows), the kept operands and every other needed tensor carried through those layers (:func:`_relu_layer`).
    Padded positions are left out of their windows (ONNX pads MaxPool with −inf)."""
    from pacverify.onnx_io import _attrs

    attrs = {a.name: _attrs.text(onnx.helper.get_attribute_value(a)) for a in node.attribute}
    shape = pending.shape
    spatial = len(shape) - 2
    if spatial not in (1, 2) or shape[0] != 1:
        raise InputError(f"{where}: only 1-D and 2-D MaxPool of one sample is supported, got input {shape}")
    if len([o for o in node.output if o]) > 1 or attrs.get("storage_order", 0):
        raise InputError(f"{where}: MaxPool with storage_order or an Indices output is not supported")
    kernel = [int(k) for k in attrs["kernel_shape"]]
    strides = [int(v) for v in attrs.get("strides", [1] * spatial)]
    dilations = [int(v) for v in attrs.get("dilations", [1] * spatial)]
    pads = _attrs.conv_pads(attrs, shape[2:], kernel, strides, dilations)
    index = torch.arange(1, pending.size + 1, dtype=torch.float64).reshape(shape)  # 1-based; 0 marks padding
    if spatial == 1:
        index, kernel, strides, dilations = index.unsqueeze(2), [1, *kernel], [1, *strides], [1, *dilations]
        pads = [0, pads[0], 0, pads[1]]
    if attrs.get("ceil_mode", 0):
        # ceil_mode: one more output where the last window runs off the end, unless it would start in the end
        # padding (ONNX's and torch's rule); the positions it runs over are padding (never the maximum)
        for i in range(2):
            size = index.shape[2 + i] + pads[i] + pads[2 + i]
            reach = dilations[i] * (kernel[i] - 1) + 1
            out = -(-(size - reach) // strides[i]) + 1
            if (out - 1) * strides[i] >= index.shape[2 + i] + pads[i]:
                out -= 1
            pads[2 + i] += max(0, (out - 1) * strides[i] + reach - size)
    padded = torch.nn.functional.pad(index, _attrs.torch_pad_widths(pads))
    # (1, C·kh·kw, L): the 1-based entries of every window, 0 where it covers padding
    windows = torch.nn.functional.unfold(padded, tuple(kernel), dilation=tuple(dilations), stride=tuple(strides))
    channels, out_spatial = shape[1], [(padded.shape[2 + i] - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1
                                      for i in range(2)]
    entries = windows.reshape(channels, kernel[0] * kernel[1], -1).permute(0, 2, 1).reshape(-1, kernel[0] * kernel[1])
    candidates = [[int(v) - 1 for v in row.tolist() if v > 0] for row in entries]  # per output, in C order
    if any(not c for c in candidates):
        raise InputError(f"{where}: a MaxPool window lies entirely in the padding")
    M, b, nonneg, segment = pending.dense(where), pending.b, pending.nonneg, pending.segment
    names = ("\0maxpool-differences", "\0maxpool-kept")
    while any(len(c) > 1 for c in candidates):
        # one round: each candidate pair (a, b) becomes b + relu(a − b); an odd one out passes as it is. Every new
        # candidate is one kept operand (b, or the odd one), plus relu(a − b) where it came from a pair.
        pairs: list[tuple[int, int]] = []
        kept: list[int] = []
        paired_at: list[int] = []
        regrouped = []
        for cand in candidates:
            group = []
            for j in range(0, len(cand), 2):
                if j + 1 < len(cand):
                    pairs.append((cand[j], cand[j + 1]))
                    paired_at.append(len(kept))
                group.append(len(kept))
                kept.append(cand[min(j + 1, len(cand) - 1)])
            regrouped.append(group)
        a, c = (np.array(side) for side in zip(*pairs, strict=True))
        differences = _Pending((len(a),), M[:, a] - M[:, c], b[a] - b[c], segment)
        keep = _Pending((len(kept),), M[:, kept], b[kept], segment, nonneg)
        _relu_layer(names[0], differences, (len(a),), live, layers, {**carried, names[1]: keep}, limits)
        relu_d, kept_now = live.pop(names[0]), live.pop(names[1])
        carried = {name: live[name] for name in carried}
        M = kept_now.dense().copy()  # carried maps have no bias
        M[:, paired_at] += relu_d.dense()
        b, segment, candidates = np.zeros(len(kept)), _segment(layers), regrouped
    order = [c[0] for c in candidates]
    out_shape = (1, channels, *out_spatial[2 - spatial:])
    live[node.output[0]] = _Pending(out_shape, M[:, order], b[order], segment, nonneg)


def _apply_effect(effect: ops.Effect, node: onnx.NodeProto, pending: _Pending, live: dict, consts: dict,
                  layers: list, limits: tuple[int, int], ctx: ops.Context, carried: dict) -> None:
    if isinstance(effect, ops.Value):
        consts[node.output[0]] = effect.value
    elif isinstance(effect, ops.Restructure):
        live[node.output[0]] = dataclasses.replace(pending, shape=effect.shape)
    elif isinstance(effect, ops.Activation):
        _relu_layer(node.output[0], pending, effect.shape, live, layers, carried, limits)
    else:
        live[node.output[0]] = _compose(pending, effect, layers, limits, ctx, alone=not carried)


def _relu_layer(name: str, pending: _Pending, shape: tuple[int, ...], live: dict, layers: list,
                carried: dict, limits: tuple[int, int]) -> None:
    """Emit ``pending`` (and the ``carried`` tensors) as a linear layer followed by a ReLU; re-express the carried
    tensors on its output: ``q = relu(q) − relu(−q)``, or ``relu(q)`` when q is non-negative.

    The layer is a dense :class:`Affine` while its matrix is small; when a map is native (a convolution) or the
    matrix would have more than ``native_conv_entries`` entries, a :class:`Block` of one part per tensor, and the
    carried tensors become identities on slices of its output (:class:`terms.Terms`) instead of dense selections."""
    if not carried:
        if not pending.is_identity():
            layers.append(_affine(pending))
        layers.append(Relu())
        live[name] = _Pending(shape, None, np.zeros(pending.size), _segment(layers), nonneg=True)
        return
    groups: dict[int, list[str]] = {}
    for key, q in carried.items():  # a tensor known under several names is carried once
        groups.setdefault(id(q), []).append(key)
    where = f"the ReLU {name!r}, which carries other tensors across it"
    parts: list[tuple[_Pending, float]] = [(pending, 1.0)]
    places = []
    offset = pending.size
    for keys in groups.values():
        q = carried[keys[0]]
        signs = (1.0,) if q.nonneg else (1.0, -1.0)
        parts += [(q, sign) for sign in signs]
        places.append((keys, q, offset))
        offset += len(signs) * q.size
    biases = np.concatenate([sign * q.b for q, sign in parts])
    native = any(isinstance(q.R, terms.Terms) for q, _ in parts) or offset * max(offset, pending.segment_width()) \
        > min(limits)
    if native:
        layers.append(([q.as_terms() if sign > 0 else terms.negated_all(q.as_terms()) for q, sign in parts],
                       biases))
    else:
        layers.append((np.vstack([sign * q.dense(where).T for q, sign in parts]), biases))
    layers.append(Relu())
    segment, eye = _segment(layers), np.eye(0 if native else offset)
    for keys, q, start in places:
        if native:
            sliced = [terms.Term(start, q.size, None)] + ([] if q.nonneg else [
                terms.Term(start + q.size, q.size, -np.ones(q.size))])
            R: np.ndarray | terms.Terms = terms.Terms(tuple(sliced), offset)
        else:
            R = eye[:, start:start + q.size]
            if not q.nonneg:
                R = R - eye[:, start + q.size:start + 2 * q.size]
        carried_q = _Pending(q.shape, R, np.zeros(q.size), segment, nonneg=q.nonneg, limit=limits[0])
        for key in keys:
            live[key] = carried_q
    R = terms.Terms((terms.Term(0, pending.size, None),), offset) if native else eye[:, :pending.size]
    live[name] = _Pending(shape, R, np.zeros(pending.size), segment, nonneg=True, limit=limits[0])


def _segment(layers: list) -> int:
    """The number of layers emitted so far: a live tensor's map refers to the output of that many layers."""
    return len(layers)


def _require_current(pending: _Pending, layers: list, what: str) -> None:
    if pending.segment != _segment(layers):
        raise InputError(f"{what} uses a tensor from before a later layer: the graph is not sequential, and the "
                         f"reader could not carry it")


def _affine(pending: _Pending) -> tuple:
    """The layer of a pending map: (weight (n, n_seg), bias (n,)), or ([Terms], bias (n,)) for a native one."""
    if isinstance(pending.R, terms.Terms):
        return [pending.R], pending.b.copy()
    return pending.dense().T.copy(), pending.b.copy()


def _torch_layer(weight, bias: np.ndarray, dtype: torch.dtype, device) -> Affine | Conv | Block:
    """The verifier's layer of an emitted ``(weight, bias)``: dense, one convolution, or a :class:`Block`."""
    if not isinstance(weight, list):
        return Affine(torch.as_tensor(weight, dtype=dtype, device=device), torch.as_tensor(bias, dtype=dtype,
                                                                                          device=device))
    conv = weight[0].single_conv() if len(weight) == 1 else None
    if conv is not None:
        return _torch_conv(conv, bias, dtype, device)
    return terms.block(weight, bias, dtype, device)


def _too_dense(entries: int, limit: int, conv: bool) -> str:
    why = (f"its dense matrix would have {entries} entries, more than the limit max_dense_entries={limit}")
    return why + ("; a convolution is kept native only where the map before it is an identity or a per-channel scale, "
                  "and up to the next ReLU only through per-channel scales, Add/Sub and reshapes (not a Concat, a "
                  "MaxPool or another linear step while other tensors are carried)" if conv else "")


def _torch_conv(spec: ops.ConvSpec, bias: np.ndarray, dtype: torch.dtype, device=None) -> Conv:
    return Conv(torch.as_tensor(spec.kernel, dtype=dtype, device=device), torch.as_tensor(bias, dtype=dtype,
                device=device), spec.in_shape, spec.stride, spec.pads, spec.dilation, spec.groups)


def _native_conv(pending: _Pending, step: ops.Step, limits: tuple[int, int]) -> terms.Terms | None:
    """The convolution of ``step`` applied to ``pending`` as native convolutions (one per term of the map before it),
    when it is large enough to be worth keeping native and every term before it is an identity or a per-channel
    scale; else None."""
    spec = step.conv
    if spec is None or pending.size * int(np.prod(step.shape)) <= min(limits):
        return None
    source = pending.as_terms()
    out = []
    for term in source.terms:
        kernel = spec.kernel
        if term.op is not None:
            scale = terms.channel_values(term.op, spec.in_shape[0]) if isinstance(term.op, np.ndarray) \
                and term.op.ndim == 1 and spec.groups == 1 else None
            if scale is None:
                return None
            kernel = kernel * scale[None, :, None, None]
        out.append(terms.Term(term.start, term.width, dataclasses.replace(spec, kernel=kernel)))
    return terms.Terms(tuple(out), source.width)


def _compose(pending: _Pending, step: ops.Step, layers: list, limits: tuple[int, int], ctx: ops.Context, *,
             alone: bool = True) -> _Pending:
    """``step`` after ``pending``: fold when cheap (always when other live tensors are still needed: ``alone``
    False, since emitting a layer would move the segment under them), else emit ``pending`` as a layer first.
    A large convolution stays native (:func:`_native_conv`), and per-channel scales after it fold into it."""
    max_entries = limits[0]
    bias = (step.apply(pending.b[None])[0] if step.apply is not None else
            pending.b * step.scale if step.scale is not None else pending.b @ step.matrix) + step.bias
    native = _native_conv(pending, step, limits)
    if native is not None:
        return _Pending(step.shape, native, np.asarray(bias, dtype=np.float64), pending.segment, limit=max_entries,
                        origin=ctx.where())
    R = pending.R
    if isinstance(R, terms.Terms):
        scaled = None if step.scale is None else terms.scaled(R, step.scale)
        if scaled is not None:
            return dataclasses.replace(pending, shape=step.shape, R=scaled, b=np.asarray(bias, dtype=np.float64))
        if alone:  # the native map becomes its own layer; the step starts the next one
            layers.append(_affine(pending))
            return _compose(_Pending(pending.shape, None, np.zeros(pending.size), _segment(layers)), step, layers,
                            limits, ctx)
        R = pending.dense()
        pending = dataclasses.replace(pending, R=R)
    if step.scale is not None:
        R = step.scale.copy() if R is None else R * step.scale
    elif step.matrix is not None:
        if R is None:
            R = step.matrix
        elif R.ndim == 1:
            R = R[:, None] * step.matrix
        elif R.shape[0] * step.matrix.shape[1] <= R.size + step.matrix.size or not alone:
            R = R @ step.matrix
        else:  # the product would be larger than its factors: keep two layers
            layers.append(_affine(pending))
            return _Pending(step.shape, step.matrix, step.bias.copy(), _segment(layers))
    else:
        assert step.apply is not None  # a Step carries one of scale, matrix and apply
        rows = pending.segment_width()
        n_out = int(np.prod(step.shape))
        if rows * n_out > max_entries:
            raise ctx.refuse(_too_dense(rows * n_out, max_entries, step.conv is not None))
        R = step.apply(pending.dense())
    return _Pending(step.shape, R, np.asarray(bias, dtype=np.float64), pending.segment)


def _fold(node: onnx.NodeProto, consts: dict, opsets: list) -> list[np.ndarray]:
    """Evaluate a node whose inputs are all constants with onnx's reference runtime."""
    inits = [numpy_helper.from_array(np.asarray(consts[n]), n) for n in node.input if n]
    outputs = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in node.output]
    graph = onnx.helper.make_graph([node], "fold", [], outputs, initializer=inits)
    try:
        return [np.asarray(v) for v in ReferenceEvaluator(onnx.helper.make_model(graph, opset_imports=opsets))
                .run(None, {})]
    except Exception as exc:  # the reference runtime raises many kinds
        raise InputError(f"could not evaluate constant node {node.name or node.op_type} ({node.op_type}): {exc}") \
            from None
