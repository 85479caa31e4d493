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
from collections.abc import Callable
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
    fine-tuning at ``lr·isd_lr_decay`` (001 Algs 2–3).

    Targets ``target_agreement`` (default 0.99) and ``target_gc`` (default 0.8) — a target that is None
    is not checked — are what :func:`~pacverify.distill.auto.distill_auto` asks of a student, and
    with ``stop_at_targets`` (default False) they also stop the trainer. GC 0.8 separates, on the digits
    benchmark, KDIGA's students (0.84 held-out) from KD's (0.67), the baseline that loses robustness.
    Stopping at the targets is off by default because GC says nothing of gradient *magnitudes*: on the
    Gaussians the targets hold after one epoch, when the median ρ is 0.71 (1.00 at the usual stop).

    Early stop (``early_stop``; off: every epoch runs), checked after each epoch in this order, on the
    *monitored* markers — agreement, mean gradient cosine GC and mean gradient distance GD on the
    held-out points when the trainer has them (``x_fresh``), else on the sample:

    1. targets reached (only with ``stop_at_targets``): monitored agreement ≥ ``target_agreement`` and
       GC ≥ ``target_gc``;
    2. agreement 1.0: agreement on the sample is 100% and the sample GD has not improved by 1% for
       ``patience`` epochs (the rule before the plateau rule existed);
    3. plateau: for ``patience`` epochs neither monitored agreement nor GC has risen by more than
       ``plateau_tol`` (absolute, default 0.002) and GD has not fallen by more than 1%, each compared
       with its value at the last epoch that counted as an improvement.

    Whatever stops the run, the weights of the best epoch (highest sample agreement, then lowest
    sample GD) are kept.
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
    plateau_tol: float = 0.002
    target_agreement: float | None = 0.99
    target_gc: float | None = 0.8
    stop_at_targets: bool = False
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
            patience=check_samples(self.patience, "patience"),
            plateau_tol=check_nonnegative(self.plateau_tol, "plateau_tol"),
            target_agreement=_check_target(self.target_agreement, "target_agreement"),
            target_gc=_check_target(self.target_gc, "target_gc"), stop_at_targets=_check_bool(self.stop_at_targets,
                                                                                         "stop_at_targets"),
            seed=check_seed(self.seed))

    @property
    def targets_text(self) -> str:
        """The targets as messages print them: ``agreement ≥ 0.99, GC ≥ 0.8`` (``no targets`` when both are None)."""
        parts = [f"{name} ≥ {value:g}" for name, value in (("agreement", self.target_agreement),
                                                            ("GC", self.target_gc)) if value is not None]
        return ", ".join(parts) if parts else "no targets"

    def reaches_targets(self, agreement: float, gc: float) -> bool:
        """True when both markers meet the targets that are set (False when no target is set)."""
        if self.target_agreement is None and self.target_gc is None:
            return False
        return ((self.target_agreement is None or agreement >= self.target_agreement)
                and (self.target_gc is None or gc >= self.target_gc))

    @property
    def weights(self) -> L.Weights:
        return L.Weights(self.lambda_ce, self.lambda_kl, self.tau, self.lambda_g, self.igam_lambda_adv,
                         self.igam_lambda_diff)


def _check_bool(value: object, name: str) -> bool:
    """True/False (also the strings true/false/yes/no/1/0, as settings files and flags give them)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise InputError(f"{name} must be true or false, got {value!r}")


def _check_target(value: object, name: str) -> float | None:
    """A stop target: None (not checked) or a number in [0, 1]."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "off")):
        return None
    return check_probability(value, name)


