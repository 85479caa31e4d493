"""Small teachers and samples shared by the distillation tests (CI-sized, deterministic)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pacverify.data import TruncatedGaussians
from pacverify.models import build_student
from pacverify.synthetic import sigmoid_teacher


@pytest.fixture
def one_thread():
    """Run a test on one torch thread (the CI cores are shared; small nets gain nothing from more)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gaussian_sample(n: int, dim: int = 2, seed: int = 0) -> np.ndarray:
    return TruncatedGaussians(seed=seed, dim=dim).draw(n)


def relu_teacher(dim: int = 2, spec: str = "mlp:2x16", a: float = 2.0, seed: int = 5) -> nn.Module:
    """A ReLU MLP fitted (MSE on logits) to the sigmoid teacher of 004 Eq 11 with slope ``a``.

    A moderate slope keeps the teacher's softmax away from 0/1 on the Gaussians, so its
    cross-entropy input gradients are not vanishingly small (what gradient alignment matches).
    """
    reference = sigmoid_teacher(a, dim)
    teacher = build_student(spec, (dim,), 2, seed=seed)
    x = torch.from_numpy(TruncatedGaussians(seed=seed + 1, dim=dim).draw(1000))
    with torch.no_grad():
        target = reference(x)
    opt = torch.optim.Adam(teacher.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        ((teacher(x) - target) ** 2).mean().backward()
        opt.step()
    teacher.eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
        param.grad = None
    return teacher
