"""Markers of distillation quality (DESIGN.md §2 "Distillation quality markers" and "δ_T relaxation").

All functions take the teacher f_T and the student f_S (any differentiable modules, each on its own
device), points x of shape (N, *input_shape), and use the teacher's labels y = argmax f_T(x):

* agreement: fraction of points with argmax f_S = y;
* Eq 13 of 004: fraction with max softmax f_S(x) ≥ max softmax f_T(x) (student at least as confident);
* GD and GC of 003 §4.2: ‖∇_x CE_S − ∇_x CE_T‖₂ and their cosine, per point;
* ρ_i of DESIGN.md §2 / Prop 4.3 of 004 (:func:`margin_gradient_ratio`);
* the local-linearity measure of 001 Def 2 (:func:`local_linearity`), on request.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pacverify.attacks import ascent_direction, project, random_in_ball
from pacverify.distill.losses import ce_input_gradient
from pacverify.errors import InputError
from pacverify.models import call_model, module_device
from pacverify.validation import check_norm, check_positive

RHO_QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)


def _batches(x: torch.Tensor, batch_size: int):
    for start in range(0, x.shape[0], batch_size):
        yield x[start:start + batch_size]


def _logits(model: nn.Module, xb: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return call_model(model, xb.to(module_device(model))).float().cpu()


def _margin_gradient(model: nn.Module, xb: torch.Tensor, y: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """∇_x (z_y − z_k) per sample, (B, *input_shape), on the CPU."""
    device = module_device(model)
    with torch.enable_grad():
        x = xb.to(device).requires_grad_(True)
        z = model(x)
        margin = z.gather(1, y.to(device)[:, None]) - z.gather(1, k.to(device)[:, None])
        (grad,) = torch.autograd.grad(margin.sum(), x)
    return grad.float().cpu()


def margin_gradient_ratio(teacher: nn.Module, student: nn.Module, x: np.ndarray | torch.Tensor, norm: str = "2",
                          *, batch_size: int = 256) -> np.ndarray:
    """ρ_i = ‖∇_x g_S(x_i)‖_* / ‖∇_x g_T(x_i)‖_*, shape (N,), float64 (DESIGN.md §2, Prop 4.3 of 004).

    g = z_y − z_k is the logit margin between the TEACHER's class y = argmax f_T(x_i) and the
    teacher's runner-up k (second-largest teacher logit); the same y and k are used for both models.
    ‖·‖_* is the dual of the perturbation norm: ‖·‖₂ for ``norm='2'`` and ‖·‖₁ for ``norm='inf'``
    (a margin with gradient g changes by at most ‖g‖_*·r over a ball of radius r in the primal norm).

    Zero teacher gradient: ρ_i = +inf (whatever the student's gradient), so min(ρ_i, 1) = 1 and the
    teacher's local radius is taken as the student's — the teacher's margin does not change to first
    order, so the ratio of Prop 4.3 is unbounded. A zero student gradient with a non-zero teacher
    gradient gives ρ_i = 0 (δ_T = 0: no relaxation is claimed).
    """
    norm = check_norm(norm)
    ord_ = 1 if norm == "inf" else 2
    x = _as_tensor(x)
    out = []
    for xb in _batches(x, batch_size):
        z_t = _logits(teacher, xb)
        top2 = z_t.topk(2, dim=1).indices
        y, k = top2[:, 0], top2[:, 1]
        g_t = torch.linalg.vector_norm(_margin_gradient(teacher, xb, y, k).flatten(1), ord=ord_, dim=1).double()
        g_s = torch.linalg.vector_norm(_margin_gradient(student, xb, y, k).flatten(1), ord=ord_, dim=1).double()
        out.append(torch.where(g_t > 0, g_s / torch.where(g_t > 0, g_t, 1.0), torch.inf))
    return torch.cat(out).numpy() if out else np.zeros(0)


def gradient_alignment(teacher: nn.Module, student: nn.Module, x: np.ndarray | torch.Tensor, *,
                       batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per-point GD = ‖∇_x CE(f_S(x), y) − ∇_x CE(f_T(x), y)‖₂ and GC = their cosine (003 §4.2), y = teacher's class.

    Cosine conventions where it is undefined: 1 when both gradients are zero (identical), 0 when
    exactly one is. Returns two float64 arrays of shape (N,).
    """
    x = _as_tensor(x)
    gds, gcs = [], []
    for xb in _batches(x, batch_size):
        y = _logits(teacher, xb).argmax(dim=1)
        g_t = _ce_grad(teacher, xb, y).flatten(1).double()
        g_s = _ce_grad(student, xb, y).flatten(1).double()
        n_t, n_s = torch.linalg.vector_norm(g_t, dim=1), torch.linalg.vector_norm(g_s, dim=1)
        cos = (g_t * g_s).sum(dim=1) / (n_t * n_s).clamp_min(1e-300)
        cos = torch.where((n_t == 0) & (n_s == 0), 1.0, torch.where((n_t == 0) | (n_s == 0), 0.0, cos))
        gds.append(torch.linalg.vector_norm(g_s - g_t, dim=1))
        gcs.append(cos)
    if not gds:
        return np.zeros(0), np.zeros(0)
    return torch.cat(gds).numpy(), torch.cat(gcs).numpy()


def _ce_grad(model: nn.Module, xb: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    device = module_device(model)
    return ce_input_gradient(model, xb.to(device), y.to(device))[1].detach().float().cpu()


def agreement_and_eq13(teacher: nn.Module, student: nn.Module, x: np.ndarray | torch.Tensor, *,
                       batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Per point: argmax f_S = argmax f_T, and Eq 13 of 004 (max softmax f_S ≥ max softmax f_T). Bool (N,)."""
    x = _as_tensor(x)
    agree, eq13 = [], []
    for xb in _batches(x, batch_size):
        z_t, z_s = _logits(teacher, xb), _logits(student, xb)
        if z_t.shape != z_s.shape:
            raise InputError(f"teacher and student disagree on the number of classes: {z_t.shape[1]} vs {z_s.shape[1]}")
        agree.append(z_s.argmax(1) == z_t.argmax(1))
        eq13.append(F.softmax(z_s, 1).amax(1) >= F.softmax(z_t, 1).amax(1))
    return (torch.cat(agree).numpy(), torch.cat(eq13).numpy()) if agree else (np.zeros(0, bool), np.zeros(0, bool))


def local_linearity(model: nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, radius: float, *,
                    norm: str = "2", steps: int = 20, restarts: int = 5, seed: int = 0,
                    batch_size: int = 256) -> np.ndarray:
    """Estimate of LLM(f, x, ε) of 001 Def 2 per point, shape (N,):

    max over ‖δ‖ ≤ ε of |CE(f(x+δ), y) − CE(f(x), y) − δᵀ∇_x CE(f(x), y)|,

    maximised by projected gradient ascent from ``restarts`` random starts. An ascent only finds
    values the maximum is at least as large as: the estimate is a lower bound on the true LLM.
    """
    norm, radius = check_norm(norm), check_positive(radius, "radius")
    device = module_device(model)
    x, y = _as_tensor(x), torch.as_tensor(np.asarray(y), dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, x.shape[0], batch_size):
        xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
        logits, grad = ce_input_gradient(model, xb, yb)
        base = F.cross_entropy(logits, yb, reduction="none").detach()

        def gap(delta: torch.Tensor) -> torch.Tensor:
            ce = F.cross_entropy(model(xb + delta), yb, reduction="none")
            return (ce - base - (delta * grad).flatten(1).sum(1)).abs()

        best = torch.zeros_like(base)
        for _ in range(restarts):
            delta = random_in_ball(tuple(xb.shape), radius, norm, generator).to(xb)
            for _ in range(steps):
                with torch.enable_grad():
                    delta = delta.detach().requires_grad_(True)
                    value = gap(delta)
                    (g,) = torch.autograd.grad(value.sum(), delta)
                best = torch.maximum(best, value.detach())
                delta = project(delta.detach() + 2.5 * radius / steps * ascent_direction(g, norm), radius, norm)
            with torch.no_grad():
                best = torch.maximum(best, gap(delta))
        out.append(best.cpu())
    return torch.cat(out).double().numpy() if out else np.zeros(0)


@dataclass(frozen=True)
class QualityMarkers:
    """The distillation-quality markers a certificate reports (DESIGN.md §2). Fractions in [0, 1].

    ``rho_quantiles`` maps quantile levels (as strings, "0" = min, "1" = max) to ρ values;
    ``rho_inf`` counts points where the teacher's margin gradient is zero (ρ = inf).
    ``*_fresh`` fields are None when no fresh sample was given.
    """

    n: int
    agreement: float
    eq13_fraction: float
    gd_mean: float
    gc_mean: float
    rho_quantiles: dict
    rho_inf: int
    norm: str
    n_fresh: int = 0
    agreement_fresh: float | None = None
    eq13_fraction_fresh: float | None = None
    gd_mean_fresh: float | None = None
    gc_mean_fresh: float | None = None
    llm_radius: float | None = None
    llm_student_mean: float | None = None
    llm_teacher_mean: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def rho_summary(rho: np.ndarray) -> tuple[dict, int]:
    """Quantiles of ρ (inf values included: they sort last) and the count of infinite ρ."""
    if rho.size == 0:
        return {}, 0
    finite = np.where(np.isinf(rho), np.finfo(np.float64).max, rho)
    values = np.quantile(finite, RHO_QUANTILES, method="lower")
    return ({f"{q:g}": (float("inf") if v == np.finfo(np.float64).max else float(v))
             for q, v in zip(RHO_QUANTILES, values, strict=True)}, int(np.isinf(rho).sum()))


def quality_markers(teacher: nn.Module, student: nn.Module, x: np.ndarray | torch.Tensor,
                    x_fresh: np.ndarray | torch.Tensor | None = None, *, norm: str = "2", batch_size: int = 256,
                    llm_radius: float | None = None, seed: int = 0) -> QualityMarkers:
    """All markers on the training sample ``x`` and, when given, on the held-out sample ``x_fresh``.

    ρ quantiles are computed on ``x`` (the points certify verifies). ``llm_radius`` adds the mean
    local-linearity estimate of 001 Def 2 for both models at that radius.
    """
    norm = check_norm(norm)
    agree, eq13 = agreement_and_eq13(teacher, student, x, batch_size=batch_size)
    gd, gc = gradient_alignment(teacher, student, x, batch_size=batch_size)
    quantiles, n_inf = rho_summary(margin_gradient_ratio(teacher, student, x, norm, batch_size=batch_size))
    fields: dict = {}
    if x_fresh is not None and len(x_fresh):
        agree_f, eq13_f = agreement_and_eq13(teacher, student, x_fresh, batch_size=batch_size)
        gd_f, gc_f = gradient_alignment(teacher, student, x_fresh, batch_size=batch_size)
        fields = dict(n_fresh=len(agree_f), agreement_fresh=float(agree_f.mean()),
                      eq13_fraction_fresh=float(eq13_f.mean()), gd_mean_fresh=float(gd_f.mean()),
                      gc_mean_fresh=float(gc_f.mean()))
    if llm_radius is not None:
        y = torch.cat([_logits(teacher, xb).argmax(1) for xb in _batches(_as_tensor(x), batch_size)])
        fields.update(llm_radius=float(llm_radius),
                      llm_student_mean=float(local_linearity(student, x, y, llm_radius, norm=norm, seed=seed).mean()),
                      llm_teacher_mean=float(local_linearity(teacher, x, y, llm_radius, norm=norm, seed=seed).mean()))
    return QualityMarkers(n=len(agree), agreement=float(agree.mean()), eq13_fraction=float(eq13.mean()),
                          gd_mean=float(gd.mean()), gc_mean=float(gc.mean()), rho_quantiles=quantiles,
                          rho_inf=n_inf, norm=norm, **fields)
