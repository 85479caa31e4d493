"""The stages of Algorithm 1 of 004 (DESIGN.md §1), one top-level function each, with its cache key beside it.

Only the distillation is cached across runs: the student it produces is verified afresh every run, so a cached
(or tampered) student cannot make a false claim. Evidence — the sample, the teacher's labels, the proofs, the
radii and the teacher attack — is recomputed every run, never read back from ``OUT/.pacverify-cache``.

Each stage takes the run-wide :class:`Setup` and the outputs of the stages it needs, and returns a
small frozen dataclass. Data flows one way: sample → teacher labels → student → ONNX → verifier →
δ_T and teacher check → coverage. :mod:`pacverify.pipeline.ball` lists them as the ball-mode pipeline
and assembles the certificate; :class:`~pacverify.pipeline.runner.Runner` runs them.
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pacverify.certificate.guarantee import ball_hits, relaxed_delta, shifted_coverage, teacher_radius_factor
from pacverify.certificate.schema import PointStatus
from pacverify.data import Sampler
from pacverify.errors import InputError
from pacverify.fileio import atomic_write_bytes, sha256_arrays, sha256_file
from pacverify.models import load_student, teacher_logits
from pacverify.pipeline.runner import Stage
from pacverify.pipeline.settings import CertifySettings
from pacverify.progress import Ticker, counter, prefixed
from pacverify.verify.result import PointVerdict


@dataclass(frozen=True)
class Setup:
    """What every stage may read: the validated settings, the loaded teacher and sampler, and the run's facts."""

    cfg: CertifySettings
    teacher: torch.nn.Module
    teacher_path: Path | None
    teacher_hash: str
    sampler: Sampler
    source: dict
    input_shape: tuple[int, ...]
    dim: int
    samples: int
    samples_required: int
    out_dir: Path
    device: torch.device
    show_bars: bool = False
    oracle: str = ""                 # mass mode: the oracle that runs ("teacher" or "student")
    oracle_reason: str = ""          # mass mode: why that oracle
    teacher_network: Any = None      # mass mode, teacher oracle: the verifier's Network of the teacher
    ticker: Ticker | None = None     # progress of the long parts (:mod:`pacverify.progress`); None: silent
    executor: Any = None             # the run's pacverify.executor.Executor (open for the run); None: local


# --- sample ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    points: np.ndarray  # (s, *input_shape)

    @property
    def flat(self) -> np.ndarray:
        return self.points.reshape(len(self.points), -1).astype(np.float64)


def draw_sample(setup: Setup) -> Sample:
    """s i.i.d. draws from D_X (Thm 3.8 of 004 sizes s)."""
    return Sample(setup.sampler.draw(setup.samples))


SAMPLE = Stage("sample", draw_sample, Sample,
               describe=lambda setup: f"drawing s = {setup.samples} points (m = {setup.dim})")


# --- teacher labels ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Labels:
    label: np.ndarray       # (s,) teacher argmax
    confidence: np.ndarray  # (s,) teacher max softmax (Def 3.2)
    n_classes: int

    def required(self, kappa: float) -> np.ndarray:
        """Indices of the κ-confident points: the ones the student must be proven robust at."""
        return np.nonzero(self.confidence >= kappa)[0]


def runner(setup: Setup):
    """The run's executor (:mod:`pacverify.executor`): the one certify opened, else a local one."""
    from pacverify.executor import LocalExecutor

    return setup.executor if setup.executor is not None else LocalExecutor()


def on_gpu(setup: Setup) -> bool:
    """Whether the teacher's stages run on a GPU (their Ray tasks then ask for one)."""
    return setup.device.type == "cuda"


def confidence(logits: torch.Tensor) -> np.ndarray:
    """conf_T = the largest softmax probability of each row of logits (Def 3.2), in float64."""
    return torch.softmax(logits.double(), dim=1).max(1).values.numpy()


@dataclass(frozen=True)
class _TeacherJob:
    """What every chunk of a pass of the teacher over points shares (put once into Ray's object store)."""

    teacher: torch.nn.Module
    points: np.ndarray  # (N, *input_shape)
    device: torch.device
    labels: np.ndarray | None = None  # (N,) for the margins
    student: torch.nn.Module | None = None
    norm: str = "2"


