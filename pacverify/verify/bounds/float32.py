"""CROWN lower bounds with float32 products and a-posteriori rounding charges (issue 12, goal 3).

The products of CROWN's backward pass run in float32; every rounding error they make is charged to the row
it affects, a posteriori, from the numbers actually computed, so the bounds hold for the float64 network.

Why any float32 numbers give a sound bound (the Lagrangian view of CROWN; Wong & Kolter 2018, Salman et al.
2019): for a chain ``z_k = W_k h_{k−1} + b_k``, ``h_k = relu(z_k)``, ``h_0 = x ∈ S``, a row ``c`` on ``z_L`` and
*any* vectors ``λ_k`` on ``z_k`` (``λ_L = c``), with ``μ_{k−1} = W_kᵀ λ_k`` computed exactly,

    c·z_L = μ_0·x + Σ_{k<L} Σ_j (μ_kj relu(z_kj) − λ_kj z_kj) + Σ_k λ_k·b_k     for every feasible x.

Each bracket is bounded below over the neuron's sound pre-activation bounds ``[l, u]``: where ``μ ≥ 0`` and
``λ = a·μ`` with ``a ∈ {0, 1}`` (exact), by 0; where ``μ < 0`` and ``λ = fl(s·μ)``, by ``μ·t − |λ − s·μ|·max|z|``
with ``t = max(−s·l, (1 − s)·u)`` (relu(z) − s·z is convex, its maximum at an end point) rounded up, and
``|λ − s·μ| ≤ 2u·|λ|``. ``μ_0·x`` is bounded by its minimum over S. CROWN's choice of ``λ`` (its relaxation
slopes) is only a good choice; here ``λ`` is whatever float32 numbers the pass produced, and the formula is
evaluated for exactly those numbers. What must be charged is the difference between the exact formula and its
floating-point evaluation:

* each product ``μ̃ = fl(λ W̃)`` (n terms) misses ``μ = λ W`` by at most ``|λ|(γ_{n+1}|W̃| + |W − W̃|)``
  (Higham, *Accuracy and Stability of Numerical Algorithms*, Thm 3.5; W̃ the float32 weights), which the
  term ``μ·h`` turns into at most ``|λ|·(γ_{n+1}|W̃| + |W − W̃|)·max|h|`` (max|h| from the sound bounds of
  the layer's input, the largest over the chunk's points); the bias term ``fl(λ·b̃)`` likewise,
  ``|λ|·(γ_{n+1}|b̃| + |b − b̃|)``; the slopes' rounding above adds ``2u·max(|l|, |u|)`` to what ``|λ|``
  multiplies;
* the sum ``Σ μ_j·t_j`` over the neurons with ``μ_j < 0`` (its terms share a sign): ``γ_{n+2}`` of its magnitude;
* the minimum over S: for a box, ``γ_{n+2}·|μ̃|·(|centre| + radius)`` (the chunk's largest); for an L2 ball
  ``‖μ̃‖₂·‖γ_{n+2}|x̃0| + |x0 − x̃0|‖₂`` (x̃0 the float32 centre; Cauchy–Schwarz, so no second pass over μ̃) and
  the norm's own rounding, ``r·γ_{n+2}·‖μ̃‖``;
* each charge is computed in float32 from non-negative terms and enlarged by ``(1 + γ_{n+2})``, with an absolute
  ``n·2^-126`` for underflow; the float64 sums of constants and charges by a relative ``2^-40``.

The pre-activation bounds come from the interval pass in float64 (with its own a-posteriori margin) and the
same charged float32 pass for the neurons it leaves unstable, and are rounded outward to float32.

Scope: chains of dense ``Affine`` and ``Relu`` layers, :class:`Box` and :class:`L2Ball` sets (with or without a
domain), rows ``C`` whose entries float32 holds exactly (margins: 0, ±1). Others: :func:`supported` is False, and
:func:`crown_f32` is float64 CROWN with convolutions pulled back in float32 (:mod:`.conv32`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pacverify.errors import InputError
from pacverify.network import Affine, Network, Relu
from pacverify.verify.bounds import conv32
from pacverify.verify.bounds.common import chunks_side_by_side, default_max_batch, ieee_float32_products, prepare
from pacverify.verify.bounds.types import Bounds
from pacverify.verify.sets import Box, InputSet, L2Ball, batched_matvec, round_outward

U32 = 2.0 ** -24      # float32's unit round-off
U64 = 2.0 ** -53
SLOP64 = 2.0 ** -40   # relative error allowed for the float64 sums of constants and charges (a few hundred terms)
TINY32 = torch.finfo(torch.float32).tiny
FLOAT32_RANGE = 2.0 ** 60   # weights, biases and inputs above this magnitude: float64 CROWN (no float32 overflow)


def gamma(n: int, unit: float = U32) -> float:
    """Higham's γ_n = n·u / (1 − n·u)."""
    return n * unit / (1 - n * unit)


