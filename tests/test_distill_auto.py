"""``distill_auto`` (``--student auto``, issue 17): the ladder, the targets, the time budget, what is recorded."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers_distill import gaussian_sample, one_thread, relu_teacher  # noqa: F401 (fixture)

import pacverify.distill.auto as auto_module
from pacverify.distill import IMAGE_LADDER, MLP_LADDER, default_ladder, distill_auto
from pacverify.errors import InputError
from pacverify.models import build_student

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = dict(epochs=40, lr=1e-2, patience=5, seed=2, progress=False)
SMALL = ("linear", "mlp:1x4", "mlp:2x8")  # too small to copy the random ReLU teacher: ~95% agreement, GC ~0.7
UNREACHABLE = dict(target_agreement=1.0, target_gc=0.99)


@pytest.fixture(scope="module")
def teacher():
    return relu_teacher()


@pytest.fixture(scope="module")
def hard_teacher():
    """A random ReLU network with 3 outputs (2 of them win on the Gaussians): its curved boundary is beyond the small
    students of ``SMALL``."""
    return build_student("mlp:2x32", (2,), 3, seed=3).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def points():
    return gaussian_sample(150), gaussian_sample(150, seed=9)


def test_easy_targets_stop_at_the_first_student(teacher, points):
    x, fresh = points
    result = distill_auto(teacher, x, x_fresh=fresh, ladder=["mlp:2x16", "mlp:2x32"], **FAST)
    assert result.reached and len(result.tries) == 1 and result.chosen == "mlp:2x16" and result.best_index == 0
    first = result.tries[0]
    assert first.reached and first.heldout and first.agreement >= 0.99 and first.gc >= 0.8
    assert first.agreement == result.best.markers.agreement_fresh and first.gc == result.best.markers.gc_mean_fresh
    assert first.predicted_seconds is None and first.seconds > 0 and first.stop_reason
    assert result.student is result.best.student and result.student.spec == "mlp:2x16"
    assert result.explanation.startswith("targets agreement ≥ 0.99, GC ≥ 0.8 (held-out) reached by mlp:2x16 (try 1")
    assert not result.skipped


def test_unreachable_targets_try_the_whole_ladder_and_keep_the_best(hard_teacher, points):
    x, fresh = points
    seen = []
    result = distill_auto(hard_teacher, x, x_fresh=fresh, ladder=SMALL, budget_s=300, on_try=seen.append,
                          **UNREACHABLE, **FAST)
    assert not result.reached and [t.student for t in result.tries] == list(SMALL) and not result.skipped
    assert [t.student for t in seen] == list(SMALL)
    ranking = [(t.agreement, t.gc) for t in result.tries]
    assert ranking[result.best_index] == max(ranking)
    assert result.chosen == SMALL[result.best_index] and result.student.spec == result.chosen
    for t in result.tries:
        assert not t.reached and t.epochs_run >= 1 and t.seconds > 0 and t.stop_reason
        assert t.stop_reason.startswith(("plateau at epoch", "epoch budget", "agreement 1.0"))
        assert t.parameters == sum(p.numel() for p in build_student(t.student, (2,), 3).parameters())
    assert all(t.predicted_seconds is not None and t.predicted_seconds > 0 for t in result.tries[1:])
    text = result.explanation
    assert text.startswith("targets agreement ≥ 1, GC ≥ 0.99 (held-out) not reached by any of the 3 students")
    best = result.tries[result.best_index]
    assert f"best {best.student}: agreement {best.agreement:.3f}, GC {best.gc:.3f}" in text
    assert all(f"{t.student} ({t.agreement:.3f}, {t.gc:.3f})" in text for t in result.tries)
    # the teacher gives its second class to 5% of the points only; two students settle for the majority class, and
    # the explanation says so
    assert [(t.classes_student, t.classes_teacher) for t in result.tries] == [(1, 2), (2, 2), (1, 2)]
    assert text.endswith("; linear, mlp:2x8 predict one class at every held-out point while the teacher predicts 2: "
                         "the gradient term may have flattened the student (try a smaller lambda_g, grad_warmup, or "
                         "method kd)")
    record = json.loads(json.dumps(result.as_dict()))
    assert record["chosen"] == result.chosen and record["targets"] == {"agreement": 1.0, "gc": 0.99}
    assert [t["student"] for t in record["tries"]] == list(SMALL) and record["tries"][0]["markers"]["n"] == 150


def test_a_try_predicted_not_to_fit_is_not_started(hard_teacher, points, monkeypatch):
    """The prediction E × s/epoch × step-time ratio decides; here the ratio is made 1e9 for the larger student.

    The ratio must dwarf budget / (first try's seconds): with 1000, a first try under 60 ms (a fast CI machine)
    made the prediction fit the 60 s budget and the second try started."""
    x, fresh = points
    monkeypatch.setattr(auto_module, "step_seconds", lambda teacher, student, *a, **k:
                        1.0 if sum(p.numel() for p in student.parameters()) < 100 else 1e9)
    result = distill_auto(hard_teacher, x, x_fresh=fresh, ladder=["mlp:1x4", "mlp:2x8"], budget_s=60,
                          **UNREACHABLE, **FAST)
    assert [t.student for t in result.tries] == ["mlp:1x4"] and len(result.skipped) == 1
    first, skipped = result.tries[0], result.skipped[0]
    assert skipped.student == "mlp:2x8" and skipped.predicted_seconds > skipped.seconds_left > 0
    assert skipped.predicted_seconds == pytest.approx(1e9 * first.seconds, rel=1e-9)  # E = epochs of try 1
    assert "not reached within 60 s" in result.explanation
    assert "not tried for lack of time mlp:2x8 (predicted" in result.explanation


def test_the_budget_ends_the_search_and_cuts_the_running_try(hard_teacher, points):
    x, fresh = points
    result = distill_auto(hard_teacher, x, x_fresh=fresh, ladder=SMALL, budget_s=1e-6, **UNREACHABLE, **FAST)
    assert len(result.tries) == 1 and result.tries[0].epochs_run == 1  # the first try always runs, one epoch here
    assert result.tries[0].stop_reason == "time budget: stopped after epoch 1 of 40"
    assert [s.student for s in result.skipped] == list(SMALL[1:])
    assert all(s.predicted_seconds is None and s.seconds_left == 0 for s in result.skipped)
    assert "not reached within 1e-06 s" in result.explanation and "mlp:2x8 (budget spent)" in result.explanation


def test_same_seed_same_choice_and_same_student(hard_teacher, points):
    x, fresh = points
    state = torch.get_rng_state()
    runs = [distill_auto(hard_teacher, x, x_fresh=fresh, ladder=SMALL[1:], budget_s=300, **UNREACHABLE,
                         **{**FAST, "epochs": 15}) for _ in range(2)]
    assert torch.equal(state, torch.get_rng_state())
    a, b = runs
    assert a.chosen == b.chosen and [t.epochs_run for t in a.tries] == [t.epochs_run for t in b.tries]
    assert [(t.agreement, t.gc, t.stop_reason) for t in a.tries] == \
        [(t.agreement, t.gc, t.stop_reason) for t in b.tries]
    for p, q in zip(a.student.parameters(), b.student.parameters(), strict=True):
        assert torch.equal(p, q)


def test_image_points_get_conv_students(points):
    """Points of shape (N, C, H, W): the ladder includes conv students, and they train."""
    assert default_ladder((1, 6, 6)) == IMAGE_LADDER and any(s.startswith("cnn:") for s in IMAGE_LADDER)
    assert default_ladder((5,)) == MLP_LADDER == ("mlp:2x64", "mlp:2x128", "mlp:3x128", "mlp:3x256")
    teacher = build_student("cnn:4-fc8", (1, 6, 6), 2, seed=1).eval().requires_grad_(False)
    rng = np.random.default_rng(0)
    x, fresh = (rng.normal(size=(n, 1, 6, 6)).astype(np.float32) for n in (80, 40))
    result = distill_auto(teacher, x, x_fresh=fresh, ladder=IMAGE_LADDER[:2], budget_s=300, target_agreement=1.0,
                          target_gc=1.0, epochs=2, progress=False)
    assert [t.student for t in result.tries] == ["mlp:2x64", "cnn:16-32-fc64"]
    assert result.tries[1].stop_reason == "epoch budget: all 2 epochs run"


@pytest.mark.parametrize("bad, match", [
    (dict(budget_s=0), "budget_s must be > 0"),
    (dict(budget_s="soon"), "budget_s must be a number"),
    (dict(target_agreement=None, target_gc=None), "needs a target"),
    (dict(target_gc=1.5), r"target_gc must lie in \[0, 1\]"),
    (dict(student="mlp:2x8"), "chooses the student itself"),
    (dict(ladder=[]), "ladder of students to try is empty"),
    (dict(ladder=["cnn:8-fc8"]), "cnn student needs image inputs"),
    (dict(ladder=["mlp:2xx"]), "student spec must be"),
    (dict(epochs=0), "epochs"),
])
def test_bad_settings_are_refused_before_training(teacher, points, bad, match):
    with pytest.raises(InputError, match=match):
        distill_auto(teacher, points[0], progress=False, **bad)
