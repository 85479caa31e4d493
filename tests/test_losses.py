"""Each loss against a direct hand computation on tiny linear models (closed-form input gradients)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from pacverify.distill import losses as L

TAU = 2.0
W = L.Weights(lambda_ce=0.3, lambda_kl=0.7, tau=TAU, lambda_g=1.5, lambda_adv=0.4, lambda_diff=2.5)


def _linear(seed: int, m: int = 3, n: int = 4) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(m, n).double()


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _hand(model: nn.Linear, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logits and ∇_x CE for f(x) = Wx + b: the gradient is Wᵀ(softmax(z) − e_y)."""
    w, b = model.weight.detach().numpy(), model.bias.detach().numpy()
    z = x @ w.T + b
    return z, (_softmax(z) - np.eye(z.shape[1])[y]) @ w


@pytest.fixture
def setup():
    student, teacher = _linear(0), _linear(1)
    x = np.random.default_rng(0).normal(size=(6, 3))
    z_t, g_t = _hand(teacher, x, np.zeros(6, dtype=int))
    y = z_t.argmax(axis=1)
    z_t, g_t = _hand(teacher, x, y)
    batch = L.Batch(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(z_t), torch.from_numpy(g_t))
    return student, teacher, x, y, batch


def _kd_by_hand(z_s: np.ndarray, z_t: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    ce = float(np.mean(-np.log(_softmax(z_s)[np.arange(len(y)), y])))
    p_t, p_s = _softmax(z_t / TAU), _softmax(z_s / TAU)
    kl = float(np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=1))) * TAU**2
    return ce, kl


def test_ce_input_gradient_is_per_sample(setup):
    student, _, x, y, _ = setup
    _, grad = L.ce_input_gradient(student, torch.from_numpy(x), torch.from_numpy(y))
    np.testing.assert_allclose(grad.numpy(), _hand(student, x, y)[1], rtol=1e-10)


def test_kd_loss_by_hand(setup):
    student, _, x, y, batch = setup
    z_s, _ = _hand(student, x, y)
    ce, kl = _kd_by_hand(z_s, batch.teacher_logits.numpy(), y)
    value = L.kd_loss(student, batch, W)
    assert value.terms["ce"] == pytest.approx(ce, rel=1e-10)
    assert value.terms["kl"] == pytest.approx(kl, rel=1e-10)
    assert float(value.total) == pytest.approx(W.lambda_ce * ce + W.lambda_kl * kl, rel=1e-10)


def test_kdiga_loss_by_hand(setup):
    student, _, x, y, batch = setup
    z_s, g_s = _hand(student, x, y)
    ce, kl = _kd_by_hand(z_s, batch.teacher_logits.numpy(), y)
    gap = float(np.mean(np.linalg.norm(g_s - batch.teacher_grad.numpy(), axis=1)))
    value = L.kdiga_loss(student, batch, W)
    assert value.terms["grad"] == pytest.approx(gap, rel=1e-10)
    assert float(value.total) == pytest.approx(W.lambda_ce * ce + W.lambda_kl * kl + W.lambda_g * gap, rel=1e-10)


def test_kdiga_gradient_term_is_zero_for_a_copy_and_its_backward_is_finite():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 3))
    student = copy.deepcopy(teacher)
    x = torch.randn(16, 3)
    y = teacher(x).argmax(1)
    logits, grad = L.ce_input_gradient(teacher, x, y)
    value = L.kdiga_loss(student, L.Batch(x, y, logits.detach(), grad.detach()), W)
    assert value.terms["grad"] == 0.0
    value.total.backward()
    assert all(torch.isfinite(p.grad).all() for p in student.parameters())


def test_kdiga_gradient_term_decreases_under_training():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))
    student = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
    x = torch.randn(128, 2)
    y = teacher(x).argmax(1)
    logits, grad = L.ce_input_gradient(teacher, x, y)
    batch = L.Batch(x, y, logits.detach(), grad.detach())
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    gaps = []
    for _ in range(150):
        value = L.kdiga_loss(student, batch, L.Weights(lambda_g=5.0))
        opt.zero_grad()
        value.total.backward()
        opt.step()
        gaps.append(value.terms["grad"])
    assert gaps[-1] < 0.5 * gaps[0]
    assert all(p.grad is None for p in teacher.parameters())  # the teacher never entered autograd


