"""α-CROWN: CROWN with optimised lower ReLU slopes (Xu et al., *Fast and Complete: Enabling Complete
Neural Network Verification with Rapid and Massively Parallel Incomplete Verifiers*, ICLR 2021, §3.1),
and β-CROWN's split multipliers (Wang et al., *Beta-CROWN*, NeurIPS 2021, Thm 3.1) under splits.

Every lower slope α in [0, 1] of an unstable ReLU gives a valid lower relaxation ``relu(z) >= α z``,
so every α gives a sound CROWN bound; α-CROWN maximises the bound over α by projected gradient
ascent (Adam, then clipping to [0, 1]). Slopes are free per point, per specification row and per
neuron (α has shape (B, K, width) for every ReLU layer): each row's bound is optimised on its own.
Intermediate (pre-activation) bounds are CROWN's (or the caller's) and stay fixed. The ascent follows
CROWN's own value, not its intersection with the interval bound (which has no gradient wherever the
interval bound is higher). The result is the best bound seen over all iterations, each intersected
with the interval bound, starting from CROWN's slopes (and β = 0), so each lower bound is at least
CROWN's. :func:`optimised_intermediate` optimises the intermediate bounds themselves the same way.

The ascent may run in a cheaper dtype than the bound (``ascent_dtype`` of :func:`alpha_crown_warm`, float32
for a float64 network, as branch and bound does): its steps only choose α and β, so they run on a float32
copy of the relaxed network, and the bound is then computed once, in the network's dtype with its rounding
margins, at each row's α and β of the iterate whose float32 bound was highest (and intersected with CROWN's
and the interval bound as above). Any α in [0, 1] and β >= 0 give a sound bound, so this changes how tight
the bound is, never whether it is sound.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from pacverify.errors import InputError
from pacverify.network import Network, Relu
from pacverify.validation import check_positive
from pacverify.verify.bounds.common import (
    Problem,
    finish,
    ieee_float32_products,
    intersect,
    prepare,
    run_chunked,
    spec_rows,
)
from pacverify.verify.bounds.crown import backward_bounds, crown, relax_network
from pacverify.verify.bounds.linear import Rows, lower_values, pull_back
from pacverify.verify.bounds.types import Bounds, OutputRowsAffine, PropagationResult
from pacverify.verify.sets import InputSet

ITERATIONS = 20             # α-CROWN's optimisation steps by default
# optimised_intermediate skips a layer whose α would hold more elements than this per point (rows × earlier widths)
INTERMEDIATE_ELEMENTS = 2**22


@dataclass(frozen=True)
class Multipliers:
    """α-CROWN's lower slopes and β-CROWN's split multipliers of a batch: one (B, K, n) tensor each per
    ReLU layer (points, specification rows, and the layer's neurons — all, or those chosen by
    :func:`alpha_crown_warm`'s ``neurons``). Any α in [0, 1] and any β >= 0 give sound bounds,
    so these are only a starting point: branch and bound passes a parent's to its children (β-CROWN's
    warm start, Wang et al. 2021, §3.2) and nothing about soundness depends on where they came from."""

    alphas: list[torch.Tensor]
    betas: list[torch.Tensor]

    def select(self, index: torch.Tensor) -> "Multipliers":
        return Multipliers([a[index] for a in self.alphas], [b[index] for b in self.betas])

    def to(self, dtype: torch.dtype) -> "Multipliers":
        return Multipliers([a.to(dtype) for a in self.alphas], [b.to(dtype) for b in self.betas])

    @staticmethod
    def cat(parts: list["Multipliers"]) -> "Multipliers":
        return Multipliers([torch.cat(a) for a in zip(*(p.alphas for p in parts), strict=True)],
                           [torch.cat(b) for b in zip(*(p.betas for p in parts), strict=True)])


def alpha_crown(net: Network, input_set: InputSet, C=None, *, splits=None, intermediate=None, upper: bool = True,
                iterations: int = ITERATIONS, lr: float = 0.25, lr_beta: float = 0.05,
                stop_when_positive: bool = False, max_batch: int | None = None,
                return_intermediate: bool = False) -> Bounds | PropagationResult:
    """α-CROWN bounds on ``C f(x)``: lower bounds optimised over the ReLU lower slopes.

    Guarantee: for every point b and every x in ``input_set`` (point b) whose ReLU pre-activations
    satisfy ``splits``, ``lower[b] <= C[b] f(x) <= upper[b]``; ``lower`` is at least
    :func:`~pacverify.verify.bounds.crown.crown`'s lower bound (the best bound over all iterations,
    starting from CROWN's slopes); ``upper`` is CROWN's upper bound (with ``upper=False``, the
    interval image of CROWN's pre-activation bounds, as in :func:`crown`). To optimise an upper bound, pass ``-C`` and negate the lower bound.

    With ``splits``, the split constraints also enter the bound through β-CROWN's Lagrangian terms
    (Wang et al. 2021, Thm 3.1): a multiplier β >= 0 per point, row and split neuron, optimised with
    α, which makes subdomain bounds tighter than clamping alone.

    Args: as :func:`~pacverify.verify.bounds.crown.crown`, plus ``iterations`` (Adam steps, >= 0;
    0 gives CROWN), ``lr`` and ``lr_beta`` (step sizes for α and β) and ``stop_when_positive`` (stop
    a chunk's optimisation as soon as every lower bound in it is > 0: enough to verify margins,
    cheaper, less tight).
    """
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise InputError(f"iterations must be an integer >= 0, got {iterations!r}")
    lr, lr_beta = check_positive(lr, "lr"), check_positive(lr_beta, "lr_beta")
    problem = prepare(net, input_set, C, splits, intermediate)

    def chunk(net_: Network, part: Problem) -> PropagationResult:
        return _alpha_chunk(net_, part, iterations, lr, upper, stop_when_positive, lr_beta)

    result = run_chunked(net, problem, max_batch, chunk, return_intermediate, spec_rows(net, problem))
    return result if return_intermediate else result.bounds


def alpha_crown_warm(net: Network, input_set: InputSet, C, *, splits=None, intermediate=None,
                     start: Multipliers | None = None, neurons: list[torch.Tensor] | None = None,
                     iterations: int = ITERATIONS, lr: float = 0.25, lr_beta: float = 0.05,
                     ascent_dtype: torch.dtype | None = None) -> tuple[PropagationResult, Multipliers]:
    """:func:`alpha_crown` (lower bounds only, pre-activation bounds returned) on one batch without
    chunking, starting the ascent from ``start`` (any α, β: they are clipped to [0, 1] and to >= 0)
    instead of CROWN's slopes, and returning the multipliers it ended with.

    ``neurons``: optionally, per ReLU layer, the indices of the only neurons whose α and β are free (the
    others keep CROWN's slope and β = 0); the multipliers then have ``len(neurons[k])`` columns. Branch
    and bound passes the neurons unstable at the root: with the root's pre-activation bounds kept, no
    other neuron is unstable or split in any subdomain, and the ascent's state shrinks accordingly.

    ``ascent_dtype``: the dtype of the ascent's steps (None: the network's); with a cheaper one (float32 for a
    float64 network), the bound is computed once, in the network's dtype, at the multipliers of each row's
    best iterate (module docstring); the multipliers returned are the last iterate's, as without it.

    Guarantee: as :func:`alpha_crown`'s lower bound — sound for any start, any ``neurons`` and any
    ``ascent_dtype``, and at least CROWN's (the result is the best over CROWN's bound and every iterate
    bounded in the network's dtype).
    """
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise InputError(f"iterations must be an integer >= 1, got {iterations!r}")
    problem = prepare(net, input_set, C, splits, intermediate)
    if problem.C is None:
        raise InputError("alpha_crown_warm needs the specification rows C")
    widths = net.relu_widths()
    if neurons is not None:
        if len(neurons) != len(widths) or any(
                idx.dim() != 1 or (idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= w))
                for idx, w in zip(neurons, widths, strict=False)):
            raise InputError("neurons must hold one 1-d tensor of neuron indices per ReLU layer")
        neurons = [idx.to(device=net.device, dtype=torch.long) for idx in neurons]
    if start is not None:
        rows = problem.C.shape[-2]
        shapes = [(problem.batch_size, rows, w if neurons is None else len(neurons[k])) for k, w in enumerate(widths)]
        if any(len(group) != len(widths) or any(tuple(t.shape) != shape for t, shape in zip(group, shapes, strict=True))
               for group in (start.alphas, start.betas)):
            raise InputError(f"start must hold one α and one β per ReLU layer, shaped {shapes}")
    holder: list[Multipliers] = []
    with ieee_float32_products():
        result = _alpha_chunk(net, problem, iterations, check_positive(lr, "lr"), False, False,
                              check_positive(lr_beta, "lr_beta"), start=start, keep=holder, neurons=neurons,
                              ascent_dtype=ascent_dtype)
    return result, holder[0]


def _pass_at(relaxed, problem: Problem, alphas: list[torch.Tensor], betas: list[torch.Tensor | None],
             neurons: list[torch.Tensor] | None = None) -> Rows:
    """The rows on the input of α-CROWN's pass with slopes α (where unstable) and β-CROWN's terms;
    with ``neurons``, α and β hold only those neurons' columns (the others: CROWN's slope, β = 0)."""
    C = relaxed.C_left
    spec = None if C is None else Rows(C, torch.zeros(C.shape[:-1], dtype=C.dtype, device=C.device))
    split = [None if problem.splits is None else problem.splits[k].unsqueeze(1) for k in range(len(alphas))]
    if neurons is None:
        slopes = [r.lo_slope.unsqueeze(1) + r.unstable.unsqueeze(1).to(a.dtype) * (a - r.lo_slope.unsqueeze(1))
                  for a, r in zip(alphas, relaxed.relaxations, strict=True)]
        terms = [None if b is None or s is None else -b * s for b, s in zip(betas, split, strict=True)]
    else:
        slopes, terms = [], []
        for a, b, s, r, idx in zip(alphas, betas, split, relaxed.relaxations, neurons, strict=True):
            base = r.lo_slope.unsqueeze(1).expand(-1, a.shape[1], -1)
            low = base[..., idx]
            slopes.append(base.index_copy(2, idx, low + r.unstable[:, idx].unsqueeze(1).to(a.dtype) * (a - low)))
            terms.append(None if b is None or s is None else
                         torch.zeros_like(base).index_copy(2, idx, -b * s[..., idx]))
    rows = pull_back(relaxed.layers, spec, relaxed.relaxations, slopes, both=False, lagrangian=terms)
    assert rows is not None  # there are layers: alpha runs only with unstable or split ReLUs
    return rows


def _alpha_chunk(net: Network, problem: Problem, iterations: int, lr: float, upper: bool,
                 stop_when_positive: bool, lr_beta: float, start: Multipliers | None = None,
                 keep: list | None = None, neurons: list[torch.Tensor] | None = None,
                 ascent_dtype: torch.dtype | None = None) -> PropagationResult:
    relaxed = relax_network(net, problem)
    crown_lower, crown_upper = intersect(backward_bounds(
        relaxed.layers, relaxed.C_left, relaxed.relaxations, problem.input_set, upper=upper), relaxed.ibp_output)
    best = crown_lower
    unstable = [r.unstable.unsqueeze(1).to(best.dtype) for r in relaxed.relaxations]
    split = [None if problem.splits is None else problem.splits[k].unsqueeze(1) for k in range(len(unstable))]
    free = any(u.any() for u in unstable) or any(s is not None and bool((s != 0).any()) for s in split)
    done = stop_when_positive and bool((best > 0).all())
    if keep is not None or (iterations and free and not done):
        best = _optimise(relaxed, problem, split, best, iterations if free and not done else 0, lr,
                         lr_beta, stop_when_positive, start, keep, neurons, ascent_dtype)
    bounds = finish(best, crown_upper, relaxed.infeasible, relaxed.output_margin)
    return PropagationResult(bounds, relaxed.pre_activation)


def _optimise(relaxed, problem: Problem, split: list[torch.Tensor | None],
              best: torch.Tensor, iterations: int, lr: float, lr_beta: float, stop_when_positive: bool,
              start: Multipliers | None = None, keep: list | None = None,
              neurons: list[torch.Tensor] | None = None, ascent_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Projected Adam ascent on α (B, K, w) in [0, 1] and, where splits fix neurons, β (B, K, w) >= 0.

    β-CROWN's Lagrangian (Wang et al. 2021, Thm 3.1): a split constraint ``g(z) <= 0`` (g = −z for
    a neuron forced active, z for one forced inactive) holds on the subdomain, so adding ``β·g(z)``
    with β >= 0 to the bounded function only lowers it there; the rows stay lower bounds.
    Starts from ``start`` (clipped into the feasible set) or CROWN's slopes and β = 0; with ``keep``,
    appends the final multipliers (β for every layer) to it. Returns the best lower bound seen; with a cheaper
    ``ascent_dtype`` the steps run on :func:`_shadow`'s copy and the bound seen is the one computed in the
    network's dtype at each row's best iterate (module docstring).
    """
    batch, rows = best.shape
    columns: list = [slice(None)] * len(relaxed.relaxations) if neurons is None else neurons
    if start is None:
        alphas = [r.lo_slope[:, cols].unsqueeze(1).expand(-1, rows, -1).clone()
                  for r, cols in zip(relaxed.relaxations, columns, strict=True)]
    else:
        alphas = [a.to(best.dtype).clamp(0.0, 1.0) for a in start.alphas]
    if keep is not None:
        betas: list[torch.Tensor | None] = (
            [torch.zeros_like(a) for a in alphas] if start is None
            else [b.to(best.dtype).clamp_min(0.0) for b in start.betas])
    else:
        betas = [None if s is None or not bool((s != 0).any()) else
                 torch.zeros(batch, rows, s.shape[-1], dtype=best.dtype, device=best.device) for s in split]
    step_relaxed, step_problem = ((relaxed, problem) if ascent_dtype in (None, best.dtype)
                                  else _shadow(relaxed, problem, ascent_dtype))
    cheaper = step_relaxed is not relaxed      # steps in a cheaper dtype: they choose multipliers, never a bound
    if cheaper:
        alphas = [a.detach().to(ascent_dtype) for a in alphas]
        betas = [None if b is None else b.detach().to(ascent_dtype) for b in betas]
    for t in alphas + betas:
        if t is not None:
            t.requires_grad_(True)
    groups = [{"params": alphas, "lr": lr}] + ([{"params": [b for b in betas if b is not None], "lr": lr_beta}]
                                               if any(b is not None for b in betas) else [])
    optimizer = torch.optim.Adam(groups)
    chosen = None       # with cheaper steps: per row, the value and multipliers of the best iterate so far
    with torch.enable_grad():
        for step in range(iterations + 1):
            lower = lower_values(_pass_at(step_relaxed, step_problem, alphas, betas, neurons), step_problem.input_set)
            if cheaper:
                chosen = _best_iterate(chosen, lower.detach(), alphas, betas)
            else:
                best = torch.maximum(best, torch.maximum(lower.detach(), relaxed.ibp_output[0]))
            if step == iterations or (stop_when_positive and not cheaper and bool((best > 0).all())):
                break
            optimizer.zero_grad(set_to_none=True)
            (-lower.sum()).backward()       # CROWN's own value: where the interval bound is higher it has no gradient
            optimizer.step()
            with torch.no_grad():           # projection; an entry a step overflowed restarts at 0
                for a in alphas:
                    a.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0).clamp_(0.0, 1.0)
                for b in betas:
                    if b is not None:
                        b.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0).clamp_(min=0.0)
    if chosen is not None:               # the bound itself: once, in the network's dtype, at the chosen multipliers
        _, best_a, best_b = chosen
        with torch.no_grad():
            lower = lower_values(_pass_at(relaxed, problem, [a.to(best.dtype) for a in best_a],
                                          [None if b is None else b.to(best.dtype) for b in best_b], neurons),
                                 problem.input_set)
        best = torch.maximum(best, torch.maximum(lower, relaxed.ibp_output[0]))
    if keep is not None:
        keep.append(Multipliers([a.detach() for a in alphas],
                                [torch.zeros_like(a) if b is None else b.detach() for a, b in zip(alphas, betas, strict=True)]))
    return best


