"""CROWN: backward linear bound propagation (Zhang et al., *Efficient Neural Network Robustness
Certification with General Activation Functions*, NeurIPS 2018, Thm 3.2 and Cor 3.3).

To bound ``A · h`` where h is the output of the first p layers, the coefficient matrix A is pulled
back layer by layer to the input: an affine layer maps ``A`` to ``A W`` and adds ``A b`` to the
constant; a ReLU layer replaces each coefficient by its product with the lower or upper relaxation
line (:mod:`.relax`). The result ``A' x + c`` is a lower bound of ``A · h`` for every x in the set,
and is minimised over the set in closed form (:meth:`Box.linear_min`: ``A'·mid − |A'|·rad``;
:meth:`L2Ball.linear_min`: ``A'·x0 − r‖A'‖₂``, the dual norm). Upper bounds are lower bounds of
``−A · h``; both are computed in one pass by stacking ``[A; −A]``.

Pre-activation bounds of every ReLU layer are computed the same way (CROWN intermediate bounds),
each intersected with the interval (IBP) image of the previous layer's bounds, so that every
CROWN bound is at least as tight as IBP's (interval arithmetic is inclusion-monotone).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, overload

import torch

from pacverify.network import NATIVE, Network, Relu
from pacverify.verify.bounds import patches
from pacverify.verify.bounds.common import (
    Interval,
    PartialInterval,
    Problem,
    chunks_side_by_side,
    default_max_batch,
    finish,
    ieee_float32_products,
    intersect,
    output_layers,
    prepare,
    rounding_margins,
    run_chunked,
    spec_rows,
)
from pacverify.verify.bounds.ibp import propagate_intervals, spec_interval
from pacverify.verify.bounds.linear import Rows, Select, lower_values, pull_back
from pacverify.verify.bounds.relax import ReluRelaxation, relax_relu
from pacverify.verify.bounds.types import Bounds, PropagationResult
from pacverify.verify.sets import InputSet, L2Ball, batched_matvec

# Above this fraction of unstable neurons, intermediate bounds use dense rows (all neurons) instead of
# gathered sparse rows (unstable neurons only), if the dense rows fit in ROW_BYTES.
DENSE_FRACTION = 0.5
# The most bytes of rows an intermediate-bound pass holds at once: sparse rows are pulled back in blocks of this
# size, so that memory stays flat however many neurons a layer has (convolutional layers: tens of thousands).
ROW_BYTES = 256 * 2**20


def crown(net: Network, input_set: InputSet, C=None, *, splits=None, intermediate=None, upper: bool = True,
          max_batch: int | None = None, return_intermediate: bool = False) -> Bounds | PropagationResult:
    """CROWN bounds on ``C f(x)`` over each point's input set.

    Guarantee: for every point b and every x in ``input_set`` (point b) whose ReLU pre-activations
    satisfy ``splits``, ``lower[b] <= C[b] f(x) <= upper[b]``; each bound is at least as tight as
    :func:`~pacverify.verify.bounds.ibp.ibp`'s.

    Arguments and result as :func:`~pacverify.verify.bounds.ibp.ibp`; here an ``intermediate`` entry
    (a pair of (B, width) pre-activation bounds the caller knows to be sound for this input set and
    these splits, e.g. a parent subdomain's) is used instead of recomputing that layer's CROWN
    bounds, intersected with the IBP image of the layer before and clamped to the splits.
    ``upper=False`` skips CROWN's upper bounds (about a third of the work when only lower bounds
    decide, as for margins); ``upper`` is then the interval image of the CROWN pre-activation bounds
    of the last ReLU layer — sound, between CROWN's and IBP's upper bounds.
    """
    problem = prepare(net, input_set, C, splits, intermediate)
    rows = 2 * max(net.relu_widths() + [spec_rows(net, problem)])  # both bounds of a layer's neurons
    result = run_chunked(net, problem, max_batch, lambda net_, part: _crown_chunk(net_, part, upper),
                         return_intermediate, rows)
    return result if return_intermediate else result.bounds


def crown_ibp(net: Network, input_set: InputSet, C=None, *, splits=None, intermediate=None, upper: bool = True,
              max_batch: int | None = None, return_intermediate: bool = False) -> Bounds | PropagationResult:
    """CROWN-IBP bounds on ``C f(x)`` (Zhang et al., ICLR 2020, §3): CROWN's backward pass for the rows of C
    alone, over the interval (IBP) pre-activation bounds of every ReLU layer (∩ ``intermediate``), where
    :func:`crown` first tightens each layer's bounds with CROWN rows of its own.

    Guarantee: as :func:`crown`'s — the relaxation is sound for any sound pre-activation bounds — and within
    :func:`~pacverify.verify.bounds.ibp.ibp`'s (the output is intersected with the interval image). It pulls
    back only C's rows, so its cost is about one backward pass whatever the number of unstable neurons, where
    CROWN pulls back a row per unstable neuron of every layer: on a ResNet20 with random weights, whose neurons
    are all unstable, a fraction of a second per point against more than 53 minutes (benchmarks/results/
    real_teachers.md). Its bounds are usually looser than CROWN's. Arguments and result as :func:`crown`'s.
    """
    problem = prepare(net, input_set, C, splits, intermediate)
    rows = (2 if upper else 1) * spec_rows(net, problem)
    result = run_chunked(net, problem, max_batch, lambda net_, part: _crown_chunk(net_, part, upper, refine=False),
                         return_intermediate, rows)
    return result if return_intermediate else result.bounds


def crown_with_coefficients(net: Network, input_set: InputSet, C=None, *, splits=None, intermediate=None,
                            prior=None, max_batch: int | None = None
                            ) -> tuple[PropagationResult, torch.Tensor, torch.Tensor]:
    """CROWN's lower bounds on ``C f(x)``, the pre-activation bounds they used, and the linear functions
    ``A·x + c`` they minimise: ``A`` (B, K, m), ``c`` (B, K).

    Guarantee: with ``prior`` None the bounds are those of ``crown(..., upper=False, return_intermediate=True)``
    (the same pass, :func:`_crown_lower_rows`: the same numbers), so ``lower[b] <= C[b] f(x) <= upper[b]`` for every x of set b
    that satisfies ``splits``; and ``C[b]_k f(x) >= A[b]_k·x + c[b, k]`` on that set up to floating-point
    rounding (``lower`` is its minimum over the set, less the rounding margin, and intersected with IBP's
    bound). One backward pass serves both the proof and the search heuristics that need ``A`` (branching
    scores, the bound's minimisers as counterexample candidates), which would otherwise cost a second pass.

    ``prior``: one entry per ReLU layer, None or a pair (B, width) of pre-activation bounds the caller knows
    to hold on the set (e.g. the bounds this function returned for a box that contains it): intersected with
    the interval pass, so that a neuron they show stable costs no CROWN row and every pre-activation bound is
    within the prior's, up to its rounding margin (the final bounds need not be tighter than without a prior:
    CROWN's adaptive lower slopes may change).
    Unsound priors give unsound bounds: only pass bounds proved on a superset of the set.
    """
    problem = prepare(net, input_set, C, splits, intermediate, prior)
    if max_batch is None:
        max_batch = default_max_batch(net, 2 * max(net.relu_widths() + [spec_rows(net, problem)]))
    with ieee_float32_products():
        parts = [_crown_lower_rows(net, problem.select(slice(start, start + max_batch)))
                 for start in range(0, problem.batch_size, max_batch)]
    bounds = Bounds(*(torch.cat([getattr(p.bounds, name) for p, _, _ in parts])
                      for name in ("lower", "upper", "infeasible")))
    pre_activation = [(torch.cat([p.pre_activation[k][0] for p, _, _ in parts]),
                       torch.cat([p.pre_activation[k][1] for p, _, _ in parts]))
                      for k in range(len(net.relu_widths()))]
    return (PropagationResult(bounds, pre_activation, sum(p.row_maps or 0 for p, _, _ in parts)),
            torch.cat([A for _, A, _ in parts]), torch.cat([c for _, _, c in parts]))


def _crown_lower_rows(net: Network, problem: Problem, refine: bool = True, charges: list[torch.Tensor] | None = None
                      ) -> tuple[PropagationResult, torch.Tensor, torch.Tensor]:
    relaxed = relax_network(net, problem, refine)
    start = None if relaxed.C_left is None else Rows(relaxed.C_left, torch.zeros(
        relaxed.C_left.shape[:-1], dtype=net.dtype, device=net.device))
    rows = pull_back(relaxed.layers, start, relaxed.relaxations, both=False, charges=charges)
    assert rows is not None  # a network has at least one layer
    low, high = intersect((lower_values(rows, problem.input_set), None), relaxed.ibp_output)
    bounds = finish(low, high, relaxed.infeasible, relaxed.output_margin)
    A, c = rows.A.detach(), rows.c.detach()
    batch = problem.batch_size
    row_maps = relaxed.row_maps + batch * A.shape[-2] * _maps(relaxed.layers)
    return (PropagationResult(bounds, relaxed.pre_activation, row_maps),
            A.expand(batch, *A.shape[-2:]) if A.dim() == 2 else A, c.expand(batch, c.shape[-1]) if c.dim() == 1 else c)


@dataclass(frozen=True)
class Relaxed:
    """A network prepared for the final backward pass: ``layers`` (C folded in), relaxations per ReLU
    layer, the C left to apply (network ending in a ReLU), the final IBP interval, the infeasible
    mask (B,) and the output rounding margin."""

    layers: list
    relaxations: list[ReluRelaxation]
    C_left: torch.Tensor | None
    ibp_output: Interval
    infeasible: torch.Tensor
    output_margin: torch.Tensor
    row_maps: int = 0          # intermediate rows pulled back × the linear maps each crossed (a model of the work)

    @property
    def pre_activation(self) -> list[Interval]:
        return [(r.lower, r.upper) for r in self.relaxations]


def relax_network(net: Network, problem: Problem, refine_rows: bool = True) -> Relaxed:
    """CROWN pre-activation bounds of every ReLU layer (∩ IBP, widened by rounding margins, split-clamped).

    CROWN rows are computed only for the neurons the interval image leaves unstable (l < 0 < u);
    for the others the relaxation is exact whatever the bounds, and the interval bounds are kept.
    ``refine_rows`` False: no CROWN rows at all, the interval bounds (∩ the problem's own) for every layer
    (CROWN-IBP, :func:`crown_ibp`).
    """
    layers, C_left = output_layers(net, problem.C)
    margins = rounding_margins(net, problem.input_set, problem.C)
    relaxations: list[ReluRelaxation] = []
    row_maps = 0

    def refine(position: int, pre_activation: list[Interval], interval: Interval) -> Interval | None:
        nonlocal row_maps
        relaxations.extend(relax_relu(*pair) for pair in pre_activation[len(relaxations):])
        bounds, rows = unstable_bounds(layers[:position], relaxations, problem.input_set, interval)
        row_maps += rows * _maps(layers[:position])
        return bounds

    output, pre_activation, infeasible = propagate_intervals(layers, problem, margins.relu,
                                                             refine if refine_rows else None)
    relaxations.extend(relax_relu(*pair) for pair in pre_activation[len(relaxations):])
    return Relaxed(layers, relaxations, C_left, spec_interval(C_left, output), infeasible, margins.output, row_maps)


def _maps(layers: list) -> int:
    return sum(not isinstance(layer, Relu) for layer in layers)


def _crown_chunk(net: Network, problem: Problem, upper: bool, refine: bool = True) -> PropagationResult:
    if not upper:   # the lower bounds alone: the pass of crown_with_coefficients, so both give the same numbers
        return _crown_lower_rows(net, problem, refine)[0]
    relaxed = relax_network(net, problem, refine)
    bounds = backward_bounds(relaxed.layers, relaxed.C_left, relaxed.relaxations, problem.input_set, upper=upper)
    low, high = intersect(bounds, relaxed.ibp_output)
    return PropagationResult(finish(low, high, relaxed.infeasible, relaxed.output_margin), relaxed.pre_activation)


def unstable_bounds(layers: list, relaxations: list[ReluRelaxation], input_set: InputSet,
                    interval: Interval) -> tuple[Interval | None, int]:
    """CROWN bounds (B, w) of the output of ``layers`` for the entries ``interval`` leaves unstable, and the
    number of rows pulled back for them.

    Other entries get (−inf, +inf), i.e. no information beyond the interval. None (and 0 rows) when nothing is
    unstable or there are no layers (the interval is then the input's own bounds). When most
    entries are unstable, all rows are computed densely (cheaper than gathering per-row slopes)
    and the stable ones discarded, so the result does not depend on the layout; when those dense
    rows would not fit in :data:`ROW_BYTES`, the unstable entries' rows are pulled back in blocks.
    """
    lower, upper = interval
    unstable = (lower < 0) & (upper > 0)
    count = int(unstable.sum())
    if count == 0 or not layers:
        return None, 0
    row_bytes = max(layer.in_features for layer in layers if not isinstance(layer, Relu)) * lower.element_size()
    if count > DENSE_FRACTION * unstable.numel() and 2 * unstable.numel() * row_bytes <= ROW_BYTES \
            and not isinstance(layers[-1], NATIVE):
        bounds = backward_bounds(layers, None, relaxations, input_set)
        return (torch.where(unstable, bounds[0], torch.full_like(lower, -torch.inf)),
                torch.where(unstable, bounds[1], torch.full_like(upper, torch.inf))), 2 * unstable.numel()
    owner, neuron = torch.nonzero(unstable, as_tuple=True)
    out_lower = torch.full_like(lower, -torch.inf)
    out_upper = torch.full_like(upper, torch.inf)
    block = max(1, ROW_BYTES // (2 * row_bytes))
    for first in range(0, count, block):
        o, n = owner[first:first + block], neuron[first:first + block]
        ones = torch.ones(o.shape[0], dtype=lower.dtype, device=lower.device)
        select = Select(torch.cat([n, n]), torch.cat([o, o]), torch.cat([ones, -ones]))
        if isinstance(layers[-1], NATIVE):   # rows of a convolution's or a Block's neurons: patches
            values = patches.lower_values_from(layers, select, relaxations, input_set)
        else:
            rows = pull_back(layers, select, relaxations)
            assert rows is not None  # layers is not empty
            values = lower_values(rows, input_set)
        out_lower.index_put_((o, n), values[:o.shape[0]])
        out_upper.index_put_((o, n), -values[o.shape[0]:])
    return (out_lower, out_upper), 2 * count


@overload
def backward_bounds(layers: list, A: torch.Tensor | None, relaxations: list[ReluRelaxation],
                    input_set: InputSet, *, upper: Literal[True] = ...) -> Interval: ...


@overload
def backward_bounds(layers: list, A: torch.Tensor | None, relaxations: list[ReluRelaxation],
                    input_set: InputSet, *, upper: bool) -> PartialInterval: ...


def backward_bounds(layers: list, A: torch.Tensor | None, relaxations: list[ReluRelaxation],
                    input_set: InputSet, *, upper: bool = True) -> PartialInterval:
    """Lower and upper bounds (B, K) of ``A · h(x)`` over the set, h the output of ``layers``.

    ``A`` is None (the identity: bounds on h itself), (K, n) or (B, K, n). ReLU layers use
    ``relaxations`` (one per ReLU in ``layers``, in order) with CROWN's default lower slopes.
    With ``upper=False`` only the lower bounds are computed (half the work); the upper is None.
    """
    start = None if A is None else Rows(torch.cat([A, -A], dim=-2) if upper else A, torch.zeros(
        A.shape[:-2] + ((2 if upper else 1) * A.shape[-2],), dtype=A.dtype, device=A.device))
    rows = pull_back(layers, start, relaxations, both=upper)
    if rows is None:  # no layers at all: the bounds of the input itself
        return input_set.interval()
    values = lower_values(rows, input_set)
    if not upper:
        return values, None
    half = values.shape[1] // 2
    return values[:, :half], -values[:, half:]


@dataclass(frozen=True)
class RadiusBounds:
    """What one CROWN pass at radius R says about smaller radii (:func:`crown_radius`), each (B,) unless said.

    ``lower`` (B, K): CROWN's lower bounds of the rows over the R-sets (as ``crown(..., upper=False).lower``);
    ``proven``: a radius in [0, R] at which every row was proved > 0 (0: none); ``estimate``: where the linear
    bounds of the R pass reach 0 (unclamped, may exceed R; without the interval bounds; a guess for a search,
    no guarantee).
    """

    lower: torch.Tensor
    proven: torch.Tensor
    estimate: torch.Tensor


def crown_radius(net: Network, center: torch.Tensor, radius: torch.Tensor, norm: str, C, *, domain=None,
                 intermediate=None, max_batch: int | None = None) -> RadiusBounds:
    """One CROWN pass over the ``norm``-balls of radius R = ``radius`` (∩ ``domain``), read at every radius r ≤ R.

    Guarantee: for each point b and every x with ``‖x − center[b]‖ ≤ proven[b]`` (inside the domain box when one
    is given), every row of ``C[b] f(x)`` is > 0; ``proven[b] = R_b`` exactly when CROWN's bounds at R prove it.

    Why one pass suffices: pre-activation bounds computed over the R-set are sound over every subset of it, so the
    final backward pass gives rows ``A x + c`` that lower-bound ``C f(x)`` on every r-ball with r ≤ R; over the
    ball without the domain their minimum is ``A·x0 + c − r·‖A‖_*`` (‖·‖_* the dual norm: ℓ2 for L2, ℓ1 for L∞),
    linear in r, so the largest r with every row positive has a closed form. That r (shrunk by 1e-6 relative) is
    then checked by evaluating the same rows over the actual r-set (∩ domain: a subset of the ball, so at least as
    tight), intersected with the R-set's interval bounds and widened by the R-set's rounding margin (which covers
    every subset: its magnitudes are no larger): a proof by the same rules as :func:`crown` with coarser
    intermediate bounds. Where that check fails, ``proven`` is 0. Used by the certified-radius search
    (:mod:`pacverify.verify.radius`) so that a pass that fails at R still proves a radius.
    """
    from pacverify.verify.sets import perturbation_set

    # sets are built in float64 and rounded outward to the network's dtype by the engine (Box.to, L2Ball.to)
    center = torch.as_tensor(center).to(torch.float64)
    radius = torch.as_tensor(radius).to(device=center.device, dtype=torch.float64)
    batch = center.shape[0]
    input_set = perturbation_set(center, radius, norm, domain, dtype=torch.float64)
    problem = prepare(net, input_set, C, None, intermediate)
    rows = 2 * max(net.relu_widths() + [spec_rows(net, problem)])
    step = default_max_batch(net, rows) if max_batch is None else max_batch

    def one(start: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        part = slice(start, start + step)
        dom = None if domain is None else _domain_part(domain, part, batch)
        return _radius_chunk(net, problem.select(part), center[part], radius[part], norm, dom)

    with ieee_float32_products():
        outs = list(zip(*chunks_side_by_side(net, range(0, batch, step), one), strict=True))
    lower, proven, estimate = (torch.cat(o) for o in outs)
    return RadiusBounds(lower, proven, estimate)


def _domain_part(domain, part: slice, batch: int):
    """The domain rows of one chunk: a (lo, hi) pair of numbers, (n,) rows or (B, n) rows."""
    lo, hi = domain
    lo_t, hi_t = torch.as_tensor(lo), torch.as_tensor(hi)
    if lo_t.dim() == 2 and lo_t.shape[0] == batch:
        return lo_t[part], hi_t[part]
    return lo, hi


def _radius_chunk(net: Network, problem: Problem, center: torch.Tensor, radius: torch.Tensor, norm: str,
                  domain) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from pacverify.verify.sets import perturbation_set

    relaxed = relax_network(net, problem)
    A = relaxed.C_left
    start = None if A is None else Rows(A, torch.zeros(A.shape[:-1], dtype=A.dtype, device=A.device))
    rows = pull_back(relaxed.layers, start, relaxed.relaxations, both=False)
    floor = relaxed.ibp_output[0] - relaxed.output_margin        # sound at every r ≤ R
    x0 = problem.input_set.center if isinstance(problem.input_set, L2Ball) else center.to(floor)
    if rows is None:   # no layers: the interval of the input is all there is
        proved = (floor > 0).all(dim=1)
        R = radius.to(device=floor.device, dtype=torch.float64)
        return floor, torch.where(proved, R, torch.zeros_like(R)), torch.where(proved, torch.inf, 0.0).to(R)
    lower = torch.maximum(lower_values(rows, problem.input_set), relaxed.ibp_output[0]) - relaxed.output_margin
    R = radius.to(device=lower.device, dtype=torch.float64)   # radii stay float64: the sets round outward
    proved = (lower > 0).all(dim=1)
    value = batched_matvec(rows.A, x0.to(lower)) + rows.c - relaxed.output_margin
    dual = rows.A.abs().sum(dim=-1) if norm == "inf" else torch.linalg.vector_norm(rows.A, dim=-1)
    dual = dual if dual.dim() == 2 else dual.unsqueeze(0).expand_as(value)
    solved = torch.where(dual > 0, value / torch.where(dual > 0, dual, 1.0),
                         torch.where(value > 0, torch.inf, 0.0))
    solved = solved.clamp(min=0)
    estimate = solved.amin(dim=1).to(torch.float64)
    solved = torch.where(floor > 0, torch.full_like(solved, torch.inf), solved)   # rows the interval bound proves
    r = torch.minimum(solved.amin(dim=1).to(torch.float64) * (1 - 1e-6), R)
    small = perturbation_set(center, r.to(center.device), norm, domain, dtype=torch.float64).to(
        device=net.device, dtype=net.dtype)
    at_r = torch.maximum(lower_values(rows, small), relaxed.ibp_output[0]) - relaxed.output_margin
    ok = (at_r > 0).all(dim=1) & (r > 0)
    proven = torch.where(proved, R, torch.where(ok, r, torch.zeros_like(r)))
    return lower, proven, estimate
