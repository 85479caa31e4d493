"""Exact values: closed-form dual-norm bounds of linear networks, a hand-computed 2-2-1 network,
agreement with an unbatched reference CROWN, chunking invariance, split semantics, argument checks."""
from __future__ import annotations

import importlib
import math
import threading
from functools import partial

import numpy as np
import pytest
import torch
from helpers_nets import crown_reference, random_conv_net, random_mlp, torch_threads

from pacverify.errors import InputError
from pacverify.network import Affine, Network, Relu
from pacverify.verify.bounds import alpha_crown, crown, ibp
from pacverify.verify.bounds.common import chunk_workers, chunks_side_by_side
from pacverify.verify.bounds.crown import crown_radius
from pacverify.verify.output_rows import margin_rows
from pacverify.verify.sets import l2_ball, linf_ball, perturbation_set

METHODS = [ibp, crown, alpha_crown]
F64 = torch.float64


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("norm", ["2", "inf"])
def test_linear_network_bounds_are_the_dual_norm_values(method, norm):
    gen = torch.Generator().manual_seed(3)
    W, b = torch.randn(4, 6, generator=gen, dtype=F64), torch.randn(4, generator=gen, dtype=F64)
    net = Network((Affine(W, b),), (6,))
    x0 = torch.randn(5, 6, generator=gen, dtype=F64)
    r = torch.rand(5, generator=gen, dtype=F64)
    C = torch.randn(3, 4, generator=gen, dtype=F64)
    bounds = method(net, perturbation_set(x0, r, norm), C)
    c = C @ W  # rows c_k: C f(x) = c·x + C b
    centre = x0 @ c.T + C @ b
    dual = c.norm(dim=1) if norm == "2" else c.abs().sum(dim=1)  # ‖c‖₂ for L2 balls, ‖c‖₁ for L∞ balls
    assert torch.allclose(bounds.lower, centre - r[:, None] * dual, atol=1e-10)
    assert torch.allclose(bounds.upper, centre + r[:, None] * dual, atol=1e-10)


@pytest.mark.parametrize("method", [crown, alpha_crown])
def test_crown_is_exact_on_deep_linear_and_stably_active_networks(method):
    gen = torch.Generator().manual_seed(4)
    W1, W2 = torch.randn(5, 3, generator=gen, dtype=F64), torch.randn(2, 5, generator=gen, dtype=F64)
    b1 = torch.full((5,), 100.0, dtype=F64)  # every ReLU stays active on the ball: the network is linear there
    net = Network((Affine(W1, b1), Relu(), Affine(W2, torch.zeros(2, dtype=F64))), (3,))
    x0 = torch.randn(2, 3, generator=gen, dtype=F64)
    bounds = method(net, l2_ball(x0, 0.5))
    c = W2 @ W1
    centre = x0 @ c.T + W2 @ b1
    assert torch.allclose(bounds.lower, centre - 0.5 * c.norm(dim=1), atol=1e-9)
    assert torch.allclose(bounds.upper, centre + 0.5 * c.norm(dim=1), atol=1e-9)


def _two_two_one() -> Network:
    """h = (x1 + x2, x1 − x2), y = relu(h1) + relu(h2)."""
    W1 = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=F64)
    W2 = torch.tensor([[1.0, 1.0]], dtype=F64)
    return Network((Affine(W1, torch.zeros(2, dtype=F64)), Relu(), Affine(W2, torch.zeros(1, dtype=F64))), (2,))


