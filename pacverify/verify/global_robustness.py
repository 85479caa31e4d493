"""Global robustness of a network over a whole input region (issue 14; Def 3.3 of 004).

**The property.** A network f, a domain box X = [lo, hi] ⊂ R^m, a radius δ, a norm (L2 or L∞) and a confidence
threshold κ ∈ [0.5, 1). f is *globally δ-robust on X at confidence κ* when for every x ∈ X at which f is κ-confident
(max softmax f(x) ≥ κ) and every x′ with ‖x′ − x‖ ≤ δ — and x′ ∈ X, unless ``inside_domain=False`` — the class
does not change: argmax f(x′) = argmax f(x).

**The search** (:func:`verify_global`) is branch and bound over the domain. A work item is an x-box B ⊂ X with a
box P for x′ (at first every point within δ of B, ∩ X when x′ must stay inside); many items are bounded per pass
of a bound routine of :mod:`pacverify.verify.bounds`. For each item and class c:

* *c needs nothing in B* when sound upper bounds u_j ≥ z_c − z_j over B give ``Σ_{j≠c} exp(−u_j) > (1 − κ)/κ``:
  then softmax_c = 1/(1 + Σ_j exp(z_j − z_c)) < κ everywhere in B. (This contains the rule
  "u_j < ln(κ/(1 − κ)) for some j": softmax_c ≥ κ implies z_c − z_j ≥ t := ln(κ/(1 − κ)) for every j.)
* *c is safe* when sound lower bounds of every margin z_c − z_k (k ≠ c) are > 0 over the reach set
  ``T_c(B) ∩ P`` (:class:`ReachSet`), ``T_c(B) = {x + d : x ∈ B, g·x + h ≥ t, ‖d‖ ≤ δ}`` with ``g·x + h`` CROWN's
  linear upper bound of z_c − z_j on B (j the most restrictive runner-up). A κ-confident x ∈ B of class c has
  z_c − z_j ≥ t, so every x′ within δ of it lies in T_c(B): safety over T_c(B) ∩ P means every such x′ in P has
  class c. Without the constraint T_c(B) is the Minkowski sum B ⊕ ball(δ) — for L∞ the box B widened by δ — whose
  linear minimum ``min_B a·x − δ‖a‖_*`` is exact; the constraint is handled by weak duality
  (:func:`coupled_lower_bound`), which couples the confidence of x with the perturbation (no need to split B down
  to the width of the slack between the confidence level set and δ). Every pre-activation bound of the relaxation
  is computed over the same set, so the final linear bound is valid wherever it is minimised.
* An item is *done* when every class needs nothing or is safe. An open item is split: B along its widest side
  (relative to X's width) while B's widest side is at least half P's, else P along its widest side (the δ-ball
  around a small B is where the relaxation is loose: splitting B further cannot shrink it). A class settled for an
  item stays settled for its pieces (subsets of B and of P). The items that come from splitting an x-box's P form
  a group; the x-box is done when all of them are. The search stops at the item budget, the time budget, or
  boxes below ``min_width``.

**Why VERIFIED is sound.** The done x-boxes cover X (closed boxes; a split shares its midpoint face). Take any
κ-confident x ∈ X of class c = argmax f(x) and any admissible x′. x lies in a done x-box B; c does not "need
nothing" in B (x is a κ-confident point of class c in it); x′ lies in T_c(B) and in the P of one of B's items —
the P's of an x-box's items cover everything within δ of it — where c is safe: argmax f(x′) = c. VERIFIED is
returned only when the work list is empty and every item was done by sound bounds; a spent budget leaves UNKNOWN,
never VERIFIED. (A piece of B split off inside a group keeps its P ∩ its own reach box, which still holds every
x′ within δ of the piece.)

**Falsification** runs beside the search on the open boxes: a joint projected-gradient search
(:func:`pacverify.attacks.pgd_search`, the one PGD core) over pairs (x ∈ B, x′ = x + d with ‖d‖ ≤ δ, clamped into X)
that drives down ``relu(ln κ − log softmax_c f(x)) + relu(z′_c − z′_j)``, plus uniform random pairs. A pair is
reported (FALSIFIED) only after a float64 forward pass shows softmax_c f(x) ≥ κ with c the strict argmax at x, a
class j with z′_j > z′_c at x′, ‖x′ − x‖ ≤ δ and x, x′ in the domain (checked in float64).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from pacverify.errors import InputError
from pacverify.network import Affine, Network, Relu
from pacverify.norms import vector_norm
from pacverify.validation import check_kappa, check_norm, check_positive, check_positive_int, check_radius, check_seed
from pacverify.verify.bounds import BOUND_METHODS, check_bound_method
from pacverify.verify.output_rows import margin_rows
from pacverify.verify.sets import Box, InputSet, L2Ball, round_outward

VERDICTS = ("verified", "falsified", "unknown")
DEFAULT_MAX_BOXES = 200_000
DEFAULT_TIMEOUT = 60.0
DEFAULT_BATCH = 1024          # boxes bounded per pass of the bound routine
MIN_WIDTH_FRACTION = 1e-6     # default min_width: this fraction of the domain's widest side
LARGEST_OPEN = 10             # open boxes listed in the result
_ATTACK_PROBLEMS = 32         # (box, class) problems per falsification round
_ATTACK_RESTARTS = 8
_ATTACK_STEPS = 40
_RANDOM_PAIRS = 512           # random pairs per problem
_MIN_CHUNK = 128              # boxes per chunk of a bound pass at least (fewer, larger operations: faster here)
_MARGIN = 1e-7                # the objective asks for this much beyond the thresholds, so the float64 check passes


# ------------------------------------------------------------------------------------------------ the sets
@dataclass(frozen=True)
class ReachSet(L2Ball):
    """The batch of sets ``T = {x + d : x ∈ [box_lower, box_upper], g·x + h >= threshold, ‖d‖ <= radius}`` (∩ the
    domain box when given), ``‖·‖`` the ``norm`` ("2" or "inf"); without ``g`` the constraint is absent and T is the
    Minkowski sum ``B ⊕ ball(radius)`` (∩ domain).

    The points within δ of the κ-confident points of class c in a box B lie in T when ``g·x + h`` is a linear upper
    bound, valid on B, of a logit difference ``z_c − z_j`` and ``threshold = ln(κ/(1 − κ))``. What bounding needs
    from a set is a sound lower bound of ``min_{x′ ∈ T} a·x′`` (:meth:`linear_min`): without the constraint
    ``Box(B).linear_min(a) − radius·‖a‖_*`` (exact: the Minkowski sum); with it, :func:`coupled_lower_bound` (weak
    duality); with a domain, the larger of that and the minimum over the bounding box
    ``[B − radius, B + radius] ∩ domain`` (rounded outward), which also holds T. Every bound the engine computes over
    the set — pre-activation bounds of every layer and the final linear bound — is then valid on all of T.

    An :class:`~pacverify.verify.sets.L2Ball` so that the bound routines take it (its ``center`` is the box
    midpoint and its ``radius`` the perturbation radius, which enters only the engine's L2 rounding term); ``g``
    (B, m), ``h`` (B,) stay float64 (:meth:`to` in another dtype drops the constraint: a larger, still sound set).
    """

    box_lower: torch.Tensor | None = None
    box_upper: torch.Tensor | None = None
    g: torch.Tensor | None = None
    h: torch.Tensor | None = None
    threshold: float = 0.0
    norm: str = "2"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.box_lower is None or self.box_upper is None:
            raise InputError("ReachSet needs box_lower and box_upper")
        Box(self.box_lower, self.box_upper)
        if self.box_lower.shape != self.center.shape:
            raise InputError("ReachSet: the box must have the centre's shape")
        if (self.g is None) != (self.h is None):
            raise InputError("ReachSet: give both g and h or neither")
        if self.norm not in ("2", "inf"):
            raise InputError(f"ReachSet: norm must be 2 or inf, got {self.norm!r}")

    @property
    def _box(self) -> Box:
        assert self.box_lower is not None and self.box_upper is not None
        return Box(self.box_lower, self.box_upper)

    def bounding_box(self) -> Box:
        r = self.radius[:, None]
        box = self._box
        lower = torch.nextafter(box.lower - r, torch.full_like(box.lower, -torch.inf))
        upper = torch.nextafter(box.upper + r, torch.full_like(box.upper, torch.inf))
        if self.domain_lower is not None and self.domain_upper is not None:
            lower, upper = torch.maximum(lower, self.domain_lower), torch.minimum(upper, self.domain_upper)
        return Box(lower, upper)

    def _min(self, A: torch.Tensor, owner: torch.Tensor | None) -> torch.Tensor:
        """Lower bound of ``min a·x′`` over T for rows A (B, K, m) [owner None] or (T, m) owned by points ``owner``."""
        assert self.box_lower is not None and self.box_upper is not None
        rows = A if owner is None else A.unsqueeze(1)                       # (P, K, m)
        pick = (lambda t: t) if owner is None else (lambda t: t.index_select(0, owner))
        lo, hi, radius = pick(self.box_lower), pick(self.box_upper), pick(self.radius)
        if self.g is None or self.h is None:
            dual = vector_norm(rows, "1" if self.norm == "inf" else "2", axis=-1)
            out = Box(lo, hi).linear_min(rows) - radius[:, None] * dual
        else:
            g, h = pick(self.g).unsqueeze(1), pick(self.h).unsqueeze(1)
            out = coupled_lower_bound(rows.double(), None, g, h, lo.double(), hi.double(), radius.double(),
                                      self.norm, self.threshold).to(A.dtype)
        return out if owner is None else out.squeeze(1)

    def linear_min(self, A: torch.Tensor) -> torch.Tensor:
        rows = A if A.dim() == 3 else A.unsqueeze(0).expand(self.batch_size, *A.shape)
        out = self._min(rows, None)
        if self.has_domain:
            out = torch.maximum(out, self.bounding_box().linear_min(A))
        return out

    def linear_max(self, A: torch.Tensor) -> torch.Tensor:
        return -self.linear_min(-A)

    def linear_min_rows(self, A: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        out = self._min(A, owner)
        if self.has_domain:
            out = torch.maximum(out, self.bounding_box().linear_min_rows(A, owner))
        return out

    def select(self, index) -> "ReachSet":
        assert self.box_lower is not None and self.box_upper is not None
        dom = (None, None) if self.domain_lower is None or self.domain_upper is None else (
            self.domain_lower[index], self.domain_upper[index])
        return ReachSet(self.center[index], self.radius[index], dom[0], dom[1], self.box_lower[index],
                        self.box_upper[index], None if self.g is None else self.g[index],
                        None if self.h is None else self.h[index], self.threshold, self.norm)

    def to(self, device=None, dtype=None) -> "ReachSet":
        """On ``device`` in ``dtype``; in another precision than float64 the box and domain are rounded outward, the
        radius up, and the constraint is dropped, so the converted set contains the original."""
        assert self.box_lower is not None and self.box_upper is not None
        lower = round_outward(self.box_lower, dtype, -1).to(device)
        upper = round_outward(self.box_upper, dtype, +1).to(device)
        radius = round_outward(self.radius, dtype, +1).to(device)
        dom_lo = None if self.domain_lower is None else round_outward(self.domain_lower, dtype, -1).to(device)
        dom_hi = None if self.domain_upper is None else round_outward(self.domain_upper, dtype, +1).to(device)
        center = torch.minimum(torch.maximum((lower + upper) / 2, lower), upper)
        if dom_lo is not None and dom_hi is not None:
            center = torch.minimum(torch.maximum(center, dom_lo), dom_hi)
        keep = (dtype is None or dtype == torch.float64) and self.g is not None and self.h is not None
        return ReachSet(center, radius, dom_lo, dom_hi, lower, upper, self.g.to(device) if keep and self.g is not None
                        else None, self.h.to(device) if keep and self.h is not None else None, self.threshold,
                        self.norm)


def reach_set(lower: torch.Tensor, upper: torch.Tensor, radius: float, norm: str,
              domain: tuple[torch.Tensor, torch.Tensor] | None, g: torch.Tensor | None = None,
              h: torch.Tensor | None = None, threshold: float = 0.0) -> ReachSet:
    """:class:`ReachSet` for the boxes ``[lower, upper]`` (N, m), with the optional constraint ``g·x + h >= threshold``
    (g (N, m), h (N,)) and the domain (lo, hi), each (m,), or None."""
    r = torch.full((lower.shape[0],), float(radius), dtype=lower.dtype, device=lower.device)
    dom = (None, None) if domain is None else (domain[0].expand_as(lower).clone(), domain[1].expand_as(upper).clone())
    return ReachSet((lower + upper) / 2, r, dom[0], dom[1], lower, upper, g, h, float(threshold), norm)


def chunk_size(net: Network, rows_per_point: int) -> int:
    """Boxes per chunk of a bound pass: the engine's default, but at least :data:`_MIN_CHUNK`."""
    from pacverify.verify.bounds.common import default_max_batch

    return max(default_max_batch(net, rows_per_point), _MIN_CHUNK)


def linear_lower_bounds(net: Network, input_set: InputSet, C: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CROWN's bounds of the rows ``C f(x)`` (K, n_out) over each set, with the linear functions behind them.

    Returns ``lower`` (N, K) — CROWN's lower bound ∩ the interval bound, less the rounding margin, as
    :func:`~pacverify.verify.bounds.crown` computes it — and ``A`` (N, K, m), ``c`` (N, K) with
    ``C_k f(x) >= A_k·x + c_k`` for every x in the set (c already lowered by the rounding margin). The
    coefficients come from the engine's backward pass (``bounds.crown.relax_network``, ``bounds.linear.pull_back``,
    as :mod:`pacverify.verify.bounds.coefficients` reads them); chunked like the bound routines.
    """
    from pacverify.verify.bounds.common import prepare
    from pacverify.verify.bounds.crown import relax_network
    from pacverify.verify.bounds.linear import Rows, lower_values, pull_back

    problem = prepare(net, input_set, C, None, None)
    total, K, m = problem.batch_size, C.shape[-2], net.in_features
    chunk = chunk_size(net, 2 * max(net.relu_widths() + [K]))
    lower = torch.empty(total, K, dtype=torch.float64, device=net.device)
    A = torch.empty(total, K, m, dtype=torch.float64, device=net.device)
    c = torch.empty(total, K, dtype=torch.float64, device=net.device)
    for begin in range(0, total, chunk):
        part = problem.select(slice(begin, begin + chunk))
        size = part.batch_size
        relaxed = relax_network(net, part)
        start = None if relaxed.C_left is None else Rows(relaxed.C_left, torch.zeros(
            relaxed.C_left.shape[:-1], dtype=net.dtype, device=net.device))
        rows = pull_back(relaxed.layers, start, relaxed.relaxations, both=False)
        assert rows is not None      # the layers hold at least the output affine layer
        values = torch.maximum(lower_values(rows, part.input_set), relaxed.ibp_output[0])
        margin = relaxed.output_margin
        lower[begin:begin + size] = (values - margin).double()
        A[begin:begin + size] = rows.A.double().expand(size, K, m) if rows.A.dim() == 2 else rows.A.double()
        c[begin:begin + size] = (rows.c.double().expand(size, K) - margin.double())
    return lower, A, c


def coupled_lower_bound(a: torch.Tensor, c: torch.Tensor | None, g: torch.Tensor, h: torch.Tensor, lo: torch.Tensor,
                        hi: torch.Tensor, radius: float | torch.Tensor, norm: str, threshold: float) -> torch.Tensor:
    """A lower bound of ``min { a·(x + d) + c : x ∈ [lo, hi], g·x + h >= threshold, ‖d‖ <= radius }``, (N, P).

    Shapes: a (N, P, m); c (N, P) or None (0); g (N, P or 1, m); h (N, P or 1); lo, hi (N, m); radius a number or
    (N,). With ``a·x′ + c`` a lower bound of a margin valid where x′ can be and ``g·x + h`` an upper bound of
    z_c − z_j valid on the box, a κ-confident x of class c has ``g·x + h >= z_c − z_j >= threshold``: the minimum
    couples the confidence of x with the perturbation (the separate tests take the worst x of the box).

    Weak duality: every λ >= 0 gives ``φ(λ) = min_{x∈box} (a − λg)·x + λ(threshold − h)`` (the added term is <= 0 on
    the feasible set), to which ``c − radius·‖a‖_*`` is added (‖·‖_* the dual norm). φ is concave and piecewise
    linear; its slope drops by ``|g_i|·(hi_i − lo_i)`` at each breakpoint ``λ_i = a_i/g_i > 0``, so sorting the
    breakpoints finds the maximising λ (the LP optimum, one constraint) in O(m log m). The result is max(φ(0),
    φ(λ*)) lowered by a relative 1e-10 of the sum of its terms' magnitudes for rounding; an empty feasible set only
    raises the true minimum, so it stays sound. Non-finite results become −inf.
    """
    dual = vector_norm(a, "1" if norm == "inf" else "2", axis=-1)             # (N, P)
    g = g.expand_as(a)
    h = h.expand(a.shape[:-1])
    r = torch.as_tensor(radius, dtype=a.dtype, device=a.device)
    r = r[:, None] if r.dim() == 1 else r
    lo3, hi3 = lo.unsqueeze(1), hi.unsqueeze(1)
    gap = threshold - h
    # slope of φ just right of 0: gap − Σ g_i x_i*, x_i* = lo where a_i − λg_i > 0 for small λ > 0, else hi
    positive = (a > 0) | ((a == 0) & (g < 0))
    slope0 = gap - (g * torch.where(positive, lo3, hi3)).sum(-1)
    ratio = a / torch.where(g == 0, torch.ones_like(g), g)
    valid = (g != 0) & (ratio > 0) & torch.isfinite(ratio)
    breaks = torch.where(valid, ratio, torch.full_like(ratio, torch.inf))
    order = torch.sort(breaks, dim=-1)
    drop = torch.where(valid, g.abs() * (hi3 - lo3), torch.zeros_like(g)).gather(-1, order.indices).cumsum(-1)
    # the first breakpoint at which the slope becomes <= 0 (the last finite one if it never does)
    reached = (slope0.unsqueeze(-1) - drop <= 0) & torch.isfinite(order.values)
    first = torch.where(reached.any(-1), reached.to(torch.int8).argmax(-1),
                        (torch.isfinite(order.values).sum(-1) - 1).clamp(min=0))
    lam = order.values.gather(-1, first.unsqueeze(-1)).squeeze(-1)
    lam = torch.where(torch.isfinite(lam) & (slope0 > 0), lam, torch.zeros_like(lam))
    const = torch.zeros_like(dual) if c is None else c
    best = None
    for lam_k in (torch.zeros_like(lam), lam):
        coef = a - lam_k.unsqueeze(-1) * g
        mid, rad = (lo3 + hi3) / 2, (hi3 - lo3) / 2
        centre, spread = (coef * mid).sum(-1), (coef.abs() * rad).sum(-1)
        size = (coef * mid).abs().sum(-1) + spread + (lam_k * gap).abs() + const.abs() + r * dual
        value = centre - spread + lam_k * gap - 1e-10 * size
        best = value if best is None else torch.maximum(best, value)
    assert best is not None
    best = best + const - r * dual
    return torch.where(torch.isfinite(best), best, torch.full_like(best, -torch.inf))


# ------------------------------------------------------------------------------------------------ the result
@dataclass(frozen=True)
class CounterexamplePair:
    """A checked violation: f is κ-confident at ``x`` with class ``class_x`` (``confidence`` = its softmax there),
    ``x_prime`` lies within ``distance`` ≤ δ of x (and in the domain when required) and has ``class_x_prime`` ≠
    ``class_x`` (a strictly larger logit)."""

    x: np.ndarray
    x_prime: np.ndarray
    class_x: int
    class_x_prime: int
    confidence: float
    distance: float

    def to_json(self) -> dict:
        return {"x": self.x.tolist(), "x_prime": self.x_prime.tolist(), "class_x": self.class_x,
                "class_x_prime": self.class_x_prime, "confidence": self.confidence, "distance": self.distance}


@dataclass(frozen=True)
class GlobalResult:
    """The answer of :func:`verify_global`.

    ``verdict``: "verified" (every box of the domain done by sound bounds: the property holds), "falsified" (``pair``
    is a checked violation) or "unknown". ``proven_fraction``: the fraction of the domain's volume covered by done
    x-boxes (on those the property holds for every κ-confident x, whatever the verdict; volume over the domain's
    sides of positive width). ``boxes_done`` / ``boxes_open``: x-boxes (boxes of the domain) closed by the bounds /
    left open (not finished, or below ``min_width``). ``largest_open``: up to 10 open boxes (lower, upper), largest first. ``stats``:
    counters and timings; ``settings``: the question asked. ``done_boxes``: (lower, upper) arrays of the done boxes
    when asked for (``keep_done_boxes=True``), else None.
    """

    verdict: str
    proven_fraction: float
    boxes_done: int
    boxes_open: int
    largest_open: list[tuple[np.ndarray, np.ndarray]]
    pair: CounterexamplePair | None
    time_s: float
    stats: dict
    settings: dict = field(default_factory=dict)
    done_boxes: tuple[np.ndarray, np.ndarray] | None = None

    def to_json(self) -> dict:
        """The result as JSON-ready data (the done boxes are not included)."""
        return {"verdict": self.verdict, "proven_fraction": self.proven_fraction, "boxes_done": self.boxes_done,
                "boxes_open": self.boxes_open,
                "largest_open": [{"lower": lo.tolist(), "upper": hi.tolist()} for lo, hi in self.largest_open],
                "pair": None if self.pair is None else self.pair.to_json(), "time_s": self.time_s,
                "stats": self.stats, "settings": self.settings}


# ------------------------------------------------------------------------------------------------ inputs
def _network(net_or_path: Any, device: str) -> Network:
    """A Network from a Network, an ONNX path, or a torch ``nn.Sequential`` of Flatten / Linear / ReLU layers."""
    if isinstance(net_or_path, torch.nn.Module):
        layers: list = []
        for module in net_or_path.modules() if not isinstance(net_or_path, torch.nn.Sequential) else net_or_path:
            if isinstance(module, torch.nn.Linear):
                w = module.weight.detach().to(torch.float64)
                b = module.bias.detach().to(torch.float64) if module.bias is not None else torch.zeros(w.shape[0],
                                                                                                       dtype=w.dtype)
                layers.append(Affine(w.cpu(), b.cpu()))
            elif isinstance(module, torch.nn.ReLU):
                layers.append(Relu())
            elif not isinstance(module, (torch.nn.Flatten, torch.nn.Identity, torch.nn.Sequential)):
                raise InputError(f"verify_global takes torch modules made of Linear and ReLU layers only, found "
                                 f"{type(module).__name__}; export the model to ONNX instead")
        if not layers or not isinstance(layers[0], Affine):
            raise InputError("verify_global: the torch module must start with a Linear layer")
        return Network(tuple(layers), (layers[0].in_features,)).to(device=device)
    from pacverify.verify.api import load

    if isinstance(net_or_path, (str, os.PathLike)) and not os.path.isfile(net_or_path):
        raise InputError(f"model file {str(net_or_path)!r} does not exist")
    return load(net_or_path, device=device)


def check_global_domain(domain: Any, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The domain as (lo, hi), each (m,) float64: from a (2, m) array or a pair (lo, hi) of numbers or (m,) arrays.

    InputError (one sentence) for a wrong shape, non-finite values or lo > hi at some coordinate.
    """
    try:
        if isinstance(domain, (tuple, list)) and len(domain) == 2:
            lo, hi = (np.asarray(part, dtype=np.float64) for part in domain)
        else:
            array = np.asarray(domain, dtype=np.float64)
            if array.ndim != 2 or array.shape[0] != 2:
                raise InputError(f"the domain must be a (2, {m}) array of lower and upper bounds or a pair (lo, hi); "
                                 f"got shape {array.shape}")
            lo, hi = array[0], array[1]
    except (TypeError, ValueError):
        raise InputError(f"the domain must be numbers: a (2, {m}) array or a pair (lo, hi)") from None
    if lo.ndim == 0:
        lo = np.full(m, float(lo))
    if hi.ndim == 0:
        hi = np.full(m, float(hi))
    if lo.shape != (m,) or hi.shape != (m,):
        raise InputError(f"the domain bounds must be numbers or have one value per input ({m},); got shapes "
                         f"{lo.shape} and {hi.shape}")
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise InputError("the domain bounds must be finite numbers (no NaN or ±inf)")
    bad = np.flatnonzero(lo > hi)
    if bad.size:
        raise InputError(f"the domain's lower bound exceeds its upper bound at coordinate {int(bad[0])} "
                         f"({lo[bad[0]]:g} > {hi[bad[0]]:g})")
    return lo, hi


def _pair_rows(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows e_c − e_j for every ordered pair c ≠ j: C (n(n−1), n), and the index tensors c, j of each row."""
    pairs = [(c, j) for c in range(n) for j in range(n) if j != c]
    C = torch.zeros(len(pairs), n, dtype=torch.float64)
    for r, (c, j) in enumerate(pairs):
        C[r, c], C[r, j] = 1.0, -1.0
    cs, js = (torch.tensor([p[k] for p in pairs]) for k in (0, 1))
    return C, cs, js


# ------------------------------------------------------------------------------------------------ the search
def verify_global(net_or_path: Any, domain: Any, radius: float, kappa: float, *, norm: str = "inf",
                  method: str = "crown", inside_domain: bool = True, max_boxes: int = DEFAULT_MAX_BOXES,
                  timeout: float | None = DEFAULT_TIMEOUT, min_width: float | None = None, seed: int = 0,
                  progress: Callable[[dict], None] | None = None, batch: int = DEFAULT_BATCH, attack: bool = True,
                  stop_at_counterexample: bool = True, keep_done_boxes: bool = False,
                  device: str = "cpu") -> GlobalResult:
    """Decide global δ-robustness of a network on a domain box at confidence κ (module docstring; Def 3.3 of 004).

    The property: for every x in the domain at which the network is κ-confident (max softmax ≥ κ) and every x′ with
    ``‖x′ − x‖ ≤ radius`` in ``norm`` (and x′ in the domain when ``inside_domain``), argmax f(x′) = argmax f(x).

    **Guarantee.** "verified" only when branch and bound over the domain closed every sub-box with sound bounds (so
    the property holds for every point of the domain, not for a sample); "falsified" only with a pair (x, x′) that a
    float64 forward pass confirms (``result.pair``); otherwise "unknown" — a spent budget (``max_boxes``,
    ``timeout``) or boxes narrower than ``min_width`` never give "verified". ``proven_fraction`` is the share of the
    domain's volume on which the property is proven (its done boxes), whatever the verdict.

    Args:
        net_or_path: a :class:`~pacverify.network.Network`, an ONNX path, or a torch ``nn.Sequential`` of Linear and
            ReLU layers (read in float64).
        domain: the box X: a (2, m) array (row 0 lower, row 1 upper bounds) or a pair (lo, hi) of numbers or (m,)
            arrays; lo <= hi, finite.
        radius: δ > 0.
        kappa: κ in [0.5, 1).
        norm: "inf" (default) or "2".
        method: bound method, a name of :data:`~pacverify.verify.bounds.BOUND_METHODS` ("ibp", "crown", "alpha-crown";
            "crown-f32" is float64 CROWN here; "crown-ibp" is CROWN for the boxes' own bounds, whose linear lower
            bounds the search needs, and CROWN-IBP for the reach sets).
        inside_domain: x′ must lie in the domain (default); False: x′ anywhere within δ of x.
        max_boxes: budget of work items bounded (an x-box, or a piece of the set its x′ can reach; two bound passes
            each, batched).
        timeout: seconds (None: no limit); checked between passes.
        min_width: a box whose widest side is below this is not split (stays open); default 1e-6 × the domain's
            widest side.
        seed: seeds the falsification searches.
        progress: called after every pass with a dict (round, open, done, proven_fraction, time_s).
        batch: boxes per bound pass.
        attack: search for counterexample pairs (never needed for soundness).
        stop_at_counterexample: stop at the first checked pair (False: keep proving boxes to measure the proven
            fraction; the verdict is still "falsified").
        keep_done_boxes: keep the done boxes in ``result.done_boxes`` (for tests and plots).
        device: "cpu" or "cuda" (the bounds run on the network's device).
    """
    start = time.perf_counter()
    radius = check_radius(radius, "radius")
    kappa = check_kappa(kappa)
    norm = check_norm(norm)
    method = check_bound_method(method)
    max_boxes = check_positive_int(max_boxes, "max_boxes")
    batch = check_positive_int(batch, "batch")
    seed = check_seed(seed)
    timeout = None if timeout is None else check_positive(timeout, "timeout")
    if device not in ("cpu", "cuda"):
        raise InputError(f"device must be cpu or cuda, got {device!r}")
    net = _network(net_or_path, device)
    if net.out_features < 2:
        raise InputError(f"global robustness needs a classifier with at least 2 outputs, the network has "
                         f"{net.out_features}")
    m = net.in_features
    lo_np, hi_np = check_global_domain(domain, m)
    extent = hi_np - lo_np
    if min_width is None:
        min_width = MIN_WIDTH_FRACTION * float(extent.max()) if extent.max() > 0 else 0.0
    else:
        min_width = float(min_width)
        if not (math.isfinite(min_width) and min_width >= 0):
            raise InputError(f"min_width must be a number >= 0, got {min_width!r}")
    search = _Search(net, lo_np, hi_np, radius, kappa, norm, method, inside_domain, seed, min_width)
    settings = {"radius": radius, "kappa": kappa, "norm": norm, "method": method, "inside_domain": bool(inside_domain),
                "max_boxes": max_boxes, "timeout": timeout, "min_width": min_width, "batch": batch, "seed": seed,
                "domain_lower": lo_np.tolist(), "domain_upper": hi_np.tolist()}
    deadline = None if timeout is None else start + timeout
    pair = search.run(max_boxes, deadline, batch, attack, stop_at_counterexample, progress, start)
    open_count = search.open_count()
    if pair is not None:
        verdict = "falsified"
    elif open_count == 0:
        verdict = "verified"
    else:
        verdict = "unknown"
    stats = dict(search.stats)
    stats["items_stuck"] = int(search.stuck.lo.shape[0])
    done = None
    if keep_done_boxes:
        done = (torch.cat(search.done_lo).cpu().numpy() if search.done_lo else np.zeros((0, m)),
                torch.cat(search.done_hi).cpu().numpy() if search.done_hi else np.zeros((0, m)))
    return GlobalResult(verdict, float(min(search.done_volume, 1.0)), search.boxes_done, open_count,
                        search.largest_open(LARGEST_OPEN), pair, time.perf_counter() - start, stats, settings, done)


class _Search:
    """The state of one branch-and-bound run (module docstring).

    A work item is an x-box B with a box P for x′ (at first the bounding box of everything within δ of B, ∩ X when
    x′ must stay inside), per class whether it is settled, and the linear upper bounds ``g·x + h`` of each class's
    logit differences on B (cached once computed). Open items are split (:meth:`_split`); items that descend from a
    split of P share a *group*: the x-box of the group is done when the last of them is.
    """

    def __init__(self, net: Network, lo: np.ndarray, hi: np.ndarray, radius: float, kappa: float, norm: str,
                 method: str, inside_domain: bool, seed: int, min_width: float) -> None:
        self.net, self.radius, self.kappa, self.norm = net, radius, kappa, norm
        self.method, self.inside_domain, self.seed, self.min_width = method, inside_domain, seed, min_width
        dev = net.device
        m = lo.shape[0]
        self.m = m
        self.X_lo = torch.as_tensor(lo, dtype=torch.float64).to(dev)
        self.X_hi = torch.as_tensor(hi, dtype=torch.float64).to(dev)
        width = self.X_hi - self.X_lo
        self.positive = width > 0
        self.inv_width = torch.where(self.positive, 1.0 / torch.where(self.positive, width, 1.0), 0.0)
        self.n = net.out_features
        C, self.row_c, self.row_j = _pair_rows(self.n)
        self.C = C.to(device=dev, dtype=net.dtype)
        self.threshold = math.log(kappa / (1.0 - kappa))      # ln(κ/(1−κ)) >= 0
        self.slack = 1e-9 * (1.0 + self.threshold)            # covers rounding of ln and logsumexp
        self.net64 = net.to("cpu", torch.float64)
        # the work list (one item: the whole domain)
        self.lo, self.hi = self.X_lo[None].clone(), self.X_hi[None].clone()
        self.plo, self.phi = self._reach_box(self.lo, self.hi)
        self.settled = torch.zeros(1, self.n, dtype=torch.bool, device=dev)
        self.known = torch.zeros(1, dtype=torch.bool, device=dev)          # g, h computed for this B
        self.g = torch.zeros(1, self.n, m, dtype=torch.float64, device=dev)
        self.h = torch.zeros(1, self.n, dtype=torch.float64, device=dev)
        self.group = torch.full((1,), -1, dtype=torch.long, device=dev)
        self.score = torch.zeros(1, dtype=torch.float64, device=dev)        # largest violation (for attacks)
        # groups: x-boxes whose reach box was split
        self.group_left = torch.zeros(0, dtype=torch.long, device=dev)
        self.group_lo = torch.zeros(0, m, dtype=torch.float64, device=dev)
        self.group_hi = torch.zeros(0, m, dtype=torch.float64, device=dev)
        # items that cannot be split further
        self.stuck = _Items.empty(m, self.n, dev)
        self.done_volume = 0.0
        self.boxes_done = 0
        self.done_lo: list[torch.Tensor] = []
        self.done_hi: list[torch.Tensor] = []
        self.stats: dict[str, Any] = {"rounds": 0, "items_bounded": 0, "x_box_splits": 0, "reach_box_splits": 0,
                                      "bound_passes": 0, "bound_time_s": 0.0, "attack_rounds": 0,
                                      "attack_problems": 0, "attack_time_s": 0.0, "stopped_by": None}

    # -- geometry
    def volume(self, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """Fractions of the domain's volume, (N,) float64 (over the sides of positive width)."""
        rel = ((hi - lo) * self.inv_width).to(torch.float64)
        return torch.where(self.positive, rel, torch.ones_like(rel)).prod(dim=1)

    def _reach_box(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The box of every x′ within δ of [lo, hi] (∩ X when x′ must stay inside), rounded outward."""
        plo = torch.nextafter(lo - self.radius, torch.full_like(lo, -torch.inf))
        phi = torch.nextafter(hi + self.radius, torch.full_like(hi, torch.inf))
        if self.inside_domain:
            plo, phi = torch.maximum(plo, self.X_lo), torch.minimum(phi, self.X_hi)
        return plo, phi

    def _items(self) -> "_Items":
        return _Items(self.lo, self.hi, self.plo, self.phi, self.settled, self.known, self.g, self.h, self.group,
                      self.score)

    def _set_items(self, items: "_Items") -> None:
        (self.lo, self.hi, self.plo, self.phi, self.settled, self.known, self.g, self.h, self.group,
         self.score) = items.fields()

    def open_items(self) -> "_Items":
        return _Items.cat([self._items(), self.stuck])

    def open_count(self) -> int:
        """Open x-boxes: items of their own, plus the groups with an open item."""
        items = self.open_items()
        alone = int((items.group < 0).sum())
        return alone + int(torch.unique(items.group[items.group >= 0]).numel())

    def largest_open(self, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        items = self.open_items()
        if items.lo.shape[0] == 0:
            return []
        order = torch.sort(self.volume(items.lo, items.hi), descending=True, stable=True).indices
        out, seen = [], set()
        for i in order.tolist():
            key = int(items.group[i])
            if key >= 0 and key in seen:
                continue
            seen.add(key)
            out.append((items.lo[i].cpu().numpy(), items.hi[i].cpu().numpy()))
            if len(out) == k:
                break
        return out

    # -- bounds
    def _box_bounds(self, lo: torch.Tensor, hi: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Sound lower bounds (N, n, n) of z_c − z_j over the boxes (diagonal +inf) and, for CROWN and α-CROWN, the
        linear lower bounds ``A·x + c`` behind them, valid on each box: A (N, n, n, m), c (N, n, n) (rounding margin
        already taken off c); None for IBP."""
        n, m, dt = self.n, self.m, self.net.dtype
        box = Box(lo.to(dt), hi.to(dt))
        low = torch.full((lo.shape[0], n, n), torch.inf, dtype=torch.float64, device=lo.device)
        self.stats["bound_passes"] += 1
        if self.method == "ibp":
            low[:, self.row_c, self.row_j] = BOUND_METHODS["ibp"](self.net, box, self.C).lower.to(torch.float64)
            return low, None, None
        lower, A_rows, c_rows = linear_lower_bounds(self.net, box, self.C)
        if self.method == "alpha-crown":
            lower = torch.maximum(lower, BOUND_METHODS["alpha-crown"](self.net, box, self.C, upper=False
                                                                      ).lower.to(torch.float64))
        low[:, self.row_c, self.row_j] = lower
        A = torch.zeros(lo.shape[0], n, n, m, dtype=torch.float64, device=lo.device)
        c = torch.full((lo.shape[0], n, n), torch.inf, dtype=torch.float64, device=lo.device)
        A[:, self.row_c, self.row_j] = A_rows
        c[:, self.row_c, self.row_j] = c_rows
        return low, A, c

    def decide(self, items: "_Items") -> "_Items":
        """Bound the items: classes that need nothing in B (fresh boxes only) and classes safe on P ∩ T_c(B)
        become settled; ``score`` becomes the largest violation −(lower bound of a margin) of an unsettled class."""
        n, dt = self.n, self.net.dtype
        settled, g, h, known = items.settled.clone(), items.g.clone(), items.h.clone(), items.known.clone()
        fresh = torch.nonzero(~known).reshape(-1)
        if fresh.numel():
            low_b, A_b, c_b = self._box_bounds(items.lo[fresh], items.hi[fresh])
            # needs nothing: Σ_j exp(lower(z_j − z_c)) > (1 − κ)/κ = exp(−t)
            entering = low_b.transpose(1, 2).clone()                      # [b, c, j] = lower(z_j − z_c)
            diag = torch.arange(n, device=entering.device)
            entering[:, diag, diag] = -torch.inf
            settled[fresh] |= torch.logsumexp(entering, dim=2) > -self.threshold + self.slack
            # the constraint of class c: z_c − z_j <= g·x + h on B, j the most restrictive runner-up
            j = entering.argmax(dim=2)                                    # (F, n)
            rows = torch.arange(fresh.numel(), device=j.device)[:, None]
            cls = torch.arange(n, device=j.device)[None, :]
            if A_b is not None and c_b is not None:
                g[fresh] = -A_b[rows, j, cls]
                h[fresh] = -c_b[rows, j, cls]
            else:
                g[fresh] = 0.0
                h[fresh] = -low_b[rows, j, cls]
            known[fresh] = True
        score = torch.full_like(items.score, -torch.inf)
        box, cls = torch.nonzero(~settled, as_tuple=True)
        if box.numel():
            if self.inside_domain:
                dom = (torch.maximum(items.plo[box], self.X_lo), torch.minimum(items.phi[box], self.X_hi))
            else:
                dom = (items.plo[box], items.phi[box])
            reach = _reach_set_in(items.lo[box].to(dt), items.hi[box].to(dt), self.radius, self.norm,
                                  (dom[0].to(dt), dom[1].to(dt)), g[box, cls], h[box, cls], self.threshold)
            C = margin_rows(cls.cpu(), n, dtype=dt, device=self.net.device)
            kwargs: dict[str, Any] = {} if self.method == "ibp" else {"upper": False}
            kwargs["max_batch"] = chunk_size(self.net, 2 * max(self.net.relu_widths() + [n]))
            lower = BOUND_METHODS[self.method](self.net, reach, C, **kwargs).lower.to(torch.float64)
            self.stats["bound_passes"] += 1
            margin = lower.amin(dim=1)
            settled[box, cls] = margin > 0
            violation = torch.where(margin > 0, torch.full_like(margin, -torch.inf), -margin)
            score.scatter_reduce_(0, box, violation, reduce="amax")
        return _Items(items.lo, items.hi, items.plo, items.phi, settled, known, g, h, items.group, score)

    # -- the loop
    def run(self, max_boxes: int, deadline: float | None, batch: int, attack: bool, stop: bool,
            progress: Callable[[dict], None] | None, start: float) -> CounterexamplePair | None:
        pair: CounterexamplePair | None = None
        next_attack = 1
        while self.lo.shape[0]:
            if self.stats["items_bounded"] >= max_boxes:
                self.stats["stopped_by"] = "max_boxes"
                break
            if deadline is not None and time.perf_counter() >= deadline:
                self.stats["stopped_by"] = "timeout"
                break
            self.stats["rounds"] += 1
            take = min(batch, self.lo.shape[0], max_boxes - self.stats["items_bounded"])
            # largest x-boxes first, then largest reach boxes
            order = torch.sort(self.volume(self.plo, self.phi), descending=True, stable=True).indices
            order = order[torch.sort(self.volume(self.lo, self.hi)[order], descending=True, stable=True).indices]
            items = self._items()
            now, rest = items.select(order[:take]), items.select(order[take:])
            tick = time.perf_counter()
            now = self.decide(now)
            self.stats["bound_time_s"] += time.perf_counter() - tick
            self.stats["items_bounded"] += take
            done = now.settled.all(dim=1)
            self._close(now.select(done))
            now = now.select(~done)
            self._set_items(rest)
            if attack and pair is None and now.lo.shape[0] and self.stats["rounds"] >= next_attack:
                next_attack *= 2
                pair = self._falsify(now)
                if pair is not None and stop:
                    self._set_items(_Items.cat([rest, now]))
                    self.stats["stopped_by"] = "counterexample"
                    return pair
            self._split(now)
            if progress is not None:
                progress({"round": self.stats["rounds"], "open": self.open_count(), "done": self.boxes_done,
                          "proven_fraction": self.done_volume, "time_s": time.perf_counter() - start})
        if attack and pair is None and self.open_count():
            pair = self._falsify(self.open_items())
        return pair

    def _close(self, items: "_Items") -> None:
        """Credit done items: an item of its own closes its x-box; a group's x-box closes with its last item."""
        if items.lo.shape[0] == 0:
            return
        alone = items.group < 0
        self._credit(items.lo[alone], items.hi[alone])
        groups = items.group[~alone]
        if groups.numel():
            self.group_left.scatter_add_(0, groups, torch.full_like(groups, -1))
            finished = torch.unique(groups)
            finished = finished[self.group_left[finished] == 0]
            self._credit(self.group_lo[finished], self.group_hi[finished])

    def _credit(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        if lo.shape[0]:
            self.done_volume += float(self.volume(lo, hi).sum())
            self.boxes_done += int(lo.shape[0])
            self.done_lo.append(lo)
            self.done_hi.append(hi)

    def _split(self, items: "_Items") -> None:
        """Split open items and return them to the work list (items that cannot be split, below ``min_width``, are
        set aside). The x-box B is split along its widest side relative to X's width while its widest side is at
        least half of the reach box's; otherwise the reach box P along its widest side. Children of a B split keep
        P ∩ (their own reach box) and are bounded on their B again; the two pieces of a P split keep B. Once P is
        split, the items of an x-box form a group, which closes the x-box when its last item is done."""
        if items.lo.shape[0] == 0:
            return
        width, pwidth = items.hi - items.lo, items.phi - items.plo
        split_x = width.amax(dim=1) >= pwidth.amax(dim=1) / 2
        dim = torch.where(split_x, (width * self.inv_width).argmax(dim=1), pwidth.argmax(dim=1))
        rows = torch.arange(items.lo.shape[0], device=dim.device)
        lo_side = torch.where(split_x, items.lo[rows, dim], items.plo[rows, dim])
        hi_side = torch.where(split_x, items.hi[rows, dim], items.phi[rows, dim])
        mid = (lo_side + hi_side) / 2
        widest = torch.where(split_x, width.amax(dim=1), pwidth.amax(dim=1))
        can = (widest >= self.min_width) & (mid > lo_side) & (mid < hi_side)
        if (~can).any():
            self.stuck = _Items.cat([self.stuck, items.select(~can)])
        items, dim, mid, split_x = items.select(can), dim[can], mid[can], split_x[can]
        if items.lo.shape[0] == 0:
            return
        left, right = items.clone(), items.clone()
        xs = torch.nonzero(split_x).reshape(-1)
        if xs.numel():
            d, mx = dim[xs], mid[xs]
            left.hi[xs, d] = mx
            right.lo[xs, d] = mx
            for part in (left, right):
                plo, phi = self._reach_box(part.lo[xs], part.hi[xs])
                part.plo[xs] = torch.maximum(part.plo[xs], plo)
                part.phi[xs] = torch.minimum(part.phi[xs], phi)
                part.known[xs] = False
            self.stats["x_box_splits"] += int(xs.numel())
        ps = torch.nonzero(~split_x).reshape(-1)
        if ps.numel():
            d, mp = dim[ps], mid[ps]
            left.phi[ps, d] = mp
            right.plo[ps, d] = mp
            new = ps[items.group[ps] < 0]
            if new.numel():             # these x-boxes become groups (of two items, counted below)
                ids = torch.arange(self.group_left.numel(), self.group_left.numel() + new.numel(), device=dim.device)
                self.group_left = torch.cat([self.group_left, torch.ones_like(ids)])
                self.group_lo = torch.cat([self.group_lo, items.lo[new]])
                self.group_hi = torch.cat([self.group_hi, items.hi[new]])
                for part in (left, right, items):
                    part.group[new] = ids
            self.stats["reach_box_splits"] += int(ps.numel())
        grouped = items.group >= 0          # one item of a group becomes two
        if grouped.any():
            self.group_left.scatter_add_(0, items.group[grouped], torch.ones_like(items.group[grouped]))
        self._set_items(_Items.cat([self._items(), left, right]))

    # -- falsification
    def _falsify(self, items: "_Items") -> CounterexamplePair | None:
        """Look for a checked pair in the open items: up to :data:`_ATTACK_PROBLEMS` (x-box, class) problems, the
        most violated first, each attacked by random pairs and the joint PGD search."""
        tick = time.perf_counter()
        self.stats["attack_rounds"] += 1
        try:
            order = torch.sort(items.score, descending=True, stable=True).indices
            boxes: list[int] = []
            classes: list[int] = []
            seen: set[tuple] = set()
            for b in order.tolist():
                key = (int(items.group[b]) if int(items.group[b]) >= 0 else -1 - b)
                for c in torch.nonzero(~items.settled[b]).reshape(-1).tolist():
                    if (key, c) not in seen:
                        seen.add((key, c))
                        boxes.append(b)
                        classes.append(c)
                if len(boxes) >= _ATTACK_PROBLEMS:
                    break
            if not boxes:
                return None
            index = torch.tensor(boxes[:_ATTACK_PROBLEMS], device=items.lo.device)
            cls = torch.tensor(classes[:_ATTACK_PROBLEMS], dtype=torch.long)
            self.stats["attack_problems"] += int(index.shape[0])
            seed = self.seed + 7919 * self.stats["attack_rounds"]
            return _search_pairs(self, items.lo[index].cpu().double(), items.hi[index].cpu().double(), cls, seed)
        finally:
            self.stats["attack_time_s"] += time.perf_counter() - tick


@dataclass
class _Items:
    """A batch of work items (see :class:`_Search`): tensors with a leading item dimension."""

    lo: torch.Tensor
    hi: torch.Tensor
    plo: torch.Tensor
    phi: torch.Tensor
    settled: torch.Tensor
    known: torch.Tensor
    g: torch.Tensor
    h: torch.Tensor
    group: torch.Tensor
    score: torch.Tensor

    def fields(self) -> tuple[torch.Tensor, ...]:
        return (self.lo, self.hi, self.plo, self.phi, self.settled, self.known, self.g, self.h, self.group,
                self.score)

    def select(self, index) -> "_Items":
        return _Items(*(t[index] for t in self.fields()))

    def clone(self) -> "_Items":
        return _Items(*(t.clone() for t in self.fields()))

    @staticmethod
    def cat(parts: list["_Items"]) -> "_Items":
        return _Items(*(torch.cat(ts) for ts in zip(*(p.fields() for p in parts), strict=True)))

    @staticmethod
    def empty(m: int, n: int, device) -> "_Items":
        def zeros(*shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
            return torch.zeros(*shape, dtype=dtype, device=device)

        return _Items(zeros(0, m), zeros(0, m), zeros(0, m), zeros(0, m), zeros(0, n, dtype=torch.bool),
                      zeros(0, dtype=torch.bool), zeros(0, n, m), zeros(0, n), zeros(0, dtype=torch.long), zeros(0))


def _reach_set_in(lower: torch.Tensor, upper: torch.Tensor, radius: float, norm: str,
                  box: tuple[torch.Tensor, torch.Tensor], g: torch.Tensor, h: torch.Tensor,
                  threshold: float) -> ReachSet:
    """:class:`ReachSet` of the x-boxes [lower, upper] (N, m) restricted to the boxes ``box`` (N, m) each (the reach
    box P of each item, ∩ X when x′ stays inside); its nominal centre is B's midpoint clamped into that box."""
    r = torch.full((lower.shape[0],), float(radius), dtype=lower.dtype, device=lower.device)
    centre = torch.minimum(torch.maximum((lower + upper) / 2, box[0]), box[1])
    return ReachSet(centre, r, box[0], box[1], lower, upper, g, h, float(threshold), norm)


def _perturbed(search: _Search, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """x′ = x + δ·v (L∞, v ∈ [−1, 1]^m) or x + δ·v/max(1, ‖v‖₂) (L2), clamped into the domain when required."""
    if search.norm == "2":
        v = v / torch.clamp(torch.linalg.vector_norm(v, dim=1, keepdim=True), min=1.0)
    xp = x + search.radius * v
    if search.inside_domain:
        xp = torch.minimum(torch.maximum(xp, search.X_lo.cpu().to(xp.dtype)), search.X_hi.cpu().to(xp.dtype))
    return xp


def _pair_objective(search: _Search, logits_x: torch.Tensor, logits_xp: torch.Tensor, cls: torch.Tensor
                    ) -> torch.Tensor:
    """(R, n − 1) values, one per class j ≠ c: relu(ln κ − log softmax_c(x) + margin) + relu(z′_c − z′_j + margin);
    0 when x is κ-confident for c and x′ has class j (with a small margin)."""
    n = search.n
    conf = torch.log_softmax(logits_x, dim=1).gather(1, cls[:, None]).squeeze(1)
    hinge = torch.relu(math.log(search.kappa) - conf + _MARGIN)
    others = torch.arange(n).expand(cls.shape[0], n)
    others = others[others != cls[:, None]].reshape(cls.shape[0], n - 1)
    gap = logits_xp.gather(1, cls[:, None]) - logits_xp.gather(1, others)
    return hinge[:, None] + torch.relu(gap + _MARGIN)


def _search_pairs(search: _Search, lo: torch.Tensor, hi: torch.Tensor, cls: torch.Tensor, seed: int
                  ) -> CounterexamplePair | None:
    """Random pairs, then the joint PGD search, for the problems (box [lo, hi] (P, m), class cls (P,)); the first
    checked pair, or None. Runs on the CPU in float64."""
    from pacverify.attacks import pgd_search

    net = search.net64
    m = lo.shape[1]
    gen = torch.Generator().manual_seed(seed)
    # random pairs: x uniform in the box, v uniform in [−1, 1]^m
    k = _RANDOM_PAIRS
    rows = torch.arange(lo.shape[0]).repeat_interleave(k)
    x = lo[rows] + (hi[rows] - lo[rows]) * torch.rand(rows.shape[0], m, generator=gen, dtype=torch.float64)
    v = torch.rand(rows.shape[0], m, generator=gen, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        xp = _perturbed(search, x, v)
        value = _pair_objective(search, net(x), net(xp), cls[rows]).amin(dim=1)
    best = value.reshape(-1, k).argmin(dim=1) + torch.arange(lo.shape[0]) * k
    pair = _confirm(search, x[best], xp[best], cls)
    if pair is not None:
        return pair

    def model(u: torch.Tensor) -> torch.Tensor:
        xu, vu = u[:, :m], u[:, m:]
        return torch.cat([net(xu), net(_perturbed(search, xu, vu))], dim=1)

    def objective(logits: torch.Tensor, problems: torch.Tensor) -> torch.Tensor:
        return _pair_objective(search, logits[:, :search.n], logits[:, search.n:], cls[problems])

    ones = torch.ones_like(lo)
    found = pgd_search(model, objective, torch.cat([lo, -ones], dim=1), torch.cat([hi, ones], dim=1), norm="inf",
                       steps=_ATTACK_STEPS, restarts=_ATTACK_RESTARTS, seed=seed, stop_below=1e-300)
    u = found.inputs.detach()
    with torch.no_grad():
        xp = _perturbed(search, u[:, :m], u[:, m:])
    return _confirm(search, u[:, :m], xp, cls)


def _confirm(search: _Search, x: torch.Tensor, xp: torch.Tensor, cls: torch.Tensor) -> CounterexamplePair | None:
    """The first candidate pair that passes the float64 checks (module docstring), or None."""
    from pacverify.attacks import clip_into_set, in_set

    x = x.detach().double()
    X_lo, X_hi = search.X_lo.cpu(), search.X_hi.cpu()
    x = torch.minimum(torch.maximum(x, X_lo), X_hi)
    r = torch.full((x.shape[0],), search.radius, dtype=torch.float64)
    box = (X_lo.expand_as(x), X_hi.expand_as(x)) if search.inside_domain else (None, None)
    xp = clip_into_set(xp.detach().double(), box[0], box[1], x, r, norm=search.norm)
    ok = in_set(xp, box[0], box[1], x, r, norm=search.norm)
    with torch.no_grad():
        z, zp = search.net64(x), search.net64(xp)
    log_conf = torch.log_softmax(z, dim=1)
    for i in torch.nonzero(ok).reshape(-1).tolist():
        c = int(cls[i])
        others = torch.cat([z[i, :c], z[i, c + 1:]])
        if not bool((z[i, c] > others).all()) or not float(log_conf[i, c]) >= math.log(search.kappa):
            continue
        if not float(torch.exp(log_conf[i, c])) >= search.kappa:
            continue
        j = int(zp[i].argmax())
        if j == c or not bool(zp[i, j] > zp[i, c]):
            continue
        return CounterexamplePair(x[i].numpy().copy(), xp[i].numpy().copy(), c, j, float(torch.exp(log_conf[i, c])),
                                  float(vector_norm(xp[i] - x[i], search.norm)))
    return None


__all__ = ["CounterexamplePair", "GlobalResult", "ReachSet", "check_global_domain", "coupled_lower_bound",
           "linear_lower_bounds", "reach_set", "verify_global"]
