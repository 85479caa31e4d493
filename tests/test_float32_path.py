"""The float32 CROWN path (method "crown-f32", :mod:`pacverify.verify.bounds.float32`; issue 12, goal 3).

Sound for the float64 network: sampled points never leave its bounds (hypothesis: random MLPs with weights float32
cannot hold and with weights it can, both norms, with and without a domain, margins and identity rows); the exact
range (a MILP) lies within them; networks built so that float32 rounding alone would give an unsound value
(weights float32 rounds up, a sum float32 cancels wrongly, weights that underflow to 0) stay sound only because of
the charges (the uncharged value is above the exact one, the charged bound below). Its decisions: the mixed routine
re-decides the points near zero in float64, and its verdicts equal float64 CROWN's on a network where the float32
pass alone loses some; where the pass does not apply (splits, convolutions, float32 networks) it is CROWN.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from helpers_nets import conv_model, exact_range_milp, random_mlp, sample_in_set, spec_values
from hypothesis import given, settings
from hypothesis import strategies as st

from pacverify.errors import InputError
from pacverify.network import Affine, Network, Relu
from pacverify.onnx_io import load_network
from pacverify.verify.api import verify_points
from pacverify.verify.bounds import BOUND_METHOD_NAMES, BOUND_METHODS, crown
from pacverify.verify.bounds.float32 import crown_f32, crown_lower_f32, crown_mixed, supported
from pacverify.verify.output_rows import margin_rows
from pacverify.verify.sets import perturbation_set


def _exact32(net: Network) -> Network:
    """The same network with weights and biases float32 can hold exactly."""
    return Network(tuple(Affine(layer.weight.float().double(), layer.bias.float().double())
                         if isinstance(layer, Affine) else layer for layer in net.layers), net.input_shape)


@st.composite
def problems(draw):
    seed = draw(st.integers(0, 2**20))
    widths = [draw(st.integers(1, 6))] + [draw(st.integers(1, 12)) for _ in range(draw(st.integers(0, 3)))]
    net = random_mlp(widths + [draw(st.integers(2, 5))], seed, bias_scale=draw(st.sampled_from([0.0, 0.3, 2.0])))
    if draw(st.booleans()):
        net = _exact32(net)
    batch = draw(st.integers(1, 4))
    gen = torch.Generator().manual_seed(seed)
    center = torch.rand(batch, net.in_features, generator=gen, dtype=torch.float64)
    norm = draw(st.sampled_from(["2", "inf"]))
    radius = draw(st.floats(0.001, 0.8)) * (net.in_features ** 0.5 if norm == "2" else 1.0)
    s = perturbation_set(center, radius, norm, domain=(0.0, 1.0) if draw(st.booleans()) else None)
    C = margin_rows(net(center).argmax(1), net.out_features) if draw(st.booleans()) else None
    return net, s, C, seed


@settings(max_examples=80, deadline=None)
@given(problem=problems())
def test_sampled_points_never_leave_the_float32_bounds(problem):
    net, s, C, seed = problem
    assert supported(net, C)     # the float32 pass itself is what is tested, not the float64 fallback
    fast = crown_lower_f32(net, s, C)
    bounds = crown_f32(net, s, C)
    values = spec_values(net, C, sample_in_set(s, 300, seed))
    assert (values >= fast.lower).all(), "a sampled point fell below the float32 pass's bound"
    assert (values >= bounds.lower).all() and (values <= bounds.upper).all()
    assert (fast.charge > 0).all() and torch.isfinite(fast.lower).all()


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**20), depth=st.integers(1, 2))
def test_the_exact_range_computed_by_milp_lies_within_the_float32_bounds(seed, depth):
    gen = torch.Generator().manual_seed(seed)
    net = random_mlp([3] + [6] * depth + [3], seed)
    s = perturbation_set(torch.rand(2, 3, generator=gen, dtype=torch.float64), 0.3, "inf")
    C = torch.tensor([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]], dtype=torch.float64)
    bounds = crown_f32(net, s, C)
    for b in range(2):
        for k in range(2):
            low, high = exact_range_milp(net, s.lower[b].numpy(), s.upper[b].numpy(), C[k].numpy())
            assert bounds.lower[b, k] <= low + 1e-7 and bounds.upper[b, k] >= high - 1e-7


def _point(value: float, n: int = 1):
    return perturbation_set(torch.full((1, n), value, dtype=torch.float64), 0.0, "inf")


def _check_needs_charges(net: Network, s, exact: Fraction) -> None:
    """The float32 pass's value before its charges is above ``exact`` (float32 alone would be unsound); its bound,
    after them, is not."""
    fast = crown_lower_f32(net, s, torch.tensor([[1.0]], dtype=torch.float64))
    lower, charge = float(fast.lower[0, 0]), float(fast.charge[0, 0])
    assert Fraction(lower) <= exact
    assert Fraction(lower + charge) > exact, "the example does not need the charges"


def test_weights_float32_rounds_are_charged():
    """f(x) = 2^24·((1 − 2^-30)·x − x) at x = 1 is −2^-6; float32 rounds 1 − 2^-30 to 1 and would compute 0."""
    w = torch.tensor([[2.0**24 * (1 - 2.0**-30), -(2.0**24)]], dtype=torch.float64)
    net = Network((Affine(w, torch.zeros(1, dtype=torch.float64)),), (2,))
    assert float(net(torch.ones(1, 2, dtype=torch.float64))[0, 0]) == -(2.0**-6)
    _check_needs_charges(net, _point(1.0, 2), Fraction(-1, 64))


def test_a_sum_float32_cancels_wrongly_is_charged():
    """f(x) = 2^25·h1 − h2 − 2^25·h3 with h = relu(x) = (1, 1, 1) is −1; in float32 2^25 − 1 rounds to 2^25 and
    the sum comes out 0 (whatever the order the matrix product adds in, some rounding is charged)."""
    first = Affine(torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    last = Affine(torch.tensor([[2.0**25, -1.0, -(2.0**25)]], dtype=torch.float64), torch.zeros(1, dtype=torch.float64))
    net = Network((first, Relu(), last), (3,))
    x = torch.ones(1, 3, dtype=torch.float64)
    assert float(net(x)[0, 0]) == -1.0
    s = _point(1.0, 3)
    fast = crown_lower_f32(net, s, torch.tensor([[1.0]], dtype=torch.float64))
    assert float(fast.lower[0, 0]) <= -1.0


def test_weights_that_underflow_in_float32_are_charged():
    """Weights 2^-160 are 0 in float32; f(x) = 2^-160·(1 − Σx) on [0.39, 0.49]³ has minimum −0.47·2^-160."""
    t = 2.0**-160
    net = Network((Affine(torch.full((1, 3), -t, dtype=torch.float64), torch.tensor([t], dtype=torch.float64)),),
                  (3,))
    box = perturbation_set(torch.full((1, 3), 0.44, dtype=torch.float64), 0.05, "inf")
    exact = Fraction(t) * (1 - 3 * Fraction(float(box.upper[0, 0])))
    _check_needs_charges(net, box, exact)


def test_mixed_decisions_equal_float64_crown_where_float32_alone_loses_some():
    """At this radius the float32 pass alone leaves some points float64 CROWN proves; the mixed routine re-decides
    them in float64 (the points near zero) and its verdicts are float64's."""
    net = _exact32(random_mlp([16, 48, 48, 48, 10], 3))
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(600, 16, generator=gen, dtype=torch.float64) * 30
    C = margin_rows(net(x).argmax(1), 10)
    s = perturbation_set(x, 2.0, "2")
    f64 = crown(net, s, C, upper=False).lower
    fast = crown_lower_f32(net, s, C).lower
    mixed = crown_mixed(net, s, C)
    proved64, proved32, proved = ((v > 0).all(dim=1) for v in (f64, fast, mixed))
    assert 0.2 < float(proved64.float().mean()) < 0.9
    assert bool((proved64 & ~proved32).any()), "the float32 pass alone already equals float64 here: no test"
    assert torch.equal(proved, proved64)


