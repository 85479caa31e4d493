"""distill/margins.py against closed forms on linear models (every runner-up class, both norms)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pacverify.distill.margins import margin_alignment


def _linear(weight, bias):
    layer = nn.Linear(weight.shape[1], weight.shape[0]).double()
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight))
        layer.bias.copy_(torch.as_tensor(bias))
    return nn.Sequential(layer).float().eval()


@pytest.mark.parametrize("norm, dual", [("2", 2), ("inf", 1)])
def test_margins_and_gradients_of_linear_models(norm, dual):
    rng = np.random.default_rng(0)
    w_t, b_t = rng.normal(size=(3, 4)), rng.normal(size=3)
    w_s, b_s = rng.normal(size=(3, 4)), rng.normal(size=3)
    x = rng.normal(size=(5, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 1, 0])
    m = margin_alignment(_linear(w_t, b_t), _linear(w_s, b_s), x, y, norm)
    for i in range(5):
        others = [j for j in range(3) if j != y[i]]
        for col, j in enumerate(others):
            gt, gs = w_t[y[i]] - w_t[j], w_s[y[i]] - w_s[j]
            assert m.g_teacher[i, col] == pytest.approx(gt @ x[i] + b_t[y[i]] - b_t[j], abs=1e-5)
            assert m.g_student[i, col] == pytest.approx(gs @ x[i] + b_s[y[i]] - b_s[j], abs=1e-5)
            assert m.grad_teacher[i, col] == pytest.approx(np.linalg.norm(gt, dual), rel=1e-5)
            assert m.rho[i, col] == pytest.approx(np.linalg.norm(gs, dual) / np.linalg.norm(gt, dual), rel=1e-5)
            cos = gt @ gs / (np.linalg.norm(gt) * np.linalg.norm(gs))
            assert m.cosine[i, col] == pytest.approx(cos, abs=1e-5)
