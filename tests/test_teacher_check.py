"""The teacher attack (pacverify.pipeline.teacher_check): a tiny pocket of the other class that PGD from the centre
cannot reach is found by random sampling and by spread restarts; every counterexample is confirmed and lies in
ball ∩ domain; the fresh-point attack maps a counterexample to the required point whose claimed ball holds it, and
attacks only fresh points within 2δ of one; the budget reaches the certificate."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pacverify.certificate import schema as S
from pacverify.data import TruncatedGaussians
from pacverify.norms import vector_norm
from pacverify.pipeline.settings import CertifySettings
from pacverify.pipeline.stages import Labels, Relaxation, Sample, Setup, attack_teacher_stage
from pacverify.pipeline.teacher_check import (
    TeacherCheck,
    TeacherModel,
    assign_counterexamples,
    attack_fresh,
    attack_teacher,
    merge_checks,
    near_claims,
)
from pacverify.synthetic import pocket_teacher

X0 = np.array([0.7, 0.7])          # class 0 for the sigmoid teacher (x·1 > 0), confidence σ(3·1.4) ≈ 0.985
RADIUS = 0.45                      # a claimed 3δ-ball, δ = 0.15
SIDE = np.array([0.25, -0.25])     # along the decision boundary: PGD from X0 descends along −(1, 1), never here


def _teacher(centre: np.ndarray, pocket: float) -> TeacherModel:
    return TeacherModel(pocket_teacher(3.0, np.asarray(centre).reshape(1, 2), pocket), (2,))


def _confirmed(teacher: TeacherModel, check, centers: np.ndarray, labels: np.ndarray, radius: float, norm: str,
               domain=None) -> None:
    """Every reported counterexample is in ball ∩ domain (float64), representable in the teacher's float32, and
    classified differently by a forward pass of the teacher on exactly that point."""
    rows = np.nonzero(check.found)[0]
    assert not np.isnan(check.counterexamples[rows]).any()
    assert np.isnan(check.counterexamples[~check.found]).all()
    x = check.counterexamples[rows]
    dist = vector_norm(x - centers[rows], norm, axis=1)
    assert (dist <= radius).all()
    if domain is not None:
        assert ((x >= domain[0]) & (x <= domain[1])).all()
    np.testing.assert_array_equal(x, x.astype(np.float32).astype(np.float64))
    with torch.no_grad():
        cls = teacher.module(torch.as_tensor(x, dtype=torch.float32)).argmax(1).numpy()
    assert (cls != labels[rows]).all()
    np.testing.assert_array_equal(cls, check.cex_class[rows])


@pytest.mark.parametrize("norm", ["2", "inf"])
def test_a_pocket_beside_the_descent_path_is_missed_by_pgd_from_the_centre_and_found_by_sampling(norm):
    # a small pocket (L1 radius 0.06) beside the path: 1 % of the ball, outside every gradient's reach from X0
    teacher = _teacher(X0 + SIDE, 0.06)
    centers, labels = X0[None, :], np.array([0])
    centre_only = attack_teacher(teacher, centers, labels, RADIUS, norm, n_classes=2, restarts=1, random_samples=0)
    assert not centre_only.found.any()
    for seed in range(3):
        sampled = attack_teacher(teacher, centers, labels, RADIUS, norm, n_classes=2, restarts=1,
                                 random_samples=2000, seed=seed)
        assert sampled.found.all()
        _confirmed(teacher, sampled, centers, labels, RADIUS, norm)


@pytest.mark.parametrize("norm", ["2", "inf"])
def test_spread_restarts_reach_a_pocket_basin_that_the_centre_start_does_not(norm):
    # a wide bump (L1 radius 0.3) whose pull covers a quarter of the ball; X0 lies outside it
    teacher = _teacher(X0 + 0.3 * np.array([1.0, -1.0]) / np.sqrt(2), 0.3)
    centers, labels = X0[None, :], np.array([0])
    assert not attack_teacher(teacher, centers, labels, RADIUS, norm, n_classes=2, restarts=1,
                              random_samples=0).found.any()
    for seed in range(3):
        spread = attack_teacher(teacher, centers, labels, RADIUS, norm, n_classes=2, restarts=16, starts="spread",
                                random_samples=0, seed=seed)
        assert spread.found.all()
        _confirmed(teacher, spread, centers, labels, RADIUS, norm)


@pytest.mark.parametrize("norm", ["2", "inf"])
def test_counterexamples_are_confirmed_and_inside_ball_and_domain(norm):
    # the domain cuts the balls; the pocket lies inside it; a robust centre far away has nothing to find
    domain = (-2.0, 0.98)
    teacher = _teacher(X0 + SIDE, 0.06)
    centers = np.array([X0, X0 + [0.05, -0.1], [-0.7, -0.7]])
    labels = np.array([0, 0, 1])
    check = attack_teacher(teacher, centers, labels, RADIUS, norm, n_classes=2, domain=domain, seed=4)
    assert check.found.tolist() == [True, True, False]
    _confirmed(teacher, check, centers, labels, RADIUS, norm, domain)
    assert check.random_samples == 2000 and check.starts == "spread" and check.attacked == 3


def test_a_counterexample_found_in_one_ball_refutes_every_claimed_ball_that_holds_it():
    teacher = _teacher(X0 + SIDE, 0.06)
    found_here = attack_teacher(teacher, X0[None, :], np.array([0]), RADIUS, "2", n_classes=2)
    assert found_here.found.all()
    # other claimed balls, never attacked: the first holds the counterexample, the second is too far,
    # the third holds it but claims the counterexample's own class
    cex = found_here.counterexamples[0]
    others = np.array([cex + [0.3, 0.0], cex + [0.5, 0.0], cex + [0.0, 0.3]])
    empty = TeacherCheck(np.zeros(3, bool), np.full((3, 2), np.nan), np.full(3, -1), RADIUS, 50, 10)
    merged = merge_checks(empty, found_here, centers=others, labels=np.array([0, 0, 1]), norm="2")
    assert merged.found.tolist() == [True, False, False]
    np.testing.assert_array_equal(merged.counterexamples[0], cex)


def test_assign_counterexamples_checks_radius_class_and_domain():
    points = np.array([[0.1, 0.0], [0.0, 0.5], [0.2, 0.0]])
    classes = np.array([1, 1, 0])
    centers = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [5.0, 5.0]])
    labels = np.array([0, 1, 0, 0])
    found, cex, cls = assign_counterexamples(points, classes, centers, labels, 0.3, "2")
    assert found.tolist() == [True, True, True, False]
    np.testing.assert_array_equal(cex[0], points[0])       # the first of another class inside
    np.testing.assert_array_equal(cex[1], points[2])       # class 0 refutes a claim of class 1
    assert cls.tolist()[:3] == [1, 0, 1]
    found, _, _ = assign_counterexamples(points, classes, centers[:1], labels[:1], 0.3, "2", domain=(0.15, 1.0))
    assert not found.any()                                  # points[0] lies outside the domain


def test_near_claims_is_the_2delta_test_in_either_norm():
    centers = np.array([[0.0, 0.0]])
    points = np.array([[0.29, 0.0], [0.25, 0.25], [0.31, 0.0]])
    assert near_claims(points, centers, 0.3, "2").tolist() == [True, False, False]
    assert near_claims(points, centers, 0.3, "inf").tolist() == [True, True, False]


@pytest.mark.parametrize("norm", ["2", "inf"])
def test_the_fresh_point_attack_maps_its_counterexample_to_the_claim_whose_ball_holds_it(norm):
    delta = RADIUS / 3
    near = X0 + [0.25, 0.0]              # within 2δ = 0.3 of X0
    pocket = near + [0.1, 0.0]           # within δ of the fresh point, 0.35 from X0: inside X0's claimed ball
    teacher = _teacher(pocket, 0.06)
    centers, labels = np.array([X0, -X0]), np.array([0, 1])
    check = attack_fresh(teacher, near[None, :], centers, labels, RADIUS, norm, n_classes=2, kappa=0.9, seed=2)
    assert check.attacked == 1
    assert check.found.tolist() == [True, False]
    _confirmed(teacher, check, centers, labels, RADIUS, norm)
    assert vector_norm(check.counterexamples[0] - near, norm) <= delta + 1e-12
    # the claimed balls alone, searched by PGD only from their centres, do not see it
    assert not attack_teacher(teacher, centers, labels, RADIUS, norm, n_classes=2, restarts=1,
                              random_samples=0).found.any()


@pytest.mark.parametrize("norm", ["2", "inf"])
def test_a_fresh_point_farther_than_2delta_is_not_attacked(norm):
    far = X0 + [0.32, 0.0]               # 0.32 > 2δ = 0.3 from X0 (in both norms)
    teacher = _teacher(far + [0.1, 0.0], 0.06)   # a pocket 0.42 from X0: inside its claimed ball all the same
    check = attack_fresh(teacher, far[None, :], X0[None, :], np.array([0]), RADIUS, norm, n_classes=2, kappa=0.9)
    assert check.attacked == 0 and not check.found.any()


def test_a_fresh_point_that_is_not_kappa_confident_is_not_attacked():
    near = X0 + [0.25, 0.0]
    teacher = _teacher(near + [0.1, 0.0], 0.06)
    check = attack_fresh(teacher, near[None, :], X0[None, :], np.array([0]), RADIUS, "2", n_classes=2, kappa=0.9999)
    assert check.attacked == 0 and not check.found.any()


def _setup(teacher: torch.nn.Module, **settings) -> Setup:
    cfg = CertifySettings(delta=0.15, eps=0.5, eta=0.1, synthetic="gaussians", **settings).validated()
    return Setup(cfg=cfg, teacher=teacher, teacher_path=None, teacher_hash="x", sampler=TruncatedGaussians(seed=0),
                 source=cfg.source_description(), input_shape=(2,), dim=2, samples=50, samples_required=50,
                 out_dir=None, device=torch.device("cpu"))


def test_the_stage_records_its_budget_and_the_old_budget_is_still_available():
    mode = 1 / np.sqrt(2)
    teacher = pocket_teacher(3.0, np.array([[mode, mode]]), 0.06)
    points = np.array([[mode + 0.1, mode - 0.1], [mode - 0.2, mode + 0.1], [-mode, -mode]], dtype=np.float32)
    labels = Labels(np.array([0, 0, 1]), np.array([0.99, 0.99, 0.99]), 2)
    relaxation = Relaxation(*(np.zeros(3),) * 4, delta_t=0.1)
    new = attack_teacher_stage(_setup(teacher, attack_fresh_points=200), Sample(points), labels, relaxation)
    assert (new.random_samples, new.fresh_points) == (2000, 200)
    assert new.fresh_attacked_delta > 0 and new.fresh_attacked_delta_t > 0
    assert new.found_delta.tolist() == [True, True, False] and new.found_delta_t[2] == 0
    old = attack_teacher_stage(_setup(teacher, attack_restarts=5, attack_starts="box", attack_random_samples=0,
                                      attack_fresh_points=0), Sample(points), labels, relaxation)
    assert (old.random_samples, old.fresh_points, old.fresh_attacked_delta) == (0, 0, 0)


def test_the_budget_fields_are_in_the_certificate_schema():
    names = [f.name for f in dataclasses.fields(S.TeacherCheck)]
    for name in ("steps", "restarts", "starts", "random_samples", "fresh_points", "fresh_points_attacked",
                 "fresh_points_attacked_delta_T"):
        assert name in names


@pytest.mark.parametrize("bad", [dict(attack_random_samples=-1), dict(attack_fresh_points=2.5),
                                 dict(attack_starts="everywhere"), dict(attack_restarts=0)])
def test_bad_attack_budgets_are_refused(bad):
    from pacverify.errors import InputError

    with pytest.raises(InputError, match="attack"):
        CertifySettings(delta=0.1, eps=0.5, eta=0.1, synthetic="gaussians", **bad).validated()


def test_merge_takes_the_refutations_of_a_check_of_the_same_claims_as_they_are():
    centers, labels = np.array([X0, -X0]), np.array([0, 1])
    none = TeacherCheck(np.zeros(2, bool), np.full((2, 2), np.nan), np.full(2, -1), RADIUS, 50, 10)
    fresh = TeacherCheck(np.array([True, False]), np.array([[0.8, 0.6], [np.nan, np.nan]]), np.array([1, -1]),
                         RADIUS, 50, 10, attacked=1)
    merged = merge_checks(none, same=(fresh,), centers=centers, labels=labels, norm="2")
    assert merged.found.tolist() == [True, False]
    np.testing.assert_array_equal(merged.counterexamples[0], [0.8, 0.6])
    assert merged.cex_class.tolist() == [1, -1]