def _logits_chunk(job: _TeacherJob, chunk: tuple[int, int, int]) -> torch.Tensor:
    _, start, stop = chunk
    return teacher_logits(job.teacher, job.points[start:stop], device=job.device)


def teacher_logits_over(setup: Setup, points: np.ndarray, part: str) -> torch.Tensor:
    """The teacher's logits at ``points`` (N, *input_shape), float32 (N, n), over the fixed chunks of
    :func:`~pacverify.executor.chunk_ranges` on the run's executor (as GPU tasks under ``--device cuda``). A chunk
    is a whole number of :func:`~pacverify.models.teacher_logits`'s batches, so the numbers are those of one call."""
    from pacverify.executor import map_points

    parts = map_points(runner(setup), _logits_chunk, _TeacherJob(setup.teacher, points, setup.device), len(points),
                       progress=counter(setup.ticker, part), gpu=on_gpu(setup))
    return torch.cat(parts) if parts else torch.empty(0, 0)


def _margins_chunk(job: _TeacherJob, chunk: tuple[int, int, int]):
    from pacverify.distill.margins import margin_alignment

    _, start, stop = chunk
    assert job.labels is not None and job.student is not None
    return margin_alignment(job.teacher, job.student, job.points[start:stop], job.labels[start:stop], job.norm)


def margins_over(setup: Setup, student: torch.nn.Module, points: np.ndarray, labels: np.ndarray, part: str):
    """:func:`~pacverify.distill.margins.margin_alignment` of the teacher and ``student`` at ``points`` for
    ``labels``, over the fixed chunks on the run's executor (a chunk is a whole number of its batches: the numbers
    of one call)."""
    from pacverify.distill.margins import MarginAlignment, margin_alignment
    from pacverify.executor import map_points

    if len(points) == 0:
        return margin_alignment(setup.teacher, student, points, labels, setup.cfg.norm)
    job = _TeacherJob(setup.teacher, points, setup.device, np.asarray(labels), student, setup.cfg.norm)
    parts = map_points(runner(setup), _margins_chunk, job, len(points), progress=counter(setup.ticker, part),
                       gpu=on_gpu(setup))
    return MarginAlignment(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(MarginAlignment)))


def label_sample(setup: Setup, sample: Sample) -> Labels:
    """The teacher's class and confidence at every sample point (float64 softmax of its logits)."""
    logits = teacher_logits_over(setup, sample.points, "label")
    if not torch.isfinite(logits).all():
        raise InputError("the teacher returned NaN or infinite logits on the sample")
    return Labels(logits.argmax(1).numpy(), confidence(logits), int(logits.shape[1]))


LABEL = Stage("label", label_sample, Labels, needs=("sample",),
              describe=lambda setup, sample: "labelling with the teacher")


# --- fresh held-out points ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Fresh:
    points: np.ndarray | None  # up to 1000 draws after the sample, for the quality markers


def draw_fresh(setup: Setup) -> Fresh:
    """A held-out sample for the quality markers, or None when a data file has no rows left."""
    n = min(1000, setup.samples)
    available = getattr(setup.sampler, "available_fresh", None)
    if available is not None:
        n = min(n, available(setup.samples))
    return Fresh(setup.sampler.fresh(n, after=setup.samples) if n > 0 else None)


FRESH = Stage("fresh", draw_fresh, Fresh)


# --- distill -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Distilled:
    student_pt: np.ndarray  # the bytes of student.pt (uint8)
    summary: dict           # DistillResult.as_dict() without the history


def distill_student(setup: Setup, sample: Sample, fresh: Fresh) -> Distilled:
    """Distill the teacher into the student architecture with the chosen loss (DESIGN.md §3); with ``--student
    auto``, :func:`pacverify.distill.distill_auto`'s ladder of architectures within ``cfg.student_budget`` seconds
    (the summary's ``auto`` holds every try and the explanation)."""
    from pacverify.distill import distill, distill_auto
    from pacverify.models import save_student

    cfg = setup.cfg
    options = dict(cfg.distill_options, method=cfg.method, seed=cfg.seed, norm=cfg.norm)
    if cfg.epochs is not None:
        options["epochs"] = cfg.epochs
    progress = counter(setup.ticker, "distill: epochs") or setup.show_bars
    auto = None
    if cfg.student == "auto":
        search = distill_auto(setup.teacher, sample.points, x_fresh=fresh.points, budget_s=cfg.student_budget,
                              device=setup.device, progress=progress, **options)
        result, auto = search.best, search.as_dict()
    else:
        result = distill(setup.teacher, sample.points, student=cfg.student, device=setup.device,
                         progress=progress, x_fresh=fresh.points, **options)
    with tempfile.TemporaryDirectory() as tmp:
        save_student(result.student, Path(tmp) / "student.pt")
        blob = (Path(tmp) / "student.pt").read_bytes()
    summary = result.as_dict()
    summary.pop("history", None)
    summary["auto"] = auto
    return Distilled(np.frombuffer(blob, dtype=np.uint8), summary)


