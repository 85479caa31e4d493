"""The backward pass of CROWN on batches of linear functions (Zhang et al. 2018, Thm 3.2).

A :class:`Rows` holds linear functions ``A h + c`` of some layer's output h, in one of three
layouts, so that every product is one plain matrix multiplication:

* shared — ``A`` (K, n), ``c`` (K,): the same K rows for every point (a specification before the
  first ReLU is met);
* dense — ``A`` (B, K, n), ``c`` (B, K): K rows per point (specification rows after a ReLU);
* sparse — ``A`` (T, n), ``c`` (T,), ``owner`` (T,): row t belongs to point ``owner[t]`` (the
  pre-activation bounds of only those neurons whose bounds can matter).

:func:`pull_back` maps rows on a layer's output to rows on its input — affine: ``A W`` and
``c + A b``; ReLU: the relaxation lines of :mod:`.relax` — until they are rows on the network
input, and :func:`lower_values` minimises them over the input set.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pacverify.network import NATIVE, Block, Relu
from pacverify.verify.bounds import conv32
from pacverify.verify.bounds.common import pull_rows
from pacverify.verify.bounds.relax import ReluRelaxation, relu_backward_lower
from pacverify.verify.sets import InputSet


@dataclass(frozen=True)
class Rows:
    """Linear functions ``A h + c`` (layouts in the module docstring)."""

    A: torch.Tensor
    c: torch.Tensor
    owner: torch.Tensor | None = None


@dataclass(frozen=True)
class Select:
    """The rows ``sign[t] · h[owner[t], neuron[t]]``: chosen entries of a layer's output, with a sign."""

    neuron: torch.Tensor
    owner: torch.Tensor
    sign: torch.Tensor


def pull_back(layers: list, start: Rows | Select | None, relaxations: list[ReluRelaxation],
              lo_slopes: list[torch.Tensor] | None = None, *, both: bool = True,
              lagrangian: list[torch.Tensor | None] | None = None,
              record: list[torch.Tensor] | None = None, charges: list[torch.Tensor] | None = None) -> Rows | None:
    """Rows on the output of ``layers`` → rows on their input that lower-bound them (for inputs in the set).

    ``start``: the rows to bound; None means every output entry (the identity), stacked as
    ``[I; −I]`` when ``both`` so that the rows ``K..2K`` give upper bounds by negation.
    ``relaxations``: one per ReLU in ``layers``; ``lo_slopes``: optional lower slopes per ReLU,
    (B, w) or per row (B, K, w) for dense rows (α-CROWN). ``lagrangian``: optional coefficients
    (B, K, w) per ReLU added to the rows on that ReLU's input after relaxing it — β-CROWN's terms
    ``β·g(z)`` for split constraints ``g(z) <= 0``, which keep the rows lower bounds on the subdomain.
    ``record``: if a list, receives the rows' coefficients on every ReLU's output (``A`` before that ReLU
    is relaxed), first ReLU first. ``charges``: if a list, receives the rounding charge each float32 pull through a
    convolution took from the rows' constants (:mod:`.conv32`; one tensor of the constants' shape per pull).
    Returns None if there is nothing to pull back through (``layers`` empty: the caller bounds the
    input directly).
    """
    rows = start
    k = len(relaxations)
    for position in range(len(layers) - 1, -1, -1):
        layer = layers[position]
        if isinstance(layer, Relu):
            k -= 1
            relax = relaxations[k]
            rows = _materialise(rows, relax.lower.shape[1], both, relax.lower)
            if record is not None:
                record.insert(0, rows.A)
            slope = relax.lo_slope if lo_slopes is None else lo_slopes[k]
            rows = _relu(rows, slope, relax)
            term = None if lagrangian is None else lagrangian[k]
            if term is not None:
                rows = Rows(rows.A + term, rows.c, rows.owner)
        else:
            rows = _affine(rows, layer, both, conv32.input_bound(layers, position, relaxations, k), charges)
    return rows if isinstance(rows, Rows) else None


