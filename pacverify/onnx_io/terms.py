"""Linear maps the reader keeps as sums of smaller maps on slices of a layer's output (its native form).

A live tensor of a residual block is such a sum: ``conv2(h) + x`` reads the slice h of the layer output that
carries ``[h, x]`` through a ReLU with one convolution and the slice x with the identity. Its dense matrix would
have the product of the two widths as entries (268 million for a ResNet20 stage); as :class:`Terms` it costs
the convolution's kernel. A ``Terms`` becomes one part of a :class:`~pacverify.network.Block` layer.

A term's ``op`` is one of: ``None`` (the identity: the tensor has the slice's width), a 1-D array (an entrywise
scale), a 2-D array (a dense (width, n) matrix, rows on the slice: ``x_slice @ op``), or an
:class:`~pacverify.onnx_io.ops.ConvSpec` (a convolution without bias). The terms of one map read disjoint slices
(:func:`add` merges or refuses overlaps), which :class:`~pacverify.network.Block` requires.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from pacverify.network import Affine, Block, Conv, Scale, conv_out_shape
from pacverify.network import Term as LayerTerm
from pacverify.onnx_io import ops

Op = np.ndarray | ops.ConvSpec | None


@dataclass(frozen=True)
class Term:
    start: int
    width: int
    op: Op


@dataclass(frozen=True)
class Terms:
    """``x ↦ Σ_t op_t(x[start_t : start_t + width_t])`` on a segment input of ``width`` entries."""

    terms: tuple[Term, ...]
    width: int

    def single_conv(self) -> ops.ConvSpec | None:
        """The convolution, when the map is one convolution of the whole segment input (a :class:`Conv` layer)."""
        (term, *rest) = self.terms
        return term.op if not rest and term.start == 0 and term.width == self.width \
            and isinstance(term.op, ops.ConvSpec) else None


def conv_dense(spec: ops.ConvSpec) -> np.ndarray:
    """The (n_in, n_out) matrix of a convolution (rows on its input)."""
    return torch_op(spec, 0, torch.float64, None).dense_weight().T.numpy()


def op_dense(term: Term) -> np.ndarray:
    """A term's (width, n) matrix."""
    if term.op is None:
        return np.eye(term.width)
    if isinstance(term.op, ops.ConvSpec):
        return conv_dense(term.op)
    return np.diag(term.op) if term.op.ndim == 1 else term.op


def dense(terms: Terms, n: int) -> np.ndarray:
    """The (segment width, n) matrix of the map."""
    out = np.zeros((terms.width, n))
    for term in terms.terms:
        out[term.start:term.start + term.width] += op_dense(term)
    return out


def negated(term: Term) -> Term:
    op = term.op
    if op is None:
        return dataclasses.replace(term, op=-np.ones(term.width))
    if isinstance(op, ops.ConvSpec):
        return dataclasses.replace(term, op=dataclasses.replace(op, kernel=-op.kernel))
    return dataclasses.replace(term, op=-op)


def negated_all(terms: Terms) -> Terms:
    return Terms(tuple(negated(t) for t in terms.terms), terms.width)


def add(a: Terms, b: Terms, sign: float) -> Terms | None:
    """``a + sign·b`` (one segment input): terms on the same slice merge when neither is a convolution; None when
    two terms overlap otherwise (the caller builds the dense matrix)."""
    merged: dict[tuple[int, int], Term] = {(t.start, t.width): t for t in a.terms}
    for term in b.terms:
        term = term if sign > 0 else negated(term)
        key = (term.start, term.width)
        if key not in merged:
            merged[key] = term
            continue
        old = merged[key]
        if isinstance(old.op, ops.ConvSpec) or isinstance(term.op, ops.ConvSpec):
            return None
        vectors = [np.ones(t.width) if t.op is None else np.asarray(t.op) for t in (old, term)]
        if all(v.ndim == 1 for v in vectors):
            merged[key] = Term(term.start, term.width, vectors[0] + vectors[1])
        else:
            merged[key] = Term(term.start, term.width, op_dense(old) + op_dense(term))
    spans = sorted(merged)
    if any(s[0] + s[1] > t[0] for s, t in zip(spans, spans[1:], strict=False)):
        return None
    return Terms(tuple(merged[s] for s in spans), a.width)


def channel_values(values: np.ndarray, channels: int) -> np.ndarray | None:
    """One value per channel when ``values`` (flattened (C, ...)) is constant within every channel, else None."""
    per_channel = values.reshape(channels, -1)
    return per_channel[:, 0].copy() if (per_channel == per_channel[:, :1]).all() else None


def scaled(terms: Terms, scale: np.ndarray) -> Terms | None:
    """The map followed by the entrywise ``scale`` (n,), kept term by term; None when a convolution's output would
    need a scale that is not constant within each of its channels."""
    out = []
    for term in terms.terms:
        op = term.op
        if op is None:
            op = scale.copy()
        elif isinstance(op, ops.ConvSpec):
            per_channel = channel_values(scale, op.kernel.shape[0])
            if per_channel is None:
                return None
            op = dataclasses.replace(op, kernel=op.kernel * per_channel[:, None, None, None])
        else:
            op = op * scale
        out.append(dataclasses.replace(term, op=op))
    return Terms(tuple(out), terms.width)


def torch_op(op: Op, width: int, dtype: torch.dtype, device) -> Affine | Conv | Scale:
    """The verifier's map of a term (:class:`~pacverify.network.Term`'s ``op``)."""
    as_tensor = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype, device=device)  # noqa: E731
    if op is None:
        return Scale(torch.ones(width, dtype=dtype, device=device))
    if isinstance(op, ops.ConvSpec):
        n_out = int(np.prod(conv_out_shape(op.in_shape, op.kernel.shape, op.stride, op.pads, op.dilation)))
        return Conv(as_tensor(op.kernel), torch.zeros(n_out, dtype=dtype, device=device), op.in_shape, op.stride,
                    op.pads, op.dilation, op.groups)
    if op.ndim == 1:
        return Scale(as_tensor(op))
    return Affine(as_tensor(op.T), torch.zeros(op.shape[1], dtype=dtype, device=device))


def block(parts: list[Terms], bias: np.ndarray, dtype: torch.dtype, device) -> Block:
    """The :class:`~pacverify.network.Block` layer whose parts are these maps (each of one segment input)."""
    return Block(tuple(tuple(LayerTerm(t.start, torch_op(t.op, t.width, dtype, device)) for t in part.terms)
                       for part in parts), torch.as_tensor(bias, dtype=dtype, device=device), parts[0].width)
