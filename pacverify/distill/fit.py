"""One distillation fit: teacher targets, the mini-batch loop, schedule, early stop, checkpoints (DESIGN.md §3).

:func:`fit_student` trains a student against a teacher's :class:`Targets` with the loss chosen by
:class:`DistillConfig` (:mod:`pacverify.distill.losses`). The entry point that builds the student and
measures the markers is :func:`pacverify.distill.trainer.distill`; ISD (:mod:`pacverify.distill.isd`)
runs several fits.
"""
from __future__ import annotations

import copy
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pacverify.attacks import pgd
from pacverify.distill import losses as L
from pacverify.errors import InputError
from pacverify.models import call_model, module_device, save_student
from pacverify.validation import (
    check_choice,
    check_nonnegative,
    check_norm,
    check_positive,
    check_probability,
    check_samples,
    check_seed,
)

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine", "step")


@dataclass(frozen=True)
class DistillConfig:
    """Every setting of a distillation run; :meth:`validated` checks them all (bad values → InputError).

    Defaults: λ_CE = λ_KL = 0.5 (001 App E), τ = 1, λ_G = 1; IGAM λ_adv = 1, λ_diff = 1 (002 App A's 10–200 were
    tuned for CIFAR-sized images; with the per-sample gradients used here λ_diff = 10 flattened the student on the
    digits benchmark), discriminator updated every 5 student steps (002 App A); IGDM α = 10 with the ramp T(α) = α·epoch/epochs (003
    App B.2), δ from a ``igdm_steps``-step PGD on the student of radius ``igdm_eps`` (None: 0.1 × the
    median distance of the sample points to their mean, in the chosen norm). ``grad_warmup`` > 0 ramps
    λ_G (and IGAM's λ_adv, λ_diff) linearly from 0 over that fraction of the epochs — not in the papers;
    it keeps a large λ_G from flattening the student before it has learnt the teacher's classes. ISD: ``isd_loops`` loops,
    fine-tuning at ``lr·isd_lr_decay`` (001 Algs 2–3). Early stop: once agreement on the sample is
    100% and the mean gradient distance GD has not improved by 1% for ``patience`` epochs; the
    weights of the best epoch (highest agreement, then lowest GD) are kept.
    """

    method: str = "kdiga"
    student: str = "mlp:2x64"
    dropout: float = 0.0
    epochs: int = 100
    batch_size: int = 64
    lr: float = 5e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    lambda_ce: float = 0.5
    lambda_kl: float = 0.5
    tau: float = 1.0
    lambda_g: float = 1.0
    grad_warmup: float = 0.0
    igam_lambda_adv: float = 1.0
    igam_lambda_diff: float = 1.0
    igam_every: int = 5
    igdm_alpha: float = 10.0
    igdm_eps: float | None = None
    igdm_steps: int = 3
    norm: str = "2"
    isd_loops: int = 0
    isd_lr_decay: float = 0.1
    early_stop: bool = True
    patience: int = 10
    seed: int = 0

    def validated(self) -> "DistillConfig":
        """A copy with every value checked and canonicalised."""
        dropout = check_probability(self.dropout, "dropout")
        if dropout >= 1:
            raise InputError(f"dropout must be < 1, got {self.dropout!r}")
        return dataclasses.replace(
            self, method=check_choice(self.method, L.METHODS, "method"), dropout=dropout,
            epochs=check_samples(self.epochs, "epochs"), batch_size=check_samples(self.batch_size, "batch_size"),
            lr=check_positive(self.lr, "lr"), optimizer=check_choice(self.optimizer, OPTIMIZERS, "optimizer"),
            momentum=check_probability(self.momentum, "momentum"),
            weight_decay=check_nonnegative(self.weight_decay, "weight_decay"),
            schedule=check_choice(self.schedule, SCHEDULES, "schedule"),
            lambda_ce=check_nonnegative(self.lambda_ce, "lambda_ce"),
            lambda_kl=check_nonnegative(self.lambda_kl, "lambda_kl"), tau=check_positive(self.tau, "tau"),
            lambda_g=check_nonnegative(self.lambda_g, "lambda_g"),
            grad_warmup=check_probability(self.grad_warmup, "grad_warmup"),
            igam_lambda_adv=check_nonnegative(self.igam_lambda_adv, "igam_lambda_adv"),
            igam_lambda_diff=check_nonnegative(self.igam_lambda_diff, "igam_lambda_diff"),
            igam_every=check_samples(self.igam_every, "igam_every"),
            igdm_alpha=check_nonnegative(self.igdm_alpha, "igdm_alpha"),
            igdm_eps=None if self.igdm_eps is None else check_positive(self.igdm_eps, "igdm_eps"),
            igdm_steps=check_samples(self.igdm_steps, "igdm_steps"), norm=check_norm(self.norm),
            isd_loops=0 if self.isd_loops in (0, "0") else check_samples(self.isd_loops, "isd_loops"),
            isd_lr_decay=check_positive(self.isd_lr_decay, "isd_lr_decay"), early_stop=bool(self.early_stop),
            patience=check_samples(self.patience, "patience"), seed=check_seed(self.seed))

    @property
    def weights(self) -> L.Weights:
        return L.Weights(self.lambda_ce, self.lambda_kl, self.tau, self.lambda_g, self.igam_lambda_adv,
                         self.igam_lambda_diff)