def distill_key(setup: Setup, sample: Sample, fresh: Fresh) -> dict:
    cfg = setup.cfg
    return {"teacher": setup.teacher_hash, "points": sha256_arrays(sample.points), "student": cfg.student,
            "method": cfg.method, "epochs": cfg.epochs, "options": cfg.distill_options, "seed": cfg.seed,
            "norm": cfg.norm, "trainer": DISTILL_VERSION,
            "budget": cfg.student_budget if cfg.student == "auto" else None, "fresh": None if fresh.points is None else sha256_arrays(fresh.points)}


DISTILL_VERSION = 2  # the trainer's rules: 2 = plateau stop and student search (a student cached before is retrained)

DISTILL = Stage("distill", distill_student, Distilled, needs=("sample", "fresh"), key=distill_key,
                describe=lambda setup, *_: f"distilling into {setup.cfg.student} with {setup.cfg.method}"
                + (f" (a ladder of students within {setup.cfg.student_budget:g} s)" if setup.cfg.student == "auto"
                   else ""))


# --- export ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Exported:
    onnx_sha256: str
    student_pt_sha256: str
    parity_max_abs_diff: float
    student_label: np.ndarray  # (s,) the ONNX student's class at every sample point


def export_student(setup: Setup, distilled: Distilled, sample: Sample) -> Exported:
    """Write student.pt and student.onnx (onnxruntime parity checked) and read the ONNX back for the verifier."""
    from pacverify.onnx_io.export import export_onnx
    from pacverify.onnx_io.reader import load_network

    student_pt = atomic_write_bytes(setup.out_dir / "student.pt", distilled.student_pt.tobytes())
    student = load_student(student_pt)
    onnx_path = setup.out_dir / "student.onnx"
    report = export_onnx(student, onnx_path, setup.input_shape, sample=sample.points[:4096], seed=setup.cfg.seed)
    network = load_network(onnx_path)
    with torch.no_grad():
        student_label = network(torch.as_tensor(sample.flat, dtype=network.dtype)).argmax(1).numpy()
    diffs = [d for d in (report.max_abs_diff_random, report.max_abs_diff_sample) if d is not None]
    return Exported(sha256_file(onnx_path), sha256_file(student_pt), max(diffs), student_label)


EXPORT = Stage("export", export_student, Exported, needs=("distill", "sample"),
               describe=lambda setup, *_: "exporting the student to ONNX (onnxruntime parity)")


# --- verify the student at 3δ ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StudentProof:
    verdict: np.ndarray  # (N,) PointStatus codes VERIFIED / FALSIFIED / UNKNOWN at the required points
    cex: np.ndarray      # (N, m) student counterexamples (NaN rows where none)
    time_s: float

    @property
    def verified(self) -> np.ndarray:
        return self.verdict == PointStatus.VERIFIED


_POINT_STATUS = {PointVerdict.VERIFIED: PointStatus.VERIFIED, PointVerdict.FALSIFIED: PointStatus.FALSIFIED,
                 PointVerdict.UNKNOWN: PointStatus.UNKNOWN}


def _student_network(setup: Setup):
    from pacverify.onnx_io.reader import load_network

    return load_network(setup.out_dir / "student.onnx")


