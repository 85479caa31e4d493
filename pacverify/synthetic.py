"""Synthetic teachers with known robustness (004 §5), for the demo and for end-to-end tests.

* :func:`sigmoid_teacher` — the paper's teacher f_T(x, a) = (σ(a·x·1), 1 − σ(a·x·1)) (Eq 11),
  realised as a ReLU network whose softmax is exactly that: logits (a·s/2, −a·s/2) with
  s = x·1 computed as relu(s) − relu(−s) through a hidden layer. Its exact L2 robust radius at
  x is |x·1| / √m, and it is κ-confident exactly where |x·1| ≥ logit(κ)/a.
* :func:`pocket_teacher` — the sigmoid teacher plus small "pockets" of the other class around
  given centres: confident points near a pocket have a true robust radius below the pocket's
  distance, so a certificate at a larger δ must never be issued.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def _relu_net(weights: list[np.ndarray], biases: list[np.ndarray]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        lin = nn.Linear(w.shape[1], w.shape[0], dtype=torch.float32)
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(w, dtype=torch.float32))
            lin.bias.copy_(torch.as_tensor(b, dtype=torch.float32))
        layers.append(lin)
        if i < len(weights) - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).eval()


def sigmoid_teacher(a: float, dim: int = 2, width: int = 32) -> nn.Sequential:
    """The sigmoid teacher of Eq 11 of 004 as a ReLU network (dim → width → 2 logits).

    softmax(f(x))_0 = σ(a·Σx) exactly. The hidden layer holds ``width/2`` copies of relu(s) and
    of relu(−s) (a wider teacher than any student needs; the function is the same).
    """
    if width < 2 or width % 2:
        raise ValueError("width must be an even number >= 2")
    half = width // 2
    w1 = np.concatenate([np.ones((half, dim)), -np.ones((half, dim))])
    w2_row = np.concatenate([np.full(half, a / 2 / half), np.full(half, -a / 2 / half)])
    w2 = np.stack([w2_row, -w2_row])
    return _relu_net([w1, w2], [np.zeros(width), np.zeros(2)])


def sigmoid_radius(x: np.ndarray) -> np.ndarray:
    """Exact L2 robust radius of :func:`sigmoid_teacher` at points x (N, m): |Σx| / √m."""
    x = np.asarray(x, dtype=np.float64)
    return np.abs(x.sum(axis=1)) / math.sqrt(x.shape[1])


def pocket_teacher(a: float, centres: np.ndarray, pocket: float, dim: int = 2, strength: float = 40.0) -> nn.Sequential:
    """Sigmoid teacher whose class flips inside L∞ boxes of half-width ``pocket`` around ``centres``.

    For each centre c, the bump h_c(x) = relu(1 − Σ_i |x_i − c_i| / pocket) (positive only within
    L1 distance ``pocket`` of c) is added with weight ``strength`` to the logit of the class the
    sigmoid teacher does *not* give at c, so the decision flips near c while confident points
    around it keep their class: a teacher that is not robust at radius ``pocket`` there.
    """
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, dim)
    k = len(centres)
    # hidden units: relu(s), relu(-s), then for each centre and coordinate relu(x_i-c_i), relu(c_i-x_i)
    rows, bias = [np.ones(dim), -np.ones(dim)], [0.0, 0.0]
    for c in centres:
        for i in range(dim):
            e = np.zeros(dim)
            e[i] = 1.0
            rows += [e, -e]
            bias += [-c[i], c[i]]
    w1, b1 = np.stack(rows), np.array(bias)
    # second hidden layer: relu(s) and relu(-s) passed through, plus one bump per centre
    n1 = len(rows)
    w2 = np.zeros((2 + k, n1))
    b2 = np.zeros(2 + k)
    w2[0, 0] = w2[1, 1] = 1.0
    for j in range(k):
        w2[2 + j, 2 + 2 * dim * j: 2 + 2 * dim * (j + 1)] = -1.0 / pocket
        b2[2 + j] = 1.0
    w3 = np.zeros((2, 2 + k))
    w3[0, 0], w3[0, 1] = a / 2, -a / 2
    w3[1, 0], w3[1, 1] = -a / 2, a / 2
    for j, c in enumerate(centres):
        flip_to = 1 if c.sum() > 0 else 0
        w3[flip_to, 2 + j] = strength
    return _relu_net([w1, w2, w3], [b1, b2, np.zeros(2)])