def supported(net: Network, C: torch.Tensor | None) -> bool:
    """True when :func:`crown_lower_f32` handles the network and rows: Affine/ReLU chains, float32-exact C."""
    layers = net.layers
    if not layers or not isinstance(layers[0], Affine) or not isinstance(layers[-1], Affine):
        return False
    for i, layer in enumerate(layers):
        if not isinstance(layer, Affine if i % 2 == 0 else Relu):
            return False
    big = FLOAT32_RANGE
    if any(not bool(torch.isfinite(layer.weight).all()) or float(layer.weight.abs().max()) > big
           or (layer.bias.numel() and float(layer.bias.abs().max()) > big) for layer in _affine(net)):
        return False
    if C is not None:
        C = torch.as_tensor(C)
        if not bool((C.to(torch.float32).to(C.dtype) == C).all()) or not bool(torch.isfinite(C).all()):
            return False
    return True


def _affine(net: Network) -> list[Affine]:
    """The dense layers of a chain, in order."""
    return [layer for layer in net.layers if isinstance(layer, Affine)]


def _up32(x: torch.Tensor) -> torch.Tensor:
    """The float32 numbers ≥ the float64 ``x``."""
    return round_outward(x, torch.float32, 1)


def _down32(x: torch.Tensor) -> torch.Tensor:
    return round_outward(x, torch.float32, -1)


class _Chain:
    """The float64 network and its float32 copy, layer by layer."""

    def __init__(self, net: Network) -> None:
        self.W64 = [layer.weight for layer in _affine(net)]
        self.b64 = [layer.bias for layer in _affine(net)]
        self.W = [w.to(torch.float32) for w in self.W64]
        self.b = [b.to(torch.float32) for b in self.b64]
        self.absW64 = [w.abs() for w in self.W64]
        self.dW = [(w - w32.to(torch.float64)).abs() for w, w32 in zip(self.W64, self.W, strict=True)]
        self.exact = [not bool((d > 0).any()) for d in self.dW]
        # per layer: the float64 matrix γ_{n+1}|W̃| + |W − W̃| and vector γ_{n+1}|b̃| + |b − b̃| (n = out features)
        self.G = [gamma(w.shape[0] + 1) * w32.abs().to(torch.float64) * (1 + 4 * U64) + d
                  for w, w32, d in zip(self.W64, self.W, self.dW, strict=True)]
        self.g = [gamma(w.shape[0] + 1) * b32.abs().to(torch.float64) * (1 + 4 * U64) + (b - b32.to(torch.float64)).abs()
                  for w, b, b32 in zip(self.W64, self.b64, self.b, strict=True)]


