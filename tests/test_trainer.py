"""The trainer: the papers' central claims at CI size, determinism, settings, early stop, checkpoints, ISD."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from helpers_distill import gaussian_sample, one_thread, relu_teacher  # noqa: F401 (fixture)

from pacverify.distill import DistillConfig, distill, make_config
from pacverify.errors import InputError
from pacverify.models import load_student

pytestmark = pytest.mark.usefixtures("one_thread")

BUDGET = dict(epochs=30, lr=1e-2, early_stop=False, seed=1)


@pytest.fixture(scope="module")
def teacher():
    return relu_teacher()


@pytest.fixture(scope="module")
def sample():
    return gaussian_sample(300), gaussian_sample(300, seed=9)


@pytest.fixture(scope="module")
def kd_and_kdiga(teacher, sample):
    with torch.random.fork_rng():
        torch.set_num_threads(1)
        x, fresh = sample
        return {m: distill(teacher, x, student="mlp:2x16", method=m, progress=False, x_fresh=fresh, **BUDGET)
                for m in ("kd", "kdiga")}


def test_same_architecture_student_reaches_agreement_and_gradient_cosine(kd_and_kdiga):
    markers = kd_and_kdiga["kdiga"].markers
    assert markers.agreement >= 0.99 and markers.agreement_fresh >= 0.99
    assert markers.gc_mean > 0.9 and markers.gc_mean_fresh > 0.9


def test_kdiga_beats_kd_on_gradient_distance(kd_and_kdiga):
    """The papers' central claim (001 §2.1, 004 Def 4.1): same budget, input-gradient alignment lowers GD."""
    kd, kdiga = kd_and_kdiga["kd"].markers, kd_and_kdiga["kdiga"].markers
    assert kdiga.gd_mean < 0.8 * kd.gd_mean
    assert kdiga.gd_mean_fresh < 0.8 * kd.gd_mean_fresh


def test_history_and_result_fields(kd_and_kdiga, teacher):
    result = kd_and_kdiga["kdiga"]
    assert result.epochs_run == 30 and len(result.history) == 30 and not result.stopped_early
    assert result.stop_reason == "epoch budget: all 30 epochs run (early stop off)"
    record = result.history[-1]  # the held-out markers of every epoch, against the teacher's labels
    assert record.agreement_fresh is not None and record.gc_fresh is not None and record.gd_fresh is not None
    assert 0 <= record.gc <= 1 and record.gd_fresh >= 0
    assert {"ce", "kl", "grad", "total"} <= set(result.history[0].terms)
    assert result.history[-1].terms["grad"] < result.history[0].terms["grad"]
    assert not result.student.training and next(result.student.parameters()).device.type == "cpu"
    summary = result.as_dict()
    assert summary["settings"]["method"] == "kdiga" and summary["markers"]["n"] == 300
    assert summary["stop_reason"] == result.stop_reason and summary["history"][0]["gc_fresh"] is not None


@pytest.mark.parametrize("method", ["kdiga", "igdm"])
def test_the_teacher_is_never_trained(teacher, sample, method):
    unfrozen = copy.deepcopy(teacher)
    for param in unfrozen.parameters():
        param.requires_grad_(True)
    distill(unfrozen, sample[0][:64], method=method, epochs=2, progress=False)
    for before, after in zip(teacher.parameters(), unfrozen.parameters(), strict=True):
        assert after.grad is None and torch.equal(before, after)


def test_same_seed_same_student_and_global_rng_untouched(teacher, sample):
    x = sample[0][:120]
    state = torch.get_rng_state()
    runs = [distill(teacher, x, student="mlp:2x8", epochs=3, progress=False, seed=s, dropout=0.2) for s in (4, 4, 5)]
    assert torch.equal(state, torch.get_rng_state())
    a, b, c = (list(r.student.parameters()) for r in runs)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a, c, strict=True))


def test_settings_are_validated():
    with pytest.raises(InputError, match="unknown distillation setting.*lamda_g.*valid:"):
        make_config(lamda_g=1.0)
    for bad in (dict(method="xyz"), dict(lr=-1), dict(epochs=0), dict(dropout=1.0), dict(optimizer="rmsprop"),
                dict(norm="l1"), dict(tau=0), dict(lambda_g=-0.5)):
        with pytest.raises(InputError):
            make_config(**bad)
    assert make_config(method="KDIGA", lr="0.01").lr == 0.01