def verify_student(setup: Setup, sample: Sample, labels: Labels, exported: Exported) -> StudentProof:
    """Sound bounds (and branch and bound when ``complete``) at radius 3δ at every κ-confident point."""
    from pacverify.verify.api import verify_points

    cfg = setup.cfg
    idx = labels.required(cfg.kappa)
    if idx.size == 0:
        return StudentProof(np.zeros(0, np.int8), np.zeros((0, setup.dim)), 0.0)
    result = verify_points(_student_network(setup), sample.flat[idx], 3 * cfg.delta, cfg.norm,
                           labels=labels.label[idx], method=cfg.verify_method, complete=cfg.complete,
                           timeout=cfg.timeout, domain=cfg.domain, seed=cfg.seed,
                           progress=prefixed(setup.ticker, "verify"), executor=runner(setup))
    codes = np.array([_POINT_STATUS[v] for v in result.verdicts], dtype=np.int8)
    cex = np.full((idx.size, setup.dim), np.nan)
    for i, x in result.counterexamples.items():
        cex[i] = np.asarray(x).reshape(-1)
    return StudentProof(codes, cex, float(result.time_s))


VERIFY = Stage("verify", verify_student, StudentProof, needs=("sample", "label", "export"),
               describe=lambda setup, sample, labels, _: f"verifying the student at radius 3δ = "
                                                         f"{3 * setup.cfg.delta:g} at "
                                                         f"{labels.required(setup.cfg.kappa).size} points")


# --- certified radii ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Radii:
    radius: np.ndarray  # (N,) the student's proven radius r_i at the required points (0 where none)


def certify_radii(setup: Setup, sample: Sample, labels: Labels, exported: Exported, proof: StudentProof) -> Radii:
    """Largest radius proven per required point (:func:`~pacverify.verify.api.certified_radius`'s default search, up
    to the cap); a point proven at 3δ keeps r_i ≥ 3δ."""
    from pacverify.verify.api import certified_radius

    cfg = setup.cfg
    idx = labels.required(cfg.kappa)
    if idx.size == 0:
        return Radii(np.zeros(0))
    result = certified_radius(_student_network(setup), sample.flat[idx], cfg.norm, labels=labels.label[idx],
                              method=cfg.verify_method, cap=float(cfg.radius_cap or 6 * cfg.delta),
                              tol=float(cfg.radius_tol or 3 * cfg.delta / 64),
                              domain=cfg.domain, seed=cfg.seed, attack=False,
                              progress=prefixed(setup.ticker, "radius"), executor=runner(setup))
    radius = np.asarray(result.radius, dtype=np.float64)
    return Radii(np.where(proof.verified, np.maximum(radius, 3 * cfg.delta), radius))


RADIUS = Stage("radius", certify_radii, Radii, needs=("sample", "label", "export", "verify"),
               describe=lambda setup, *_: "searching certified radii")


# --- margin-gradient ratios and δ_T ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Relaxation:
    """Prop 4.3 at the required points, at the runner-up class j that binds (the smallest factor)."""

    rho: np.ndarray           # (N,) ρ_j = ‖∇g_S‖_* / ‖∇g_T‖_*
    margin_ratio: np.ndarray  # (N,) g_T / g_S
    cosine: np.ndarray        # (N,) cosine between the two margin gradients
    factor: np.ndarray        # (N,) min_j min((g_T/g_S)_j·ρ_j, 1): the teacher's radius over the student's
    delta_t: float            # δ_T = min_i factor_i·r_i / 3


def relax(setup: Setup, sample: Sample, labels: Labels, exported: Exported, radii: Radii) -> Relaxation:
    """Margins, gradient ratios and cosines against every runner-up class, and δ_T (Prop 4.3, DESIGN.md §2), over
    the fixed chunks of points on the run's executor."""
    idx = labels.required(setup.cfg.kappa)
    if idx.size == 0:
        empty = np.zeros(0)
        return Relaxation(empty, empty, empty, empty, 0.0)
    student = load_student(setup.out_dir / "student.pt")
    m = margins_over(setup, student, sample.points[idx], labels.label[idx], "rho")
    rho, ratio = m.rho, m.margin_ratio
    per_j = np.stack([teacher_radius_factor(rho[:, j], ratio[:, j]) for j in range(rho.shape[1])], 1)
    binding = per_j.argmin(1)
    rows = np.arange(idx.size)
    factor = per_j[rows, binding]
    return Relaxation(rho[rows, binding], ratio[rows, binding], m.cosine[rows, binding], factor,
                      relaxed_delta(radii.radius, rho, ratio))


RELAX = Stage("rho", relax, Relaxation, needs=("sample", "label", "export", "radius"),
              describe=lambda setup, *_: "margins and margin-gradient ratios against every runner-up class")


