"""Interval bound propagation (IBP): bounds by interval arithmetic, layer by layer.

Gowal et al., *On the Effectiveness of Interval Bound Propagation for Training Verifiably Robust
Models* (2018), Eq. 6: an affine layer maps the box (centre μ, radius ρ) to (W μ + b, |W| ρ); a ReLU
maps [l, u] to [relu(l), relu(u)]. Two refinements keep it tight and cheap: the first affine layer
is bounded over the input set itself (exact for boxes and L2 balls, see :mod:`pacverify.verify.sets`),
and the specification C is folded into the last affine layer (C W is bounded as one matrix).
"""
from __future__ import annotations

from typing import Callable

import torch

from pacverify.network import Network, Relu
from pacverify.verify.bounds.common import (
    Interval,
    Problem,
    affine_interval,
    apply_split,
    finish,
    first_interval,
    intersect,
    layer_interval,
    output_layers,
    prepare,
    rounding_margins,
    run_chunked,
    widen,
)
from pacverify.verify.bounds.types import Bounds, PropagationResult
from pacverify.verify.sets import InputSet


def ibp(net: Network, input_set: InputSet, C=None, *, splits=None, intermediate=None,
        max_batch: int | None = None, return_intermediate: bool = False) -> Bounds | PropagationResult:
    """Interval bounds on ``C f(x)`` over each point's input set.

    Guarantee: for every point b and every x in ``input_set`` (point b) whose ReLU pre-activations
    satisfy ``splits`` (see :mod:`pacverify.verify.bounds.common`), ``lower[b] <= C[b] f(x) <= upper[b]``.

    Args:
        net: the network (its dtype and device are used throughout).
        input_set: a :class:`Box` or :class:`L2Ball` of B points in R^n, n = ``net.in_features``.
        C: None (bounds on the logits, K = n_out), a (K, n_out) matrix for every point, or (B, K, n_out).
        splits: None or one (B, width) tensor of −1/0/+1 per ReLU layer.
        intermediate: None or one entry per ReLU layer: None or a pair (lower, upper) of (B, width)
            pre-activation bounds known to be sound; they are intersected with IBP's.
        max_batch: points per chunk (default: :func:`~pacverify.verify.bounds.common.default_max_batch`);
            memory is flat in B.
        return_intermediate: also return the pre-activation bounds of every ReLU layer.

    Returns:
        :class:`Bounds` (lower, upper (B, K); infeasible (B,)), or a :class:`PropagationResult`.
    """
    problem = prepare(net, input_set, C, splits, intermediate)
    result = run_chunked(net, problem, max_batch, _ibp_chunk, return_intermediate, rows_per_point=1)
    return result if return_intermediate else result.bounds


def _ibp_chunk(net: Network, problem: Problem) -> PropagationResult:
    layers, C_left = output_layers(net, problem.C)
    margins = rounding_margins(net, problem.input_set, problem.C)
    interval, pre_activation, infeasible = propagate_intervals(layers, problem, margins.relu)
    interval = spec_interval(C_left, interval)
    return PropagationResult(finish(*interval, infeasible, margins.output), pre_activation)


def spec_interval(C: torch.Tensor | None, interval: Interval) -> Interval:
    """The interval of ``C y`` for y in ``interval`` (B, n); C None leaves it unchanged."""
    if C is None:
        return interval
    return affine_interval(C, torch.zeros(C.shape[-2], dtype=C.dtype, device=C.device), *interval)


def propagate_intervals(layers: list, problem: Problem, relu_margins: list[torch.Tensor],
                        refine: Callable[[int, list[Interval], Interval], Interval | None] | None = None
                        ) -> tuple[Interval, list[Interval], torch.Tensor]:
    """Interval arithmetic through ``layers``: (output interval, pre-activation interval per ReLU, infeasible (B,)).

    Each pre-activation interval is first intersected with the problem's ``prior`` bounds if any (bounds
    known to hold on the set, e.g. a parent box's on a sub-box: a neuron they show stable then gets no CROWN
    row from ``refine``), then with the caller's intermediate bounds if given,
    else with ``refine(position, pre_activation_so_far, interval)`` if given (CROWN's bound of the
    input of ``layers[position]``), then widened by its rounding margin and clamped to its split.
    """
    interval: Interval | None = None
    pre_activation: list[Interval] = []
    infeasible = torch.zeros(problem.batch_size, dtype=torch.bool, device=problem.input_set.device)
    start = 0
    for position, layer in enumerate(layers):
        if not isinstance(layer, Relu):
            continue
        k = len(pre_activation)
        interval = forward_interval(layers[start:position], problem.input_set, interval)
        if problem.prior is not None:
            interval = intersect(interval, problem.prior[k])
        given = None if problem.intermediate is None else problem.intermediate[k]
        if given is None and refine is not None:
            given = refine(position, pre_activation, interval)
        split = None if problem.splits is None else problem.splits[k]
        lower, upper, empty = apply_split(*widen(intersect(interval, given), relu_margins[k]), split)
        infeasible |= empty
        pre_activation.append((lower, upper))
        interval, start = (lower.clamp(min=0), upper.clamp(min=0)), position + 1
    return forward_interval(layers[start:], problem.input_set, interval), pre_activation, infeasible


def forward_interval(layers: list, input_set: InputSet, interval: Interval | None) -> Interval:
    """Interval image of ``interval`` (or of the input set when None) under a run of affine layers.

    The first affine layer applied to the input set itself is bounded over the set (exact for
    boxes and L2 balls), not over its bounding box.
    """
    for layer in layers:
        interval = first_interval(layer, input_set) if interval is None else layer_interval(layer, *interval)
    return interval if interval is not None else input_set.interval()