def test_where_the_float32_pass_does_not_apply_crown_f32_is_crown():
    gen = torch.Generator().manual_seed(0)
    conv = load_network(conv_model(1, size=4), native_conv_entries=0)   # native Conv layers
    s = perturbation_set(torch.rand(3, conv.in_features, generator=gen, dtype=torch.float64), 0.1, "inf")
    assert not supported(conv, None)   # convolutions: crown with float32 pulls (tests/test_conv32.py)
    with pytest.raises(InputError, match="float64 chain of dense and ReLU layers"):
        crown_lower_f32(conv, s)
    mlp = random_mlp([4, 8, 3], 2)
    s = perturbation_set(torch.rand(3, 4, generator=gen, dtype=torch.float64), 0.2, "2")
    splits = [torch.tensor([[1] * 8, [-1] * 8, [0] * 8], dtype=torch.int8)]
    assert torch.equal(crown_f32(mlp, s, splits=splits).lower, crown(mlp, s, splits=splits).lower)
    as32 = mlp.to(dtype=torch.float32)
    assert torch.equal(crown_f32(as32, s).lower, crown(as32, s).lower)
    inexact = torch.tensor([[0.1, -0.3, 0.7]], dtype=torch.float64)   # rows float32 cannot hold
    assert not supported(mlp, inexact)
    assert torch.equal(crown_f32(mlp, s, inexact).lower, crown(mlp, s, inexact).lower)


