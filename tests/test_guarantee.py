"""δ_T (Prop 4.3), the coverage lower bound and the verdict rules of pacverify.guarantee."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pacverify.certificate.guarantee import (
    Evidence,
    Verdict,
    ball_hits,
    clopper_pearson_lower,
    coverage_lower_bound,
    decide_verdict,
    relaxed_delta,
)
from pacverify.errors import InputError


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
    # without the margin ratio, min(ρ, 1)·r = 0.3 understates it; the teacher's true radius there is also 0.6
    assert relaxed_delta([r_student], [rho]) == pytest.approx(0.5 * 0.6 / 3)
    g_ratio = ((w_teacher[0] - w_teacher[1]) @ x) / ((w_student[0] - w_student[1]) @ x)  # 2
    assert relaxed_delta([r_student], [rho], [g_ratio]) == pytest.approx(0.6 / 3)


def test_delta_t_uses_the_margin_ratio():
    # issue 10 §2: teacher margin x1, student margin x1 + 3, parallel unit gradients, at x = (2.2, 0).
    # The student's radius is 5.2, the teacher's true radius 2.2; min(ρ, 1)·r alone would claim 5.2.
    x1 = 2.2
    g_t, g_s, r_student = x1, x1 + 3.0, x1 + 3.0
    assert relaxed_delta([r_student], [1.0]) == pytest.approx(5.2 / 3)  # the overstatement of the old formula
    assert relaxed_delta([r_student], [1.0], [g_t / g_s]) == pytest.approx(2.2 / 3)


def test_delta_t_takes_every_runner_up():
    # three classes: runner-up 1 binds through the margin ratio, runner-up 2 through ρ
    rho = np.array([[1.0, 0.5]])
    ratio = np.array([[0.4, 1.0]])
    assert relaxed_delta([0.9], rho, ratio) == pytest.approx(0.4 * 0.9 / 3)
    assert relaxed_delta([0.9], rho[:, 1:], ratio[:, 1:]) == pytest.approx(0.5 * 0.9 / 3)
    # a student margin that is not positive transfers nothing
    assert relaxed_delta([0.9], [[1.0, 1.0]], [[1.0, 0.0]]) == 0.0


@given(st.lists(st.tuples(st.floats(0, 10), st.floats(0, 10)), min_size=1, max_size=30))
def test_delta_t_never_exceeds_student_radius_over_three(pairs):
    radii, rho = map(np.array, zip(*pairs, strict=True))
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
    # a 3δ counterexample does not refute a claim that was not made, but the reasons say the transfer failed ...
    v, reasons = decide_verdict(_evidence(2, verified=np.array([0, 1], bool), teacher_refuted_delta=np.ones(2, bool)))
    assert v is Verdict.NOT_CERTIFIED
    assert any("counterexamples within 3δ at 2 required points, 1 of them proven" in r for r in reasons), reasons
    # ... but a 3·δ_T counterexample always refutes the δ_T claim
    v, _ = decide_verdict(_evidence(2, verified=np.array([0, 1], bool), teacher_refuted_delta_t=np.ones(2, bool)))
    assert v is Verdict.REFUTED
    assert decide_verdict(_evidence(0))[0] is Verdict.NOT_CERTIFIED
    assert [v.exit_code for v in Verdict] == [0, 1, 3]


def test_verdict_reasons_separate_unproven_from_disagreeing_points():
    """Issue 17: a disagreeing point is counted once, as a disagreement, and said to count as unproven."""
    _, reasons = decide_verdict(_evidence(4, verified=np.array([1, 0, 0, 1], bool),
                                          agrees=np.array([1, 1, 0, 0], bool)))
    assert reasons[0].startswith("1 of 4 required points are not proven") and "agrees" in reasons[0]
    assert reasons[1].startswith("the student disagrees with the teacher at 2 of 4") and "unproven" in reasons[1]


def test_ball_hits_count_only_the_confident_part():
    """Issue 10 §1: coverage measures the confident part of each ball, as the PAC statement does."""
    from pacverify.certificate.guarantee import ball_hits

    centers = np.zeros((1, 2))
    refs = np.array([[[0.1, 0.0], [0.0, 0.2], [3.0, 0.0], [0.05, 0.05]]])
    assert ball_hits(centers, refs, 0.5, "2").tolist() == [3]
    confident = np.array([[True, False, True, True]])
    assert ball_hits(centers, refs, 0.5, "2", counted=confident).tolist() == [2]
    assert ball_hits(centers, refs, 0.15, "inf", counted=confident).tolist() == [2]


def test_coverage_sentence_speaks_of_the_confident_part_and_of_d_prime():
    from pacverify.certificate.statements import coverage_sentence

    cov = {"lower": 0.25, "confidence": 0.99, "points": 200, "batch": 400}
    plain = coverage_sentence(cov, 0.1, 0.05, 0.9)
    assert "κ-confident part (κ = 0.9) has D_X-mass ≥ ε = 0.05" in plain
    shifted = coverage_sentence(cov, 0.1, 0.05, 0.9, tv=0.01)
    assert "any D' with TV(D_X, D') ≤ Λ = 0.01" in shifted and "ε + Λ = 0.06" in shifted
    assert "not estimated" in coverage_sentence({"points": 0, "note": "not estimated: x"}, 0.1, 0.05, 0.9)


def test_vectorised_clopper_pearson_equals_the_scalar_one():
    from pacverify.certificate.guarantee import clopper_pearson_lower_many

    ks = np.array([0, 1, 3, 50, 199, 200])
    many = clopper_pearson_lower_many(ks, 200, 0.01)
    assert many.tolist() == pytest.approx([clopper_pearson_lower(int(k), 200, 0.01) for k in ks], rel=1e-9)


def test_delta_t_note_only_when_not_certified():
    from pacverify.certificate.statements import delta_t_note

    assert delta_t_note(0.2, certified=True) is None
    assert delta_t_note(0.0, certified=False) is None
    assert "would support if" in delta_t_note(0.2, certified=False)


def test_shifted_coverage_raises_the_threshold_by_two_lambda_and_subtracts_lambda():
    from pacverify.certificate.guarantee import shifted_coverage

    hits = np.full(100, 80)  # every point: 80 of 200 reference draws, p ≈ 0.4 (exact lower bound ≈ 0.32)
    plain = shifted_coverage(hits, 200, 0.2, 0.0)
    assert plain["threshold"] == 0.2 and plain["lower"] == coverage_lower_bound(hits, 200, 0.2).lower > 0.9
    shifted = shifted_coverage(hits, 200, 0.2, 0.02)
    assert shifted["threshold"] == pytest.approx(0.24)
    assert shifted["lower"] == pytest.approx(coverage_lower_bound(hits, 200, 0.24).lower - 0.02)
    # a Λ that pushes the threshold above what the draws show leaves nothing covered
    assert shifted_coverage(hits, 200, 0.2, 0.1)["lower"] == 0.0