def test_hand_computed_two_two_one_network():
    net = _two_two_one()
    # L∞ ball of radius 1 at 0: h_i in [−2, 2]; IBP: y in [0, 4].
    # CROWN upper: chord s = 1/2, intercept 1 → y <= (h1 + h2)/2 + 2 = x1 + 2 <= 3;
    # CROWN lower: slopes α = 1 (u >= −l) → y >= h1 + h2 = 2 x1 >= −2, intersected with IBP's 0. True range [0, 2].
    box = linf_ball(torch.zeros(1, 2, dtype=F64), 1.0)
    assert ibp(net, box).lower.item() == pytest.approx(0.0) and ibp(net, box).upper.item() == pytest.approx(4.0)
    assert crown(net, box).lower.item() == pytest.approx(0.0) and crown(net, box).upper.item() == pytest.approx(3.0)
    # L2 ball of radius 1: h_i in [−√2, √2]; IBP upper 2√2; CROWN upper x1 + √2 <= 1 + √2.
    ball = l2_ball(torch.zeros(1, 2, dtype=F64), 1.0)
    assert ibp(net, ball).upper.item() == pytest.approx(2 * math.sqrt(2))
    assert crown(net, ball).upper.item() == pytest.approx(1 + math.sqrt(2))
    pre = crown(net, ball, return_intermediate=True).pre_activation[0]
    assert pre[0].tolist()[0] == pytest.approx([-math.sqrt(2)] * 2) and pre[1].tolist()[0] == pytest.approx(
        [math.sqrt(2)] * 2)


def test_hand_computed_splits_and_empty_subdomains():
    net = _two_two_one()
    box = linf_ball(torch.zeros(1, 2, dtype=F64), 1.0)
    # h1 >= 0 and h2 <= 0: y = h1 = x1 + x2 on that part of the box, whose range there is [0, 2]
    split = [torch.tensor([[1, -1]], dtype=torch.int8)]
    b = crown(net, box, splits=split, return_intermediate=True)
    assert b.bounds.lower.item() == pytest.approx(0.0) and b.bounds.upper.item() == pytest.approx(2.0)
    (lower, upper), = b.pre_activation
    assert lower.tolist()[0] == pytest.approx([0.0, -2.0]) and upper.tolist()[0] == pytest.approx([2.0, 0.0])
    # the box x in [1, 2]^2 has h1 >= 2: forcing h1 <= 0 empties the subdomain
    far = linf_ball(torch.full((1, 2), 1.5, dtype=F64), 0.5)
    for method in METHODS:
        out = method(net, far, splits=[torch.tensor([[-1, 0]], dtype=torch.int8)])
        assert out.infeasible.tolist() == [True]
        assert out.lower.item() == math.inf and out.upper.item() == -math.inf
        assert method(net, far, splits=[torch.tensor([[1, 0]], dtype=torch.int8)]).infeasible.tolist() == [False]


@pytest.mark.parametrize("norm, domain", [("2", False), ("inf", False), ("2", True), ("inf", True)])
def test_crown_equals_the_unbatched_reference(norm, domain):
    net = random_mlp([5, 16, 16, 16, 4], seed=11)
    x0 = torch.rand(12, 5, generator=torch.Generator().manual_seed(2), dtype=F64)
    s = perturbation_set(x0, 0.15 if norm == "inf" else 0.4, norm, domain=(0.0, 1.0) if domain else None)
    for C in (margin_rows(net(x0).argmax(1), 4), torch.randn(3, 4, dtype=F64), None):
        bounds = crown(net, s, C)
        lower, upper = crown_reference(net, s, C)
        assert np.abs(bounds.lower.numpy() - lower).max() < 1e-9
        assert np.abs(bounds.upper.numpy() - upper).max() < 1e-9


@pytest.mark.parametrize("method", [ibp, crown, partial(alpha_crown, iterations=0)])
def test_chunking_does_not_change_results(method):
    net = random_conv_net(1, size=4)
    x0 = torch.rand(7, net.in_features, generator=torch.Generator().manual_seed(5), dtype=F64)
    s = l2_ball(x0, 0.5, domain=(0.0, 1.0))
    C = margin_rows(net(x0).argmax(1), 3)
    whole = method(net, s, C, return_intermediate=True)
    parts = method(net, s, C, max_batch=3, return_intermediate=True)
    assert torch.allclose(whole.bounds.lower, parts.bounds.lower, atol=1e-12)
    assert torch.allclose(whole.bounds.upper, parts.bounds.upper, atol=1e-12)
    for (l1, u1), (l2, u2) in zip(whole.pre_activation, parts.pre_activation, strict=True):
        assert torch.allclose(l1, l2, atol=1e-12) and torch.allclose(u1, u2, atol=1e-12)