def test_igam_losses_by_hand(setup):
    student, _, x, y, batch = setup
    torch.manual_seed(3)
    disc = L.GradientDiscriminator(3, scale=2.0).double()
    _, g_s = _hand(student, x, y)
    g_t = batch.teacher_grad.numpy()
    with torch.no_grad():
        d_s = disc(torch.from_numpy(g_s)).numpy()
        d_t = disc(torch.from_numpy(g_t)).numpy()
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    value = L.igam_loss(student, batch, W, disc)
    assert value.terms["adv"] == pytest.approx(np.mean(np.log(1 - sig(d_s))), rel=1e-9)
    assert value.terms["diff"] == pytest.approx(np.mean(np.sum((g_s - g_t) ** 2, axis=1)), rel=1e-10)
    ce, kl = _kd_by_hand(_hand(student, x, y)[0], batch.teacher_logits.numpy(), y)
    expected = W.lambda_ce * ce + W.lambda_kl * kl + W.lambda_adv * value.terms["adv"] + W.lambda_diff * value.terms["diff"]
    assert float(value.total) == pytest.approx(expected, rel=1e-10)
    disc_loss = L.igam_discriminator_loss(disc, torch.from_numpy(g_t), torch.from_numpy(g_s))
    assert float(disc_loss) == pytest.approx(-(np.mean(np.log(sig(d_t))) + np.mean(np.log(1 - sig(d_s)))), rel=1e-9)


def test_igdm_is_exact_for_linear_models(setup):
    student, teacher, x, y, batch = setup
    delta = torch.from_numpy(np.random.default_rng(1).normal(size=x.shape)) * 0.1
    with torch.no_grad():
        t_diff = L.output_difference(teacher, batch.x, delta)
    value = L.igdm_loss(student, batch, W, t_diff, delta, alpha_t=3.0)
    w_gap = (student.weight - teacher.weight).detach().numpy()
    expected = np.mean(np.sum((2 * delta.numpy() @ w_gap.T) ** 2, axis=1))
    assert value.terms["igdm"] == pytest.approx(expected, rel=1e-9)
    ce, kl = _kd_by_hand(_hand(student, x, y)[0], batch.teacher_logits.numpy(), y)
    assert float(value.total) == pytest.approx(W.lambda_ce * ce + W.lambda_kl * kl + 3.0 * expected, rel=1e-9)


def test_igdm_matches_a_finite_difference_reading():
    """For small δ, f(x+δ) − f(x−δ) = 2·J(x)·δ + O(δ³): IGDM reads the Jacobian gap along δ."""
    torch.manual_seed(2)
    student = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    teacher = nn.Sequential(nn.Linear(3, 16), nn.Sigmoid(), nn.Linear(16, 3)).double()
    x = torch.randn(8, 3, dtype=torch.float64)
    direction = torch.randn(8, 3, dtype=torch.float64)
    jac_s = torch.stack([torch.autograd.functional.jacobian(student, x[i]) for i in range(8)])  # (8, 3 out, 3 in)
    jac_t = torch.stack([torch.autograd.functional.jacobian(teacher, x[i]) for i in range(8)])
    jvp_gap = ((jac_s - jac_t) @ direction[:, :, None])[:, :, 0]
    for h in (1e-2, 1e-3):
        delta = h * direction
        with torch.no_grad():
            t_diff = L.output_difference(teacher, x, delta)
        y = torch.zeros(8, dtype=torch.long)
        batch = L.Batch(x, y, teacher(x).detach())
        reading = L.igdm_loss(student, batch, W, t_diff, delta, 1.0).terms["igdm"]
        exact = float(((2 * h * jvp_gap) ** 2).sum(1).mean())
        assert reading == pytest.approx(exact, rel=10 * h**2)
