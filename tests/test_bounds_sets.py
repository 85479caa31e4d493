"""Input sets and output rows: exact linear ranges, the L2 ∩ box relaxation, validation, margin rows."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers_nets import sample_in_set
from hypothesis import given, settings
from hypothesis import strategies as st

from pacverify.errors import InputError
from pacverify.verify.output_rows import check_output_rows, margin_rows
from pacverify.verify.sets import Box, box, l2_ball, linf_ball, perturbation_set


def test_box_linear_range_is_attained_at_vertices():
    lower = torch.tensor([[-1.0, 0.0, 2.0]], dtype=torch.float64)
    upper = torch.tensor([[1.0, 0.5, 3.0]], dtype=torch.float64)
    A = torch.tensor([[2.0, -1.0, 0.5], [-1.0, 0.0, -2.0]], dtype=torch.float64)
    s = Box(lower, upper)
    # by hand: row 0 min = -2 - 0.5 + 1 = -1.5, max = 2 + 0 + 1.5 = 3.5; row 1 min = -1 - 6 = -7, max = 1 - 4 = -3
    assert s.linear_min(A).tolist() == [[-1.5, -7.0]]
    assert s.linear_max(A).tolist() == [[3.5, -3.0]]
    assert torch.equal(s.linear_min(A.expand(1, 2, 3)), s.linear_min(A))


def test_l2_ball_linear_range_is_the_dual_norm():
    center = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    A = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    s = l2_ball(center, 0.5)
    # a·x0 = 3 - 8 = -5, r‖a‖₂ = 0.5 · 5 = 2.5
    assert s.linear_min(A).item() == pytest.approx(-7.5)
    assert s.linear_max(A).item() == pytest.approx(-2.5)


def test_l2_ball_with_domain_uses_the_tighter_of_ball_and_box():
    # the ball around 0.9 with radius 0.5 meets the domain [0, 1]: on coordinate 0 the box side binds
    s = l2_ball(torch.tensor([[0.9, 0.5]]), 0.5, domain=(0.0, 1.0), dtype=torch.float64)
    A = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    assert s.linear_max(A).item() == pytest.approx(1.0)  # the ball alone says 1.4
    assert s.linear_min(A).item() == pytest.approx(0.4)
    lo, hi = s.interval()
    assert lo[0].tolist() == pytest.approx([0.4, 0.0]) and hi[0].tolist() == pytest.approx([1.0, 1.0])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), norm=st.sampled_from(["2", "inf"]), domain=st.booleans(),
       dim=st.integers(1, 6), rows=st.integers(1, 4))
def test_linear_ranges_contain_sampled_points(seed, norm, domain, dim, rows):
    gen = torch.Generator().manual_seed(seed)
    center = torch.rand(3, dim, generator=gen, dtype=torch.float64)
    radius = torch.rand(3, generator=gen, dtype=torch.float64) * 0.8
    s = perturbation_set(center, radius, norm, domain=(0.0, 1.0) if domain else None)
    A = torch.randn(3, rows, dim, generator=gen, dtype=torch.float64)
    points = sample_in_set(s, 300, seed)
    values = torch.einsum("bkn,sbn->sbk", A, points)
    assert (values >= s.linear_min(A) - 1e-12).all() and (values <= s.linear_max(A) + 1e-12).all()
    lo, hi = s.interval()
    assert (points >= lo - 1e-12).all() and (points <= hi + 1e-12).all()
    if norm == "2":  # the samples really are in the ball (and domain)
        assert ((points - center).norm(dim=-1) <= radius + 1e-12).all()


def test_linf_ball_is_clipped_to_the_domain_and_reshaped():
    s = linf_ball(np.full((2, 1, 2, 2), 0.95), 0.1, domain=(0.0, 1.0))
    assert s.lower.shape == (2, 4) and s.lower.dtype == torch.float64
    assert torch.allclose(s.upper, torch.ones(2, 4, dtype=torch.float64))
    assert torch.allclose(s.lower, torch.full((2, 4), 0.85, dtype=torch.float64))


def test_outward_rounding_to_float32_keeps_the_original_set_inside():
    gen = torch.Generator().manual_seed(1)
    center = torch.rand(5, 7, generator=gen, dtype=torch.float64) / 3
    b64 = linf_ball(center, 0.1)
    b32 = b64.to(dtype=torch.float32)
    assert (b32.lower.double() <= b64.lower).all() and (b32.upper.double() >= b64.upper).all()
    l64 = l2_ball(center, 0.1)
    l32 = l64.to(dtype=torch.float32)
    moved = (l32.center.double() - center).norm(dim=1)
    assert (l32.radius.double() >= 0.1 + moved).all()


@pytest.mark.parametrize("make, words", [
    (lambda: linf_ball([[0.0, float("nan")]], 0.1), "NaN"),
    (lambda: linf_ball([0.0, 1.0], 0.1), "batch dimension"),
    (lambda: l2_ball([[0.0, 1.0]], -0.1), "radius"),
    (lambda: l2_ball([[0.0, 1.0]], [0.1, 0.2]), "one value per point"),
    (lambda: l2_ball([[0.0, 2.0]], 0.1, domain=(0.0, 1.0)), "outside the domain"),
    (lambda: linf_ball([[0.0, 1.0]], 0.1, domain=(1.0, 0.0)), "domain lower bound exceeds"),
    (lambda: box([[0.0, 1.0]], [[1.0, 0.5]]), "exceeds its upper bound"),
    (lambda: linf_ball([[0.0, math.inf]], 0.1), "finite"),
    (lambda: perturbation_set([[0.0]], 0.1, "l1"), "norm"),
])
def test_bad_sets_raise_input_errors(make, words):
    with pytest.raises(InputError, match=words):
        make()


def test_margin_rows_rows_are_e_y_minus_e_j_in_ascending_j():
    C = margin_rows([2, 0], 4)
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    assert (C[0] @ logits[0]).tolist() == [3 - 1, 3 - 2, 3 - 4]
    assert (C[1] @ logits[0]).tolist() == [1 - 2, 1 - 3, 1 - 4]
    assert C.shape == (2, 3, 4)


@pytest.mark.parametrize("labels, n, words", [
    ([3], 3, r"\[0, 2\]"), ([0.5], 3, "class indices"), ([], 3, "non-empty"), ([0], 1, "n_classes")])
def test_margin_rows_refuses_bad_labels(labels, n, words):
    with pytest.raises(InputError, match=words):
        margin_rows(labels, n)


def test_check_output_rows_shapes():
    assert check_output_rows(None, 2, 3, dtype=torch.float64, device="cpu") is None
    assert check_output_rows(np.eye(3), 2, 3, dtype=torch.float64, device="cpu").shape == (3, 3)
    with pytest.raises(InputError, match=r"\(K, 3\) or \(2, K, 3\)"):
        check_output_rows(np.zeros((5, 2, 3)), 2, 3, dtype=torch.float64, device="cpu")
    with pytest.raises(InputError, match="finite"):
        check_output_rows(np.full((1, 3), np.inf), 2, 3, dtype=torch.float64, device="cpu")
