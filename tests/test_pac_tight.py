"""The tight ε-net bound and mass mode's d = 2 (pacverify.pac; docs/theory.md, "The tight ε-net bound").

Hand values are recomputed here by independent loops (exact integer sums for Φ_d, a plain scan over s), never by
calling the search under test.
"""
from __future__ import annotations

import itertools
import math

import pytest

from pacverify import pac
from pacverify.errors import InputError

LN2 = math.log(2)

D_GRID = (1, 2, 3, 5, 10, 65, 785, 1569)
EPS_GRID = (0.01, 0.05, 0.1, 0.3, 0.5)
ETA_GRID = (1e-6, 0.01, 0.1, 0.5)


def exact_phi(d: int, n: int) -> int:
    """Σ_{i ≤ min(d, n)} C(n, i) with Python integers: C(n, i+1) = C(n, i)·(n − i)/(i + 1)."""
    total = term = 1
    for i in range(min(d, n)):
        term = term * (n - i) // (i + 1)
        total += term
    return total


def rhs(d: int, eps: float, eta: float, s: int, log_ranges) -> float:
    """2/(ε ln 2)·(ln(1/η) + ln(#ranges on 2s points) − ln(1 − e^{−εs/8})), written out again."""
    return 2 / (eps * LN2) * (math.log(1 / eta) + log_ranges(d, 2 * s) - math.log(1 - math.exp(-eps * s / 8)))


def scan(d: int, eps: float, eta: float, log_ranges) -> int:
    """The smallest s ≥ 1 with s ≥ rhs(s), by trying s = 1, 2, 3, ..."""
    s = 1
    while s < rhs(d, eps, eta, s, log_ranges):
        s += 1
    return s


def sauer(d: int, n: int) -> float:
    return math.log(exact_phi(d, n))  # math.log takes Python integers of any size exactly


def power(d: int, n: int) -> float:
    return d * math.log(n)  # PAGR's variant: (2s)^d ranges instead of Φ_d(2s)


# --- hand values -------------------------------------------------------------------------------------------------

def test_hand_value_d2_by_brute_force():
    # d = 2, ε = 0.05, η = 0.01: the scan gives 1116 with Φ_2(2s) = 1 + 2s + C(2s, 2), 1161 with (2s)^2.
    assert scan(2, 0.05, 0.01, sauer) == 1116
    assert scan(2, 0.05, 0.01, power) == 1161
    assert pac.epsnet_size(2, 0.05, 0.01, bound="tight") == 1116
    # mass mode: d = 2 whatever the input dimension
    for dim in (1, 2, 784, 10**6):
        assert pac.sample_size(dim, 0.05, 0.01, guarantee="mass", bound="tight") == 1116
        assert pac.sample_size(dim, 0.05, 0.01, guarantee="mass", bound="thm38") == 2492
        assert pac.sample_size(dim, 0.05, 0.01, guarantee="mass") == 2492  # bound defaults to thm38
    # Thm 3.8 with d = 2 written out: ceil(320·ln 640 + 80·ln 200) = ceil(2491.6)
    assert math.ceil(8 * 2 / 0.05 * math.log(16 * 2 / 0.05) + 4 / 0.05 * math.log(2 / 0.01)) == 2492
    # Φ_d(2s) < (2s)^d for s ≥ 1, d ≥ 2: the tight bound needs slightly fewer points than the (2s)^d variant
    assert 1116 < 1161 < 2492


@pytest.mark.parametrize("dim, norm, expected", [(64, "2", 29373), (784, "2", 353478), (2, "inf", 1997)])
def test_hand_values_ball_mode(dim, norm, expected):
    """Ball mode, ε = 0.05, η = 0.01: d = 65 (m = 64, digits), d = 785 (m = 784, MNIST), L2."""
    d = dim + 1 if norm == "2" else 2 * dim
    assert pac.sample_size(dim, 0.05, 0.01, norm=norm, bound="tight") == expected
    # independently: the value passes and its predecessor fails with exact integer Φ_d
    assert expected >= rhs(d, 0.05, 0.01, expected, sauer)
    assert expected - 1 < rhs(d, 0.05, 0.01, expected - 1, sauer)
    assert pac.sample_size(dim, 0.05, 0.01, norm=norm) > expected  # Thm 3.8 needs more


