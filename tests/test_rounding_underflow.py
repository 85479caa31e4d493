"""Rounding margins under underflow (issue 10 §8): with weights near the smallest subnormal every
product of the bound computation underflows, so the relative error model alone (γ_n times the sum
of absolute terms) is not enough — the margins carry an absolute term as well.

The audit's network: two logits ``z0 = t − t·(x1 + x2 + x3)`` and ``z1 = 0`` with ``t`` the smallest
subnormal of the dtype, on the box ``[0.39, 0.49]³``. Every product ``t·x`` rounds to 0, so the
computed bounds of the margin ``z0 − z1`` are ``t`` (> 0), while its exact minimum is
``t·(1 − 3·0.49) = −0.47·t`` (−6.6e-46 in float32). Sound bounds must not exceed that, and
``verify_points`` must not call the point VERIFIED. Underflow also hits L2 balls: a row norm whose
squares underflow is computed as 0, dropping the ``r·‖a‖₂`` term. A hypothesis test then checks, on
random networks whose layers are scaled by 2^-k into that range, that sampled points never leave the
bounds, for both norms.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from helpers_nets import random_mlp, sample_in_set
from hypothesis import given, settings
from hypothesis import strategies as st

from pacverify.network import Affine, Network, Relu
from pacverify.verify.api import verify_points
from pacverify.verify.bounds import alpha_crown, crown, crown_f32, ibp
from pacverify.verify.result import PointVerdict
from pacverify.verify.sets import perturbation_set

METHODS = {"ibp": ibp, "crown": crown, "alpha": lambda *a, **k: alpha_crown(*a, iterations=4, **k),
           "crown-f32": crown_f32}
DTYPES = [torch.float32, torch.float64]
CENTER, RADIUS, N_IN = 0.44, 0.05, 3


def _smallest_subnormal(dtype: torch.dtype) -> float:
    info = torch.finfo(dtype)
    return info.smallest_normal * info.eps    # 2^-149 (float32), 2^-1074 (float64)


def _audit_net(dtype: torch.dtype, hidden: bool) -> Network:
    """``z0 = t − t·Σx``, ``z1 = 0`` (optionally behind an identity layer and a ReLU, active on the box)."""
    t = _smallest_subnormal(dtype)
    last = Affine(torch.tensor([[-t] * N_IN, [0.0] * N_IN], dtype=dtype), torch.tensor([t, 0.0], dtype=dtype))
    if not hidden:
        return Network((last,), (N_IN,))
    first = Affine(torch.eye(N_IN, dtype=dtype), torch.zeros(N_IN, dtype=dtype))
    return Network((first, Relu(), last), (N_IN,))


def _exact_min_margin(net: Network, lower: list[float], upper: list[float]) -> Fraction:
    """The exact minimum of ``z0 − z1`` over the box, in rationals (the margin is affine on the box)."""
    W, b = net.layers[-1].weight.double().tolist(), net.layers[-1].bias.double().tolist()
    row = [Fraction(w0) - Fraction(w1) for w0, w1 in zip(W[0], W[1], strict=True)]
    worst = (a * Fraction(lo) if a >= 0 else a * Fraction(hi) for a, lo, hi in zip(row, lower, upper, strict=True))
    return Fraction(b[0]) - Fraction(b[1]) + sum(worst, Fraction(0))


@pytest.mark.parametrize("hidden", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_bounds_of_an_underflowing_margin_stay_below_its_exact_minimum(dtype, hidden):
    net = _audit_net(dtype, hidden)
    x0 = torch.full((1, N_IN), CENTER, dtype=torch.float64)
    box = perturbation_set(x0, RADIUS, "inf")
    exact = _exact_min_margin(net, box.lower[0].tolist(), box.upper[0].tolist())
    t = _smallest_subnormal(dtype)
    assert exact < 0 and math.isclose(exact / Fraction(t), -0.47, rel_tol=1e-9)   # −6.6e-46 in float32
    C = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    for name, method in METHODS.items():
        lower = method(net, box, C).lower
        assert lower.dtype == dtype
        assert Fraction(float(lower[0, 0])) <= exact, f"{name}: lower bound {float(lower[0, 0])!r} > {float(exact)!r}"


@pytest.mark.parametrize("attack", [False, True])
@pytest.mark.parametrize("method", ["ibp", "crown", "alpha-crown", "crown-f32"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_verify_points_does_not_verify_an_underflowing_margin(dtype, method, attack):
    """Before the fix: VERIFIED in both dtypes without the attack, and in float64 even with it (the
    attack's float64 check cannot see a margin of −0.47·2^-1074 either)."""
    net = _audit_net(dtype, hidden=True)
    x0 = torch.full((1, N_IN), CENTER, dtype=torch.float64)
    result = verify_points(net, x0, RADIUS, "inf", labels=[0], method=method, attack=attack)
    assert result.verdicts[0] is not PointVerdict.VERIFIED
    assert not float(result.lower_bounds[0, 0]) > 0.0


@pytest.mark.parametrize("dtype, exponent", [(torch.float32, -80), (torch.float64, -540)])
def test_l2_bounds_cover_row_norms_whose_squares_underflow(dtype, exponent):
    """``‖a‖₂`` of a row with entries 2^-80 (float32) or 2^-540 (float64) is computed as 0 (every square
    underflows), which drops the ``r·‖a‖₂`` of an L2 ball's lower bound: ``t·Σx`` over the ball of radius
    0.1 around (0.5, 0.5, 0.5) has minimum t·(1.5 − 0.1·√3) < t·1.3268, not t·1.5."""
    t = 2.0 ** exponent
    net = Network((Affine(torch.tensor([[t] * N_IN, [0.0] * N_IN], dtype=dtype), torch.zeros(2, dtype=dtype)),),
                  (N_IN,))
    ball = perturbation_set(torch.full((1, N_IN), 0.5, dtype=torch.float64), 0.1, "2")
    above_exact = Fraction(t) * Fraction(13268, 10000)         # 1.5 − 0.1·√3 = 1.32679... < 1.3268
    C = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    for name, method in METHODS.items():
        lower = method(net, ball, C).lower
        assert Fraction(float(lower[0, 0])) < above_exact, f"{name}: {float(lower[0, 0]) / t!r}·t"


# --- random networks scaled into the subnormal range -------------------------------------------------

# 2^-k with k from where squares underflow (an L2 ball's row norms) down to the smallest subnormal
# (products of weights and O(1) activations land in the subnormal range or underflow to 0)
EXPONENTS = {torch.float32: (70, 152), torch.float64: (530, 1077)}


def _ldexp(x: torch.Tensor, exponent: int) -> torch.Tensor:
    """``x · 2^exponent`` (float64), exact unless the result leaves the range (C ``ldexp``; torch.ldexp
    computes 2^exponent first, which underflows or overflows for these exponents)."""
    with np.errstate(over="ignore"):   # loose bounds of deeply scaled networks overflow to ±inf: still sound
        return torch.from_numpy(np.ldexp(x.detach().double().numpy(), exponent))


@st.composite
def tiny_problems(draw):
    seed = draw(st.integers(0, 2**20))
    dtype = draw(st.sampled_from(DTYPES))
    widths = [draw(st.integers(1, 4))] + [draw(st.integers(1, 6)) for _ in range(draw(st.integers(0, 2)))]
    base = random_mlp(widths + [draw(st.integers(2, 3))], seed)
    low, high = EXPONENTS[dtype]
    # per affine layer: 2^-k (tiny) or 1; the bias of layer i is scaled by the product of the factors of
    # layers 1..i, so the scaled network is 2^-K times the base one (ReLU is positively homogeneous)
    shifts = [draw(st.integers(low, high)) if draw(st.booleans()) else 0 for _ in base.affine_layers()]
    if not any(shifts):
        shifts[draw(st.integers(0, len(shifts) - 1))] = draw(st.integers(low, high))
    layers, scaled, total, i = [], [], 0, 0
    for layer in base.layers:
        if isinstance(layer, Affine):
            total += shifts[i]
            weight = _ldexp(layer.weight, -shifts[i]).to(dtype)      # rounded: these are the real weights
            bias = _ldexp(layer.bias, -total).to(dtype)
            layers.append(Affine(weight, bias))
            # the same network scaled back up by exact powers of two, in float64: no underflow left
            scaled.append(Affine(_ldexp(weight.double(), shifts[i]), _ldexp(bias.double(), total)))
            i += 1
        else:
            layers.append(layer)
            scaled.append(layer)
    net = Network(tuple(layers), base.input_shape)
    reference = Network(tuple(scaled), base.input_shape)
    batch = draw(st.integers(1, 3))
    gen = torch.Generator().manual_seed(seed)
    center = torch.rand(batch, net.in_features, generator=gen, dtype=torch.float64)
    norm = draw(st.sampled_from(["2", "inf"]))
    radius = draw(st.floats(0.01, 0.6)) * (net.in_features ** 0.5 if norm == "2" else 1.0)
    s = perturbation_set(center, radius, norm, domain=(0.0, 1.0) if draw(st.booleans()) else None)
    C = None if draw(st.booleans()) else torch.randn(2, net.out_features, generator=gen, dtype=torch.float64)
    return net, reference, total, s, C, seed


@settings(max_examples=60, deadline=None)
@given(problem=tiny_problems())
def test_sampled_points_never_leave_the_bounds_of_tiny_networks(problem):
    """f(x) = 2^-K·g(x) exactly, g the rescaled network: g(x) in 2^K·[lower, upper] (exact scalings)."""
    net, reference, total, s, C, seed = problem
    points = sample_in_set(s, 200, seed)
    with torch.no_grad():
        logits = reference(points.reshape(-1, points.shape[-1])).reshape(points.shape[0], points.shape[1], -1)
    values = logits if C is None else logits @ C.T
    for name, method in METHODS.items():
        bounds = method(net, s, C)
        lower, upper = _ldexp(bounds.lower.double(), total), _ldexp(bounds.upper.double(), total)
        assert ((values >= lower) & (values <= upper)).all(), f"{name}: a sampled point left the bounds"