@pytest.mark.parametrize("method", [ibp, crown, partial(alpha_crown, iterations=3)])
def test_two_threads_bound_the_chunks_side_by_side_with_one_threads_results(method):
    """Several threads bound chunks side by side, each with one-thread operations: the same bits as one thread
    (same chunks), and torch's thread count is back afterwards."""
    net = random_conv_net(1, size=4)
    x0 = torch.rand(9, net.in_features, generator=torch.Generator().manual_seed(5), dtype=F64)
    s, C = l2_ball(x0, 0.5, domain=(0.0, 1.0)), margin_rows(net(x0).argmax(1), 3)
    with torch_threads(1):
        one = method(net, s, C, max_batch=2, return_intermediate=True)
    with torch_threads(2):
        two = method(net, s, C, max_batch=2, return_intermediate=True)
        assert torch.get_num_threads() == 2
    assert torch.equal(one.bounds.lower, two.bounds.lower) and torch.equal(one.bounds.upper, two.bounds.upper)
    for (l1, u1), (l2, u2) in zip(one.pre_activation, two.pre_activation, strict=True):
        assert torch.equal(l1, l2) and torch.equal(u1, u2)


def test_crown_radius_chunks_side_by_side_give_one_threads_results():
    net = random_mlp([6, 20, 20, 3], seed=1)
    x0 = torch.rand(9, 6, generator=torch.Generator().manual_seed(5), dtype=F64)
    C, radius = margin_rows(net(x0).argmax(1), 3), torch.full((9,), 0.3, dtype=F64)
    results = []
    for threads in (1, 2):
        with torch_threads(threads):
            results.append(crown_radius(net, x0, radius, "2", C, max_batch=2))
    for a, b in zip(results[0].__dict__.values(), results[1].__dict__.values(), strict=True):
        assert torch.equal(a, b)


def test_chunk_workers_run_at_once_with_one_thread_each_and_pass_errors_on():
    net = random_mlp([3, 4, 2], seed=0)
    meet = threading.Barrier(2, timeout=30)   # broken unless both chunks run at the same time
    with torch_threads(2):
        with torch.no_grad():
            seen = chunks_side_by_side(net, [0, 1], lambda start: (meet.wait(), torch.get_num_threads(),
                                                                  torch.is_grad_enabled())[1:])
        assert seen == [(1, False), (1, False)] and torch.get_num_threads() == 2
        assert chunks_side_by_side(net, [0, 1], lambda start: torch.is_grad_enabled()) == [True, True]

        def fail(start: int) -> int:
            if start == 3:
                raise ValueError("chunk 3")
            return start

        with pytest.raises(ValueError, match="chunk 3"):
            chunks_side_by_side(net, range(6), fail)
        assert torch.get_num_threads() == 2
    with torch_threads(1):
        assert chunk_workers(net, 10) == 1 and chunks_side_by_side(net, range(3), lambda s: s * 2) == [0, 2, 4]


def test_alpha_crown_is_reproducible_and_chunked_runs_stay_at_least_crown():
    # α-CROWN's optimisation path depends on round-off (different chunk sizes round matrix products
    # differently, which can flip subgradients at ties), so chunked runs need not be identical; each run
    # is reproducible and each is a valid bound at least as tight as CROWN's
    net = random_mlp([6, 20, 20, 3], seed=1)
    x0 = torch.rand(7, 6, generator=torch.Generator().manual_seed(5), dtype=F64)
    s, C = l2_ball(x0, 0.5), margin_rows(net(x0).argmax(1), 3)
    base = crown(net, s, C).lower
    for max_batch in (None, 3):
        first, second = alpha_crown(net, s, C, max_batch=max_batch), alpha_crown(net, s, C, max_batch=max_batch)
        assert torch.equal(first.lower, second.lower)
        assert (first.lower >= base).all()


