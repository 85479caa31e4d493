"""ONNX → :class:`~pacverify.network.Network`: the traversal (the op rules live in :mod:`.ops`).

The graph is read at batch size 1 (a dynamic batch dimension is set to 1; a fixed batch of 1 is
kept), which defines the function of one point that the verifier bounds. Walking the nodes in
their (topological) order, the reader keeps every input-dependent tensor as an affine function
``x_seg @ R + b`` of the output of the last ReLU (or of the network input), composing each node's
affine step into it; a ReLU turns the pending affine map into an :class:`Affine` layer followed by
a :class:`Relu`. Nodes whose inputs are all constant are evaluated with onnx's reference runtime
(constant folding). Consecutive affine steps are folded into one matrix when the product is no
larger than its factors (cheap products only); otherwise the pending map is emitted as its own
:class:`Affine` layer.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from pacverify.errors import InputError
from pacverify.network import Affine, Network, Relu
from pacverify.onnx_io import ops


@dataclass(frozen=True)
class _Pending:
    """An affine map ``x @ R + b`` from the segment input (n_seg,) to a live tensor of ``shape``.

    ``R`` is None (identity), a 1-D scale vector (diagonal), or a dense (n_seg, n) matrix.
    """

    shape: tuple[int, ...]
    R: np.ndarray | None
    b: np.ndarray
    segment: int

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def is_identity(self) -> bool:
        return self.R is None and not self.b.any()

    def dense(self) -> np.ndarray:
        if self.R is None:
            return np.eye(self.size)
        return np.diag(self.R) if self.R.ndim == 1 else self.R


def load_network(source: str | os.PathLike | bytes | onnx.ModelProto, *, dtype: torch.dtype = torch.float64,
                 device=None, max_dense_entries: int = ops.DEFAULT_MAX_DENSE_ENTRIES) -> Network:
    """Read a sequential ReLU network from ONNX and lower it to affine layers and ReLUs.

    ``source`` is a path, the serialised bytes or a ``ModelProto``. The result computes, for one
    point, what the ONNX graph computes at batch size 1 (checked against onnxruntime in the tests);
    its input is the model input flattened in C order. ``max_dense_entries`` caps the size of the
    dense matrices a Conv or broadcast MatMul becomes.

    Raises InputError for an unreadable or invalid file, several inputs or outputs, dynamic
    dimensions other than the batch dimension, non-sequential graphs; UnsupportedOperationError
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
    for node in graph.node:
        _visit(node, live, consts, layers, opsets, max_dense_entries)
    out_name = graph.output[0].name
    if out_name not in live:
        raise InputError(f"the model output {out_name!r} does not depend on the input")
    final = live[out_name]
    _require_current(final, layers, f"the output {out_name!r}")
    if not final.is_identity() or not any(isinstance(layer, Affine) for layer in layers):
        layers.append(_affine(final))
    torch_layers = tuple(layer if isinstance(layer, Relu) else Affine(
        torch.as_tensor(layer[0], dtype=dtype, device=device), torch.as_tensor(layer[1], dtype=dtype, device=device))
        for layer in layers)
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


def _visit(node: onnx.NodeProto, live: dict, consts: dict, layers: list, opsets: list, max_entries: int) -> None:
    names = list(node.input)
    unknown = [n for n in names if n and n not in live and n not in consts]
    if unknown:
        raise InputError(f"node {node.name or node.op_type} uses tensor {unknown[0]!r} that nothing produces")
    live_at = [i for i, n in enumerate(names) if n in live]
    if not live_at:
        for name, value in zip(node.output, _fold(node, consts, opsets), strict=True):
            consts[name] = value
        return
    if len(live_at) > 1:
        raise InputError(f"node {node.name or node.op_type} combines two input-dependent tensors: the graph is not "
                         f"sequential, which the verifier does not support")
    rule = ops.rule_for(node)
    pending = live[names[live_at[0]]]
    _require_current(pending, layers, f"node {node.name or node.op_type}")
    ctx = ops.Context(node, live_at[0], pending.shape, {i: consts[n] for i, n in enumerate(names) if n in consts},
                      max_entries, {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute},
                      max((o.version for o in opsets if o.domain in ("", "ai.onnx")), default=0))
    try:
        _apply_effect(rule(ctx), node, pending, live, consts, layers, max_entries, ctx)
    except InputError:
        raise
    except (ValueError, IndexError, KeyError, TypeError, RuntimeError) as exc:  # malformed node attributes/operands
        raise ctx.refuse(f"cannot lower this node: {type(exc).__name__}: {exc}") from None


def _apply_effect(effect: ops.Effect, node: onnx.NodeProto, pending: _Pending, live: dict, consts: dict,
                  layers: list, max_entries: int, ctx: ops.Context) -> None:
    if isinstance(effect, ops.Value):
        consts[node.output[0]] = effect.value
    elif isinstance(effect, ops.Restructure):
        live[node.output[0]] = _Pending(effect.shape, pending.R, pending.b, pending.segment)
    elif isinstance(effect, ops.Activation):
        if not pending.is_identity():
            layers.append(_affine(pending))
        layers.append(Relu())
        live[node.output[0]] = _Pending(effect.shape, None, np.zeros(pending.size), _segment(layers))
    else:
        live[node.output[0]] = _compose(pending, effect, layers, max_entries, ctx)


def _segment(layers: list) -> int:
    return sum(isinstance(layer, Relu) for layer in layers)


def _require_current(pending: _Pending, layers: list, what: str) -> None:
    if pending.segment != _segment(layers):
        raise InputError(f"{what} uses a tensor from before a later ReLU: the graph is not sequential "
                         f"(skip connections are not supported)")


def _affine(pending: _Pending) -> tuple[np.ndarray, np.ndarray]:
    """The (weight (n, n_seg), bias (n,)) layer of a pending map."""
    return pending.dense().T.copy(), pending.b.copy()


def _compose(pending: _Pending, step: ops.Step, layers: list, max_entries: int, ctx: ops.Context) -> _Pending:
    """``step`` after ``pending``: fold when cheap, else emit ``pending`` as a layer first."""
    bias = (step.apply(pending.b[None])[0] if step.apply is not None else
            pending.b * step.scale if step.scale is not None else pending.b @ step.matrix) + step.bias
    R = pending.R
    if step.scale is not None:
        R = step.scale.copy() if R is None else R * step.scale
    elif step.matrix is not None:
        if R is None:
            R = step.matrix
        elif R.ndim == 1:
            R = R[:, None] * step.matrix
        elif R.shape[0] * step.matrix.shape[1] <= R.size + step.matrix.size:
            R = R @ step.matrix
        else:  # the product would be larger than its factors: keep two layers
            layers.append(_affine(pending))
            return _Pending(step.shape, step.matrix, step.bias.copy(), pending.segment)
    else:
        assert step.apply is not None  # a Step carries one of scale, matrix and apply
        rows = pending.size if R is None or R.ndim == 1 else R.shape[0]
        n_out = int(np.prod(step.shape))
        if rows * n_out > max_entries:
            raise ctx.refuse(f"its dense matrix would have {rows * n_out} entries, more than the limit "
                             f"max_dense_entries={max_entries}")
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