def make_config(config: DistillConfig | None = None, **overrides) -> DistillConfig:
    """``config`` (default settings if None) with ``overrides`` applied; unknown names → InputError listing the valid ones."""
    names = {f.name for f in dataclasses.fields(DistillConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise InputError(f"unknown distillation setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
    return dataclasses.replace(config or DistillConfig(), **overrides).validated()


@dataclass(frozen=True)
class EpochRecord:
    """One epoch: mean loss terms over its batches, then agreement, mean GD and mean GC on the whole sample
    and, when the trainer has held-out points, the same three on them (``*_fresh``; None otherwise).

    GD and GC compare with the input gradients of the fit's teacher (in ISD loops after the first, on the
    sample, that is the loop's teacher; the held-out markers always use the original teacher).
    ``seconds`` is the time of the epoch's training steps (without the marker evaluation).
    """

    loop: int
    epoch: int
    lr: float
    terms: dict
    agreement: float
    gd: float
    seconds: float
    gc: float | None = None
    agreement_fresh: float | None = None
    gd_fresh: float | None = None
    gc_fresh: float | None = None


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
class HeldOut:
    """Held-out points and the ORIGINAL teacher's targets on them, for the per-epoch monitored markers."""

    x: torch.Tensor
    targets: Targets


@dataclass(frozen=True)
class FitOutcome:
    """What a fit did: per-epoch records, epochs run, whether it stopped before ``cfg.epochs``, and why it stopped
    (one of the sentences of :func:`fit_student`)."""

    history: tuple
    epochs_run: int
    stopped_early: bool
    stop_reason: str = ""


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


def _epoch_markers(student: nn.Module, x: torch.Tensor, t: Targets, batch_size: int) -> tuple[float, float, float]:
    """Agreement with y, mean ‖∇CE_S − ∇CE_T‖₂ and mean cosine of the two gradients on all of ``x``
    (student in eval mode). Cosine conventions as :func:`pacverify.distill.quality.gradient_alignment`: 1 when both gradients
    are zero, 0 when exactly one is."""
    device = module_device(student)
    agree, gaps, cosines = [], [], []
    for start in range(0, x.shape[0], batch_size):
        sl = slice(start, start + batch_size)
        logits, grad = L.ce_input_gradient(student, x[sl].to(device), t.y[sl].to(device))
        g_s, g_t = grad.detach().flatten(1), t.grad[sl].to(device).flatten(1)
        n_s, n_t = torch.linalg.vector_norm(g_s, dim=1), torch.linalg.vector_norm(g_t, dim=1)
        cos = (g_s * g_t).sum(dim=1) / (n_s * n_t).clamp_min(1e-30)
        cos = torch.where((n_s == 0) & (n_t == 0), 1.0, torch.where((n_s == 0) | (n_t == 0), 0.0, cos))
        agree.append((logits.argmax(1) == t.y[sl].to(device)).cpu())
        gaps.append(L.gradient_gap(g_s, g_t).cpu())
        cosines.append(cos.cpu())
    return (float(torch.cat(agree).float().mean()), float(torch.cat(gaps).mean()),
            float(torch.cat(cosines).double().mean()))


GD_RTOL = 0.01  # GD "improves" when it falls by more than 1% (the agreement-1.0 rule and the plateau rule)


class _Plateau:
    """The plateau rule: counts the epochs since the monitored agreement or GC last rose by more than ``tol``,
    or GD fell by more than :data:`GD_RTOL`, compared with the best values up to the last improving epoch
    (the anchor; the first epoch sets it)."""

    def __init__(self, tol: float) -> None:
        self.tol = tol
        self.anchor: tuple[float, float, float] | None = None
        self.stale = 0

    def update(self, agreement: float, gc: float, gd: float) -> None:
        if self.anchor is None:
            self.anchor = (agreement, gc, gd)
        elif (agreement > self.anchor[0] + self.tol or gc > self.anchor[1] + self.tol
              or gd < self.anchor[2] * (1 - GD_RTOL)):
            self.anchor = (max(agreement, self.anchor[0]), max(gc, self.anchor[1]), min(gd, self.anchor[2]))
            self.stale = 0
        else:
            self.stale += 1


def fit_student(teacher: nn.Module, student: nn.Module, x: torch.Tensor, targets: Targets, cfg: DistillConfig, *,
                lr: float, progress: bool | Callable[[int, int], None] = True, checkpoint: Path | None = None, loop: int = 0,
                heldout: HeldOut | None = None, deadline: float | None = None) -> FitOutcome:
    """Train ``student`` in place on (x, targets) with ``cfg.method``; on return it holds the best epoch's weights.

    ``teacher`` is only called for IGDM (its outputs at x ± δ change every step); all other
    teacher quantities come from ``targets``. Call inside a seeded RNG context (see :func:`distill`).
    ``heldout``: points whose agreement, GC and GD are the monitored markers of the stop rules (see
    :class:`DistillConfig`); without them the sample's are monitored. ``deadline``: a
    :func:`time.perf_counter` value; after an epoch that ends past it no further epoch starts.

    The outcome's ``stop_reason`` is one of (numbers filled in; ``where`` is ``held-out`` or ``sample``)::

        targets reached at epoch k: {where} agreement a ≥ A, GC g ≥ G      (only with stop_at_targets)
        agreement 1.0 at epoch k: sample GD did not improve by 1% in p epochs
        plateau at epoch k: {where} agreement a, GC g did not improve by > tol (GD d not by > 1%) in p epochs
        time budget: stopped after epoch k of E
        epoch budget: all E epochs run            (with " (early stop off)" when ``early_stop`` is False)

    The evaluation of the markers draws no random numbers: the weights of a run do not depend on
    whether held-out points are given (only where it stops may).
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
    plateau, where, reason = _Plateau(cfg.plateau_tol), ("held-out" if heldout is not None else "sample"), ""
    tick = progress if callable(progress) else None  # a caller's own progress display replaces the bar
    bar = tqdm(range(cfg.epochs), desc=f"distill {cfg.method}" + (f" loop {loop}" if loop else ""),
               disable=tick is not None or not (progress and sys.stderr.isatty()), file=sys.stderr, leave=False)
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
                loss = float(value.total.detach())
                raise InputError(f"distillation diverged: the {cfg.method} loss is {loss} in epoch "
                                 f"{epoch + 1}; lower the learning rate (lr = {lr:g}) or the loss weights")
            _apply(cfg, value, student, batch, opt, disc, disc_opt, step)
            for key, val in value.terms.items():
                sums[key] = sums.get(key, 0.0) + val
            batches, step = batches + 1, step + 1
        train_seconds = time.perf_counter() - started
        current_lr = opt.param_groups[0]["lr"]
        sched.step()
        student.eval()
        eval_batch = max(cfg.batch_size, 256)
        agreement, gd, gc = _epoch_markers(student, x, targets, eval_batch)
        fresh = _epoch_markers(student, heldout.x, heldout.targets, eval_batch) if heldout is not None else None
        record = EpochRecord(loop, epoch + 1, current_lr, {k: v / batches for k, v in sums.items()}, agreement, gd,
                             train_seconds, gc, *(fresh if fresh is not None else (None, None, None)))
        history.append(record)
        watched = (fresh[0], fresh[2]) if fresh is not None else (agreement, gc)
        plateau.update(*watched, fresh[1] if fresh is not None else gd)
        bar.set_postfix({**{k: f"{v:.3g}" for k, v in record.terms.items()}, "agree": f"{agreement:.3f}",
                         "GD": f"{gd:.3g}", "GC": f"{watched[1]:.3f}"})
        if best is None or (agreement, -gd) > best:
            improved = best is None or agreement > best[0] or gd < -best[1] * (1 - GD_RTOL)
            best, best_state = (agreement, -gd), copy.deepcopy(student.state_dict())
            stale = 0 if improved else stale + 1
        else:
            stale += 1
        if checkpoint is not None:
            save_student(student, checkpoint)
        reason = _stop_reason(cfg, epoch + 1, where, watched, agreement == 1.0 and stale >= cfg.patience, plateau)
        if not reason and deadline is not None and epoch + 1 < cfg.epochs and time.perf_counter() >= deadline:
            reason = f"time budget: stopped after epoch {epoch + 1} of {cfg.epochs}"
        if tick is not None:
            tick(cfg.epochs if reason else epoch + 1, cfg.epochs)
        if reason:
            break
    bar.close()
    assert best_state is not None  # epochs >= 1 (validated) and the first epoch always sets it
    student.load_state_dict(best_state)
    student.eval()
    if not reason:
        reason = f"epoch budget: all {cfg.epochs} epochs run" + ("" if cfg.early_stop else " (early stop off)")
    return FitOutcome(tuple(history), len(history), len(history) < cfg.epochs, reason)


def _stop_reason(cfg: DistillConfig, epoch: int, where: str, watched: tuple[float, float], perfect_and_stale: bool,
                 plateau: _Plateau) -> str:
    """The early-stop sentence for this epoch, or "" to go on (rules in order: targets, agreement 1.0, plateau)."""
    if not cfg.early_stop:
        return ""
    agreement, gc = watched
    if cfg.stop_at_targets and cfg.reaches_targets(agreement, gc):
        parts = [f"{name} {value:.4f} ≥ {target:g}" for name, value, target in
                 (("agreement", agreement, cfg.target_agreement), ("GC", gc, cfg.target_gc)) if target is not None]
        return f"targets reached at epoch {epoch}: {where} " + ", ".join(parts)
    if perfect_and_stale:
        return f"agreement 1.0 at epoch {epoch}: sample GD did not improve by 1% in {cfg.patience} epochs"
    if plateau.stale >= cfg.patience and plateau.anchor is not None:
        a, g, d = plateau.anchor
        return (f"plateau at epoch {epoch}: {where} agreement {a:.4f}, GC {g:.4f} did not improve by > "
                f"{cfg.plateau_tol:g} (GD {d:.4g} not by > 1%) in {cfg.patience} epochs")
    return ""


def _apply(cfg: DistillConfig, value: L.LossValue, student: nn.Module, batch: L.Batch, opt: torch.optim.Optimizer,
           disc, disc_opt, step: int) -> None:
    """One optimizer step on ``value``; with IGAM every ``igam_every`` steps, one discriminator step too."""
    opt.zero_grad(set_to_none=True)
    value.total.backward()
    opt.step()
    if disc is not None and disc_opt is not None and step % cfg.igam_every == 0:
        student_grad = L.ce_input_gradient(student, batch.x, batch.y)[1]
        disc_opt.zero_grad(set_to_none=True)
        L.igam_discriminator_loss(disc, batch.required_teacher_grad(), student_grad).backward()
        disc_opt.step()


def step_seconds(teacher: nn.Module, student: nn.Module, x: torch.Tensor, cfg: DistillConfig, *,
                 steps: int = 3) -> float:
    """Median wall time (s) of one training step of ``cfg.method`` (loss, backward, optimizer step; IGAM's
    discriminator step included) on a mini-batch of ``x``, measured on a COPY of ``student``.

    For time predictions only (:func:`pacverify.distill.auto.distill_auto`): ``student`` is not changed
    and torch's global random state is saved and restored, so measuring changes no training result.
    One warm-up step precedes the ``steps`` timed ones.
    """
    model = copy.deepcopy(student).train()
    device = module_device(model)
    xb = x[:cfg.batch_size]
    t = teacher_targets(teacher, xb)
    batch = L.Batch(xb.to(device), t.y.to(device), t.logits.to(device), t.grad.to(device))
    opt = _optimizer(model.parameters(), cfg, cfg.lr)
    disc = disc_opt = None
    if cfg.method == "igam":
        disc = L.GradientDiscriminator(int(np.prod(x.shape[1:])), 1.0).to(device)
        disc_opt = torch.optim.Adam(disc.parameters(), lr=cfg.lr)
    radius = (cfg.igdm_eps or igdm_radius(x, cfg.norm)) if cfg.method == "igdm" else None
    times = []
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        for step in range(steps + 1):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            value = _loss(cfg, model, teacher, batch, cfg.weights, disc, radius, 1.0, step)
            _apply(cfg, value, model, batch, opt, disc, disc_opt, step)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - started)
    return float(np.median(times[1:])) if len(times) > 1 else times[0]


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


