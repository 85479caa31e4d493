"""Output rows: bounds are always computed on ``C @ logits``.

``C`` is a matrix of rows over the network's outputs, of shape (B, K, n) (one K×n matrix per point)
or (K, n) (shared by every point); the bound routines return lower and upper bounds on
``C[b] @ f(x)`` of shape (B, K). Local robustness (Def 3.1 of 004, DESIGN.md §2) at a point of class
y is the statement that every margin ``z_y - z_j`` (j ≠ y) stays positive: :func:`margin_rows` builds
those rows. (A whole robustness question — rows, thresholds and how they combine into an unsafe set —
is an :class:`~pacverify.verify.property.OutputProperty`.)
"""
from __future__ import annotations

import numpy as np
import torch

from pacverify.errors import InputError


def margin_rows(labels, n_classes: int, *, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """The margin rows ``C`` of shape (B, n-1, n): row ``C[b, i] = e_y - e_j`` with ``y = labels[b]``.

    The rows run over ``j = 0 .. n-1`` in ascending order, skipping ``y``; so ``(C[b] @ z)[i] = z_y - z_j``.
    A point is verified when the lower bounds of all its rows are > 0.
    """
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
        raise InputError(f"n_classes must be an integer >= 2, got {n_classes!r}")
    y = torch.as_tensor(np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels))
    if y.dim() != 1 or y.numel() == 0 or y.is_floating_point() or y.dtype == torch.bool:
        raise InputError(f"labels must be a non-empty 1-D array of class indices, got shape {tuple(y.shape)} "
                         f"and dtype {y.dtype}")
    if (y < 0).any() or (y >= n_classes).any():
        raise InputError(f"labels must lie in [0, {n_classes - 1}], got values from {int(y.min())} to {int(y.max())}")
    y = y.to(device=device, dtype=torch.long)
    batch = y.shape[0]
    others = torch.arange(n_classes - 1, device=device).expand(batch, -1)
    others = others + (others >= y[:, None]).long()  # j = 0..n-1 without y, ascending
    C = torch.zeros(batch, n_classes - 1, n_classes, dtype=dtype, device=device)
    C[torch.arange(batch, device=device), :, y] = 1.0
    C.scatter_(2, others.unsqueeze(-1), -1.0)
    return C


def check_output_rows(C, batch: int, n_outputs: int, *, dtype: torch.dtype, device) -> torch.Tensor | None:
    """``C`` validated and converted: None stays None (bounds on the logits), (K, n) stays shared, (B, K, n) batched.

    Raises InputError when the shape does not fit ``batch`` points and ``n_outputs`` network outputs,
    or when C holds NaN or ±inf.
    """
    if C is None:
        return None
    C = torch.as_tensor(C.detach() if isinstance(C, torch.Tensor) else np.asarray(C, dtype=np.float64))
    C = C.to(device=device, dtype=dtype)
    if C.dim() not in (2, 3) or C.shape[-1] != n_outputs or C.shape[-2] == 0 or (C.dim() == 3 and C.shape[0] != batch):
        raise InputError(f"the output rows C must have shape (K, {n_outputs}) or ({batch}, K, {n_outputs}), "
                         f"got {tuple(C.shape)}")
    if not torch.isfinite(C).all():
        raise InputError("the output rows C must be finite")
    return C
