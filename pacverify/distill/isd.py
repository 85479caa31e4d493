"""Iterative self-distillation, ISD (001 §2.2, Alg 3 "with initial robust teacher" of App G).

Loop 1 trains the student from scratch from the user's teacher with learning rate η. Each later
loop l makes a frozen copy of the current student the teacher f^t_l and fine-tunes the student
(with its last-layer dropout, 001 §2.2 and App F) at learning rate μ·η against it. The labels stay
the original teacher's argmax throughout (the dataset labels of 001; 004 Eq 7), while the KL and
gradient targets come from the loop's teacher. Quality markers are measured against the ORIGINAL
teacher by the caller, since that is the model the certificate is about.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from pacverify.distill.fit import (
    DistillConfig,
    EpochRecord,
    FitOutcome,
    HeldOut,
    Targets,
    fit_student,
    teacher_targets,
)


def self_distill(teacher: nn.Module, student: nn.Module, x: torch.Tensor, targets: Targets, cfg: DistillConfig, *,
                 progress: bool | Callable[[int, int], None] = True, checkpoint: Path | None = None, heldout: HeldOut | None = None,
                 deadline: float | None = None) -> FitOutcome:
    """Run ``cfg.isd_loops`` loops of 001 Alg 3 on ``student`` in place; ``targets`` are the original teacher's.

    Returns the concatenated per-epoch history of all loops (each record carries its loop number).
    Every loop applies the stop rules of :func:`~pacverify.distill.fit.fit_student` on its own (``heldout``
    always against the original teacher); the stop reason is the loops' reasons joined,
    ``loop 1: …; loop 2: …``. Once ``deadline`` has passed no further loop starts.
    """
    history: list[EpochRecord] = []
    epochs_run, stopped, reasons = 0, False, []
    loop_teacher, loop_targets = teacher, targets
    for loop in range(1, cfg.isd_loops + 1):
        if loop > 1 and deadline is not None and time.perf_counter() >= deadline:
            reasons.append(f"time budget: loops {loop}-{cfg.isd_loops} not run")
            stopped = True
            break
        lr = cfg.lr if loop == 1 else cfg.lr * cfg.isd_lr_decay
        outcome = fit_student(loop_teacher, student, x, loop_targets, cfg, lr=lr, progress=progress,
                              checkpoint=checkpoint, loop=loop, heldout=heldout, deadline=deadline)
        history += outcome.history
        epochs_run += outcome.epochs_run
        stopped = stopped or outcome.stopped_early
        reasons.append(f"loop {loop}: {outcome.stop_reason}")
        loop_teacher = copy.deepcopy(student).eval()
        for param in loop_teacher.parameters():
            param.requires_grad_(False)
        loop_targets = teacher_targets(loop_teacher, x, targets.y)
    return FitOutcome(tuple(history), epochs_run, stopped, "; ".join(reasons))
