"""Quality markers (ρ, GD/GC, agreement, Eq 13, local linearity) and the torch PGD, against closed forms."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pacverify.attacks import pgd, project, random_in_ball
from pacverify.distill.attack import pgd_robust
from pacverify.distill.quality import (
    agreement_and_eq13,
    gradient_alignment,
    local_linearity,
    margin_gradient_ratio,
    quality_markers,
    rho_summary,
)


def _linear(weight, bias=None) -> nn.Linear:
    weight = torch.as_tensor(weight, dtype=torch.float32)
    lin = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        lin.weight.copy_(weight)
        lin.bias.copy_(torch.zeros(weight.shape[0]) if bias is None else torch.as_tensor(bias))
    return lin.eval()


@pytest.mark.parametrize("norm, ord_", [("2", 2), ("inf", 1)])
def test_rho_uses_the_teachers_class_and_runner_up_and_the_dual_norm(norm, ord_):
    rng = np.random.default_rng(0)
    w_t, w_s = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    teacher, student = _linear(w_t), _linear(w_s)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    rho = margin_gradient_ratio(teacher, student, x, norm)
    z_t = x @ w_t.T
    order = np.argsort(-z_t, axis=1)
    y, k = order[:, 0], order[:, 1]
    expected = np.linalg.norm(w_s[y] - w_s[k], ord=ord_, axis=1) / np.linalg.norm(w_t[y] - w_t[k], ord=ord_, axis=1)
    np.testing.assert_allclose(rho, expected, rtol=1e-5)


def test_rho_is_inf_for_a_flat_teacher_margin_and_zero_for_a_flat_student():
    teacher = _linear(np.zeros((2, 3)), bias=[1.0, 0.0])  # constant logits: zero margin gradient
    student = _linear([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    x = np.ones((4, 3), dtype=np.float32)
    assert np.all(np.isinf(margin_gradient_ratio(teacher, student, x)))
    assert np.all(margin_gradient_ratio(student, teacher, x) == 0.0)
    quantiles, n_inf = rho_summary(np.array([0.5, np.inf, 2.0, 1.0]))
    assert n_inf == 1 and quantiles["1"] == math.inf and quantiles["0"] == 0.5


def test_gradient_distance_and_cosine_by_hand():
    rng = np.random.default_rng(1)
    w_t, w_s = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    x = rng.normal(size=(20, 4)).astype(np.float32)
    gd, gc = gradient_alignment(_linear(w_t), _linear(w_s), x)
    y = np.argmax(x @ w_t.T, axis=1)

    def grad(w):
        z = x @ w.T
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        return (p - np.eye(3)[y]) @ w

    g_t, g_s = grad(w_t), grad(w_s)
    np.testing.assert_allclose(gd, np.linalg.norm(g_s - g_t, axis=1), rtol=1e-4, atol=1e-6)
    cos = (g_s * g_t).sum(1) / np.linalg.norm(g_s, axis=1) / np.linalg.norm(g_t, axis=1)
    np.testing.assert_allclose(gc, cos, rtol=1e-4, atol=1e-6)
    same_gd, same_gc = gradient_alignment(_linear(w_t), _linear(w_t), x)
    assert np.all(same_gd == 0) and np.allclose(same_gc, 1)


def test_cosine_conventions_for_zero_gradients():
    flat = _linear(np.zeros((2, 3)), bias=[2.0, 0.0])
    steep = _linear([[1.0, 0, 0], [-1.0, 0, 0]])
    x = np.zeros((3, 3), dtype=np.float32)
    assert np.all(gradient_alignment(flat, flat, x)[1] == 1.0)
    assert np.all(gradient_alignment(flat, steep, x)[1] == 0.0)


def test_agreement_and_eq13():
    w = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    x = np.random.default_rng(2).normal(size=(30, 2)).astype(np.float32)
    teacher = _linear(w)
    agree, eq13 = agreement_and_eq13(teacher, _linear(2 * w), x)  # same argmax, sharper softmax
    assert agree.all() and eq13.all()
    agree, eq13 = agreement_and_eq13(teacher, _linear(0.5 * w), x)  # same argmax, flatter softmax
    assert agree.all() and not eq13.any()
    agree, _ = agreement_and_eq13(teacher, _linear(-w), x)
    assert not agree.any()


def test_local_linearity_estimate_is_a_lower_bound_close_to_the_grid_maximum():
    """001 Def 2 on a 2-D linear model: compare the ascent with a dense grid over the ball."""
    model = _linear([[2.0, -1.0], [-1.0, 1.5]])
    x = np.array([[0.3, -0.2], [1.0, 0.5]], dtype=np.float32)
    y = np.array([0, 1])
    radius = 0.5
    estimate = local_linearity(model, x, y, radius, steps=40)
    angles = np.linspace(0, 2 * np.pi, 721)
    radii = np.linspace(0, radius, 51)
    deltas = np.array([[r * np.cos(a), r * np.sin(a)] for r in radii for a in angles], dtype=np.float32)
    for i in range(2):
        xi = torch.from_numpy(x[i:i + 1]).requires_grad_(True)
        ce = nn.functional.cross_entropy(model(xi), torch.tensor([y[i]]))
        (g,) = torch.autograd.grad(ce, xi)
        with torch.no_grad():
            pts = torch.from_numpy(x[i] + deltas)
            ces = nn.functional.cross_entropy(model(pts), torch.full((len(pts),), int(y[i])), reduction="none")
            gaps = (ces - ce - torch.from_numpy(deltas) @ g[0]).abs()
        exact = float(gaps.max())
        assert estimate[i] <= exact * (1 + 1e-3) + 1e-6
        assert estimate[i] >= 0.95 * exact


def test_quality_markers_summary():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).eval()
    x = np.random.default_rng(0).normal(size=(40, 2)).astype(np.float32)
    markers = quality_markers(teacher, teacher, x, x[:10], llm_radius=0.1)
    assert markers.agreement == 1.0 and markers.agreement_fresh == 1.0 and markers.n_fresh == 10
    assert markers.eq13_fraction == 1.0 and markers.gd_mean == 0.0 and markers.gc_mean == pytest.approx(1.0)
    assert markers.rho_quantiles["0"] == pytest.approx(1.0) and markers.rho_quantiles["1"] == pytest.approx(1.0)
    assert markers.llm_student_mean == pytest.approx(markers.llm_teacher_mean)
    assert quality_markers(teacher, teacher, x).as_dict()["agreement_fresh"] is None


# ----------------------------------------------------------------------------- PGD on torch modules
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), norm=st.sampled_from(["2", "inf"]), radius=st.floats(0.01, 2.0),
       dim=st.integers(1, 6))
def test_pgd_stays_inside_the_ball(seed, norm, radius, dim):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(dim, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(5, dim)
    y = model(x).argmax(1)
    delta = pgd(model, x, y, radius=radius, norm=norm, steps=5, seed=seed)
    size = delta.abs().amax(1) if norm == "inf" else delta.norm(dim=1)
    assert torch.all(size <= radius * (1 + 1e-5))
    inside = x.clamp(-0.5, 0.5)
    boxed = pgd(model, inside, y, radius=radius, norm=norm, steps=3, seed=seed, domain=(-0.5, 0.5))
    assert torch.all((inside + boxed).abs() <= 0.5 + 1e-6)
    size = boxed.abs().amax(1) if norm == "inf" else boxed.norm(dim=1)
    assert torch.all(size <= radius * (1 + 1e-5))
    start = random_in_ball((64, dim), radius, norm, torch.Generator().manual_seed(seed))
    size = start.abs().amax(1) if norm == "inf" else start.norm(dim=1)
    assert torch.all(size <= radius * (1 + 1e-5))
    assert torch.allclose(project(start, radius, norm), start)


@pytest.mark.parametrize("norm", ["2", "inf"])
def test_pgd_finds_the_boundary_of_a_linear_classifier_exactly_when_it_is_inside(norm):
    w = torch.tensor([[1.0, 2.0], [-1.0, -2.0]])  # margin 2·(x1 + 2·x2)
    model = _linear(w)
    x = torch.tensor([[1.0, 0.5], [0.2, 0.1]])
    normal = torch.tensor([1.0, 2.0])
    dual = normal.abs().sum() if norm == "inf" else normal.norm()
    distance = (x @ normal) / dual  # distance to x1 + 2·x2 = 0 in the perturbation norm
    robust_small = pgd_robust(model, x, radius=0.9 * float(distance.min()), norm=norm)
    assert robust_small.all()  # nothing to find: an attack must not invent a counterexample
    robust_large = pgd_robust(model, x, radius=1.1 * float(distance.max()), norm=norm)
    assert not robust_large.any()
