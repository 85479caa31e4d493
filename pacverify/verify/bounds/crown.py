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

import torch

from pacverify.verify.bounds.common import Interval, Problem, finish, intersect, output_layers, prepare, \
    rounding_margins, run_chunked
from pacverify.verify.bounds.ibp import propagate_intervals, spec_interval
from pacverify.verify.bounds.relax import ReluRelaxation, relax_relu, relu_backward_lower
from pacverify.verify.bounds.types import Bounds, PropagationResult
from pacverify.verify.network import Network, Relu
from pacverify.verify.sets import InputSet


def crown(net: Network, input_set: InputSet, C=None, *, splits=None, intermediate=None,
          max_batch: int | None = None, return_intermediate: bool = False) -> Bounds | PropagationResult:
    """CROWN bounds on ``C f(x)`` over each point's input set.

    Guarantee: for every point b and every x in ``input_set`` (point b) whose ReLU pre-activations
    satisfy ``splits``, ``lower[b] <= C[b] f(x) <= upper[b]``; each bound is at least as tight as
    :func:`~pacverify.verify.bounds.ibp.ibp`'s.

    Arguments and result as :func:`~pacverify.verify.bounds.ibp.ibp`; here an ``intermediate`` entry
    (a pair of (B, width) pre-activation bounds the caller knows to be sound for this input set and
    these splits, e.g. a parent subdomain's) is used instead of recomputing that layer's CROWN
    bounds, intersected with the IBP image of the layer before and clamped to the splits.
    """
    problem = prepare(net, input_set, C, splits, intermediate)
    result = run_chunked(net, problem, max_batch, _crown_chunk)
    return result if return_intermediate else result.bounds


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

    @property
    def pre_activation(self) -> list[Interval]:
        return [(r.lower, r.upper) for r in self.relaxations]


def relax_network(net: Network, problem: Problem) -> Relaxed:
    """CROWN pre-activation bounds of every ReLU layer (∩ IBP, widened by rounding margins, split-clamped)."""
    layers, C_left = output_layers(net, problem.C)
    margins = rounding_margins(net, problem.input_set, problem.C)
    relaxations: list[ReluRelaxation] = []

    def refine(position: int, pre_activation: list[Interval]) -> Interval:
        relaxations.extend(relax_relu(*pair) for pair in pre_activation[len(relaxations):])
        return backward_bounds(layers[:position], None, relaxations, problem.input_set)

    output, pre_activation, infeasible = propagate_intervals(layers, problem, margins.relu, refine)
    relaxations.extend(relax_relu(*pair) for pair in pre_activation[len(relaxations):])
    return Relaxed(layers, relaxations, C_left, spec_interval(C_left, output), infeasible, margins.output)


def _crown_chunk(net: Network, problem: Problem) -> PropagationResult:
    relaxed = relax_network(net, problem)
    bounds = backward_bounds(relaxed.layers, relaxed.C_left, relaxed.relaxations, problem.input_set)
    lower, upper = intersect(bounds, relaxed.ibp_output)
    return PropagationResult(finish(lower, upper, relaxed.infeasible, relaxed.output_margin), relaxed.pre_activation)


def backward_bounds(layers: list, A: torch.Tensor | None, relaxations: list[ReluRelaxation],
                    input_set: InputSet) -> Interval:
    """Lower and upper bounds (B, K) of ``A · h(x)`` over the set, h the output of ``layers``.

    ``A`` is None (the identity: bounds on h itself), (K, n) or (B, K, n). ReLU layers use
    ``relaxations`` (one per ReLU in ``layers``, in order) with CROWN's default lower slopes.
    """
    stacked, c = pull_back(layers, None if A is None else torch.cat([A, -A], dim=-2), relaxations, None)
    if stacked is None:  # no layers at all: the bounds of the input itself
        return input_set.interval()
    values = input_set.linear_min(stacked) + c
    half = values.shape[1] // 2
    return values[:, :half], -values[:, half:]


def pull_back(layers: list, A: torch.Tensor | None, relaxations: list[ReluRelaxation],
              lo_slopes: list[torch.Tensor] | None, *, both: bool = True
              ) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The linear lower bound ``A' x + c`` of ``A · h(x)``: returns (A' (B, K, n) or (K, n), c (B, K) or (K,)).

    ``A`` None stands for the identity on h's output, stacked as ``[I; −I]`` when ``both`` (lower
    and upper bounds of every entry of h). ``lo_slopes``: optional lower slopes per ReLU layer,
    (B, w) or per row (B, K, w) (α-CROWN); None takes CROWN's defaults.
    """
    sign = (1.0, -1.0) if both else (1.0,)
    c: torch.Tensor | float = 0.0
    k = len(relaxations)
    for layer in reversed(layers):
        if isinstance(layer, Relu):
            k -= 1
            if A is None:
                eye = torch.eye(relaxations[k].lower.shape[1], dtype=relaxations[k].lower.dtype,
                                device=relaxations[k].lower.device)
                A = torch.cat([eye * f for f in sign])
            slope = relaxations[k].lo_slope if lo_slopes is None else lo_slopes[k]
            A, shift = relu_backward_lower(A, slope, relaxations[k])
            c = c + shift
        elif A is None:
            A = torch.cat([layer.weight * f for f in sign], dim=-2)
            c = torch.cat([layer.bias * f for f in sign], dim=-1)
        else:
            c = c + (_matvec(A, layer.bias))
            A = A @ layer.weight if layer.weight.dim() == 2 else torch.bmm(A, layer.weight)
    if not isinstance(c, torch.Tensor) and A is not None:
        c = torch.zeros(A.shape[:-1], dtype=A.dtype, device=A.device)
    return A, c


def _matvec(A: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``A @ b`` for A (K, n) or (B, K, n) and b (n,) or (B, n)."""
    if b.dim() == 1:
        return A @ b
    return torch.einsum("...kn,bn->bk", A, b)
