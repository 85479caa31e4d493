"""Soundness by sampling: no point inside the input set (corners, surface, interior) ever leaves the
bounds of IBP, CROWN or α-CROWN — random MLPs and conv nets, both norms, with and without a domain
box, with and without split constraints, float64 and float32 networks — and the bounds nest. For small
networks on boxes, the exact range (a MILP) lies within the bounds too."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
import torch
from helpers_nets import (
    exact_range_milp,
    pre_activations,
    random_conv_net,
    random_mlp,
    sample_in_set,
    satisfies,
    spec_values,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from pacverify.errors import InputError
from pacverify.network import Affine, Network
from pacverify.verify.bounds import alpha_crown, crown, crown_ibp, ibp
from pacverify.verify.bounds.alpha import Multipliers, alpha_crown_warm
from pacverify.verify.output_rows import margin_rows
from pacverify.verify.sets import perturbation_set

METHODS = {"ibp": ibp, "crown-ibp": crown_ibp, "crown": crown,
           "alpha": lambda *a, **k: alpha_crown(*a, iterations=4, **k)}


@lru_cache(maxsize=8)
def _conv(seed: int):
    return random_conv_net(seed, size=4)


@st.composite
def problems(draw):
    seed = draw(st.integers(0, 2**20))
    if draw(st.integers(0, 4)) == 0:
        net = _conv(seed % 3)
    else:
        widths = [draw(st.integers(1, 5))] + [draw(st.integers(1, 10)) for _ in range(draw(st.integers(0, 3)))]
        net = random_mlp(widths + [draw(st.integers(2, 4))], seed, final_relu=draw(st.integers(0, 5)) == 0)
    if draw(st.booleans()) and draw(st.booleans()):
        net = net.to(dtype=torch.float32)
    batch = draw(st.integers(1, 3))
    gen = torch.Generator().manual_seed(seed)
    center = torch.rand(batch, net.in_features, generator=gen, dtype=torch.float64)
    norm = draw(st.sampled_from(["2", "inf"]))
    radius = draw(st.floats(0.01, 0.6)) * (net.in_features ** 0.5 if norm == "2" else 1.0)
    s = perturbation_set(center, radius, norm, domain=(0.0, 1.0) if draw(st.booleans()) else None)
    spec = draw(st.sampled_from(["margin", "logits", "random"]))
    n_out = net.out_features
    C = (margin_rows(net.to(dtype=torch.float64)(center).argmax(1), n_out) if spec == "margin" and n_out > 1
         else torch.randn(2, n_out, generator=gen, dtype=torch.float64) if spec == "random" else None)
    splits = None
    if draw(st.booleans()):
        # half the constraints copy a real point's activation pattern, the rest are random (maybe empty)
        witness = pre_activations(net.to(dtype=torch.float64), sample_in_set(s, 2, seed)[1])
        splits = []
        for z in witness:
            chosen = torch.rand(z.shape, generator=gen) < 0.3
            pattern = torch.where(z >= 0, 1, -1).to(torch.int8)
            if draw(st.booleans()):
                pattern = torch.where(torch.rand(z.shape, generator=gen) < 0.5, pattern, -pattern)
            splits.append(torch.where(chosen, pattern, torch.zeros_like(pattern)))
    return net, s, C, splits, seed


def _check_sound(net, s, C, splits, seed, bounds):
    exact = net.to(dtype=torch.float64)
    points = sample_in_set(s, 200, seed)
    values = spec_values(exact, C, points)
    ok = satisfies(pre_activations(exact, points), splits)
    inside = (values >= bounds.lower) & (values <= bounds.upper)
    assert (inside.all(dim=-1) | ~ok).all(), "a sampled point left the bounds"
    # an empty subdomain is only claimed when no sampled point meets the constraints
    assert not (ok & bounds.infeasible).any()


@settings(max_examples=60, deadline=None)
@given(problem=problems())
def test_sampled_points_never_leave_the_bounds(problem):
    net, s, C, splits, seed = problem
    results = {name: method(net, s, C, splits=splits) for name, method in METHODS.items()}
    for bounds in results.values():
        _check_sound(net, s, C, splits, seed, bounds)
    # nesting: IBP ⊇ CROWN ⊇ α-CROWN, IBP ⊇ CROWN-IBP (up to float round-off in the interval arithmetic)
    tol = 1e-9 if net.dtype == torch.float64 else 1e-4
    scale = 1 + results["ibp"].upper.abs().clamp(max=1e6) + results["ibp"].lower.abs().clamp(max=1e6)
    finite = ~results["ibp"].infeasible[:, None]
    for name in ("crown", "crown-ibp"):
        assert ((results[name].lower >= results["ibp"].lower - tol * scale) | ~finite).all()
        assert ((results[name].upper <= results["ibp"].upper + tol * scale) | ~finite).all()
    assert (results["alpha"].lower >= results["crown"].lower).all()
    assert torch.equal(results["alpha"].upper, results["crown"].upper)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**20), norm=st.sampled_from(["2", "inf"]))
def test_pre_activation_bounds_contain_sampled_pre_activations(seed, norm):
    net = random_mlp([4, 8, 8, 3], seed)
    center = torch.rand(3, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    s = perturbation_set(center, 0.3, norm)
    points = sample_in_set(s, 200, seed)
    pre = pre_activations(net, points)
    for method in METHODS.values():
        result = method(net, s, return_intermediate=True)
        for z, (lower, upper) in zip(pre, result.pre_activation, strict=True):
            assert (z >= lower).all() and (z <= upper).all()


@settings(max_examples=20, deadline=None)
@given(problem=problems())
def test_beta_crown_with_large_multipliers_stays_sound(problem):
    net, s, C, splits, seed = problem
    if splits is None:  # this test is about split constraints: always use some
        witness = pre_activations(net.to(dtype=torch.float64), sample_in_set(s, 2, seed)[1])
        splits = [torch.where(torch.rand(z.shape, generator=torch.Generator().manual_seed(seed)) < 0.4,
                              torch.where(z >= 0, 1, -1), 0).to(torch.int8) for z in witness]
    bounds = alpha_crown(net, s, C, splits=splits, iterations=8, lr=0.5, lr_beta=1.0)
    _check_sound(net, s, C, splits, seed, bounds)


@settings(max_examples=30, deadline=None)
@given(problem=problems())
def test_warm_started_alpha_crown_is_sound_from_any_start(problem):
    """Branch and bound hands a parent's α and β to its children; any start (even outside [0, 1] and
    β < 0, which the routine must clip) gives sound bounds at least as tight as CROWN's, and the
    multipliers it returns are feasible and shaped (B, K, width)."""
    net, s, C, splits, seed = problem
    if C is None:
        C = torch.eye(net.out_features, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    rows, widths = C.shape[-2], net.relu_widths()
    subset = [torch.nonzero(torch.rand(w, generator=gen) < 0.6).reshape(-1) for w in widths]
    for neurons in (None, subset):
        columns = widths if neurons is None else [len(idx) for idx in neurons]
        start = Multipliers(
            [torch.rand(s.batch_size, rows, n, generator=gen, dtype=torch.float64) * 3 - 1 for n in columns],
            [torch.randn(s.batch_size, rows, n, generator=gen, dtype=torch.float64) * 3 for n in columns])
        for warm, ascent in ((None, None), (start, None), (start, torch.float32)):
            result, ended = alpha_crown_warm(net, s, C, splits=splits, start=warm, neurons=neurons, iterations=4,
                                             lr=0.5, lr_beta=1.0, ascent_dtype=ascent)
            _check_sound(net, s, C, splits, seed, result.bounds)
            reference = crown(net, s, C, splits=splits, upper=False).lower
            tol = (1e-9 if net.dtype == torch.float64 else 1e-4) * (1 + reference.abs().clamp(max=1e6))
            assert ((result.bounds.lower >= reference - tol) | result.bounds.infeasible[:, None]).all()
            for a, b, n in zip(ended.alphas, ended.betas, columns, strict=True):
                assert a.shape == b.shape == (s.batch_size, rows, n)
                assert ((a >= 0) & (a <= 1)).all() and (b >= 0).all()
        if widths:      # a start of the wrong shape is refused with a clear error
            wrong = Multipliers([a.new_zeros(a.shape[0] + 1, *a.shape[1:]) for a in start.alphas], start.betas)
            with pytest.raises(InputError, match="start must hold"):
                alpha_crown_warm(net, s, C, splits=splits, start=wrong, neurons=neurons, iterations=1)


def test_a_float32_ascent_that_overflows_still_gives_sound_bounds_at_least_crowns():
    """Weights scaled so that the float32 copy overflows (values past 3.4e38) while float64 does not: the ascent's
    steps are then meaningless, but the bound, computed in float64, stays sound and at least CROWN's, and the
    multipliers handed on stay feasible."""
    base = random_mlp([3, 8, 8, 2], 5)
    scale = 1e14     # three layers: outputs ~1e42 in float64, inf in float32
    net = Network(tuple(Affine(layer.weight * scale, layer.bias * scale) if isinstance(layer, Affine) else layer
                        for layer in base.layers), base.input_shape)
    centre = torch.rand(2, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    s = perturbation_set(centre, 0.3, "inf")
    C = torch.tensor([[1.0, -1.0]], dtype=torch.float64).expand(2, -1, -1)
    splits = [torch.zeros(2, w, dtype=torch.int8) for w in net.relu_widths()]
    splits[0][:, 0] = 1
    result, ended = alpha_crown_warm(net, s, C, splits=splits, iterations=3, ascent_dtype=torch.float32)
    _check_sound(net, s, C, splits, 1, result.bounds)
    reference = crown(net, s, C, splits=splits, upper=False).lower
    assert torch.isfinite(result.bounds.lower).all()
    assert (result.bounds.lower >= reference).all()
    for a, b in zip(ended.alphas, ended.betas, strict=True):
        assert torch.isfinite(a).all() and torch.isfinite(b).all()
        assert ((a >= 0) & (a <= 1)).all() and (b >= 0).all()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**20), depth=st.integers(1, 2), use_splits=st.booleans())
def test_bounds_contain_the_exact_range_computed_by_milp(seed, depth, use_splits):
    """The exact min and max of each specification row over a box (a MILP), not just samples, lie within
    the bounds; under splits, a subdomain flagged empty has no input according to the MILP either."""
    gen = torch.Generator().manual_seed(seed)
    net = random_mlp([3] + [6] * depth + [3], seed)
    centre = torch.rand(2, 3, generator=gen, dtype=torch.float64)
    s = perturbation_set(centre, 0.3, "inf")
    C = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    splits = None
    if use_splits:
        splits = [torch.randint(-1, 2, (2, w), generator=gen).to(torch.int8) *
                  (torch.rand(2, w, generator=gen) < 0.3) for w in net.relu_widths()]
    for method in METHODS.values():
        bounds = method(net, s, C, splits=splits)
        for b in range(2):
            for k in range(2):
                split = None if splits is None else [t[b].numpy() for t in splits]
                exact = exact_range_milp(net, s.lower[b].numpy(), s.upper[b].numpy(), C[k].numpy(), split)
                if exact is None:
                    continue  # an empty subdomain: any bound holds
                assert not bool(bounds.infeasible[b]), "a subdomain with inputs was flagged empty"
                assert bounds.lower[b, k] <= exact[0] + 1e-7 and bounds.upper[b, k] >= exact[1] - 1e-7


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**20))
def test_the_milp_reference_finds_the_true_range_of_one_input_networks(seed):
    net = random_mlp([1, 6, 6, 2], seed)
    grid = torch.linspace(-0.5, 0.7, 20001, dtype=torch.float64)[:, None]
    c = torch.tensor([1.0, -1.0], dtype=torch.float64)
    values = net(grid) @ c
    exact = exact_range_milp(net, np.array([-0.5]), np.array([0.7]), c.numpy())
    assert abs(exact[0] - float(values.min())) < 1e-3 and abs(exact[1] - float(values.max())) < 1e-3
    assert exact[0] <= float(values.min()) + 1e-9 and exact[1] >= float(values.max()) - 1e-9


@settings(max_examples=30, deadline=None)
@given(problem=problems())
def test_crown_ibp_is_crowns_final_pass_over_the_interval_bounds(problem):
    """CROWN-IBP (Zhang et al. 2020) pulls back C's rows alone: its pre-activation bounds are IBP's, bit for bit, and
    its bounds are CROWN's when CROWN is handed those interval bounds as its intermediate bounds."""
    net, s, C, splits, seed = problem
    interval = ibp(net, s, C, splits=splits, return_intermediate=True)
    result = crown_ibp(net, s, C, splits=splits, return_intermediate=True)
    for (a, b), (c, d) in zip(interval.pre_activation, result.pre_activation, strict=True):
        assert torch.equal(a, c) and torch.equal(b, d)
    given_ = crown(net, s, C, splits=splits, intermediate=interval.pre_activation)
    torch.testing.assert_close(result.bounds.lower, given_.lower, rtol=0, atol=0)
    torch.testing.assert_close(result.bounds.upper, given_.upper, rtol=0, atol=0)
