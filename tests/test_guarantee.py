"""δ_T (Prop 4.3), the coverage lower bound and the verdict rules of pacverify.guarantee."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pacverify.errors import InputError
from pacverify.guarantee import (
    Evidence,
    Verdict,
    ball_hits,
    clopper_pearson_lower,
    coverage_lower_bound,
    decide_verdict,
    relaxed_delta,
)


def test_delta_t_hand_computed():
    # min(min(2,1)*0.3, min(0.5,1)*0.6) / 3 = min(0.3, 0.3)/3 = 0.1
    assert relaxed_delta([0.3, 0.6], [2.0, 0.5]) == pytest.approx(0.1)
    # a flat student (rho = 0.25) shrinks the teacher radius: 0.25 * 0.9 / 3 = 0.075
    assert relaxed_delta([0.9, 1.2], [0.25, 1.0]) == pytest.approx(0.075)


def test_delta_t_linear_teacher_and_student():
    # Linear 2-class models z = W x: the logit margin g = z_0 - z_1 has gradient w0 - w1, the
    # same everywhere, so rho is the ratio of the two margin-gradient norms.
    w_teacher = np.array([[2.0, 0.0], [0.0, 0.0]])
    w_student = np.array([[1.0, 0.0], [0.0, 0.0]])
    rho = np.linalg.norm(w_student[0] - w_student[1]) / np.linalg.norm(w_teacher[0] - w_teacher[1])
    assert rho == 0.5
    # the student's exact robust radius at x is |g_S(x)| / ||grad g_S||: at x = (0.6, 0) it is 0.6
    x = np.array([0.6, 0.0])
    r_student = abs((w_student[0] - w_student[1]) @ x) / np.linalg.norm(w_student[0] - w_student[1])
    # the teacher's true radius there is also 0.6; Prop 4.3 takes the conservative 0.5 * 0.6
    assert relaxed_delta([r_student], [rho]) == pytest.approx(0.5 * 0.6 / 3)


@given(st.lists(st.tuples(st.floats(0, 10), st.floats(0, 10)), min_size=1, max_size=30))
def test_delta_t_never_exceeds_student_radius_over_three(pairs):
    radii, rho = map(np.array, zip(*pairs))
    dt = relaxed_delta(radii, rho)
    assert dt <= radii.min() / 3 + 1e-12
    assert dt >= 0


def test_delta_t_edge_cases():
    assert relaxed_delta([], []) == 0.0
    assert relaxed_delta([0.3], [np.inf]) == pytest.approx(0.1)
    with pytest.raises(InputError):
        relaxed_delta([0.3, np.nan], [1, 1])
    with pytest.raises(InputError):
        relaxed_delta([0.3], [1, 1])


def test_clopper_pearson_matches_scipy_binomtest():
    from scipy.stats import binomtest
    for k, n in [(3, 10), (50, 100), (999, 1000)]:
        ours = clopper_pearson_lower(k, n, 0.05)
        ref = binomtest(k, n).proportion_ci(confidence_level=0.90, method="exact").low
        assert ours == pytest.approx(ref, rel=1e-9)
    assert clopper_pearson_lower(0, 10, 0.05) == 0.0


@pytest.mark.parametrize("q", [0.0, 0.3, 0.8])
def test_coverage_bound_holds_at_its_confidence(q):
    """Monte Carlo of the whole procedure with known ball masses: the bound must be <= q at least
    (1 - alpha) of the time. Masses: a fraction q of points have mass 0.1 >= eps, the rest 0.049 < eps."""
    rng = np.random.default_rng(1)
    eps, batch, n, alpha = 0.05, 400, 100, 0.1
    failures = 0
    trials = 200
    for _ in range(trials):
        masses = np.where(rng.random(n) < q, 0.1, 0.049)
        hits = rng.binomial(batch, masses)
        bound = coverage_lower_bound(hits, batch, eps, alpha=alpha, alpha_point=0.05)
        failures += bound.lower > q
    assert failures / trials <= alpha + 0.05  # allowance for Monte Carlo noise


def test_coverage_bound_is_informative_when_masses_are_large():
    rng = np.random.default_rng(2)
    hits = rng.binomial(1000, 0.3, size=300)
    assert coverage_lower_bound(hits, 1000, 0.05).lower > 0.9


def test_ball_hits_both_norms():
    centers = np.zeros((1, 2))
    refs = np.array([[[0.5, 0.5], [0.9, 0.0], [0.8, 0.8]]])
    assert ball_hits(centers, refs, 0.75, "2").tolist() == [1]      # |(0.5,0.5)| = 0.707
    assert ball_hits(centers, refs, 0.85, "inf").tolist() == [2]    # (0.5,.5) and (.8,.8)


def _evidence(n, **over):
    base = dict(verified=np.ones(n, bool), agrees=np.ones(n, bool), teacher_refuted_delta=np.zeros(n, bool),
                teacher_refuted_delta_t=np.zeros(n, bool))
    base.update(over)
    return Evidence(**base)


def test_verdict_rules():
    assert decide_verdict(_evidence(3))[0] is Verdict.CERTIFIED
    assert decide_verdict(_evidence(3, verified=np.array([1, 0, 1], bool)))[0] is Verdict.NOT_CERTIFIED
    assert decide_verdict(_evidence(3, agrees=np.array([1, 1, 0], bool)))[0] is Verdict.NOT_CERTIFIED
    assert decide_verdict(_evidence(3, teacher_refuted_delta=np.array([0, 1, 0], bool)))[0] is Verdict.REFUTED
    # a 3δ counterexample does not refute a claim that was not made ...
    v, reasons = decide_verdict(_evidence(2, verified=np.array([0, 1], bool), teacher_refuted_delta=np.ones(2, bool)))
    assert v is Verdict.NOT_CERTIFIED
    # ... but a 3·δ_T counterexample always refutes the δ_T claim
    v, _ = decide_verdict(_evidence(2, verified=np.array([0, 1], bool), teacher_refuted_delta_t=np.ones(2, bool)))
    assert v is Verdict.REFUTED
    assert decide_verdict(_evidence(0))[0] is Verdict.NOT_CERTIFIED
    assert [v.exit_code for v in Verdict] == [0, 1, 3]
