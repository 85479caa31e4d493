"""Tests of pacverify.pac: hand-computed values of Thm 3.8 / Eq 10 of 004 and properties."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pacverify import pac
from pacverify.errors import InputError

eps_st = st.floats(min_value=1e-4, max_value=0.5)
eta_st = st.floats(min_value=1e-12, max_value=0.5)
dim_st = st.integers(min_value=1, max_value=5000)
norm_st = st.sampled_from(["2", "inf"])


@pytest.mark.parametrize("dim, expected", [(2, 3720), (64, 103829), (784, 1562135)])
def test_hand_computed_values(dim, expected):
    # DESIGN.md §2: m = 2 -> ceil(480 ln 960 + 80 ln 200) = ceil(3719.9934) = 3720, etc.
    assert pac.sample_size(dim, 0.05, 0.01) == expected


def test_formula_written_out():
    d, eps, eta = 3, 0.05, 0.01
    assert pac.sample_size(2, eps, eta) == math.ceil(8 * d / eps * math.log(16 * d / eps) + 4 / eps * math.log(2 / eta))


def test_vc_dimension_per_norm():
    assert pac.vc_dimension(7, "2") == 8
    assert pac.vc_dimension(7, "inf") == 14
    # L-inf balls need at least as many points as L2 balls (d = 2m >= m + 1).
    assert pac.sample_size(7, 0.1, 0.1, norm="inf") >= pac.sample_size(7, 0.1, 0.1)


@pytest.mark.parametrize("bad", [0, -0.1, 0.51, 0.7, 1.0, float("nan"), float("inf"), "x", None, True])
def test_eps_out_of_range_is_refused(bad):
    with pytest.raises(InputError, match="eps"):
        pac.sample_size(2, bad, 0.01)


@pytest.mark.parametrize("bad", [0, 0.6, -1, float("nan")])
def test_eta_out_of_range_is_refused(bad):
    with pytest.raises(InputError, match="eta"):
        pac.sample_size(2, 0.05, bad)


@pytest.mark.parametrize("bad", [0, -3, 2.5, "two"])
def test_dim_must_be_positive_integer(bad):
    with pytest.raises(InputError, match="dim"):
        pac.sample_size(bad, 0.05, 0.01)


@settings(max_examples=200, deadline=None)
@given(dim=dim_st, eps=eps_st, eta=eta_st, norm=norm_st, factor=st.floats(1.001, 2.0))
def test_decreasing_in_eps_and_eta(dim, eps, eta, norm, factor):
    s = pac.sample_size(dim, eps, eta, norm=norm)
    if eps * factor <= 0.5:
        assert pac.sample_size(dim, eps * factor, eta, norm=norm) <= s
    if eta * factor <= 0.5:
        assert pac.sample_size(dim, eps, eta * factor, norm=norm) <= s


@settings(max_examples=200, deadline=None)
@given(dim=dim_st, eps=eps_st, eta=eta_st, norm=norm_st, extra=st.integers(1, 100))
def test_increasing_in_dim(dim, eps, eta, norm, extra):
    assert pac.sample_size(dim + extra, eps, eta, norm=norm) > pac.sample_size(dim, eps, eta, norm=norm)


@settings(max_examples=150, deadline=None)
@given(dim=st.integers(1, 1000), eta=eta_st, norm=norm_st, samples=st.integers(1, 10**8))
def test_min_eps_exact_to_the_integer(dim, eta, norm, samples):
    need = pac.sample_size(dim, 0.5, eta, norm=norm)
    if samples < need:
        with pytest.raises(InputError, match="too few"):
            pac.min_eps(samples, dim, eta, norm=norm)
        return
    eps = pac.min_eps(samples, dim, eta, norm=norm)
    assert 0 < eps <= 0.5
    assert pac.sample_size(dim, eps, eta, norm=norm) <= samples
    smaller = math.nextafter(eps, 0.0)
    assert pac.sample_size(dim, smaller, eta, norm=norm) > samples


@settings(max_examples=150, deadline=None)
@given(dim=st.integers(1, 1000), eps=eps_st, norm=norm_st, samples=st.integers(1, 10**8))
def test_min_eta_exact_to_the_integer(dim, eps, norm, samples):
    need = pac.sample_size(dim, eps, 0.5, norm=norm)
    if samples < need:
        with pytest.raises(InputError, match="too few"):
            pac.min_eta(samples, dim, eps, norm=norm)
        return
    eta = pac.min_eta(samples, dim, eps, norm=norm)
    assert 0 < eta <= 0.5
    assert pac.sample_size(dim, eps, eta, norm=norm) <= samples
    smaller = math.nextafter(eta, 0.0)
    if eta > 2.3e-308:  # not clamped at the smallest normal float
        assert pac.sample_size(dim, eps, smaller, norm=norm) > samples


@settings(max_examples=100, deadline=None)
@given(dim=st.integers(1, 1000), eps=eps_st, eta=eta_st, norm=norm_st)
def test_round_trip_from_sample_size(dim, eps, eta, norm):
    s = pac.sample_size(dim, eps, eta, norm=norm)
    assert pac.min_eps(s, dim, eta, norm=norm) <= eps
    assert pac.min_eta(s, dim, eps, norm=norm) <= eta


def test_min_eta_closed_form_matches_design():
    s, dim, eps = 5000, 2, 0.05
    d = 3
    closed = 2 * math.exp(-(eps / 4) * (s - 8 * d / eps * math.log(16 * d / eps)))
    assert pac.min_eta(s, dim, eps) == pytest.approx(closed, rel=1e-9)


@settings(max_examples=100, deadline=None)
@given(eps=eps_st, tv=st.floats(0, 0.49))
def test_shifted_eps_adds_tv(eps, tv):
    assert pac.shifted_eps(eps, tv) == eps + tv


def test_shifted_eps_refuses_mass_above_one_and_bad_tv():
    with pytest.raises(InputError, match="tv"):
        pac.shifted_eps(0.5, 0.9)
    with pytest.raises(InputError, match="tv"):
        pac.shifted_eps(0.1, -0.1)


def test_pac_statement_has_its_numbers():
    text = pac.pac_statement(delta=0.03, eps=0.05, eta=0.01, samples=3720, dim=2, kappa=0.9)
    for piece in ("0.99", "η = 0.01", "3720", "δ = 0.03", "ε = 0.05", "κ = 0.9", "0.09", "perfect student",
                  "local linearity", "i.i.d."):
        assert piece in text
    shifted = pac.pac_statement(delta=0.03, eps=0.05, eta=0.01, samples=3720, dim=2, kappa=0.9, tv=0.02)
    assert "ε + Λ = 0.07" in shifted and "Λ = 0.02" in shifted


def test_pac_statement_refuses_too_few_samples():
    with pytest.raises(InputError, match="3720"):
        pac.pac_statement(delta=0.03, eps=0.05, eta=0.01, samples=3719, dim=2, kappa=0.9)


def test_epsnet_statement():
    text = pac.epsnet_statement(2, 0.05, 0.01, 3720)
    assert "3720" in text and "0.99" in text and "ε = 0.05" in text


def test_pac_statement_uses_the_epsnet_over_confident_parts():
    """Issue 10 §1: the claim is about δ-balls whose κ-confident part has mass ≥ ε, not balls holding a sample point."""
    text = pac.pac_statement(delta=0.03, eps=0.05, eta=0.01, samples=3720, dim=2, kappa=0.9)
    assert "contains a κ-confident" not in text and "sample point —" not in text
    assert "whose κ-confident part" in text and "has probability mass at least ε = 0.05 under D_X" in text
    assert "single affine piece on every 3δ-ball" in text and "equal outputs" in text
    shifted = pac.pac_statement(delta=0.03, eps=0.05, eta=0.01, samples=3720, dim=2, kappa=0.9, tv=0.02)
    assert "whose κ-confident part" in shifted and "under any distribution D'" in shifted
