"""Rows pulled back through convolutions in float32, each charged its rounding errors (issue 13).

The transposed convolutions of CROWN's backward pass are most of its work on convolutional networks, and in float32
they run ~3× faster than in float64 on this CPU (as plain sums of products: :func:`~pacverify.network.sums_of_products`).
They stay sound for the float64 network by the Lagrangian view of :mod:`.float32`: for rows ``λ`` on the output
``z = W h + b`` of a convolution, every h with ``|h| ≤ H`` satisfies

    λ·z = μ̃·h + λ·b + (μ − μ̃)·h ≥ μ̃·h + λ·b − q,        μ = λW exactly, μ̃ = fl32(fl32(λ)·W̃),

for any ``q ≥ Σ_j |μ_j − μ̃_j|·H_j``, W̃ the float32 kernel. So the pass may carry on with ``μ̃`` (the float32 product,
widened to float64 exactly) and the constant lowered by ``q``: whatever it does later, its rows stay lower bounds.
Here h is the output of the ReLU before the convolution, so ``H = max(u, 0)`` from that ReLU's sound pre-activation
bounds ``[l, u]`` (a convolution that no ReLU precedes is pulled in float64). The convolution terms of a
:class:`~pacverify.network.Block` after a ReLU are pulled the same way, each on its slice of H; a row's charges over a
Block's terms add up (:func:`pull_block`).

The bound on ``|μ − μ̃|`` (Higham, *Accuracy and Stability of Numerical Algorithms*, Thm 3.5, for a sum of n products
in any order; u = 2^-24; η = 2^-150, half float32's smallest subnormal, for underflow; D = |W − W̃|, exact in float64;
n the most terms of one entry of the transposed convolution, :func:`terms`):

    |μ − μ̃| ≤ |λ|·(γ_{n+2}|W̃| + (1 + 2u)·D) + 2η·1ᵀ(|W̃| + D) + n·η

(from ``μ − μ̃ = (λ − λ̃)W + λ̃(W − W̃) + (λ̃W̃ − fl(λ̃W̃))`` with ``|λ − λ̃| ≤ u|λ| + η``), so that

    q = Σ_i |λ_i|·v_i + κ,   v = γ_{n+2}·(|W̃| H) + (1 + 2u)·(D H),   κ = 2η·Σ((|W̃| + D) H) + n·η·ΣH,

where ``|W̃| H`` and ``D H`` are forward convolutions of the image H (no bias). Every sum here has non-negative terms
and is computed in float64, so each is enlarged by ``1 + 2^-30`` (≥ γ_m of float64 for m < 2^22 terms).
A float32 product that overflows (an entry not finite) is recomputed in float64, uncharged.

The float64 parts of the pass keep the engine's a-priori rounding margins (:func:`~.common.rounding_margins`),
enlarged by :data:`FLOAT32_PULL_SLACK`: those margins bound each float64 operation's error by the magnitudes of the
network run with ``|W|``, which the float32 rows exceed by at most ``Π(1 + 4γ_{n+2}) ≤ FLOAT32_PULL_SLACK`` over the
marked convolutions (:func:`mark` marks no more than that).
"""
from __future__ import annotations

import dataclasses
import math

import torch

from pacverify.network import Block, Conv, Network, Relu, Term
from pacverify.verify.bounds.common import FLOAT32_PULL_SLACK, ieee_float32_products, is_marked, marked

__all__ = ["FLOAT32_PULL_SLACK", "MIN_WORK", "input_bound", "is_marked", "mark", "marked", "pull_block", "pull_rows",
           "pull_windows", "terms", "window_charge"]

U32 = 2.0 ** -24
ETA = 2.0 ** -150
SLOP64 = 1 + 2.0 ** -30
FLOAT32_RANGE = 2.0 ** 60      # kernels above this magnitude stay float64
MAX_TERMS = 2 ** 22            # sums longer than this stay float64 (SLOP64 covers float64's γ_m below it)
# products per row pulled below which a convolution stays float64 (a speed threshold, set from two measurements):
# ResNet8 at 8×8 with 4-16 channels ran 0.88x float64 with its convolutions (9,216 products each) in float32; the
# 14×14 ConvBig ran 1.17x with its three (12,544, 112,896 and 9,216), 1.22x with the first two, 0.96x with the second
# alone (benchmarks/bench_conv32.py)
MIN_WORK = 10_000


