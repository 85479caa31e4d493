"""Distillation losses, selected by name (DESIGN.md §3; Def 4.1 of 004; 001 §2.1; 002 §4.2; 003 Eq 8).

Every loss takes the student, a :class:`Batch` (inputs, the teacher's labels y = argmax f_T(x)
(004 Eq 7), the teacher's logits and its detached input gradients) and the weights, and returns a
:class:`LossValue`: the scalar to minimise and its terms as floats for the progress bar. Shapes:
x (B, *input_shape), y (B,), logits (B, n), gradients (B, *input_shape). Means are over the batch.
The teacher never enters autograd here: its logits and gradients are precomputed constants, so
the double backward of the gradient terms goes through the student only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pacverify.names import DISTILL_METHODS

METHODS = DISTILL_METHODS


@dataclass(frozen=True)
class Batch:
    """One mini-batch of distillation targets (teacher quantities are detached constants)."""

    x: torch.Tensor
    y: torch.Tensor
    teacher_logits: torch.Tensor
    teacher_grad: torch.Tensor | None = None

    def required_teacher_grad(self) -> torch.Tensor:
        """``teacher_grad``, which the gradient-matching losses (KDIGA, IGAM) need."""
        if self.teacher_grad is None:
            raise ValueError("this loss needs the teacher's input gradients (Batch.teacher_grad)")
        return self.teacher_grad


@dataclass(frozen=True)
class LossValue:
    """``total`` (scalar tensor with autograd graph) and its named ``terms`` (floats)."""

    total: torch.Tensor
    terms: dict


@dataclass(frozen=True)
class Weights:
    """Loss weights: λ_CE, λ_KL, temperature τ (Def 4.1), λ_G (KDIGA), λ_adv and λ_diff (IGAM Eq 14)."""

    lambda_ce: float = 0.5
    lambda_kl: float = 0.5
    tau: float = 1.0
    lambda_g: float = 1.0
    lambda_adv: float = 1.0
    lambda_diff: float = 1.0


def ce_input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                      create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits f(x) (B, n) and per-sample input gradients ∇_{x_i} CE(f(x_i), y_i) (B, *input_shape).

    The CE is summed (not averaged) over the batch, so row i is the gradient of sample i's own
    loss; this is exact because the models used here treat samples independently.
    ``create_graph=True`` keeps the graph for a second backward (KDIGA, IGAM).
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = model(x)
        loss = F.cross_entropy(logits, y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x, create_graph=create_graph)
    return logits, grad


def kd_terms(student_logits: torch.Tensor, batch: Batch, w: Weights) -> dict[str, torch.Tensor]:
    """The first two terms of Def 4.1: λ_CE·CE(f_S(x), y) + λ_KL·τ²·KL(softmax(f_T/τ) ‖ softmax(f_S/τ))."""
    ce = F.cross_entropy(student_logits, batch.y)
    kl = F.kl_div(F.log_softmax(student_logits / w.tau, dim=1), F.log_softmax(batch.teacher_logits / w.tau, dim=1),
                  reduction="batchmean", log_target=True) * w.tau ** 2
    return {"ce": ce, "kl": kl, "total": w.lambda_ce * ce + w.lambda_kl * kl}


def _value(terms: dict[str, torch.Tensor]) -> LossValue:
    return LossValue(terms["total"], {k: float(v.detach()) for k, v in terms.items()})


def kd_loss(student: nn.Module, batch: Batch, w: Weights) -> LossValue:
    """Plain knowledge distillation (Hinton et al.): λ_CE·CE + λ_KL·τ²·KL; no gradient term (the baseline)."""
    return _value(kd_terms(student(batch.x), batch, w))


def gradient_gap(student_grad: torch.Tensor, teacher_grad: torch.Tensor) -> torch.Tensor:
    """Per-sample ‖g_S − g_T‖₂ over the flattened input, shape (B,)."""
    return torch.linalg.vector_norm((student_grad - teacher_grad).flatten(1), dim=1)


def kdiga_loss(student: nn.Module, batch: Batch, w: Weights) -> LossValue:
    """KDIGA, Def 4.1 of 004 (= L_IGA of 001 §2.1, Alg 1 of App G):

    L = λ_CE·CE(f_S(x), y) + λ_KL·τ²·KL(softmax(f_T(x)/τ) ‖ softmax(f_S(x)/τ))
        + λ_G · mean_i ‖∇_x CE(f_S(x_i), y_i) − ∇_x CE(f_T(x_i), y_i)‖₂,

    with per-sample gradients (:func:`ce_input_gradient`) and the teacher's gradient a constant.
    """
    logits, grad = ce_input_gradient(student, batch.x, batch.y, create_graph=True)
    terms = kd_terms(logits, batch, w)
    terms["grad"] = gradient_gap(grad, batch.required_teacher_grad()).mean()
    terms["total"] = terms["total"] + w.lambda_g * terms["grad"]
    return _value(terms)


class GradientDiscriminator(nn.Module):
    """IGAM's discriminator f_disc (002 §4.2.1): logit of P(J came from the teacher), J an input gradient.

    A small MLP on the flattened gradient (002 uses a CNN for images); it is never exported.
    ``scale`` multiplies its input so that gradients of any magnitude are well conditioned.
    """

    def __init__(self, features: int, scale: float, hidden: int = 64) -> None:
        super().__init__()
        self.scale = scale
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(features, hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, grad: torch.Tensor) -> torch.Tensor:
        return self.net(grad * self.scale).squeeze(1)


def igam_loss(student: nn.Module, batch: Batch, w: Weights, disc: GradientDiscriminator) -> LossValue:
    """IGAM student objective (002 Eq 14) on top of the KD terms:

    L = λ_CE·CE + λ_KL·τ²·KL + λ_adv · mean_i log(1 − f_disc(J_s(x_i))) + λ_diff · mean_i ‖J_s(x_i) − J_t(x_i)‖₂²,

    J = ∇_x CE (002 Eqs 8–9). Only the J_s part of L_adv (Eq 10) depends on the student;
    log(1 − σ(l)) = −softplus(l). With λ_KL = 0 and λ_CE = 1 this is exactly 002 Eq 14.
    """
    logits, grad = ce_input_gradient(student, batch.x, batch.y, create_graph=True)
    terms = kd_terms(logits, batch, w)
    terms["adv"] = (-F.softplus(disc(grad))).mean()
    terms["diff"] = (gradient_gap(grad, batch.required_teacher_grad()) ** 2).mean()
    terms["total"] = terms["total"] + w.lambda_adv * terms["adv"] + w.lambda_diff * terms["diff"]
    return _value(terms)


def igam_discriminator_loss(disc: GradientDiscriminator, teacher_grad: torch.Tensor,
                            student_grad: torch.Tensor) -> torch.Tensor:
    """−L_adv of 002 Eq 10 (minimised by the discriminator, Eq 12): BCE(f_disc(J_t), 1) + BCE(f_disc(J_s), 0)."""
    real, fake = disc(teacher_grad), disc(student_grad.detach())
    return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))


def output_difference(model: nn.Module, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """f(x + δ) − f(x − δ), shape (B, n): ≈ 2·J_f(x)·δ for small δ (003 Eqs 4–6)."""
    return model(x + delta) - model(x - delta)


def igdm_loss(student: nn.Module, batch: Batch, w: Weights, teacher_difference: torch.Tensor,
              delta: torch.Tensor, alpha_t: float) -> LossValue:
    """IGDM on top of the KD terms (003 Eq 8–9, Alg 1 of App C):

    L = λ_CE·CE + λ_KL·τ²·KL + T(α) · mean_i ‖(f_S(x_i+δ_i) − f_S(x_i−δ_i)) − (f_T(x_i+δ_i) − f_T(x_i−δ_i))‖₂²,

    with δ from a PGD step on the student (003 Eq 14), the teacher's difference precomputed
    without gradients, the discrepancy D the squared L2 distance (003 §4.1 reports L2 and KL alike),
    and ``alpha_t`` the ramp T(α) = α·epoch/epochs (003 App B.2).
    """
    terms = kd_terms(student(batch.x), batch, w)
    gap = output_difference(student, batch.x, delta) - teacher_difference
    terms["igdm"] = (gap ** 2).sum(dim=1).mean()
    terms["total"] = terms["total"] + alpha_t * terms["igdm"]
    return _value(terms)
