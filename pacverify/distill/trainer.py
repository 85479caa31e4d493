"""The distillation trainer: teacher targets, mini-batch loop, schedule, early stop, checkpoints (DESIGN.md §3).

:func:`distill` is the entry point: it labels the sample with the teacher (y = argmax f_T, 004 Eq 7),
builds the student, trains it with the chosen loss (:mod:`pacverify.distill.losses`) — or runs
iterative self-distillation (:mod:`pacverify.distill.isd`) when ``isd_loops`` > 0 — and returns a
:class:`DistillResult` with the student in eval mode on the CPU, the per-epoch history, the
settings, the time, and the quality markers (:mod:`pacverify.distill.quality`) against the ORIGINAL
teacher. The same seed gives the same student (torch's global RNG is saved and restored around training).
"""
from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pacverify.data import check_points
from pacverify.distill.fit import DistillConfig, HeldOut, fit_student, igdm_radius, make_config, teacher_targets
from pacverify.distill.isd import self_distill
from pacverify.distill.quality import QualityMarkers, quality_markers
from pacverify.errors import InputError
from pacverify.models import build_student, call_model, resolve_device
from pacverify.validation import check_nonnegative


@dataclass(frozen=True)
class DistillResult:
    """A trained student (eval mode, CPU) with what it took to get it.

    ``student`` is a :class:`~pacverify.models.Student` unless :func:`distill` was given a module of its own.

    ``history``: :class:`EpochRecord` per epoch (all ISD loops in order); ``markers``: quality
    markers against the original teacher on the sample (and ``x_fresh`` when given).
    ``stopped_early``: fewer epochs ran than configured; ``stop_reason``: why training ended, one of the
    sentences listed in :func:`pacverify.distill.fit.fit_student` (ISD: ``loop 1: …; loop 2: …``).
    """

    student: nn.Module
    config: DistillConfig
    history: tuple
    epochs_run: int
    stopped_early: bool
    seconds: float
    device: str
    n_train: int
    markers: QualityMarkers
    igdm_eps: float | None = None
    notes: tuple = field(default=())
    stop_reason: str = ""

    @property
    def seconds_per_epoch(self) -> float:
        return self.seconds / max(self.epochs_run, 1)

    def as_dict(self) -> dict:
        """JSON-ready summary (everything except the student's weights)."""
        return {"settings": dataclasses.asdict(self.config), "student": {
                    "spec": getattr(self.student, "spec", type(self.student).__name__),
                    "input_shape": list(getattr(self.student, "input_shape", ())),
                    "n_classes": getattr(self.student, "n_classes", None),
                    "parameters": sum(p.numel() for p in self.student.parameters())},
                "device": self.device, "n_train": self.n_train, "epochs_run": self.epochs_run,
                "stopped_early": self.stopped_early, "stop_reason": self.stop_reason, "seconds": self.seconds,
                "seconds_per_epoch": self.seconds_per_epoch, "igdm_eps": self.igdm_eps,
                "markers": self.markers.as_dict(), "notes": list(self.notes),
                "history": [dataclasses.asdict(r) for r in self.history]}


def _probability_note(logits: torch.Tensor) -> tuple:
    rows_sum_to_one = torch.allclose(logits.sum(dim=1), torch.ones(logits.shape[0]), atol=1e-4)
    if rows_sum_to_one and bool((logits >= 0).all()):
        return ("the teacher's outputs are non-negative and sum to 1 per row: they look like probabilities, "
                "but pacverify treats them as logits; export the teacher without its final softmax",)
    return ()


def distill(teacher: nn.Module, x_train: np.ndarray | torch.Tensor, *, student: str | nn.Module | None = None,
            config: DistillConfig | None = None, device: str | torch.device = "auto",
            progress: bool | Callable[[int, int], None] = True, checkpoint_dir: str | Path | None = None,
            x_fresh: np.ndarray | torch.Tensor | None = None, time_limit_s: float | None = None, **settings) -> DistillResult:
    """Distill ``teacher`` into a small ReLU student on the sample ``x_train`` (N, *input_shape).

    ``student``: a spec string (``mlp:2x64``, see :func:`pacverify.models.build_student`) or a module
    to train (copied, not modified). ``settings`` override fields of :class:`DistillConfig`
    (``method``, ``epochs``, ``lr``, ``lambda_g``, ``seed`` …). The teacher stays on its own device;
    the student trains on ``device``. ``checkpoint_dir`` receives ``checkpoint.pt`` (a student file)
    after every epoch, written atomically. ``progress``: a tqdm bar on a terminal (True), none (False), or a
    callable told ``(epoch, epochs)`` after each epoch (and ``(epochs, epochs)`` when the run stops early).

    ``x_fresh`` (held-out points) gives the held-out markers of the result and is what the early-stop
    rules monitor after every epoch (agreement, GC and GD; see :class:`DistillConfig`); without it they
    monitor the sample. ``time_limit_s``: no epoch (nor ISD loop) starts once that many seconds have
    passed since the call began (the first epoch always runs); the stop reason then says
    ``time budget``. Without a time limit, or when it is not reached, the student depends only on the
    settings and the seed.
    """
    if time_limit_s is not None:
        time_limit_s = check_nonnegative(time_limit_s, "time_limit_s")
    if isinstance(student, str):
        settings["student"] = student
    cfg = make_config(config, **settings)
    x = torch.as_tensor(check_points(x_train, name="x_train"))
    fresh = None if x_fresh is None else check_points(x_fresh, name="x_fresh", input_shape=tuple(x.shape[1:]))
    target = resolve_device(device)
    checkpoint = None
    if checkpoint_dir is not None:
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        checkpoint = Path(checkpoint_dir) / "checkpoint.pt"
    started = time.perf_counter()
    deadline = None if time_limit_s is None else started + time_limit_s
    cuda = [target.index or 0] if target.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(cfg.seed)
        targets = teacher_targets(teacher, x)
        heldout = None
        if fresh is not None and len(fresh):
            fresh_x = torch.as_tensor(fresh)
            heldout = HeldOut(fresh_x, teacher_targets(teacher, fresh_x))
        n_classes = targets.logits.shape[1]
        if isinstance(student, nn.Module):
            model = copy.deepcopy(student).to(target)
            model = _check_student(model, x, n_classes, target)
        else:
            model = build_student(cfg.student, tuple(x.shape[1:]), n_classes, dropout=cfg.dropout, seed=cfg.seed)
            model = model.to(target)
        if cfg.isd_loops:
            outcome = self_distill(teacher, model, x, targets, cfg, progress=progress, checkpoint=checkpoint,
                                   heldout=heldout, deadline=deadline)
        else:
            outcome = fit_student(teacher, model, x, targets, cfg, lr=cfg.lr, progress=progress, checkpoint=checkpoint,
                                  heldout=heldout, deadline=deadline)
    seconds = time.perf_counter() - started
    model = model.cpu().eval()
    markers = quality_markers(teacher, model, x, fresh, norm=cfg.norm)
    radius = (cfg.igdm_eps or igdm_radius(x, cfg.norm)) if cfg.method == "igdm" else None
    return DistillResult(model, cfg, outcome.history, outcome.epochs_run, outcome.stopped_early, seconds, str(target),
                         x.shape[0], markers, radius, _probability_note(targets.logits), outcome.stop_reason)


def _check_student(model: nn.Module, x: torch.Tensor, n_classes: int, device: torch.device) -> nn.Module:
    with torch.no_grad():
        out = call_model(model.eval(), x[:2].to(device))
    if out.shape[1] != n_classes:
        raise InputError(f"the student gives {out.shape[1]} logits but the teacher {n_classes}")
    return model