def gamma(n: int) -> float:
    """Higham's γ_n for float32."""
    return n * U32 / (1 - n * U32)


def terms(layer: Conv) -> int:
    """The most products one entry of the transposed convolution sums: C_out/groups times, per spatial axis, the kernel
    taps t that reach one input position i = o·s + t·d from some output position o — a residue class of t modulo
    s / gcd(s, d), so at most ⌈k / (s / gcd(s, d))⌉ of the k taps (k for stride 1; ⌈k/2⌉ for stride 2)."""
    c_out, _, kh, kw = layer.kernel.shape
    taps = [-(-k // (s // math.gcd(s, d))) for k, s, d in zip((kh, kw), layer.stride, layer.dilation, strict=True)]
    return c_out // layer.groups * taps[0] * taps[1]


def mark(net: Network, min_work: int | None = None) -> Network:
    """The same network with its convolutions marked for float32 pulls (``Conv.float32_products``) where the charges
    above apply: a float64 network on the CPU, a convolution (or a :class:`Block`'s convolution terms) right after a
    ReLU, a finite kernel within float32's range, sums of fewer than :data:`MAX_TERMS` terms, and the margins' slack
    not exceeded; and where float32 pays: at least ``min_work`` (default :data:`MIN_WORK`) products per row pulled
    (out_features × :func:`terms`; below it the charges' few extra calls cost more than float32 saves). The network
    computes the same function; only the bound routines read the mark."""
    if net.dtype != torch.float64 or net.device.type != "cpu":
        return net
    least = MIN_WORK if min_work is None else min_work
    growth = 1.0

    def marked_conv(op):
        nonlocal growth
        if not isinstance(op, Conv):
            return op
        n = terms(op)
        step = 1 + 4 * gamma(n + 2)
        if n * op.out_features < least or max(n + 2, op.in_features, op.out_features) >= MAX_TERMS \
                or growth * step > FLOAT32_PULL_SLACK or not bool(torch.isfinite(op.kernel).all()) \
                or float(op.kernel.abs().max()) > FLOAT32_RANGE:
            return op
        growth *= step
        return dataclasses.replace(op, float32_products=True)

    layers = list(net.layers)
    for i, layer in enumerate(layers):
        if i == 0 or not isinstance(layers[i - 1], Relu):
            continue
        if isinstance(layer, Conv):
            layers[i] = marked_conv(layer)
        elif isinstance(layer, Block):
            layers[i] = Block(tuple(tuple(Term(t.start, marked_conv(t.op)) for t in part) for part in layer.parts),
                              layer.bias, layer.in_features)
    if growth == 1.0:
        return net
    return dataclasses.replace(net, layers=tuple(layers))


def _prepare(layer: Conv, H: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """W̃ (the float32 kernel), v (B, out_features) and κ (B,) of the module docstring for input bounds H
    (B, in_features); None when H is not finite (no charge can be computed: the caller pulls in float64)."""
    if not bool(torch.isfinite(H).all()):
        return None
    kernel32 = layer.kernel.to(torch.float32)
    wide = kernel32.to(torch.float64)
    abs32, D = wide.abs(), (layer.kernel - wide).abs()      # |W̃| and D = |W − W̃|, exact in float64
    n = terms(layer)
    big, small = layer.linear(H, abs32), layer.linear(H, D)
    v = (gamma(n + 2) * big + (1 + 2 * U32) * small) * SLOP64
    kappa = (2 * ETA * (big + small).sum(-1) + n * ETA * H.sum(-1)) * SLOP64
    if not (bool(torch.isfinite(v).all()) and bool(torch.isfinite(kappa).all())):
        return None
    return kernel32, v, kappa


def _finite32(out: torch.Tensor) -> torch.Tensor | None:
    """``out`` in float64, or None when an entry may not be finite: the float32 sum of its entries is then inf or NaN
    (a sum that overflows with every entry finite also gives None: a float64 pull more than needed, never less)."""
    return out.to(torch.float64) if bool(torch.isfinite(out.sum())) else None


def pull_rows(layer: Conv, A: torch.Tensor, H: torch.Tensor, owner: torch.Tensor | None
              ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(μ̃, q)`` for rows ``A`` on the convolution's output: shared (K, out), dense (B, K, out), or sparse (T, out)
    with ``owner`` (T,); ``H`` (B, in_features) bounds ``|h|`` of each point's input. ``μ̃`` is the float32 product
    ``A W`` in float64, ``q`` the charge of each row ((B, K) for shared and dense rows, (T,) for sparse ones); the
    rows ``μ̃`` with constants lowered by ``q`` lower-bound the rows ``A`` on the output (module docstring).
    None when float32 cannot be used here (the caller pulls in float64)."""
    prepared = _prepare(layer, H)
    if prepared is None:
        return None
    kernel32, v, kappa = prepared
    with ieee_float32_products():      # Conv.pull runs as sums of products (network.sums_of_products)
        pulled = _finite32(layer.pull(A.to(torch.float32), kernel32))
    if pulled is None:
        return None
    size = A.abs()
    if owner is not None:
        q = (size @ v[0] if v.shape[0] == 1 else (size * v.index_select(0, owner)).sum(-1)) * SLOP64 \
            + kappa.index_select(0, owner)
    elif A.dim() == 2:
        q = (v @ size.T) * SLOP64 + kappa[:, None]
    else:
        q = torch.einsum("bkn,bn->bk", size, v) * SLOP64 + kappa[:, None]
    return pulled, q


def pull_windows(layer: Conv, A: torch.Tensor, H: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """For rows kept as windows (patches: ``A`` (T, C_out, P, Q) on the output grid, zero outside it): the float32
    transposed convolution of each window (as :meth:`Conv.pull_window`), ``v`` as an image (B, C_out, H_out, W_out)
    and ``κ`` (B,) — the caller reads ``v`` in each row's window and takes :func:`window_charge`. None when float32
    cannot be used here."""
    prepared = _prepare(layer, H)
    if prepared is None:
        return None
    kernel32, v, kappa = prepared
    with ieee_float32_products():
        pulled = _finite32(layer.pull_window(A.to(torch.float32), kernel32))
    if pulled is None:
        return None
    return pulled, v.reshape(-1, *layer.out_shape), kappa


def window_charge(A: torch.Tensor, v_window: torch.Tensor, kappa: torch.Tensor) -> torch.Tensor:
    """Each window row's charge (T,): ``Σ |A|·v`` over its window (``v_window``: v read there, zero outside the
    grid, as A is) plus its point's ``κ``."""
    return (A.abs() * v_window).sum(dim=(1, 2, 3)) * SLOP64 + kappa


def input_bound(layers: list, position: int, relaxations: list, k: int) -> torch.Tensor | None:
    """``H`` (B, in_features) for the marked convolution ``layers[position]`` whose input is the ReLU whose relaxation
    is ``relaxations[k − 1]`` (``k`` ReLUs before it): ``max(u, 0)``; None when the layer is not marked or no ReLU
    comes right before it."""
    if not is_marked(layers[position]) or position == 0 or k == 0 or not isinstance(layers[position - 1], Relu):
        return None
    return relaxations[k - 1].upper.clamp(min=0)


def pull_block(block: Block, A: torch.Tensor, H: torch.Tensor, owner: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(A W, q)`` for a Block whose convolution terms are marked, rows as for :func:`pull_rows`: each marked term's
    rows pulled in float32 and charged (:func:`pull_rows` on the term's slice of ``H``; the charges of a row add up,
    its terms being maps of its rows λ_p on the part they feed), the other terms as :meth:`Block.pull`; ``q`` None
    when no term could be pulled in float32."""
    out = A.new_zeros(*A.shape[:-1], block.in_features)
    q: torch.Tensor | None = None
    for part, rows in zip(block.parts, A.split(block.widths, dim=-1), strict=True):
        for term in part:
            op = term.op
            charged = pull_rows(op, rows, H[:, term.start:term.stop], owner) \
                if isinstance(op, Conv) and op.float32_products else None
            if charged is None:
                out[..., term.start:term.stop] += op.pull(rows)
            else:
                out[..., term.start:term.stop] += charged[0]
                q = charged[1] if q is None else q + charged[1]
    return out, q