def _best_iterate(chosen, value: torch.Tensor, alphas: list[torch.Tensor], betas: list[torch.Tensor | None]):
    """Per row, (value, α, β) of the better of ``chosen`` (None: none yet) and the current iterate."""
    if chosen is None:
        return value, [a.detach().clone() for a in alphas], [None if b is None else b.detach().clone() for b in betas]
    better = value > chosen[0]
    pick = better[..., None]
    return (torch.where(better, value, chosen[0]),
            [torch.where(pick, a.detach(), kept) for a, kept in zip(alphas, chosen[1], strict=True)],
            [None if kept is None or b is None else torch.where(pick, b.detach(), kept)
             for b, kept in zip(betas, chosen[2], strict=True)])


def _shadow(relaxed, problem: Problem, dtype: torch.dtype):
    """The relaxed network and problem in ``dtype``, for the ascent's steps only (never for a bound)."""
    layers = [OutputRowsAffine(layer.weight.to(dtype), layer.bias.to(dtype)) if isinstance(layer, OutputRowsAffine)
              else layer.to(dtype=dtype) for layer in relaxed.layers]
    relaxations = [replace(r, **{f: getattr(r, f).to(dtype) for f in ("lower", "upper", "up_slope", "up_intercept",
                                                                       "lo_slope", "unstable_lower")})
                   for r in relaxed.relaxations]
    shadow = replace(relaxed, layers=layers, relaxations=relaxations,
                     C_left=None if relaxed.C_left is None else relaxed.C_left.to(dtype))
    return shadow, replace(problem, input_set=problem.input_set.to(dtype=dtype))


