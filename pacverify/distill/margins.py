"""Logit margins of teacher and student against every runner-up class, with their input gradients (Prop 4.3 of 004).

For a point x with teacher class y and each other class j, the margin is g = z_y − z_j. Prop 4.3's
proof compares the teacher's and the student's margins on a ball on which both are affine with
parallel gradients: there the radius at which margin j reaches zero is g / ‖∇g‖_* (‖·‖_* the dual
of the perturbation norm), so the teacher's radius for margin j is (g_T/g_S)·ρ_j times the
student's, with ρ_j = ‖∇g_S‖_* / ‖∇g_T‖_*. :func:`margin_alignment` measures every quantity this
needs, per point and runner-up, so that the certificate can report how far the premises hold.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pacverify.models import call_model, module_device
from pacverify.norms import dual_norm
from pacverify.validation import check_norm
from pacverify.verify.output_rows import margin_rows


@dataclass(frozen=True)
class MarginAlignment:
    """Arrays of shape (N, n − 1): one column per runner-up class j ≠ y (ascending j), float64.

    ``g_teacher``/``g_student``: the margins z_y − z_j; ``grad_teacher``/``grad_student``: the dual
    norms of their input gradients; ``cosine``: the cosine between the two gradients (NaN when one is 0).
    """

    g_teacher: np.ndarray
    g_student: np.ndarray
    grad_teacher: np.ndarray
    grad_student: np.ndarray
    cosine: np.ndarray

    @property
    def rho(self) -> np.ndarray:
        """ρ_j = ‖∇g_S‖_* / ‖∇g_T‖_* (+inf where the teacher's gradient is 0)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.grad_teacher > 0, self.grad_student / np.where(self.grad_teacher > 0,
                                                                                self.grad_teacher, 1.0), np.inf)

    @property
    def margin_ratio(self) -> np.ndarray:
        """g_T / g_S (0 where the student's margin is not positive: nothing transfers there)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.g_student > 0, self.g_teacher / np.where(self.g_student > 0, self.g_student, 1.0),
                            0.0)


def _jacobian(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (B, n) and their input Jacobian (B, n, m), float64 on the CPU (one backward pass per class)."""
    device = module_device(model)
    with torch.enable_grad():
        xb = x.to(device).detach().requires_grad_(True)
        z = call_model(model, xb)
        rows = [torch.autograd.grad(z[:, c].sum(), xb, retain_graph=c + 1 < z.shape[1])[0].flatten(1)
                for c in range(z.shape[1])]
    return z.detach().double().cpu(), torch.stack(rows, 1).double().cpu()


def margin_alignment(teacher: nn.Module, student: nn.Module, x: np.ndarray | torch.Tensor, labels: np.ndarray,
                     norm: str = "2", *, batch_size: int = 256,
                     progress: Callable[[int, int], None] | None = None) -> MarginAlignment:
    """Margins, gradient dual norms and gradient cosines of both models at ``x`` (N, *input_shape) for class ``labels``.

    Both models are evaluated on the same float32 inputs; the results are float64. Batch-independent
    models are assumed (eval mode), as everywhere in pacverify. ``progress(done, N)`` after each batch.
    """
    norm = check_norm(norm)
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    parts: list[list[np.ndarray]] = [[], [], [], [], []]
    for start in range(0, x.shape[0], batch_size):
        xb, yb = x[start:start + batch_size], torch.as_tensor(labels[start:start + batch_size])
        z_t, j_t = _jacobian(teacher, xb)
        z_s, j_s = _jacobian(student, xb)
        rows = margin_rows(yb, z_t.shape[1])  # (B, n-1, n): e_y − e_j, ascending j ≠ y
        g_t, g_s = (rows @ z_t[:, :, None])[..., 0], (rows @ z_s[:, :, None])[..., 0]
        d_t, d_s = rows @ j_t, rows @ j_s  # (B, n-1, m): the margin gradients
        n_t, n_s = dual_norm(d_t, norm), dual_norm(d_s, norm)
        l2_t, l2_s = torch.linalg.vector_norm(d_t, dim=-1), torch.linalg.vector_norm(d_s, dim=-1)
        denom = l2_t * l2_s
        cos = torch.where(denom > 0, (d_t * d_s).sum(-1) / torch.where(denom > 0, denom, 1.0), torch.nan)
        for store, value in zip(parts, (g_t, g_s, n_t, n_s, cos), strict=True):
            store.append(value.numpy())
        if progress is not None:
            progress(min(start + batch_size, x.shape[0]), x.shape[0])
    if not parts[0]:
        empty = np.zeros((0, 1))
        return MarginAlignment(empty, empty, empty, empty, empty)
    return MarginAlignment(*(np.concatenate(p) for p in parts))
