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
    assert {"ce", "kl", "grad", "total"} <= set(result.history[0].terms)
    assert result.history[-1].terms["grad"] < result.history[0].terms["grad"]
    assert not result.student.training and next(result.student.parameters()).device.type == "cpu"
    summary = result.as_dict()
    assert summary["settings"]["method"] == "kdiga" and summary["markers"]["n"] == 300


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