def test_early_stop_keeps_the_best_epoch_and_checkpoints(teacher, sample, tmp_path):
    x = sample[0][:150]
    result = distill(teacher, x, student="mlp:2x16", epochs=200, patience=3, lr=1e-2, progress=False,
                     checkpoint_dir=tmp_path / "ckpt")
    assert result.stopped_early and result.epochs_run < 200
    assert result.stop_reason == (f"agreement 1.0 at epoch {result.epochs_run}: sample GD did not improve by 1% "
                                  "in 3 epochs")
    assert result.history[-1].agreement == 1.0
    best_gd = min(r.gd for r in result.history if r.agreement == 1.0)
    assert result.markers.gd_mean == pytest.approx(best_gd, rel=1e-3)  # the best epoch's weights were kept
    checkpoint = load_student(tmp_path / "ckpt" / "checkpoint.pt")
    assert checkpoint.spec == "mlp:2x16"
    assert not list((tmp_path / "ckpt").glob("*.tmp"))


def test_isd_loops_use_dropout_and_decay_the_learning_rate(teacher, sample):
    x = sample[0][:150]
    result = distill(teacher, x, student="mlp:2x16", isd_loops=2, dropout=0.1, epochs=10, lr=1e-2,
                     isd_lr_decay=0.1, early_stop=False, progress=False)
    loops = [r.loop for r in result.history]
    assert loops == [1] * 10 + [2] * 10
    assert result.stop_reason == ("loop 1: epoch budget: all 10 epochs run (early stop off); "
                                  "loop 2: epoch budget: all 10 epochs run (early stop off)")
    assert result.history[10].lr == pytest.approx(1e-3)
    assert any(isinstance(m, torch.nn.Dropout) for m in result.student)
    assert result.markers.agreement > 0.9  # markers are against the original teacher


@pytest.mark.parametrize("method", ["igam", "igdm"])
def test_igam_and_igdm_train(teacher, sample, method):
    x = sample[0][:200]
    result = distill(teacher, x, student="mlp:2x16", method=method, progress=False, **{**BUDGET, "epochs": 15})
    assert result.markers.agreement >= 0.97
    assert {"adv", "diff"} <= set(result.history[0].terms) if method == "igam" else "igdm" in result.history[0].terms
    if method == "igdm":
        assert result.igdm_eps > 0


def test_a_given_student_module_is_copied_and_checked(teacher, sample):
    x = sample[0][:100]
    module = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    before = copy.deepcopy(module.state_dict())
    result = distill(teacher, x, student=module, epochs=2, progress=False)
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert result.markers.n == 100
    with pytest.raises(InputError, match="3 logits but the teacher 2"):
        distill(teacher, x, student=torch.nn.Linear(2, 3), epochs=1, progress=False)
    with pytest.raises(InputError, match="x_fresh"):
        distill(teacher, x, epochs=1, progress=False, x_fresh=np.zeros((5, 3)))


def test_default_config_is_valid():
    assert DistillConfig().validated() == DistillConfig()
    cfg = DistillConfig()
    assert (cfg.patience, cfg.plateau_tol, cfg.target_agreement, cfg.target_gc, cfg.stop_at_targets) == \
        (10, 0.002, 0.99, 0.8, False)
    assert cfg.targets_text == "agreement ≥ 0.99, GC ≥ 0.8"


def _hard_teacher():
    """A random 3-class ReLU network: a linear student cannot copy it (agreement stays below 1)."""
    from pacverify.models import build_student

    return build_student("mlp:2x32", (2,), 3, seed=3).eval().requires_grad_(False)


def test_plateau_stops_before_the_epoch_budget_and_says_why(sample):
    x, fresh = sample[0][:150], sample[1][:150]
    result = distill(_hard_teacher(), x, x_fresh=fresh, student="linear", epochs=200, patience=5, lr=1e-2,
                     progress=False)
    k = result.epochs_run
    assert result.stopped_early and k < 200 and result.history[-1].agreement < 1.0
    assert result.stop_reason.startswith(f"plateau at epoch {k}: held-out agreement ")
    assert result.stop_reason.endswith("did not improve by > 0.002 (GD " + result.stop_reason.split("(GD ")[1])
    assert result.stop_reason.endswith("not by > 1%) in 5 epochs")
    # the rule, re-checked from the history: the last 5 epochs rose by no more than 0.002 in agreement and GC (and
    # fell by no more than 1% in GD) above the best values of the epochs before them
    before, last = result.history[:-5], result.history[-5:]
    assert max(r.agreement_fresh for r in last) <= max(r.agreement_fresh for r in before) + 0.002
    assert max(r.gc_fresh for r in last) <= max(r.gc_fresh for r in before) + 0.002
    assert min(r.gd_fresh for r in last) >= min(r.gd_fresh for r in before) * 0.99
    assert result.as_dict()["stop_reason"] == result.stop_reason and result.as_dict()["stopped_early"]
    again = distill(_hard_teacher(), x, x_fresh=fresh, student="linear", epochs=200, patience=5, lr=1e-2,
                    progress=False)
    assert again.epochs_run == k and again.stop_reason == result.stop_reason  # reproducible for a seed


