"""What a ``certify`` run will cost, before it runs: time per stage from short timed probes, and memory.

The probes run the real components on a few points of the sample's own stream: the teacher forward and
backward (labels, attacks, margins, coverage), one distillation epoch of the chosen student and loss, and one
bound pass of the verifier on that (briefly trained) student. Each stage's estimate scales a probe's per-point
cost to the run's counts; the basis is recorded beside every figure. Estimates are for this machine's present
load and the probe's thread count: on a shared machine they vary with the other jobs. They err high where a
stage can stop early (distillation: the epoch budget, not the early stop; the radius search: a typical pass count).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from pacverify.progress import duration
from pacverify.validation import GIB

TYPICAL_RADIUS_PASSES = 5.0
"""CROWN passes per point of the certified-radius search: 3.5–5.7 measured (benchmarks/results/verify.md)."""


@dataclass(frozen=True)
class StageEstimate:
    """Estimated seconds of one stage and what the figure rests on."""

    stage: str
    seconds: float
    basis: str


@dataclass(frozen=True)
class Plan:
    """The run before it runs: sizes, memory and the estimated time of each stage."""

    guarantee: str
    samples: int
    samples_required: int
    dim: int
    input_shape: tuple[int, ...]
    n_classes: int
    confident_fraction: float
    memory_bytes: float
    stages: tuple[StageEstimate, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def seconds(self) -> float:
        """The estimated total of the stages."""
        return float(sum(e.seconds for e in self.stages))

    def lines(self) -> list[str]:
        """The plan as printed: sizes and memory, then one line per estimated stage, then the total."""
        out = [f"{self.guarantee} mode: s = {self.samples} points (the bound needs {self.samples_required}) of shape "
               f"{self.input_shape} (m = {self.dim}), {self.n_classes} classes; about "
               f"{100 * self.confident_fraction:.0f}% of the probe points are κ-confident; memory about "
               f"{self.memory_bytes / GIB:.2g} GiB"]
        out += list(self.notes)
        if self.stages:
            out.append("estimated time by stage (from timed probes on this machine):")
            out += [f"  {e.stage:<14} {duration(e.seconds):>9}   {e.basis}" for e in self.stages]
            out.append(f"  {'total':<14} {duration(self.seconds):>9}")
        return out


@dataclass(frozen=True)
class Probe:
    """Per-point costs measured on a few points: teacher forward and forward+backward, a distillation epoch, one
    bound pass of the verifier."""

    forward_s: float
    gradient_s: float
    distill_epoch_s: float | None
    bound_pass_s: float | None
    confident_fraction: float


BATCH = 1024  # the batch the teacher sees in labelling, attacks and coverage: per-point costs are timed at it


def _tiled(points: np.ndarray, n: int) -> np.ndarray:
    """``points`` repeated to ``n`` rows (the timing of a batch does not depend on which rows it holds)."""
    return np.resize(np.asarray(points), (n, *np.asarray(points).shape[1:]))


def teacher_times(teacher: torch.nn.Module, points: np.ndarray, device: torch.device) -> tuple[float, float]:
    """(forward, forward + backward to the input) seconds per point of the teacher, timed on a batch of
    :data:`BATCH` rows built from ``points`` after a warm-up call: what labelling and coverage pay per point, and
    what PGD, the margins and the input-gradient losses pay per point and step."""
    from pacverify.models import call_model

    x = torch.as_tensor(_tiled(points, BATCH), dtype=torch.float32).to(device)
    forward = gradient = math.inf
    for _ in range(2):  # the first round warms up
        start = time.perf_counter()
        with torch.no_grad():
            call_model(teacher, x)
        forward = min(forward, time.perf_counter() - start)
        start = time.perf_counter()
        xg = x.clone().requires_grad_(True)
        call_model(teacher, xg).max(dim=1).values.sum().backward()
        gradient = min(gradient, time.perf_counter() - start)
    return forward / BATCH, gradient / BATCH


DISTILL_PROBE_POINTS = 256


def probe_student(teacher: torch.nn.Module, points: np.ndarray, *, student: str, method: str, seed: int, norm: str,
                  radius: float, domain, device: torch.device, distill_options: dict) -> tuple[float, float]:
    """(seconds per point and epoch of distillation, seconds per point of one CROWN pass at ``radius``).

    Distillation: :func:`pacverify.distill.distill` with the run's student and loss on :data:`DISTILL_PROBE_POINTS`
    rows, once for 1 and once for 3 epochs after a warm-up call; the difference is the cost of 2 epochs (the fixed
    cost of a call cancels). Verifier: one bound pass on the student of that call, read through the ONNX reader
    the verifier uses (:func:`~pacverify.verify.oracle.estimate_cost`)."""
    from pacverify.distill import distill
    from pacverify.onnx_io.export import onnx_bytes
    from pacverify.onnx_io.reader import load_network
    from pacverify.verify.oracle import estimate_cost

    if student == "auto":  # the search's first try stands for its per-epoch cost
        from pacverify.distill.auto import default_ladder

        student = default_ladder(tuple(points.shape[1:]))[0]
    x = _tiled(points, DISTILL_PROBE_POINTS)
    options = dict(distill_options, method=method, seed=seed, norm=norm)
    seconds = {}
    result = None
    for epochs in (1, 1, 3):  # the first call warms up
        start = time.perf_counter()
        result = distill(teacher, x, student=student, device=device, progress=False,
                         **{**options, "epochs": epochs, "early_stop": False})
        seconds[epochs] = time.perf_counter() - start
    epoch = max(seconds[3] - seconds[1], 0.0) / 2 / len(x)
    assert result is not None
    network = load_network(onnx_bytes(result.student.cpu().eval(), tuple(points.shape[1:])))
    flat = points.reshape(len(points), -1).astype(np.float64)
    per_point = estimate_cost(network, 1, points=_tiled(flat, BATCH), norm=norm, cap=2 * radius, passes=1,
                              domain=domain, probe=BATCH)
    return epoch, per_point


def ball_estimates(cfg, probe: Probe, s: int, dim: int, n_classes: int, coverage_draws: int) -> tuple[
        StageEstimate, ...]:
    """Ball mode: each stage's seconds from the probe's per-point costs (module docstring)."""
    from pacverify.pipeline.teacher_check import default_random_samples

    n_conf = max(1, round(probe.confident_fraction * s))
    samples = default_random_samples(dim) if cfg.attack_random_samples is None else cfg.attack_random_samples
    per_ball = cfg.pgd_steps * cfg.pgd_restarts * probe.gradient_s + samples * probe.forward_s
    out = [StageEstimate("label", s * probe.forward_s, f"{s} teacher forward passes")]
    if probe.distill_epoch_s is not None:
        out.append(_distill_estimate(cfg, s, probe.distill_epoch_s))
    if probe.bound_pass_s is not None:
        out.append(StageEstimate("verify", n_conf * probe.bound_pass_s,
                                 f"one bound pass at ≈{n_conf} κ-confident points"
                                 + (f" (+ up to {cfg.timeout:g} s of branch and bound per point left open)"
                                    if cfg.complete else "")))
        out.append(StageEstimate("radius", TYPICAL_RADIUS_PASSES * n_conf * probe.bound_pass_s,
                                 f"≈{TYPICAL_RADIUS_PASSES:g} bound passes per κ-confident point"))
    out.append(StageEstimate("rho", n_conf * max(n_classes - 1, 1) * 2 * probe.gradient_s,
                             f"teacher and student gradients for {max(n_classes - 1, 1)} runner-up classes"))
    out.append(StageEstimate("teacher_check", 2 * n_conf * per_ball,
                             f"{cfg.pgd_steps}×{cfg.pgd_restarts} PGD steps + {samples} draws per ball, at 3δ and "
                             "3·δ_T"))
    out.append(StageEstimate("coverage", coverage_draws * probe.forward_s,
                             f"{coverage_draws} teacher forward passes"))
    return tuple(out)


def mass_estimates(cfg, probe: Probe, s: int, n_classes: int, holdout: int, oracle: str,
                   oracle_cost: float | None) -> tuple[StageEstimate, ...]:
    """Mass mode: each stage's seconds from the probe's per-point costs (module docstring)."""
    out = [StageEstimate("label", s * probe.forward_s, f"{s} teacher forward passes")]
    if oracle == "teacher":
        if oracle_cost is not None:
            out.append(StageEstimate("lower", oracle_cost, "the teacher's radius search (timed bound passes)"))
    else:
        if probe.distill_epoch_s is not None:
            out.append(_distill_estimate(cfg, s, probe.distill_epoch_s))
        if probe.bound_pass_s is not None:
            out.append(StageEstimate("lower", TYPICAL_RADIUS_PASSES * s * probe.bound_pass_s
                                     + s * max(n_classes - 1, 1) * 2 * probe.gradient_s,
                                     f"≈{TYPICAL_RADIUS_PASSES:g} bound passes and the margin gradients per point"))
    rounds = cfg.attack_bisection + 1
    out.append(StageEstimate("upper", s * rounds * cfg.pgd_steps * cfg.pgd_restarts * probe.gradient_s,
                             f"at most {rounds} rounds of {cfg.pgd_steps}×{cfg.pgd_restarts} PGD steps per point"))
    out.append(StageEstimate("holdout", holdout * (probe.forward_s + probe.confident_fraction * cfg.pgd_steps
                                                   * cfg.pgd_restarts * probe.gradient_s),
                             f"{holdout} fresh draws labelled, the κ-confident ones attacked"))
    return tuple(out)


def _distill_estimate(cfg, s: int, epoch_s: float) -> StageEstimate:
    """The distillation stage: its epoch budget at the probe's rate, or with ``--student auto`` at most its budget."""
    epochs = _epochs(cfg)
    fixed = epochs * s * epoch_s
    if cfg.student == "auto":
        return StageEstimate("distill", float(cfg.student_budget),
                             f"--student auto: at most its budget of {cfg.student_budget:g} s (its first try: at "
                             f"most {duration(fixed)})")
    return StageEstimate("distill", fixed, f"at most {epochs} epochs × {s} points (early stopping usually ends sooner)")


def _epochs(cfg) -> int:
    """The distillation's epoch budget: the run's ``epochs``, else its options', else the trainer's default."""
    from pacverify.distill.trainer import DistillConfig

    return int(cfg.epochs or cfg.distill_options.get("epochs") or DistillConfig().epochs)


def coverage_draws(cfg, dim: int, available: int | None) -> int:
    """How many teacher evaluations the coverage stage makes (as :func:`~pacverify.pipeline.stages.estimate_coverage`
    sizes it)."""
    from pacverify.pipeline.stages import MAX_COVERAGE_FLOATS

    n = cfg.coverage_points
    if n == 0:
        return 0
    batch = cfg.coverage_batch or max(200, math.ceil(50 / cfg.eps))
    budget = MAX_COVERAGE_FLOATS // max(dim, 1)
    if available is not None:
        budget = min(budget, available)
    return max(0, min(n * (batch + 1), budget) - n)