# --- the teacher check -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TeacherAttack:
    found_delta: np.ndarray    # (N,) a teacher counterexample within 3δ
    cex_delta: np.ndarray      # (N, m)
    found_delta_t: np.ndarray  # (N,) a teacher counterexample within 3·δ_T
    cex_delta_t: np.ndarray    # (N, m)
    random_samples: int = 0          # uniform draws per claimed ball (the resolved budget)
    fresh_points: int = 0            # held-out draws considered
    fresh_attacked_delta: int = 0    # of them, κ-confident within 2δ of a required point: δ-balls attacked
    fresh_attacked_delta_t: int = 0  # the same for δ_T


def _attack_fresh_draws(setup: Setup) -> np.ndarray | None:
    """``cfg.attack_fresh_points`` held-out draws (fewer when a data file has no more rows to spare), flat."""
    n, sampler = setup.cfg.attack_fresh_points, setup.sampler
    available = getattr(sampler, "available_fresh", None)
    if sampler is not None and available is not None:
        n = min(n, available(setup.samples))
    if sampler is None or n <= 0:
        return None
    return sampler.fresh(n, after=setup.samples).reshape(n, -1).astype(np.float64)


def attack_teacher_stage(setup: Setup, sample: Sample, labels: Labels, relaxation: Relaxation) -> TeacherAttack:
    """Attack the teacher in every claimed ball, 3δ and 3·δ_T around each required point (DESIGN.md §2): PGD and
    random sampling in each ball, the same in the δ- (δ_T-) balls of fresh κ-confident draws within 2δ (2δ_T)
    of a required point, every counterexample then checked against every claimed ball
    (:mod:`pacverify.pipeline.teacher_check`)."""
    from pacverify.pipeline.teacher_check import (
        TeacherCheck,
        TeacherModel,
        attack_fresh,
        attack_teacher,
        default_random_samples,
        merge_checks,
    )

    cfg = setup.cfg
    idx = labels.required(cfg.kappa)
    centers, claimed = sample.flat[idx], labels.label[idx]
    teacher = TeacherModel(setup.teacher, setup.input_shape, device=setup.device)
    samples = default_random_samples(setup.dim) if cfg.attack_random_samples is None else cfg.attack_random_samples
    kwargs: dict[str, Any] = dict(n_classes=labels.n_classes, domain=cfg.domain, steps=cfg.attack_steps,
                                  restarts=cfg.attack_restarts, seed=cfg.seed, starts=cfg.attack_starts,
                                  random_samples=samples)
    fresh = _attack_fresh_draws(setup)
    checks: dict[str, tuple[TeacherCheck, TeacherCheck]] = {}
    for name, radius in (("delta", 3 * cfg.delta), ("delta_t", 3 * relaxation.delta_t)):
        same = name == "delta_t" and radius == 3 * cfg.delta
        part = "teacher attack at 3δ" if name == "delta" else "teacher attack at 3·δ_T"
        checks[name] = checks["delta"] if same else (
            attack_teacher(teacher, centers, claimed, radius, cfg.norm, progress=counter(setup.ticker, part),
                           executor=setup.executor, **kwargs),
            attack_fresh(teacher, fresh, centers, claimed, radius, cfg.norm, kappa=cfg.kappa, **kwargs))
    every = [c for pair in checks.values() for c in pair]
    final = {name: merge_checks(pair[0], *every, same=(pair[1],), centers=centers, labels=claimed, norm=cfg.norm,
                                domain=cfg.domain, seed=cfg.seed) for name, pair in checks.items()}
    return TeacherAttack(final["delta"].found, final["delta"].counterexamples, final["delta_t"].found,
                         final["delta_t"].counterexamples, random_samples=int(samples),
                         fresh_points=0 if fresh is None else len(fresh),
                         fresh_attacked_delta=checks["delta"][1].attacked,
                         fresh_attacked_delta_t=checks["delta_t"][1].attacked)


TEACHER_CHECK = Stage("teacher_check", attack_teacher_stage, TeacherAttack, needs=("sample", "label", "rho"),
                      describe=lambda setup, *_: "attacking the teacher in the claimed balls")


# --- coverage ----------------------------------------------------------------------------------------------------

MAX_COVERAGE_FLOATS = 20_000_000


@dataclass(frozen=True)
class CoverageEstimate:
    section: dict  # the certificate's ``coverage`` section


