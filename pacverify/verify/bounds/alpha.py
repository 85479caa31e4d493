"""α-CROWN: CROWN with optimised lower ReLU slopes (Xu et al., *Fast and Complete: Enabling Complete
Neural Network Verification with Rapid and Massively Parallel Incomplete Verifiers*, ICLR 2021, §3.1).

Every lower slope α in [0, 1] of an unstable ReLU gives a valid lower relaxation ``relu(z) >= α z``,
so every α gives a sound CROWN bound; α-CROWN maximises the bound over α by projected gradient
ascent (Adam, then clipping to [0, 1]). Slopes are free per point, per specification row and per
neuron (α has shape (B, K, width) for every ReLU layer): each row's bound is optimised on its own.
Intermediate (pre-activation) bounds are CROWN's and stay fixed. The result is the best bound seen
over all iterations, starting from CROWN's slopes, so each lower bound is at least CROWN's.
"""
from __future__ import annotations

import torch

from pacverify.errors import InputError
from pacverify.validation import check_positive
from pacverify.verify.bounds.common import Problem, finish, intersect, prepare, run_chunked
from pacverify.verify.bounds.crown import backward_bounds, relax_network
from pacverify.verify.bounds.linear import Rows, lower_values, pull_back
from pacverify.verify.bounds.types import Bounds, PropagationResult
from pacverify.verify.network import Network
from pacverify.verify.sets import InputSet


def alpha_crown(net: Network, input_set: InputSet, C=None, *, splits=None, intermediate=None, upper: bool = True,
                iterations: int = 20, lr: float = 0.25, stop_when_positive: bool = False,
                max_batch: int | None = None, return_intermediate: bool = False) -> Bounds | PropagationResult:
    """α-CROWN bounds on ``C f(x)``: lower bounds optimised over the ReLU lower slopes.

    Guarantee: for every point b and every x in ``input_set`` (point b) whose ReLU pre-activations
    satisfy ``splits``, ``lower[b] <= C[b] f(x) <= upper[b]``; ``lower`` is at least
    :func:`~pacverify.verify.bounds.crown.crown`'s lower bound (the best bound over all iterations,
    starting from CROWN's slopes); ``upper`` is CROWN's upper bound (with ``upper=False``, the
    interval image of CROWN's pre-activation bounds, as in :func:`crown`). To optimise an upper bound, pass ``-C`` and negate the lower bound.

    Args: as :func:`~pacverify.verify.bounds.crown.crown`, plus ``iterations`` (Adam steps on α, >= 0;
    0 gives CROWN), ``lr`` (the step size) and ``stop_when_positive`` (stop a chunk's optimisation
    as soon as every lower bound in it is > 0: enough to verify margins, cheaper, less tight).
    """
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise InputError(f"iterations must be an integer >= 0, got {iterations!r}")
    lr = check_positive(lr, "lr")
    problem = prepare(net, input_set, C, splits, intermediate)

    def chunk(net_: Network, part: Problem) -> PropagationResult:
        return _alpha_chunk(net_, part, iterations, lr, upper, stop_when_positive)

    result = run_chunked(net, problem, max_batch, chunk)
    return result if return_intermediate else result.bounds


def _alpha_chunk(net: Network, problem: Problem, iterations: int, lr: float, upper: bool,
                 stop_when_positive: bool) -> PropagationResult:
    relaxed = relax_network(net, problem)
    crown_lower, crown_upper = intersect(backward_bounds(
        relaxed.layers, relaxed.C_left, relaxed.relaxations, problem.input_set, upper=upper), relaxed.ibp_output)
    best = crown_lower
    unstable = [r.unstable.unsqueeze(1) for r in relaxed.relaxations]
    done = stop_when_positive and bool((best > 0).all())
    if iterations and not done and any(u.any() for u in unstable):
        best = _optimise(relaxed, problem, unstable, best, iterations, lr, stop_when_positive)
    bounds = finish(best, crown_upper, relaxed.infeasible, relaxed.output_margin)
    return PropagationResult(bounds, relaxed.pre_activation)


def _optimise(relaxed, problem: Problem, unstable: list[torch.Tensor], best: torch.Tensor, iterations: int,
              lr: float, stop_when_positive: bool) -> torch.Tensor:
    """Projected Adam ascent on per-point, per-row lower slopes α (B, K, w); returns the best lower bound."""
    rows = best.shape[1]
    alphas = [r.lo_slope.unsqueeze(1).expand(-1, rows, -1).clone().requires_grad_(True)
              for r in relaxed.relaxations]
    optimizer = torch.optim.Adam(alphas, lr=lr)
    C = relaxed.C_left
    start = None if C is None else Rows(C, torch.zeros(C.shape[:-1], dtype=C.dtype, device=C.device))
    with torch.enable_grad():
        for step in range(iterations + 1):
            slopes = [torch.where(u, a, r.lo_slope.unsqueeze(1))
                      for u, a, r in zip(unstable, alphas, relaxed.relaxations)]
            rows_ = pull_back(relaxed.layers, start, relaxed.relaxations, slopes, both=False)
            lower = torch.maximum(lower_values(rows_, problem.input_set), relaxed.ibp_output[0])
            best = torch.maximum(best, lower.detach())
            if step == iterations or (stop_when_positive and bool((best > 0).all())):
                break
            optimizer.zero_grad(set_to_none=True)
            (-lower.sum()).backward()
            optimizer.step()
            with torch.no_grad():
                for a in alphas:
                    a.clamp_(0.0, 1.0)
    return best