def make_config(config: DistillConfig | None = None, **overrides) -> DistillConfig:
    """``config`` (default settings if None) with ``overrides`` applied; unknown names → InputError listing the valid ones."""
    names = {f.name for f in dataclasses.fields(DistillConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise InputError(f"unknown distillation setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
    return dataclasses.replace(config or DistillConfig(), **overrides).validated()


@dataclass(frozen=True)
class EpochRecord:
    """One epoch: mean loss terms over its batches, then agreement and mean GD on the whole sample.

    ``seconds`` is the time of the epoch's training steps (without the agreement/GD evaluation).
    """

    loop: int
    epoch: int
    lr: float
    terms: dict
    agreement: float
    gd: float
    seconds: float


@dataclass(frozen=True)
class Targets:
    """The teacher's constants on the sample: labels y (N,), logits (N, n), ∇_x CE(f_T(x), y) (N, *shape)."""

    y: torch.Tensor
    logits: torch.Tensor
    grad: torch.Tensor


def teacher_targets(teacher: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *,
                    batch_size: int = 256) -> Targets:
    """Evaluate the teacher once on the sample (batched, on its own device); results on the CPU.

    ``y`` defaults to the teacher's argmax (004 Eq 7); ISD passes the original teacher's labels.
    """
    device = module_device(teacher)
    logits, grads = [], []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size].to(device)
        with torch.no_grad():
            z = call_model(teacher, xb).float()
        yb = z.argmax(dim=1) if y is None else y[start:start + batch_size].to(device)
        grads.append(L.ce_input_gradient(teacher, xb, yb)[1].detach().float().cpu())
        logits.append(z.cpu())
    z = torch.cat(logits)
    return Targets(z.argmax(dim=1) if y is None else y.cpu(), z, torch.cat(grads))


@dataclass(frozen=True)
class FitOutcome:
    history: tuple
    epochs_run: int
    stopped_early: bool


def _optimizer(params, cfg: DistillConfig, lr: float) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)


def _scheduler(opt: torch.optim.Optimizer, cfg: DistillConfig):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    if cfg.schedule == "step":  # ×0.1 at 1/3 and 2/3 of the run (001 App E uses 50/100 of 150 epochs)
        return torch.optim.lr_scheduler.MultiStepLR(opt, [cfg.epochs // 3, 2 * cfg.epochs // 3], gamma=0.1)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0)


def igdm_radius(x: torch.Tensor, norm: str) -> float:
    """Default IGDM radius: 0.1 × the median distance (in ``norm``) of the points to their mean."""
    centred = (x - x.mean(dim=0, keepdim=True)).flatten(1)
    dist = centred.abs().amax(dim=1) if norm == "inf" else torch.linalg.vector_norm(centred, dim=1)
    return max(0.1 * float(dist.median()), 1e-6)


def _sample_gd(student: nn.Module, x: torch.Tensor, t: Targets, batch_size: int) -> tuple[float, float]:
    """Agreement with y and mean ‖∇CE_S − ∇CE_T‖₂ on the whole sample (student in eval mode)."""
    device = module_device(student)
    agree, gaps = [], []
    for start in range(0, x.shape[0], batch_size):
        sl = slice(start, start + batch_size)
        logits, grad = L.ce_input_gradient(student, x[sl].to(device), t.y[sl].to(device))
        agree.append((logits.argmax(1) == t.y[sl].to(device)).cpu())
        gaps.append(L.gradient_gap(grad.detach(), t.grad[sl].to(device)).cpu())
    return float(torch.cat(agree).float().mean()), float(torch.cat(gaps).mean())


def fit_student(teacher: nn.Module, student: nn.Module, x: torch.Tensor, targets: Targets, cfg: DistillConfig, *,
                lr: float, progress: bool = True, checkpoint: Path | None = None, loop: int = 0) -> FitOutcome:
    """Train ``student`` in place on (x, targets) with ``cfg.method``; on return it holds the best epoch's weights.

    ``teacher`` is only called for IGDM (its outputs at x ± δ change every step); all other
    teacher quantities come from ``targets``. Call inside a seeded RNG context (see :func:`distill`).
    """
    device = module_device(student)
    n = x.shape[0]
    opt = _optimizer(student.parameters(), cfg, lr)
    sched = _scheduler(opt, cfg)
    disc = disc_opt = None
    if cfg.method == "igam":
        scale = 1.0 / max(float(targets.grad.pow(2).mean().sqrt()), 1e-12)
        disc = L.GradientDiscriminator(int(np.prod(x.shape[1:])), scale).to(device)
        disc_opt = torch.optim.Adam(disc.parameters(), lr=lr)
    radius = (cfg.igdm_eps or igdm_radius(x, cfg.norm)) if cfg.method == "igdm" else None
    shuffle = torch.Generator().manual_seed(cfg.seed + 1_000_003 * loop)
    history, best, best_state, stale = [], None, None, 0
    bar = tqdm(range(cfg.epochs), desc=f"distill {cfg.method}" + (f" loop {loop}" if loop else ""),
               disable=not (progress and sys.stderr.isatty()), file=sys.stderr, leave=False)
    step = 0
    for epoch in bar:
        started, batches = time.perf_counter(), 0
        sums: dict[str, float] = {}
        w = _ramped(cfg, epoch)
        student.train()
        for idx in torch.randperm(n, generator=shuffle).split(cfg.batch_size):
            batch = L.Batch(x[idx].to(device), targets.y[idx].to(device), targets.logits[idx].to(device),
                            targets.grad[idx].to(device))
            value = _loss(cfg, student, teacher, batch, w, disc, radius, (epoch + 1) / cfg.epochs, step)
            if not torch.isfinite(value.total):
                raise InputError(f"distillation diverged: the {cfg.method} loss is {float(value.total)} in epoch "
                                 f"{epoch + 1}; lower the learning rate (lr = {lr:g}) or the loss weights")
            opt.zero_grad(set_to_none=True)
            value.total.backward()
            opt.step()
            if disc is not None and disc_opt is not None and step % cfg.igam_every == 0:
                student_grad = L.ce_input_gradient(student, batch.x, batch.y)[1]
                disc_opt.zero_grad(set_to_none=True)
                L.igam_discriminator_loss(disc, batch.required_teacher_grad(), student_grad).backward()
                disc_opt.step()
            for key, val in value.terms.items():
                sums[key] = sums.get(key, 0.0) + val
            batches, step = batches + 1, step + 1
        train_seconds = time.perf_counter() - started
        current_lr = opt.param_groups[0]["lr"]
        sched.step()
        student.eval()
        agreement, gd = _sample_gd(student, x, targets, max(cfg.batch_size, 256))
        record = EpochRecord(loop, epoch + 1, current_lr, {k: v / batches for k, v in sums.items()}, agreement, gd,
                             train_seconds)
        history.append(record)
        bar.set_postfix({**{k: f"{v:.3g}" for k, v in record.terms.items()}, "agree": f"{agreement:.3f}",
                         "GD": f"{gd:.3g}"})
        if best is None or (agreement, -gd) > best:
            improved = best is None or agreement > best[0] or gd < -best[1] * 0.99
            best, best_state = (agreement, -gd), copy.deepcopy(student.state_dict())
            stale = 0 if improved else stale + 1
        else:
            stale += 1
        if checkpoint is not None:
            save_student(student, checkpoint)
        if cfg.early_stop and agreement == 1.0 and stale >= cfg.patience:
            break
    bar.close()
    assert best_state is not None  # epochs >= 1 (validated) and the first epoch always sets it
    student.load_state_dict(best_state)
    student.eval()
    return FitOutcome(tuple(history), len(history), len(history) < cfg.epochs)


def _ramped(cfg: DistillConfig, epoch: int) -> L.Weights:
    """Loss weights of ``epoch``: the gradient terms (λ_G; IGAM's λ_adv, λ_diff) grow linearly to their full
    value over the first ``grad_warmup`` fraction of the epochs."""
    w = cfg.weights
    if cfg.grad_warmup <= 0:
        return w
    ramp = min(1.0, (epoch + 1) / max(cfg.grad_warmup * cfg.epochs, 1.0))
    return dataclasses.replace(w, lambda_g=w.lambda_g * ramp, lambda_adv=w.lambda_adv * ramp,
                               lambda_diff=w.lambda_diff * ramp)


def _loss(cfg: DistillConfig, student: nn.Module, teacher: nn.Module, batch: L.Batch, w: L.Weights,
          disc, radius: float | None, progress: float, step: int) -> L.LossValue:
    if cfg.method == "kd":
        return L.kd_loss(student, batch, w)
    if cfg.method == "kdiga":
        return L.kdiga_loss(student, batch, w)
    if cfg.method == "igam":
        return L.igam_loss(student, batch, w, disc)
    assert radius is not None  # fit_student sets it for IGDM
    delta = pgd(student, batch.x, batch.y, radius=radius, norm=cfg.norm, steps=cfg.igdm_steps, seed=cfg.seed + step)
    t_device = module_device(teacher)
    with torch.no_grad():
        t_diff = L.output_difference(teacher, batch.x.to(t_device), delta.to(t_device)).float().to(batch.x.device)
    return L.igdm_loss(student, batch, w, t_diff, delta, cfg.igdm_alpha * progress)