def test_given_intermediate_bounds_are_used():
    net = random_mlp([3, 8, 8, 2], seed=7)
    s = linf_ball(torch.rand(4, 3, dtype=F64), 0.3)
    first = crown(net, s, return_intermediate=True)
    again = crown(net, s, intermediate=first.pre_activation)
    assert torch.allclose(again.lower, first.bounds.lower, atol=1e-9)
    # tighter (here: fictitious, all-stable) intermediate bounds are taken as given, making the bounds tighter
    fake = [(torch.zeros_like(lo).clamp(max=0) + lo.clamp(min=0), up) for lo, up in first.pre_activation]
    tighter = crown(net, s, intermediate=fake)
    assert (tighter.upper - tighter.lower <= first.bounds.upper - first.bounds.lower + 1e-9).all()


def test_alpha_crown_improves_on_crown_somewhere():
    net = random_mlp([6, 32, 32, 4], seed=3)
    x0 = torch.rand(20, 6, generator=torch.Generator().manual_seed(9), dtype=F64)
    s = l2_ball(x0, 0.5)
    C = margin_rows(net(x0).argmax(1), 4)
    gain = alpha_crown(net, s, C, iterations=20).lower - crown(net, s, C).lower
    assert (gain >= 0).all() and gain.max() > 1e-3


def test_float32_networks_give_float32_bounds_close_to_float64():
    net = random_mlp([4, 10, 10, 3], seed=2)
    s = linf_ball(torch.rand(3, 4, dtype=F64), 0.1)
    b64, b32 = crown(net, s), crown(net.to(dtype=torch.float32), s)
    assert b32.lower.dtype == torch.float32
    assert (b32.lower.double() <= b64.lower + 1e-3).all() and (b32.lower.double() >= b64.lower - 1e-2).all()


@pytest.mark.parametrize("kwargs, words", [
    (dict(splits=[torch.zeros(2, 5, dtype=torch.int8)]), "splits must be a list with one tensor per ReLU"),
    (dict(splits=[torch.zeros(2, 4, dtype=torch.int8), torch.zeros(2, 4, dtype=torch.int8)]), r"shape \(2, 8\)"),
    (dict(splits=[torch.full((2, 8), 2), torch.zeros(2, 8)]), "-1, 0 or"),
    (dict(intermediate=[None]), "one entry per ReLU layer"),
    (dict(intermediate=[(torch.zeros(2, 3), torch.zeros(2, 3)), None]), r"shape \(2, 8\)"),
    (dict(max_batch=0), "max_batch"),
    (dict(C=torch.zeros(2, 5)), r"shape \(K, 2\)"),
])
def test_bad_arguments_raise_input_errors(kwargs, words):
    net = random_mlp([3, 8, 8, 2], seed=1)
    s = linf_ball(torch.zeros(2, 3, dtype=F64), 0.1)
    for method in METHODS:
        with pytest.raises(InputError, match=words):
            method(net, s, **kwargs)