def optimised_intermediate(net: Network, input_set: InputSet, *, iterations: int = ITERATIONS
                           ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pre-activation bounds of every ReLU layer, tightened by optimising them with α-CROWN (Xu et al.
    2021, §3.1: the intermediate bounds are optimised like the output's, each with its own slopes).

    Guarantee: for every point b, every x in ``input_set`` (point b) and every ReLU layer k,
    ``lower[k][b] <= z_k(x) <= upper[k][b]``, z_k the layer's pre-activation; each bound is at least
    as tight as CROWN's (:func:`~pacverify.verify.bounds.crown.crown` with ``return_intermediate``).
    Layer by layer, the neurons CROWN leaves unstable (at some point of the batch) get a lower and
    an upper row on the network cut before that ReLU, bounded by :func:`alpha_crown` with the
    layers before it at their optimised bounds. A layer whose slopes would exceed
    :data:`INTERMEDIATE_ELEMENTS` per point keeps CROWN's bounds. Returns one (B, width) pair per
    ReLU layer, in the order of :meth:`Network.relu_widths`.
    """
    result = crown(net, input_set, upper=False, return_intermediate=True)
    assert isinstance(result, PropagationResult)
    bounds = list(result.pre_activation)
    layers = list(net.layers)
    cuts = [i for i, layer in enumerate(layers) if isinstance(layer, Relu)]
    widths = net.relu_widths()
    for k in range(1, len(cuts)):
        lower, upper = bounds[k]
        neurons = torch.nonzero(((lower < 0) & (upper > 0)).any(0)).reshape(-1)
        if neurons.numel() == 0 or 2 * neurons.numel() * sum(widths[:k]) > INTERMEDIATE_ELEMENTS:
            continue
        eye = torch.eye(widths[k], dtype=lower.dtype, device=lower.device)[neurons]
        C = torch.cat([eye, -eye]).expand(lower.shape[0], -1, -1)
        cut = Network(tuple(layers[:cuts[k]]), net.input_shape)
        found = alpha_crown(cut, input_set, C, intermediate=bounds[:k], upper=False, iterations=iterations)
        assert isinstance(found, Bounds)
        count = neurons.numel()
        lower, upper = lower.clone(), upper.clone()
        lower[:, neurons] = torch.maximum(lower[:, neurons], found.lower[:, :count])
        upper[:, neurons] = torch.minimum(upper[:, neurons], -found.lower[:, count:])
        bounds[k] = (lower, upper)
    return bounds