def estimate_coverage(setup: Setup) -> CoverageEstimate:
    """How much of the distribution the PAC statement speaks about (DESIGN.md §2, docs/theory.md).

    A fresh point counts when the κ-confident part of its own δ-ball has mass ≥ ε (the teacher's
    confidence evaluated at each reference draw); the bound is
    :func:`~pacverify.certificate.guarantee.coverage_lower_bound`, sized to the data and memory. With
    ``tv`` = Λ > 0 the statement is about D′: a ball whose confident part has D_X-mass ≥ ε + 2Λ has D′-mass
    ≥ ε + Λ, and Pr_D′ ≥ Pr_D_X − Λ, so the D_X estimate at threshold ε + 2Λ minus Λ bounds D′'s coverage.
    """
    cfg, dim, after = setup.cfg, setup.dim, setup.samples
    n = cfg.coverage_points
    threshold = cfg.eps + 2 * cfg.tv
    batch = cfg.coverage_batch or max(200, math.ceil(50 / cfg.eps))
    budget = MAX_COVERAGE_FLOATS // max(dim, 1)
    available = getattr(setup.sampler, "available_fresh", None)
    if available is not None:
        budget = min(budget, available(after))
    if n and budget < n * (batch + 1):
        batch = budget // max(n, 1) - 1
    if n == 0 or batch < 1 or threshold > 1:
        why = ("coverage off (coverage_points = 0)" if n == 0 else
               f"ε + 2Λ = {threshold:g} exceeds 1" if threshold > 1 else
               "too few fresh points: the data file has no rows to spare beyond the sample")
        return CoverageEstimate({"lower": 0.0, "confidence": None, "points": 0, "batch": 0, "declared_covered": None,
                                 "alpha_point": None, "threshold": threshold, "note": f"not estimated: {why}"})
    draws = setup.sampler.fresh(n * (batch + 1), after=after)
    confident = teacher_confidence(setup, draws[n:], "coverage") >= cfg.kappa
    flat = draws.reshape(n * (batch + 1), -1).astype(np.float64)
    centers, refs = flat[:n], flat[n:].reshape(n, batch, -1)
    hits = ball_hits(centers, refs, cfg.delta, cfg.norm, counted=confident.reshape(n, batch))
    return CoverageEstimate(shifted_coverage(hits, batch, cfg.eps, cfg.tv))


def teacher_confidence(setup: Setup, points: np.ndarray, part: str) -> np.ndarray:
    """conf_T(x) = max softmax of the teacher's logits (Def 3.2), float64, for points (N, *input_shape), over the
    fixed chunks on the run's executor; progress reported as ``part``."""
    return confidence(teacher_logits_over(setup, points, part))


COVERAGE = Stage("coverage", estimate_coverage, CoverageEstimate,
                 describe=lambda setup: "estimating the coverage of the statement")


# --- verified robust accuracy on labelled points (certify --labels) ---------------------------------------------------

@dataclass(frozen=True)
class LabelledAccuracy:
    section: dict | None  # the certificate's ``accuracy`` section (None without labels)
    true_label: np.ndarray  # (s,) the true class of every sample point (empty without labels)


def true_labels(setup: Setup) -> np.ndarray | None:
    """The true class of every sample point, from ``cfg.labels`` and the rows the sampler draws; None without."""
    from pacverify.data import ArraySampler, load_labels

    if setup.cfg.labels is None:
        return None
    sampler = setup.sampler
    if not isinstance(sampler, ArraySampler):  # settings refuse this; a bug if reached
        raise RuntimeError("labels need an array sampler")
    labels = load_labels(setup.cfg.labels, rows=sampler.rows.shape[0])
    return labels[sampler.drawn_rows(setup.samples)]