def test_mismatched_dimension_and_bad_iterations():
    net = random_mlp([3, 4, 2], seed=1)
    with pytest.raises(InputError, match="dimension 5"):
        crown(net, linf_ball(torch.zeros(1, 5), 0.1))
    with pytest.raises(InputError, match="iterations"):
        alpha_crown(net, linf_ball(torch.zeros(1, 3), 0.1), iterations=-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    net = random_mlp([5, 16, 16, 3], seed=8)
    s = l2_ball(torch.rand(6, 5, dtype=F64), 0.4, domain=(0.0, 1.0))
    for method in METHODS:
        cpu = method(net, s)
        gpu = method(net.to(device="cuda"), s)
        assert gpu.lower.device.type == "cuda"
        assert torch.allclose(gpu.lower.cpu(), cpu.lower, atol=1e-9)
        assert torch.allclose(gpu.upper.cpu(), cpu.upper, atol=1e-9)


@pytest.mark.parametrize("method", [crown, alpha_crown])
def test_lower_only_mode_keeps_the_lower_bounds_and_an_interval_upper_bound(method):
    net = random_mlp([4, 12, 12, 3], seed=6)
    x0 = torch.rand(5, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    s = l2_ball(x0, 0.4)
    C = margin_rows(net(x0).argmax(1), 3)
    both, lower_only = method(net, s, C), method(net, s, C, upper=False)
    assert torch.allclose(lower_only.lower, both.lower, atol=1e-12)
    # the upper bound is the interval image of CROWN's pre-activation bounds: between CROWN's and IBP's
    assert (lower_only.upper >= both.upper - 1e-12).all() and (lower_only.upper <= ibp(net, s, C).upper + 1e-12).all()


def test_alpha_crown_stops_once_every_margin_is_positive():
    net = random_mlp([4, 16, 16, 3], seed=5)
    x0 = torch.rand(6, 4, generator=torch.Generator().manual_seed(4), dtype=F64)
    C = margin_rows(net(x0).argmax(1), 3)
    s = l2_ball(x0, 0.05)
    assert (crown(net, s, C).lower > 0).all()  # small balls: CROWN already proves every margin
    early = alpha_crown(net, s, C, stop_when_positive=True)
    assert torch.equal(early.lower, crown(net, s, C).lower)  # no step taken
    assert (alpha_crown(net, s, C).lower >= early.lower).all()


def test_beta_terms_tighten_split_subdomains():
    # split the most unstable neurons of a random net both ways: with β the subdomain bounds improve on α alone
    net = random_mlp([3, 12, 12, 2], seed=13)
    x0 = torch.rand(8, 3, generator=torch.Generator().manual_seed(3), dtype=F64)
    s = linf_ball(x0, 0.4)
    C = margin_rows(net(x0).argmax(1), 2)
    pre = crown(net, s, C, return_intermediate=True).pre_activation
    splits = []
    for lower, upper in pre:
        score = torch.where((lower < 0) & (upper > 0), torch.minimum(-lower, upper), torch.zeros_like(lower))
        top = score.argsort(dim=1, descending=True)[:, :3]
        split = torch.zeros_like(lower, dtype=torch.int8).scatter_(1, top, 1)
        splits.append(torch.where(score > 0, split, torch.zeros_like(split)))
    with_beta = alpha_crown(net, s, C, splits=splits, iterations=30)
    without_beta = alpha_crown(net, s, C, splits=splits, iterations=30, lr_beta=1e-12)
    assert (with_beta.lower >= crown(net, s, C, splits=splits).lower).all()
    feasible = ~with_beta.infeasible
    assert (with_beta.lower - without_beta.lower)[feasible].max() > 1e-2


@pytest.mark.parametrize("norm", ["2", "inf"])
def test_dense_and_sparse_intermediate_rows_give_the_same_bounds(norm, monkeypatch):
    crown_module = importlib.import_module("pacverify.verify.bounds.crown")  # the module, not the function
    net = random_mlp([5, 16, 16, 16, 3], seed=21)
    x0 = torch.rand(9, 5, generator=torch.Generator().manual_seed(8), dtype=F64)
    s = perturbation_set(x0, 0.3, norm, domain=(0.0, 1.0))
    results = []
    for fraction in (0.0, 1.1):  # every layer dense, every layer sparse
        monkeypatch.setattr(crown_module, "DENSE_FRACTION", fraction)
        results.append(crown(net, s, margin_rows(net(x0).argmax(1), 3), return_intermediate=True))
    dense, sparse = results
    assert torch.allclose(dense.bounds.lower, sparse.bounds.lower, atol=1e-12)
    assert torch.allclose(dense.bounds.upper, sparse.bounds.upper, atol=1e-12)
    for (l1, u1), (l2, u2) in zip(dense.pre_activation, sparse.pre_activation, strict=True):
        assert torch.allclose(l1, l2, atol=1e-12) and torch.allclose(u1, u2, atol=1e-12)
