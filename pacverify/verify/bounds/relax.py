"""Linear relaxation of a ReLU between its pre-activation bounds (Zhang et al. 2018, CROWN, Thm 3.2).

For a neuron with pre-activation z in [l, u]:

* stably active (l >= 0): relu(z) = z; stably inactive (u <= 0): relu(z) = 0 — both exact;
* unstable (l < 0 < u): the upper line ``s·(z − l)`` with ``s = u / (u − l)`` (the chord) and a lower
  line ``α·z`` with any α in [0, 1]; CROWN's adaptive choice is α = 1 when u >= −l, else 0.

``relu(z) >= α z`` and ``relu(z) <= s (z − l)`` hold for every z in [l, u], which is all the backward
pass needs: a nonnegative coefficient takes the lower line, a negative one the upper line.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ReluRelaxation:
    """Relaxation of one ReLU layer for a batch, every field (B, width).

    ``lower``/``upper``: the pre-activation bounds; ``up_slope``/``up_intercept``: the upper line
    ``up_slope·z + up_intercept``; ``lo_slope``: CROWN's default lower slope; ``unstable``: l < 0 < u;
    ``unstable_lower``: l where unstable, else 0 (so ``up_intercept = −up_slope·unstable_lower``).
    For stable neurons ``lo_slope == up_slope`` (1 or 0) and ``up_intercept == 0``.
    """

    lower: torch.Tensor
    upper: torch.Tensor
    up_slope: torch.Tensor
    up_intercept: torch.Tensor
    lo_slope: torch.Tensor
    unstable: torch.Tensor
    unstable_lower: torch.Tensor


def relax_relu(lower: torch.Tensor, upper: torch.Tensor) -> ReluRelaxation:
    """The CROWN relaxation of ReLUs with pre-activation bounds ``lower <= upper`` (B, width)."""
    active = lower >= 0
    unstable = (lower < 0) & (upper > 0)
    width = torch.where(unstable, upper - lower, torch.ones_like(upper))
    up_slope = torch.where(unstable, upper / width, active.to(upper.dtype))
    up_intercept = torch.where(unstable, -up_slope * lower, torch.zeros_like(lower))
    lo_slope = torch.where(unstable, (upper >= -lower).to(upper.dtype), active.to(upper.dtype))
    unstable_lower = torch.where(unstable, lower, torch.zeros_like(lower))
    return ReluRelaxation(lower, upper, up_slope, up_intercept, lo_slope, unstable, unstable_lower)


def relu_backward_lower(A: torch.Tensor, up: torch.Tensor, lo_minus_up: torch.Tensor, intercept: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pull a lower bound of ``A · relu(z)`` back to a lower bound ``A' · z + c`` valid on [l, u].

    ``A`` (..., w); ``up``, ``lo_minus_up``, ``intercept`` broadcastable to it: each neuron's upper
    slope, lower slope minus upper slope, and upper-line intercept (``−up·l`` where unstable, else 0).
    Nonnegative coefficients take the lower line ``lo·z``, negative ones the upper line
    ``up·z + intercept``: ``A' = A·up + relu(A)·(lo − up)`` and ``c = Σ min(A, 0)·intercept
    = A·intercept − relu(A)·intercept``. Returns ``A'`` and ``c`` (A's shape without the last dimension).
    """
    # arithmetic rather than torch.where, which is an order of magnitude slower on CPU tensors here;
    # the row sums as batched dot products, without full-size temporaries
    positive = torch.relu(A)
    new_A = torch.addcmul(A * up, positive, lo_minus_up)
    c = _row_dot(A, intercept) - _row_dot(positive, intercept)
    return new_A, c


def _row_dot(A: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``(A * v).sum(-1)`` for A (T, w) with v (T, w), A (B, K, w) with v (B, 1, w), or A (K, w) with v (B, 1, w)."""
    if A.dim() == 2 and v.dim() == 2:
        return torch.einsum("tw,tw->t", A, v)
    if A.dim() == 3:
        return torch.bmm(A, v.transpose(1, 2)).squeeze(-1)
    return v.squeeze(1) @ A.T