def labelled_accuracy(setup: Setup, labels: Labels, exported: Exported, proof: StudentProof,
                      radii: Radii) -> LabelledAccuracy:
    """With ``cfg.labels``: clean accuracy of teacher and student on the s sample points, and the student's verified
    robust accuracy there — the fraction proven (by the bounds at 3δ, or by a certified radius ≥ δ) to keep the
    true class on the whole ball. Points that are not κ-confident were not bounded and count as not verified."""
    from pacverify.certificate.statements import accuracy_sentence

    y = true_labels(setup)
    if y is None:
        return LabelledAccuracy(None, np.zeros(0, np.int64))
    cfg, s = setup.cfg, setup.samples
    if y.size and y.max() >= labels.n_classes:
        raise InputError(f"labels file {cfg.labels}: class {int(y.max())} on the sample, but the teacher has "
                         f"{labels.n_classes} classes")
    idx = labels.required(cfg.kappa)
    correct = labels.label[idx] == y[idx]
    robust_3 = int(np.sum((proof.verdict == PointStatus.VERIFIED) & (exported.student_label[idx] == labels.label[idx])
                          & correct))
    robust_1 = int(np.sum((radii.radius >= cfg.delta) & (exported.student_label[idx] == labels.label[idx]) & correct))
    section: dict[str, Any] = dict(points=s, teacher_clean=float(np.mean(labels.label == y)),
                                   student_clean=float(np.mean(exported.student_label == y)),
                                   verified_robust_3delta=robust_3 / s, verified_robust_delta=robust_1 / s)
    section["statement"] = accuracy_sentence(section, cfg.delta, cfg.norm)
    return LabelledAccuracy(section, y)


ACCURACY = Stage("accuracy", labelled_accuracy, LabelledAccuracy, needs=("label", "export", "verify", "radius"),
                 describe=lambda setup, *_: "verified robust accuracy on the labelled sample"
                 if setup.cfg.labels is not None else "")


# --- the 2-D map -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DecisionGrid:
    arrays: dict  # grid_x, grid_y, grid_label for 2-D inputs; empty otherwise


def decision_grid(setup: Setup, sample: Sample, size: int = 160) -> DecisionGrid:
    """The teacher's class on a size×size grid around a 2-D sample, for the report's map."""
    if setup.dim != 2:
        return DecisionGrid({})
    points = sample.points
    flat = points.reshape(len(points), 2)
    lo, hi = flat.min(0), flat.max(0)
    pad = 0.05 * (hi - lo) + 1e-6
    gx, gy = np.meshgrid(np.linspace(lo[0] - pad[0], hi[0] + pad[0], size),
                         np.linspace(lo[1] - pad[1], hi[1] + pad[1], size))
    grid_points = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32).reshape(-1, *points.shape[1:])
    labels = teacher_logits(setup.teacher, grid_points, device=setup.device).argmax(1).numpy().reshape(size, size)
    return DecisionGrid({"grid_x": gx, "grid_y": gy, "grid_label": labels})


GRID = Stage("grid", decision_grid, DecisionGrid, needs=("sample",))


# --- global robustness of the student (certify --global-check) ------------------------------------------------------

@dataclass(frozen=True)
class GlobalOutcome:
    section: dict | None  # the certificate's ``global_check`` section (None when not asked for)
    pair: np.ndarray      # (2, m): a checked violation (x, x′), or (0, m)


def global_check(setup: Setup, exported: Exported) -> GlobalOutcome:
    """With ``cfg.global_check``: :func:`~pacverify.verify.global_robustness.verify_global` on the ONNX student over
    the domain at radius 3δ and confidence κ (x′ kept in the domain), within ``cfg.global_timeout`` seconds."""
    from pacverify.certificate.statements import global_sentence
    from pacverify.verify.global_robustness import verify_global

    cfg = setup.cfg
    empty = np.zeros((0, setup.dim))
    if not cfg.global_check or cfg.domain is None:
        return GlobalOutcome(None, empty)
    result = verify_global(_student_network(setup), cfg.domain, 3 * cfg.delta, cfg.kappa, norm=cfg.norm,
                           method=cfg.verify_method, inside_domain=True, timeout=cfg.global_timeout, seed=cfg.seed)
    pair = empty if result.pair is None else np.stack([result.pair.x, result.pair.x_prime]).reshape(2, -1)
    section = dict(verdict=result.verdict, radius=3 * cfg.delta, kappa=cfg.kappa, norm=cfg.norm,
                   timeout=cfg.global_timeout, proven_fraction=float(result.proven_fraction),
                   boxes_done=int(result.boxes_done), boxes_open=int(result.boxes_open),
                   statement=global_sentence(result.verdict, float(result.proven_fraction), 3 * cfg.delta, cfg.kappa,
                                             cfg.norm, tuple(cfg.domain), cfg.global_timeout))
    return GlobalOutcome(section, pair)


GLOBAL = Stage("global", global_check, GlobalOutcome, needs=("export",),
               describe=lambda setup, *_: "global robustness of the student over the domain"
               if setup.cfg.global_check else "")