def test_defaults_unchanged():
    assert pac.sample_size(784, 0.05, 0.01) == pac.sample_size(784, 0.05, 0.01, bound="thm38", guarantee="ball")
    assert pac.vc_dimension(784) == 785 and pac.vc_dimension(784, "2", "mass") == 2
    assert pac.vc_dimension(784, "inf", guarantee="mass") == 2
    assert pac.DEFAULT_BOUND == {"ball": "thm38", "mass": "tight"}


# --- log Φ --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("d, n", [(d, n) for d in range(0, 9) for n in range(0, 21)]
                         + [(3, 1000), (10, 10**5), (65, 58746), (100, 150), (100, 201), (150, 200), (785, 706956)])
def test_log_phi_against_exact_integer_sums(d, n):
    exact = exact_phi(d, n)
    assert exact == sum(math.comb(n, i) for i in range(min(d, n) + 1))
    assert pac.log_phi(d, n) == pytest.approx(math.log(exact), rel=1e-13, abs=1e-13)
    if d >= n:
        assert pac.log_phi(d, n) == n * LN2


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3", None])
def test_log_phi_refuses_bad_counts(bad):
    with pytest.raises(InputError):
        pac.log_phi(bad, 10)
    with pytest.raises(InputError):
        pac.log_phi(2, bad)


# --- the search: minimal, upward closed, never above Thm 3.8 ------------------------------------------------------

GRID = list(itertools.product(D_GRID, EPS_GRID, ETA_GRID))
SIZES = {key: (pac.epsnet_size(*key, bound="tight"), pac.epsnet_size(*key)) for key in GRID}


@pytest.mark.parametrize("d, eps, eta", GRID)
def test_minimal_and_never_above_thm38(d, eps, eta):
    tight, thm38 = SIZES[d, eps, eta]
    assert 1 <= tight <= thm38
    assert pac.tight_bound_holds(d, eps, eta, tight)
    if tight > 1:
        assert not pac.tight_bound_holds(d, eps, eta, tight - 1)
    # the passing set is upward closed (docstring of pac._tight_size): a few larger values pass as well
    for s in (tight + 1, tight + 2, tight + 17, 2 * tight, thm38):
        assert pac.tight_bound_holds(d, eps, eta, s)


@pytest.mark.parametrize("d, eps, eta", [(1, 0.3, 0.1), (2, 0.5, 0.5), (3, 0.1, 0.01), (5, 0.5, 1e-6)])
def test_scan_from_one_agrees(d, eps, eta):
    """A full scan from s = 1 with exact Φ: the first passing s is the search's, and nothing below it passes."""
    assert scan(d, eps, eta, sauer) == SIZES[d, eps, eta][0]
    assert not any(pac.tight_bound_holds(d, eps, eta, s) for s in range(1, SIZES[d, eps, eta][0]))


@pytest.mark.parametrize("d", D_GRID)
def test_monotone(d):
    for eta in ETA_GRID:
        sizes = [SIZES[d, eps, eta][0] for eps in EPS_GRID]
        assert sizes == sorted(sizes, reverse=True)  # non-increasing as ε grows
    for eps in EPS_GRID:
        sizes = [SIZES[d, eps, eta][0] for eta in ETA_GRID]
        assert sizes == sorted(sizes, reverse=True)  # non-increasing as η grows
    if d != D_GRID[-1]:
        bigger = D_GRID[D_GRID.index(d) + 1]
        for eps, eta in itertools.product(EPS_GRID, ETA_GRID):
            assert SIZES[bigger, eps, eta][0] >= SIZES[d, eps, eta][0]  # non-decreasing as d grows