def test_crown_f32_is_a_bound_method_by_name_and_verify_points_agrees_with_crown():
    assert "crown-f32" in BOUND_METHOD_NAMES and BOUND_METHODS["crown-f32"] is crown_f32
    net = _exact32(random_mlp([8, 32, 32, 5], 11))
    x = np.random.default_rng(1).random((300, 8))
    a = verify_points(net, x, 0.3, "2", method="crown", attack=False)
    b = verify_points(net, x, 0.3, "2", method="crown-f32", attack=False)
    assert a.verdicts == b.verdicts
    assert 0 < b.summary()["verified"] < 300
    assert (b.lower_bounds <= a.lower_bounds + 1e-2).all()


@pytest.mark.parametrize("huge", [2.0**70, float("inf")])
def test_magnitudes_float32_cannot_hold_fall_back_to_float64(huge):
    w = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    net = Network((Affine(w, torch.zeros(1, dtype=torch.float64)),), (2,))
    if huge == float("inf"):
        s = perturbation_set(torch.full((1, 2), 2.0**70, dtype=torch.float64), 1.0, "inf")
    else:
        net = Network((Affine(w * huge, torch.zeros(1, dtype=torch.float64)),), (2,))
        s = perturbation_set(torch.full((1, 2), 0.5, dtype=torch.float64), 0.1, "inf")
        assert not supported(net, None)
    assert torch.equal(crown_f32(net, s).lower, crown(net, s).lower)


def test_the_command_line_takes_crown_f32_and_gives_crowns_verdicts(tmp_path, capsys):
    import json

    from verify_nets import network_to_onnx

    from pacverify.cli import main

    model, points = tmp_path / "net.onnx", tmp_path / "points.npy"
    network_to_onnx(_exact32(random_mlp([6, 24, 24, 4], 8)), model)
    np.save(points, np.random.default_rng(2).random((40, 6)))
    verdicts = {}
    for method in ("crown", "crown-f32"):
        out = tmp_path / f"{method}.json"
        assert main(["verify", str(model), "--points", str(points), "--radius", "0.2", "--norm", "2", "--method",
                     method, "--no-attack", "--json", str(out)]) == 0
        data = json.loads(out.read_text())
        verdicts[method] = [p["verdict"] for p in data["points"]]
    capsys.readouterr()
    assert verdicts["crown"] == verdicts["crown-f32"] and "verified" in verdicts["crown"]


def test_the_radius_search_reads_float64_crown_passes_under_either_name():
    from pacverify.verify.api import certified_radius

    net = _exact32(random_mlp([5, 16, 16, 3], 4))
    x = np.random.default_rng(3).random((20, 5))
    a = certified_radius(net, x, "2", method="crown", cap=2.0, tol=1e-3, attack=False)
    b = certified_radius(net, x, "2", method="crown-f32", cap=2.0, tol=1e-3, attack=False)
    assert np.array_equal(a.radius, b.radius) and (a.radius > 0).any()


def test_float32_products_run_in_ieee_float32_whatever_the_callers_matmul_precision(monkeypatch):
    """torch may compute float32 products in bfloat16 or TF32 under "medium"/"high" precision, whose errors the
    charges and the engine's rounding margins do not cover: every bound routine runs under "highest" and restores
    the caller's setting (the float32 pass, run_chunked's routines, crown_with_coefficients, crown_radius and
    alpha_crown_warm)."""
    import importlib

    alpha_module, crown_module, f32 = (importlib.import_module(f"pacverify.verify.bounds.{name}")
                                       for name in ("alpha", "crown", "float32"))   # not the same-named functions
    from pacverify.verify.bounds.alpha import alpha_crown_warm
    from pacverify.verify.bounds.crown import crown_radius, crown_with_coefficients

    seen: dict[str, list[str]] = {}
    for module, name in ((f32, "_chunk"), (crown_module, "_crown_lower_rows"), (crown_module, "_radius_chunk"),
                         (alpha_module, "_alpha_chunk")):
        inner = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _inner=inner, _name=name, **k: seen.setdefault(
            _name, []).append(torch.get_float32_matmul_precision()) or _inner(*a, **k))
    net = random_mlp([3, 8, 2], 1)
    x = torch.rand(4, 3, dtype=torch.float64)
    s = perturbation_set(x, 0.1, "inf")
    C = margin_rows(net(x).argmax(1), 2)
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        crown_lower_f32(net, s)
        crown(net, s, upper=False)
        crown_with_coefficients(net, s, C)
        crown_radius(net, x, torch.full((4,), 0.1, dtype=torch.float64), "inf", C)
        alpha_crown_warm(net, s, C, iterations=2)
        assert set(seen) == {"_chunk", "_crown_lower_rows", "_radius_chunk", "_alpha_chunk"}
        assert all(value == "highest" for values in seen.values() for value in values)
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(before)