def _interval(chain: _Chain, k: int, hl: torch.Tensor, hu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sound bounds of ``z_k = W_k h + b_k`` for h in [hl, hu] (float64, with a-posteriori rounding margin)."""
    W, aW, b = chain.W64[k], chain.absW64[k], chain.b64[k]
    hc = (hl + hu) / 2
    hr = torch.maximum(hu - hc, hc - hl) * (1 + 2 * U64)
    zc = hc @ W.T + b
    zr = hr @ aW.T
    n = W.shape[1]
    # the products' rounding, from the chunk's largest magnitudes (a margin: looser than per point, never smaller)
    margin = gamma(n + 3, U64) * ((hc.abs() + hr).amax(dim=0) @ aW.T + b.abs()) * 2 + 1e-300
    return zc - zr - margin, zc + zr + margin


class _Rows:
    """Float32 rows ``A`` — (R, n) shared by every point, or (B, R, n) — with float64 constants ``c`` and
    charges ``e``, (B, R) or broadcastable to it."""

    def __init__(self, A: torch.Tensor, c: torch.Tensor, e: torch.Tensor) -> None:
        self.A, self.c, self.e = A, c, e


def _through_affine(rows: _Rows, chain: _Chain, k: int, hmax: torch.Tensor, extra: torch.Tensor | None) -> _Rows:
    """Rows on z_k → rows on h_{k−1}; ``hmax`` (B, n_{k−1}) bounds |h_{k−1}| per point; ``extra`` (B, n_k), if
    given, is added to what |λ| multiplies in the charge (the previous ReLU step's rounded slopes)."""
    A = rows.A
    n = A.shape[-1]
    # (n_k,): what |λ| multiplies, from the chunk's largest magnitudes (looser than per point, never smaller); the
    # float64 product's own rounding bumped up
    top = hmax.amax(dim=0)
    weights = (top @ chain.G[k].T + chain.g[k]) * (1 + gamma(hmax.shape[1] + 2, U64))
    if extra is not None:
        weights = weights + extra.amax(dim=0)
    absA = A.abs()
    charge = (absA.reshape(-1, n) @ _up32(weights)).reshape(absA.shape[:-1]).to(torch.float64)
    # the products' underflow: at most 2^-149 per term, times the largest |h| it multiplies
    floor = n * TINY32 * (1 + float(top.sum()))
    charge = charge * (1 + gamma(n + 2)) + floor
    c = rows.c + (A @ chain.b[k]).to(torch.float64)
    return _Rows(A @ chain.W[k], c, rows.e + charge)


def _relu_step(lower32: torch.Tensor, upper32: torch.Tensor):
    """What a ReLU step needs per point (B, n): the slope for μ ≥ 0 (0 or 1, exact), the slope s for μ < 0, the
    intercept ``t = max(−s·l, (1 − s)·u)`` rounded up (relu(z) ≤ s·z + t on [l, u]) and ``u32·max(|l|, |u|)``,
    which bounds what the rounding of ``fl(s·μ)`` costs per unit of |λ|."""
    active, inactive = lower32 >= 0, upper32 <= 0
    unstable = ~active & ~inactive
    pos = torch.where(active | (unstable & (upper32 >= -lower32)), 1.0, 0.0).to(torch.float32)
    width = torch.where(unstable, upper32 - lower32, torch.ones_like(upper32))
    neg = torch.where(unstable, upper32 / width, torch.where(active, 1.0, 0.0).to(torch.float32))
    l64, u64, s64 = lower32.to(torch.float64), upper32.to(torch.float64), neg.to(torch.float64)
    t = torch.maximum(-s64 * l64, (1 - s64) * u64).clamp(min=0) * (1 + 4 * U64)
    rounding = 2 * U32 * torch.maximum(l64.abs(), u64.abs())
    return pos, neg, _up32(t), rounding


def _through_relu(rows: _Rows, pos: torch.Tensor, neg: torch.Tensor, t: torch.Tensor) -> _Rows:
    """Rows μ on h = relu(z) → rows λ on z. The bracket ``μ·relu(z) − λ·z`` is at least ``μ·t`` where μ < 0
    (λ = fl(s·μ): up to the rounding charged at the next product) and at least 0 where μ ≥ 0 (λ = 0 or μ)."""
    mu = rows.A
    mneg = mu.clamp(max=0)
    lam = pos.unsqueeze(1) * mu.clamp(min=0) + neg.unsqueeze(1) * mneg
    shift = batched_matvec(mneg, t).to(torch.float64)
    n = mu.shape[-1]
    # every term of the sum has the same sign: its rounding is at most γ_n of its magnitude
    charge = shift.abs() * gamma(n + 2) + n * TINY32
    return _Rows(lam, rows.c + shift, rows.e + charge)


def _input_min(rows: _Rows, input_set: InputSet) -> tuple[torch.Tensor, torch.Tensor]:
    """A sound lower bound (B, R) float64 of ``min_{x∈S} μ·x + c − e``-free part: ``min_{x∈S} μ·x`` for the exact
    μ the charges account for (rows (R, n) or (B, R, n))."""
    A = rows.A
    n = A.shape[-1]
    out = None
    if isinstance(input_set, Box) or input_set.has_domain:
        lo, hi = input_set.interval()
        lo64, hi64 = lo.to(torch.float64), hi.to(torch.float64)
        if not isinstance(input_set, Box):   # the bounding box of a ball ∩ domain was rounded: widen it
            lo64, hi64 = lo64 - 4 * U64 * lo64.abs(), hi64 + 4 * U64 * hi64.abs()
        lo32, hi32 = _down32(lo64), _up32(hi64)          # a float32 box around the set's bounding box
        mid32 = ((lo32 + hi32) / 2).to(torch.float32)
        rad32 = _up32(torch.maximum(hi32.to(torch.float64) - mid32.to(torch.float64),
                                    mid32.to(torch.float64) - lo32.to(torch.float64)) * (1 + 2 * U64))
        absA = A.abs()
        value = batched_matvec(A, mid32).to(torch.float64) - batched_matvec(absA, rad32).to(torch.float64)
        charge = (absA.reshape(-1, n) @ _up32((mid32.abs() + rad32).amax(dim=0).to(torch.float64))).reshape(
            absA.shape[:-1]).to(torch.float64) * gamma(n + 2) * (1 + gamma(n + 2)) + n * TINY32
        out = (value, charge)
    if isinstance(input_set, L2Ball):
        x0 = input_set.center.to(torch.float64)
        x32 = x0.to(torch.float32)
        shift = (x0 - x32.to(torch.float64)).abs()
        r = input_set.radius.to(torch.float64).unsqueeze(1)
        # the norm computed in float32: relative error below γ_{n+2}, and squares below float32's range lost
        norm = torch.linalg.vector_norm(A, dim=-1).to(torch.float64) * (1 + gamma(n + 2)) + math.sqrt(n) * 2.0 ** -60
        value = batched_matvec(A, x32).to(torch.float64) - r * norm
        # |μ|·(γ|x̃0| + |x0 − x̃0|) ≤ ‖μ‖₂·‖γ|x̃0| + |x0 − x̃0|‖₂ (Cauchy–Schwarz: no second pass over μ)
        v = (gamma(n + 2) * x32.abs().to(torch.float64) + shift)
        charge = norm * torch.linalg.vector_norm(v, dim=1, keepdim=True) * (1 + gamma(n + 2, U64)) + n * TINY32
        if out is not None:   # the larger of the two sound bounds, with its charge
            use = (value - charge) >= (out[0] - out[1])
            value, charge = torch.where(use, value, out[0]), torch.where(use, charge, out[1])
        out = (value, charge)
    assert out is not None
    return out


def _finish(rows: _Rows, input_set: InputSet) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows' sound lower bounds over the set, float64, and the charge each includes."""
    value, charge = _input_min(rows, input_set)
    e = rows.e + charge
    slop = SLOP64 * (value.abs() + rows.c.abs() + e)
    return value + rows.c - e - slop, e + slop


def _pull(chain: _Chain, k: int, rows: _Rows, steps: list, hmax: list, extra: torch.Tensor | None) -> _Rows:
    """Rows on z_k (k the index of an affine layer) pulled back to rows on the input."""
    for j in range(k, -1, -1):
        rows = _through_affine(rows, chain, j, hmax[j], extra)
        if j > 0:
            pos, neg, t, extra = steps[j - 1]
            rows = _through_relu(rows, pos, neg, t)
    return rows


GROUP = 8                 # at least this many points' rows padded to a common count (sorted by count: little padding)
GROUP_ENTRIES = 2 ** 19   # or as many as make about this many row entries
DENSE_FRACTION = 0.5      # above this fraction of unstable neurons, rows for every neuron (as the float64 engine)


def _start_rows(chain: _Chain, k: int, hmax: torch.Tensor, idx: torch.Tensor | None = None) -> _Rows:
    """Rows ``±W_k[j]`` on layer k's input for the neurons j (all, shared, or ``idx`` (B, m) per point), with the
    constants ``±b_k[j]``: exact but for the weights' own rounding to float32, charged against ``hmax`` (B, n)."""
    W32, b, dW = (chain.W[k], chain.b64[k], chain.dW[k]) if idx is None else \
        (chain.W[k][idx], chain.b64[k][idx], chain.dW[k][idx])
    e = torch.zeros((), dtype=torch.float64)
    if not chain.exact[k]:
        e = batched_matvec(dW, hmax) * (1 + gamma(dW.shape[-1] + 2, U64))
        e = torch.cat([e, e], dim=1)
    row_dim = 0 if idx is None else 1
    c = torch.cat([b, -b], dim=row_dim)
    return _Rows(torch.cat([W32, -W32], dim=row_dim), c.unsqueeze(0) if idx is None else c, e)


def _refine(chain: _Chain, k: int, zl: torch.Tensor, zu: torch.Tensor, unstable: torch.Tensor, steps: list,
            hmax: list, input_set: InputSet) -> tuple[torch.Tensor, torch.Tensor]:
    """The interval bounds of layer k ≥ 1 intersected with the charged CROWN bounds of its unstable neurons."""
    if float(unstable.float().mean()) > DENSE_FRACTION:
        # most neurons unstable: rows for all of them, shared starts, no gathers (stable ones discarded)
        pos, neg, t, extra = steps[k - 1]
        rows = _through_relu(_start_rows(chain, k, hmax[k]), pos, neg, t)
        values, _ = _finish(_pull(chain, k - 1, rows, steps, hmax, extra), input_set)
        n = zl.shape[1]
        return (torch.where(unstable, torch.maximum(zl, values[:, :n]), zl),
                torch.where(unstable, torch.minimum(zu, -values[:, n:]), zu))
    count = unstable.sum(dim=1)
    order = torch.argsort(count, stable=True)
    zl, zu = zl.clone(), zu.clone()
    width = max(w.shape[1] for w in chain.W[:k + 1])
    group = max(GROUP, GROUP_ENTRIES // max(1, int(count.float().mean()) * 2 * width))
    for first in range(0, order.numel(), group):
        sub = order[first:first + group]
        m = int(count[sub].max())
        if m == 0:
            continue
        # per point, rows for its unstable neurons (padded to the group's largest count with copies, discarded)
        idx = torch.argsort((~unstable[sub]).to(torch.int8), dim=1, stable=True)[:, :m]
        valid = torch.arange(m).unsqueeze(0) < count[sub].unsqueeze(1)
        h = [v[sub] for v in hmax]
        part = [tuple(v[sub] for v in step) for step in steps]
        pos, neg, t, extra = part[k - 1]
        rows = _through_relu(_start_rows(chain, k, h[k], idx), pos, neg, t)
        values, _ = _finish(_pull(chain, k - 1, rows, part, h, extra), input_set.select(sub))
        low = torch.where(valid, values[:, :m], -math.inf)
        high = torch.where(valid, -values[:, m:], math.inf)
        zl[sub] = zl[sub].scatter_reduce(1, idx, low, reduce="amax")
        zu[sub] = zu[sub].scatter_reduce(1, idx, high, reduce="amin")
    return zl, zu


def _chunk(chain: _Chain, input_set: InputSet, C: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower bounds (B, K) and their charges for one chunk of points (module docstring)."""
    L = len(chain.W)
    B = input_set.batch_size
    lo, hi = input_set.interval()
    lo, hi = lo.to(torch.float64), hi.to(torch.float64)
    hmax = [torch.maximum(lo.abs(), hi.abs()) * (1 + 4 * U64)]
    steps: list = []
    hl, hu = lo, hi
    for k in range(L - 1):
        zl, zu = _interval(chain, k, hl, hu)
        unstable = (zl < 0) & (zu > 0)
        if k == 0:
            # the first layer: rows ±W_0 shared by every point (for an L2 ball, its exact bounds; for a box the
            # interval bounds are already exact)
            if isinstance(input_set, L2Ball) and bool(unstable.any()):
                values, _ = _finish(_start_rows(chain, 0, hmax[0]), input_set)
                n = zl.shape[1]
                zl = torch.where(unstable, torch.maximum(zl, values[:, :n]), zl)
                zu = torch.where(unstable, torch.minimum(zu, -values[:, n:]), zu)
        else:
            zl, zu = _refine(chain, k, zl, zu, unstable, steps, hmax, input_set)
        l32, u32 = _down32(zl), _up32(zu)
        steps.append(_relu_step(l32, u32))
        hl, hu = zl.clamp(min=0), zu.clamp(min=0)
        hmax.append(hu)
    n_out = chain.W[-1].shape[0]
    if C is None:
        C = torch.eye(n_out, dtype=torch.float64)
    A = C.to(torch.float32)
    zeros = torch.zeros((), dtype=torch.float64)
    rows = _pull(chain, L - 1, _Rows(A, zeros, zeros), steps, hmax, None)
    lower, charge = _finish(rows, input_set)
    return lower.expand(B, -1), charge.expand(B, -1)


@dataclass(frozen=True)
class Float32Bounds:
    """Lower bounds (B, K) float64 and the part of each that is rounding charge (B, K): ``lower + charge`` is the
    float32 pass's value before its charges (a guess at where float64 would be, no guarantee)."""

    lower: torch.Tensor
    charge: torch.Tensor


def crown_lower_f32(net: Network, input_set: InputSet, C=None, *, max_batch: int | None = None) -> Float32Bounds:
    """Sound lower bounds (B, K) float64 of ``C f(x)`` over each point's set, computed with float32 products.

    Guarantee: for every point b and every x in set b, ``C[b] f(x) >= result[b]`` for the float64 network ``net``
    (module docstring: the charges cover every rounding of the float32 pass). CROWN's relaxation, so the bounds
    are close to :func:`~pacverify.verify.bounds.crown.crown`'s, lower by the charges (and different where the
    float32 intermediate bounds flip an adaptive slope). Where float32 overflows, an entry is −inf or NaN (never a
    claim: NaN > 0 is false); :func:`crown_mixed` recomputes such points in float64. The products run in IEEE
    float32 whatever the caller's ``torch.set_float32_matmul_precision``."""
    problem = prepare(net, input_set, C, None, None)    # the set and the rows checked against the network
    if net.dtype != torch.float64 or net.device.type != "cpu" or not supported(net, problem.C):
        raise InputError("crown_lower_f32 needs a float64 chain of dense and ReLU layers on the CPU and rows C that "
                         "float32 holds exactly (crown_f32 falls back to crown elsewhere)")
    return _float32_pass(net, problem.input_set, problem.C, max_batch)


def _float32_pass(net: Network, input_set: InputSet, C: torch.Tensor | None, max_batch: int | None) -> Float32Bounds:
    """:func:`crown_lower_f32` on a set and rows already checked (:func:`~.common.prepare`, :func:`supported`)."""
    chain = _Chain(net)
    widths = [w.shape[0] for w in chain.W[:-1]] + [C.shape[-2] if C is not None else chain.W[-1].shape[0]]
    step = max_batch or max(16, default_max_batch(net, 2 * max(widths)) * 2)
    B = input_set.batch_size

    def one(start: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.arange(start, min(B, start + step))
        part_C = None if C is None else (C[index] if C.dim() == 3 else C)
        return _chunk(chain, input_set.select(index), part_C)

    with ieee_float32_products():
        parts = chunks_side_by_side(net, range(0, B, step), one)
    return Float32Bounds(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))


def _applies(net: Network, input_set: InputSet, C) -> bool:
    """The float32 pass applies: a float64 chain on the CPU (:func:`supported`), inputs within float32's range."""
    if net.device.type != "cpu" or net.dtype != torch.float64 or not supported(net, C):
        return False
    lo, hi = input_set.interval()
    return float(torch.maximum(lo.abs(), hi.abs()).max()) <= FLOAT32_RANGE


RECHECK_CHARGES = 16.0   # crown_mixed recomputes in float64 the points with a row in (−this × its charge, 0]


def crown_mixed(net: Network, input_set: InputSet, C=None, *, max_batch: int | None = None) -> torch.Tensor:
    """CROWN's lower bounds (B, K) of ``C f(x)``: the float32 pass of :func:`crown_lower_f32` where it applies, then
    float64 CROWN (:func:`~pacverify.verify.bounds.crown.crown`) on the points it leaves undecided near zero.

    Guarantee: every entry is a sound lower bound for the float64 network (each comes from one of the two sound
    passes). A point's rows are all > 0 here whenever they are in the float32 pass, or in the float64 pass if some
    row of the float32 pass lies in ``(−RECHECK_CHARGES·charge, 0]``: points the float32 pass leaves further below
    zero are not recomputed (on the benchmark networks float64 proved none of them: benchmarks/results/verify.md).
    Falls back to float64 CROWN where the float32 pass does not apply (:func:`supported`, or a network not float64
    on the CPU)."""
    problem = prepare(net, input_set, C, None, None)
    if _applies(net, problem.input_set, problem.C):
        return _mixed(net, problem.input_set, problem.C, max_batch)
    marked = conv32.mark(net)
    if conv32.marked(marked):
        return _conv_mixed(net, marked, problem.input_set, problem.C, max_batch)
    return _float64_crown(net, input_set, C, max_batch)


def _mixed(net: Network, input_set: InputSet, C: torch.Tensor | None, max_batch: int | None) -> torch.Tensor:
    """:func:`crown_mixed` where the float32 pass applies (:func:`_applies`), on a checked set and rows."""
    fast = _float32_pass(net, input_set, C, max_batch)
    lower = fast.lower.clone()
    near = ((lower <= 0) & (lower > -RECHECK_CHARGES * fast.charge)).any(dim=1)
    near |= ~torch.isfinite(lower).all(dim=1)   # float32 overflow in the pass: float64 decides
    index = torch.nonzero(near).reshape(-1)
    if index.numel():
        part_C = None if C is None else (C[index] if C.dim() == 3 else C)
        lower[index] = _float64_crown(net, input_set.select(index), part_C, max_batch).to(lower)
    return lower


def _conv_lower(marked: Network, input_set: InputSet, C: torch.Tensor | None, max_batch: int | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """CROWN's lower bounds (B, K) of ``C f(x)`` on a network :func:`.conv32.mark` marked (its marked convolutions
    pulled back in float32), and the part of each that is the final rows' own rounding charge (B, K) (the
    intermediate rows' charges move the bounds too, through the relaxations, and are not counted)."""
    from pacverify.verify.bounds.common import spec_rows
    from pacverify.verify.bounds.crown import _crown_lower_rows

    problem = prepare(marked, input_set, C, None, None)
    step = max_batch or default_max_batch(marked, 2 * max(marked.relu_widths() + [spec_rows(marked, problem)]))

    def one(start: int) -> tuple[torch.Tensor, torch.Tensor]:
        charges: list[torch.Tensor] = []
        lower = _crown_lower_rows(marked, problem.select(slice(start, start + step)), charges=charges)[0].bounds.lower
        return lower, sum(charges, torch.zeros_like(lower)).expand_as(lower)

    with ieee_float32_products():
        parts = chunks_side_by_side(marked, range(0, problem.batch_size, step), one)
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _conv_mixed(net: Network, marked: Network, input_set: InputSet, C: torch.Tensor | None, max_batch: int | None
                ) -> torch.Tensor:
    """:func:`crown_mixed` for a network with convolutions (``marked``: it as :func:`.conv32.mark` marks it):
    :func:`_conv_lower`, then float64 CROWN on ``net`` for the points with a row in ``(−RECHECK_CHARGES·charge, 0]``
    (or not finite)."""
    lower, charge = _conv_lower(marked, input_set, C, max_batch)
    lower = lower.clone()
    near = ((lower <= 0) & (lower > -RECHECK_CHARGES * charge)).any(dim=1) | ~torch.isfinite(lower).all(dim=1)
    index = torch.nonzero(near).reshape(-1)
    if index.numel():
        part_C = None if C is None else (C[index] if C.dim() == 3 else C)
        lower[index] = _float64_crown(net, input_set.select(index), part_C, max_batch).to(lower)
    return lower


def _float64_crown(net: Network, input_set: InputSet, C, max_batch: int | None) -> torch.Tensor:
    """Float64 CROWN's lower bounds (the engine's :func:`~pacverify.verify.bounds.crown.crown`)."""
    from pacverify.verify.bounds.crown import crown

    bounds = crown(net, input_set, C, upper=False, max_batch=max_batch)
    assert isinstance(bounds, Bounds)
    return bounds.lower


def crown_f32(net: Network, input_set: InputSet, C=None, *, splits=None, intermediate=None, upper: bool = True,
              max_batch: int | None = None, return_intermediate: bool = False):
    """The bound method "crown-f32": :func:`crown_mixed`'s lower bounds (and, with ``upper``, the negated lower
    bounds of ``−C`` from a second pass, so that the lower bounds do not depend on ``upper``; without, ``+inf``), as
    :class:`~pacverify.verify.bounds.types.Bounds`.

    Guarantee: ``lower <= C f(x) <= upper`` for every x of each point's set (as
    :func:`~pacverify.verify.bounds.crown.crown`'s). With split constraints, given intermediate bounds, a request for
    the pre-activation bounds, or a network or rows the float32 pass does not handle (:func:`supported`), it is
    :func:`~pacverify.verify.bounds.crown.crown` itself, with the network's convolutions pulled back in float32
    where :func:`.conv32.mark` allows (rows charged their rounding errors: :mod:`.conv32`)."""
    from pacverify.verify.bounds.crown import crown

    problem = prepare(net, input_set, C, splits, intermediate)
    special = splits is not None or intermediate is not None or return_intermediate
    chain = not special and _applies(net, problem.input_set, problem.C)
    marked = conv32.mark(net)
    if special or not (chain or conv32.marked(marked)):
        return crown(marked, input_set, C, splits=splits, intermediate=intermediate, upper=upper,
                     max_batch=max_batch, return_intermediate=return_intermediate)

    def mixed(rows: torch.Tensor) -> torch.Tensor:
        if chain:
            return _mixed(net, problem.input_set, rows, max_batch)
        return _conv_mixed(net, marked, problem.input_set, rows, max_batch)

    rows = problem.C if problem.C is not None else torch.eye(net.out_features, dtype=torch.float64)
    lower = mixed(rows)
    high = -mixed(-rows) if upper else torch.full_like(lower, math.inf)
    return Bounds(lower, high, torch.zeros(lower.shape[0], dtype=torch.bool))