def lower_values(rows: Rows, input_set: InputSet) -> torch.Tensor:
    """``min_{x in set} A x + c`` for every row: (B, K) for shared or dense rows, (T,) for sparse ones."""
    if rows.owner is not None:
        return input_set.linear_min_rows(rows.A, rows.owner) + rows.c
    return input_set.linear_min(rows.A) + rows.c


def _affine(rows, layer, both: bool, H: torch.Tensor | None = None, charges: list[torch.Tensor] | None = None
            ) -> Rows:
    """Rows on a linear layer's output → rows on its input; ``H`` (B, in_features): bounds of ``|input|`` for a
    convolution marked for float32 pulls (:mod:`.conv32`), None otherwise; ``charges`` as for :func:`pull_back`."""
    bias = layer.bias
    if rows is None:  # the identity on this layer's output: the layer's own rows
        sign = (1.0, -1.0) if both else (1.0,)
        weight = layer.dense_weight() if isinstance(layer, NATIVE) else layer.weight
        return Rows(torch.cat([weight * f for f in sign], dim=-2), torch.cat([bias * f for f in sign], dim=-1))
    if isinstance(rows, Select):
        if isinstance(layer, NATIVE):
            one_hot = torch.nn.functional.one_hot(rows.neuron, layer.out_features).to(bias.dtype)
            return Rows(layer.pull(one_hot * rows.sign[:, None]), bias[rows.neuron] * rows.sign, rows.owner)
        return Rows(layer.weight[rows.neuron] * rows.sign[:, None], bias[rows.neuron] * rows.sign, rows.owner)
    A = rows.A
    c = rows.c + (A @ bias if bias.dim() == 1 else torch.einsum("bkn,bn->bk", A, bias))
    charged = None if H is None else (conv32.pull_block(layer, A, H, rows.owner) if isinstance(layer, Block)
                                      else conv32.pull_rows(layer, A, H, rows.owner))
    if charged is not None:
        pulled, q = charged
        if q is not None:
            c = c - q
            if charges is not None:
                charges.append(q)
        return Rows(pulled, c, rows.owner)
    return Rows(pull_rows(layer, A), c, rows.owner)


def _relu(rows: Rows, slope: torch.Tensor, relax: ReluRelaxation) -> Rows:
    """Rows on a ReLU's output → rows on its input; ``slope`` (B, w) or per row (B, K, w)."""
    if rows.owner is not None:
        owner = rows.owner
        diff = (slope - relax.up_slope if slope.dim() == 2 else
                (slope - relax.up_slope.unsqueeze(1)).reshape(-1, slope.shape[-1]))
        A, shift = relu_backward_lower(rows.A, relax.up_slope.index_select(0, owner), diff.index_select(0, owner),
                                       relax.up_intercept.index_select(0, owner))
        return Rows(A, rows.c + shift, owner)
    up = relax.up_slope.unsqueeze(1)
    diff = (slope.unsqueeze(1) if slope.dim() == 2 else slope) - up
    A, shift = relu_backward_lower(rows.A, up, diff, relax.up_intercept.unsqueeze(1))
    return Rows(A, rows.c + shift)


def _materialise(rows, width: int, both: bool, like: torch.Tensor) -> Rows:
    """Explicit rows for a start given implicitly (None: identity; Select: one-hot rows)."""
    if isinstance(rows, Rows):
        return rows
    if rows is None:
        eye = torch.eye(width, dtype=like.dtype, device=like.device)
        A = torch.cat([eye, -eye]) if both else eye
        return Rows(A, torch.zeros(A.shape[0], dtype=like.dtype, device=like.device))
    A = torch.nn.functional.one_hot(rows.neuron, width).to(like.dtype) * rows.sign[:, None]
    return Rows(A, torch.zeros(A.shape[0], dtype=like.dtype, device=like.device), rows.owner)
