"""Mass mode's mathematics: M(κ), its step function, the verdict's edges, the DKW bound, the held-out test, and a
statistical test of the whole guarantee on a teacher whose robust radius and confidence are known in closed form."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst
from scipy import stats

from pacverify import pac
from pacverify.certificate.mass import (
    MassEvidence,
    confidence_steps,
    confident_fraction_lower,
    dkw_margin,
    holdout_test,
    mass_verdict,
    radius_at,
)
from pacverify.certificate.schema import Verdict


def test_radius_at_on_a_hand_made_sample():
    conf = [0.55, 0.7, 0.9, 0.9, 0.99]
    lower = [0.01, 0.5, 0.2, 0.3, 0.05]
    got = radius_at(conf, lower, [0.5, 0.55, 0.56, 0.7, 0.8, 0.9, 0.95, 0.99, 0.995])
    assert got.tolist() == [0.01, 0.01, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, math.inf]
    # without the 0.99 point the map is larger above 0.7
    assert radius_at(conf[:4], lower[:4], [0.6, 0.8, 0.95]).tolist() == [0.2, 0.2, math.inf]


def test_steps_describe_the_same_function():
    conf = [0.55, 0.7, 0.9, 0.9, 0.99]
    lower = [0.01, 0.5, 0.2, 0.3, 0.05]
    assert confidence_steps(conf, lower) == [(0.55, 0.01), (0.99, 0.05)]
    assert confidence_steps([], []) == []


@settings(max_examples=60, deadline=None)
@given(hst.lists(hst.tuples(hst.floats(0.3, 1.0), hst.floats(0.0, 2.0)), min_size=1, max_size=30),
       hst.floats(0.0, 1.0))
def test_radius_at_is_the_brute_force_minimum_and_the_steps_agree(pairs, kappa):
    conf = np.array([c for c, _ in pairs])
    lower = np.array([v for _, v in pairs])
    confident = lower[conf >= kappa]
    want = confident.min() if confident.size else math.inf
    assert radius_at(conf, lower, kappa)[0] == want
    steps = confidence_steps(conf, lower)
    ks = [k for k, _ in steps]
    at = next((m for k, m in steps if kappa <= k), math.inf)
    assert at == want
    assert ks == sorted(ks)
    ms = [m for _, m in steps]
    assert ms == sorted(ms)  # M is non-decreasing in κ


def test_radius_at_refuses_bad_input():
    from pacverify.errors import InputError

    with pytest.raises(InputError, match="NaN"):
        radius_at([0.9], [float("nan")], 0.9)
    with pytest.raises(InputError, match="one entry per point"):
        radius_at([0.9, 0.8], [0.1], 0.9)
    with pytest.raises(InputError, match=">= 0"):
        radius_at([0.9], [-0.1], 0.9)


def test_verdict_edges():
    assert mass_verdict(MassEvidence(0.1, 0.1, 0))[0] is Verdict.CERTIFIED  # M(κ) = δ certifies (rob < ρ ranges)
    assert mass_verdict(MassEvidence(np.nextafter(0.1, 0), 0.1, 0))[0] is Verdict.NOT_CERTIFIED
    assert mass_verdict(MassEvidence(math.inf, 0.1, 0))[0] is Verdict.CERTIFIED
    assert mass_verdict(MassEvidence(0.5, 0.1, 1))[0] is Verdict.REFUTED


def test_dkw_lower_bound_holds_for_every_kappa_at_once():
    """Over 300 draws of 200 uniform confidences, sup_κ (p̲(κ) − Pr[conf ≥ κ]) > 0 at most ~η of the time."""
    eta, n, runs = 0.1, 200, 300
    rng = np.random.default_rng(0)
    kappas = np.linspace(0, 1, 201)
    failures = 0
    for _ in range(runs):
        conf = rng.uniform(size=n)
        true = 1 - kappas  # Pr[U ≥ κ]
        failures += bool((confident_fraction_lower(conf, kappas, eta) > true + 1e-12).any())
    assert failures <= stats.binom.ppf(0.999, runs, eta)
    assert dkw_margin(n, eta) == pytest.approx(math.sqrt(math.log(10) / 400))


def test_holdout_test_counts_and_p_value():
    h = holdout_test(members=0, points=500, confident=300, attacked=300, eps=0.05, eta=0.01)
    assert h.rate == 0 and h.interval[0] == 0 and h.p_value == 1.0 and not h.significant
    h = holdout_test(members=60, points=500, confident=300, attacked=300, eps=0.05, eta=0.01)
    assert h.rate == 0.12 and h.significant and h.p_value < 1e-6
    assert h.interval[0] < 0.12 < h.interval[1]
    assert holdout_test(0, 0, 0, 0, 0.05, 0.01).rate is None


# --- the statistical test ------------------------------------------------------------------------------------------

def _range_mass_sup(steps, scale: float, a: float, w_dual: float) -> float:
    """sup over κ of Pr[conf ≥ κ and rob < M(κ)] for the exact-linear teacher (t = w·x ~ N(0, scale²)).

    conf = σ(a|t|) ≥ κ ⇔ |t| ≥ logit(κ)/a; rob = |t|/‖w‖_* < ρ ⇔ |t| < ρ‖w‖_*. Within a step (κ_{k−1}, κ_k] the
    mass decreases in κ, so the supremum is the limit κ → κ_{k−1}+ (κ_0: the smallest confidence, 1/2)."""
    def p_abs_between(lo, hi):  # Pr[lo < |t| < hi]
        if hi <= lo:
            return 0.0
        cdf = lambda v: 2 * stats.norm.cdf(v / scale) - 1  # noqa: E731 - Pr[|t| < v]
        return cdf(hi) - cdf(lo)

    def threshold(k):  # |t| at which conf = k
        return 0.0 if k <= 0.5 else math.log(k / (1 - k)) / a

    worst, prev = 0.0, 0.5
    for k, m in list(steps) + [(1.0, math.inf)]:
        worst = max(worst, p_abs_between(threshold(prev), m * w_dual))
        prev = k
    return worst


@pytest.mark.parametrize("norm", ["2", "inf"])
def test_the_guarantee_holds_at_rate_eta_on_the_exact_linear_teacher(norm):
    """Over 60 seeds, with the tight ε-net sample (d = 2) and the exact radius as the oracle (the tightest sound
    one), the true mass of R(M(κ), κ) (exact, from the normal CDF) reaches ε for some κ in at most η·runs plus
    binomial slack of the runs."""
    eps, eta, m, a, runs = 0.1, 0.1, 5, 3.0, 60
    s = pac.sample_size(m, eps, eta, bound="tight", guarantee="mass")
    w = np.array([1.0, -2.0, 0.5, 0.0, 1.5])
    w_dual = float(np.linalg.norm(w, 1 if norm == "inf" else 2))  # dual of L∞ is L1
    scale = float(np.linalg.norm(w))
    failures, masses = 0, []
    for seed in range(runs):
        x = np.random.default_rng(seed).normal(size=(s, m))
        t = x @ w
        conf = 1 / (1 + np.exp(-a * np.abs(t)))
        rob = np.abs(t) / w_dual
        worst = _range_mass_sup(confidence_steps(conf, rob), scale, a, w_dual)
        masses.append(worst)
        failures += worst >= eps
    assert failures <= stats.binom.ppf(0.999, runs, eta), (failures, max(masses))
    assert 0 < np.median(masses) < eps  # the ranges are not trivially empty: the test can fail


def test_the_test_detects_a_too_small_sample():
    """The same check with a tenth of the sample fails far more often than η: the statistical test has teeth."""
    eps, eta, m, a, runs = 0.1, 0.1, 5, 3.0, 60
    s = pac.sample_size(m, eps, eta, bound="tight", guarantee="mass") // 10
    w = np.array([1.0, -2.0, 0.5, 0.0, 1.5])
    scale = w_dual = float(np.linalg.norm(w))
    failures = 0
    for seed in range(runs):
        t = np.random.default_rng(seed).normal(size=(s, m)) @ w
        failures += _range_mass_sup(confidence_steps(1 / (1 + np.exp(-a * np.abs(t))), np.abs(t) / w_dual),
                                    scale, a, w_dual) >= eps
    assert failures > stats.binom.ppf(0.999, runs, eta)