def test_monotone_fine_steps():
    sizes = [pac.epsnet_size(3, eps / 1000, 0.01, bound="tight") for eps in range(20, 501, 7)]
    assert sizes == sorted(sizes, reverse=True)
    sizes = [pac.epsnet_size(3, 0.05, eta / 1000, bound="tight") for eta in range(1, 501, 7)]
    assert sizes == sorted(sizes, reverse=True)
    sizes = [pac.epsnet_size(d, 0.05, 0.01, bound="tight") for d in range(1, 60)]
    assert sizes == sorted(sizes)


# --- inverses ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dim, guarantee, samples", [
    (1, "mass", 1116), (1, "mass", 1115), (1, "mass", 500), (784, "mass", 20000), (64, "ball", 29373),
    (2, "ball", 3000), (784, "ball", 400000),
])
def test_min_eps_round_trip(dim, guarantee, samples):
    kw = dict(bound="tight", guarantee=guarantee)
    eps = pac.min_eps(samples, dim, 0.01, **kw)
    assert 0 < eps <= 0.5
    assert pac.sample_size(dim, eps, 0.01, **kw) <= samples
    assert pac.sample_size(dim, math.nextafter(eps, 0.0), 0.01, **kw) > samples
    if (dim, guarantee, samples) in ((1, "mass", 1116), (64, "ball", 29373)):
        assert eps <= 0.05  # the sample size of ε = 0.05 reaches ε = 0.05


@pytest.mark.parametrize("dim, guarantee, samples, eps", [
    (1, "mass", 1116, 0.05), (1, "mass", 2000, 0.05), (784, "mass", 300, 0.3), (64, "ball", 29373, 0.05),
    (2, "ball", 3000, 0.05),
])
def test_min_eta_round_trip(dim, guarantee, samples, eps):
    kw = dict(bound="tight", guarantee=guarantee)
    eta = pac.min_eta(samples, dim, eps, **kw)
    assert 0 < eta <= 0.5
    assert pac.sample_size(dim, eps, eta, **kw) <= samples
    if eta > 2.3e-308:
        assert pac.sample_size(dim, eps, math.nextafter(eta, 0.0), **kw) > samples
    if samples == 1116 or samples == 29373:
        assert eta <= 0.01


def test_too_few_names_the_bound():
    with pytest.raises(InputError, match="too few.*tight bound needs at least"):
        pac.min_eps(10, 2, 0.01, bound="tight")
    with pytest.raises(InputError, match="too few.*Thm 3.8 needs at least"):
        pac.min_eta(10, 2, 0.05, guarantee="mass")


# --- bad names ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call", [
    lambda: pac.sample_size(2, 0.05, 0.01, bound="loose"),
    lambda: pac.epsnet_size(2, 0.05, 0.01, bound="thm3.8"),
    lambda: pac.min_eps(5000, 2, 0.01, bound=None),
    lambda: pac.min_eta(5000, 2, 0.05, bound="vc"),
])
def test_bad_bound_names(call):
    with pytest.raises(InputError, match="bound must be one of thm38, tight"):
        call()


@pytest.mark.parametrize("call", [
    lambda: pac.sample_size(2, 0.05, 0.01, guarantee="balls"),
    lambda: pac.vc_dimension(2, "2", "volume"),
    lambda: pac.min_eps(5000, 2, 0.01, guarantee=""),
    lambda: pac.min_eta(5000, 2, 0.05, guarantee=2),
])
def test_bad_guarantee_names(call):
    with pytest.raises(InputError, match="guarantee must be one of ball, mass"):
        call()


def test_names_case_insensitive_and_bad_numbers():
    assert pac.sample_size(2, 0.05, 0.01, bound="TIGHT", guarantee="Mass") == 1116
    with pytest.raises(InputError, match="eps"):
        pac.tight_bound_holds(2, 0.7, 0.01, 100)
    with pytest.raises(InputError, match="VC dimension"):
        pac.epsnet_size(0, 0.05, 0.01, bound="tight")
    with pytest.raises(InputError, match="samples"):
        pac.tight_bound_holds(2, 0.05, 0.01, 0)