def test_plateau_without_fresh_points_watches_the_sample(sample):
    result = distill(_hard_teacher(), sample[0][:150], student="linear", epochs=200, patience=5, lr=1e-2,
                     progress=False)
    assert result.stop_reason.startswith(f"plateau at epoch {result.epochs_run}: sample agreement ")
    assert result.history[-1].agreement_fresh is None and result.history[-1].gc is not None


def test_stop_at_targets(teacher, sample):
    x, fresh = sample[0][:150], sample[1][:150]
    result = distill(teacher, x, x_fresh=fresh, student="mlp:2x16", epochs=200, lr=1e-2, stop_at_targets=True,
                     target_agreement=0.99, target_gc=0.9, progress=False)
    k, last = result.epochs_run, result.history[-1]
    assert result.stopped_early and k < 200
    assert result.stop_reason == (f"targets reached at epoch {k}: held-out agreement {last.agreement_fresh:.4f} "
                                  f"≥ 0.99, GC {last.gc_fresh:.4f} ≥ 0.9")
    assert last.agreement_fresh >= 0.99 and last.gc_fresh >= 0.9
    assert not any(r.agreement_fresh >= 0.99 and r.gc_fresh >= 0.9 for r in result.history[:-1])
    only_gc = distill(teacher, x, x_fresh=fresh, student="mlp:2x16", epochs=200, lr=1e-2, stop_at_targets=True,
                      target_agreement=None, target_gc=0.5, progress=False)
    assert only_gc.stop_reason.startswith("targets reached at epoch") and "agreement" not in only_gc.stop_reason
    assert only_gc.epochs_run <= k


def test_time_limit_stops_after_the_epoch_that_ends_past_it(teacher, sample):
    result = distill(teacher, sample[0][:100], student="mlp:2x8", epochs=50, time_limit_s=0, progress=False)
    assert result.epochs_run == 1 and result.stopped_early
    assert result.stop_reason == "time budget: stopped after epoch 1 of 50"
    with pytest.raises(InputError, match="time_limit_s must be >= 0"):
        distill(teacher, sample[0][:100], epochs=1, time_limit_s=-1, progress=False)


def test_stop_settings_are_validated():
    for bad, match in ((dict(target_agreement=1.5), r"target_agreement must lie in \[0, 1\]"),
                       (dict(target_gc=-0.1), r"target_gc must lie in \[0, 1\]"),
                       (dict(plateau_tol=-1), "plateau_tol must be >= 0"),
                       (dict(stop_at_targets="maybe"), "stop_at_targets must be true or false"),
                       (dict(patience=0), "patience")):
        with pytest.raises(InputError, match=match):
            make_config(**bad)
    cfg = make_config(target_agreement="none", target_gc="0.5", stop_at_targets="yes")
    assert (cfg.target_agreement, cfg.target_gc, cfg.stop_at_targets) == (None, 0.5, True)
    assert cfg.targets_text == "GC ≥ 0.5" and make_config(target_agreement=None, target_gc=None).targets_text == \
        "no targets"
    assert not make_config(target_agreement=None, target_gc=None).reaches_targets(1.0, 1.0)


def test_grad_warmup_ramps_the_gradient_weight():
    from pacverify.distill.fit import _ramped

    cfg = make_config(lambda_g=4.0, igam_lambda_diff=2.0, grad_warmup=0.5, epochs=10)
    weights = [_ramped(cfg, epoch) for epoch in range(10)]
    assert [w.lambda_g for w in weights] == pytest.approx([0.8, 1.6, 2.4, 3.2, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0])
    assert weights[0].lambda_diff == pytest.approx(0.4) and weights[0].lambda_ce == cfg.lambda_ce
    assert _ramped(make_config(lambda_g=4.0), 0).lambda_g == 4.0


def test_divergence_is_reported(teacher, sample):
    with pytest.raises(InputError, match="diverged.*lower the learning rate"):
        distill(teacher, sample[0][:64], lr=1e30, lambda_g=1e30, epochs=3, progress=False)


def test_sgd_with_step_schedule(teacher, sample):
    result = distill(teacher, sample[0][:64], optimizer="sgd", schedule="step", lr=0.1, epochs=6, early_stop=False,
                     progress=False)
    assert [r.lr for r in result.history] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
