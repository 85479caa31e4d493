"""``pacverify certify``: Algorithm 1 of 004 end to end (DESIGN.md §1–2), composed from the pipeline's parts.

validate every setting → load the teacher and the data source → s = sample_size(m, ε, η) → run the
ball-mode stages (:data:`pacverify.pipeline.ball.BALL_MODE`: sample, label, distill, export, verify at
3δ, radii, ρ and δ_T, teacher check, coverage) → assemble and write the certificate → report.
Stages are cached in ``OUT/.pacverify-cache`` under content-hash keys (:mod:`pacverify.pipeline.cache`),
so a rerun with the same inputs and seed reuses finished stages.
"""
from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pacverify import pac
from pacverify.certificate.io import Certificate, write_certificate
from pacverify.data import Sampler, make_sampler
from pacverify.errors import InputError
from pacverify.executor import get_executor
from pacverify.fileio import (
    acquire_lock,
    check_output_dir,
    check_unlocked,
    ensure_dir,
    release_lock,
    remove_new,
    sha256_arrays,
    sha256_file,
    snapshot,
)
from pacverify.models import (
    as_logits,
    layout_note,
    load_teacher,
    looks_like_probabilities,
    resolve_device,
    teacher_logits,
)
from pacverify.pipeline import plan as P
from pacverify.pipeline.ball import BALL_MODE, assemble
from pacverify.pipeline.cache import CACHE_DIR, StageCache
from pacverify.pipeline.mass import assemble as assemble_mass
from pacverify.pipeline.mass import mass_mode
from pacverify.pipeline.plan import Plan
from pacverify.pipeline.runner import Progress, Runner, quiet
from pacverify.pipeline.settings import CertifySettings
from pacverify.pipeline.stages import MAX_COVERAGE_FLOATS, Setup
from pacverify.progress import ProgressReporter, Ticker
from pacverify.report.render import write_report
from pacverify.validation import check_memory, error_line

__all__ = ["CertifySettings", "Plan", "certify", "plan"]


def certify(teacher: str | os.PathLike | torch.nn.Module, *, out: str | os.PathLike | None = None,
            progress: Progress | None = None, show_bars: bool = False, cache: bool = True,
            ticker: Ticker | None = None, **settings) -> Certificate:
    """Run Algorithm 1 of 004 on ``teacher`` and write the certificate into ``out``.

    ``settings`` are the fields of :class:`CertifySettings` (``delta``, ``eps``, ``eta`` required);
    all are validated before the teacher is loaded or anything is sampled. ``out`` defaults to a new
    temporary directory. ``progress(stage, message)`` is called as stages start and end; ``ticker(part, done,
    total)`` as the long parts advance (``show_bars`` without a ticker: bars with ETA on a terminal, a line per
    ~10% in a log, on stderr — :class:`pacverify.progress.ProgressReporter`). ``cache=False``
    retrains the student instead of reusing the one cached in ``OUT/.pacverify-cache`` (the only stage cached:
    evidence is always recomputed, :mod:`pacverify.pipeline.stages`). Returns the
    :class:`~pacverify.certificate.io.Certificate`; its verdict is CERTIFIED only if every κ-confident
    sample point was proven 3δ-robust for the student, the student agrees with the teacher there, and
    the teacher attack found no counterexample in a claimed ball.

    Bad input raises :class:`InputError` before anything is written, or — for what only the sample shows
    (points outside ``domain``, too many duplicate rows, a teacher that fails on it or is κ-confident at no
    sample point) — after removing everything this run wrote. Before the sample is drawn the memory the run
    needs is estimated from s and m; a run that cannot fit is refused with the estimate. With a ``progress``
    callback the plan is told first: sizes, memory, and each stage's estimated time from short timed probes of
    the teacher, the distiller and the verifier (:func:`plan`). The run holds ``OUT/.pacverify.lock``: a second run into the
    same directory while one is active is refused ("another pacverify run is using OUT").
    """
    say = progress or quiet
    if out is not None:
        check_output_dir(out, "output directory (--out)")
        check_unlocked(out)
    p = _prepare(teacher, settings)
    cfg, s, dim = p.cfg, p.samples, p.dim
    _check_fits(_plan(p, timed=False), cfg)
    the_plan = _plan(p, timed=progress is not None)  # the timed probes only when someone reads the estimates
    for line in the_plan.lines():
        say("plan", line)
    # the executor before anything is written: an unreachable Ray cluster is an InputError here
    executor = get_executor(cfg.executor, cfg.ray_address)
    if out is None:
        target, created = Path(tempfile.mkdtemp(prefix="pacverify-")), True
    else:
        target = Path(out)
        created = not target.exists()
    out_dir = ensure_dir(target)
    try:
        lock = acquire_lock(out_dir)  # refused while another run uses the directory: then nothing here is touched
    except BaseException:
        executor.close()
        raise
    before = set() if created else snapshot(out_dir)
    reporter: ProgressReporter | None = None
    try:
        setup = Setup(cfg=cfg, teacher=p.teacher, teacher_path=p.teacher_path, teacher_hash=p.teacher_hash,
                      sampler=p.sampler, source=cfg.source_description(), input_shape=p.input_shape, dim=dim,
                      samples=s, samples_required=p.samples_required, out_dir=out_dir, device=p.device,
                      show_bars=show_bars,
                      ticker=ticker if ticker is not None or not show_bars else (reporter := ProgressReporter()),
                      oracle=p.oracle, oracle_reason=p.oracle_reason, teacher_network=p.network,
                      executor=executor)
        runner = Runner(setup, StageCache(out_dir if cache else None), say)
        mass = cfg.guarantee == "mass"
        stages = mass_mode(p.oracle) if mass else BALL_MODE
        # sample and labels first: what only the sample shows stops the run before a student is trained
        at = [stage.name for stage in stages].index("label")
        results = runner.run(stages[:at])
        try:
            results = runner.run(stages[at:at + 1], results)
        except (InputError, MemoryError):
            raise
        except Exception as exc:  # the teacher's own code failed on the sample
            raise InputError(f"the teacher failed while labelling the {s} sample points: {error_line(exc)}") from None
        _check_confident(results["label"], cfg.kappa, s)
        results = runner.run(stages[at + 1:], results)
        record, arrays = (assemble_mass if mass else assemble)(setup, results, runner.timings)
        cert = write_certificate(record, arrays, out_dir)
        write_report(cert, html_path=out_dir / "report.html", markdown_path=out_dir / "report.md")
        return cert
    except MemoryError:
        _clean(out_dir, created, before)
        raise InputError(f"certify ran out of memory with s = {s} points of dimension m = {dim}; fewer points "
                         "need less (a larger --eps or --eta), or use a machine with more memory") from None
    except InputError:
        _clean(out_dir, created, before)
        raise
    except Exception:
        _clean(out_dir, created, before, keep=(CACHE_DIR,))  # an internal error: keep what a rerun can resume from
        raise
    finally:
        if reporter is not None:
            reporter.close()
        executor.close()
        release_lock(lock)


@dataclass(frozen=True)
class Prepared:
    """Everything ``certify`` knows before it writes anything: settings, teacher, sampler, probe and sizes."""

    cfg: CertifySettings
    teacher: torch.nn.Module
    teacher_path: Path | None
    teacher_hash: str
    sampler: Sampler
    device: torch.device
    probe: np.ndarray
    probe_logits: torch.Tensor
    forward_s: float          # seconds per point: drawing and labelling the probe
    input_shape: tuple[int, ...]
    dim: int
    samples: int
    samples_required: int
    oracle: str
    oracle_reason: str
    network: object
    notes: tuple[str, ...]


def _prepare(teacher: str | os.PathLike | torch.nn.Module, settings: dict) -> Prepared:
    """Validate every setting, load the teacher and the data source, probe them, size the sample (module docstring);
    InputError for anything wrong, before anything is written."""
    try:
        cfg = CertifySettings(**settings).validated()
    except TypeError as exc:
        raise InputError(f"certify: {exc}") from None
    device = resolve_device(cfg.device)
    if isinstance(teacher, torch.nn.Module):
        teacher_model, teacher_path = teacher.eval(), None
        teacher_hash = sha256_arrays(*[t.detach().cpu().numpy() for t in teacher.state_dict().values()])
    else:
        teacher_path = Path(teacher).resolve()
        teacher_model = load_teacher(teacher_path, arch=cfg.arch, trust_pickle=cfg.trust_pickle, device=device)
        teacher_hash = sha256_file(teacher_path)
    teacher_model = as_logits(teacher_model, cfg.outputs)
    if isinstance(cfg.sampler, Sampler):
        sampler = cfg.sampler
        if cfg.allow_duplicates and not sampler.allow_duplicates:
            sampler = dataclasses.replace(sampler, allow_duplicates=True)
    else:
        sampler = make_sampler(str(cfg.data or cfg.sampler or cfg.synthetic), seed=cfg.seed, domain=cfg.domain,
                               kind="data" if cfg.data else "sampler" if cfg.sampler else "synthetic",
                               allow_duplicates=cfg.allow_duplicates)
    # a short probe: a batch of points through the sampler and the teacher (shape, batches, time per point)
    start = time.perf_counter()
    probe = sampler.preview(_PROBE_POINTS)
    draw_s = time.perf_counter() - start
    start = time.perf_counter()
    probe_logits = _teacher_on(teacher_model, probe, device, "on a probe batch of")
    label_s = time.perf_counter() - start
    output_warning = _check_outputs(cfg.outputs, probe_logits)
    input_shape = tuple(probe.shape[1:])
    dim = int(np.prod(input_shape))
    mass = cfg.guarantee == "mass"
    required_s = pac.sample_size(dim, cfg.eps, cfg.eta, norm=cfg.norm, bound=str(cfg.bound),
                                 guarantee=cfg.guarantee)
    if cfg.samples is not None and cfg.samples < required_s:
        raise InputError(f"samples = {cfg.samples} is below the {required_s} that the ε-net bound ({cfg.bound}, "
                         f"{cfg.guarantee} mode) needs for m = {dim}, eps = {cfg.eps:g}, eta = {cfg.eta:g}")
    s = cfg.samples or required_s
    available = getattr(sampler, "available_fresh", None)
    if available is not None and available(0) < s:
        if not mass:
            raise InputError(_too_few_rows_for_ball(cfg, dim, s, available(0)))
        sampler.draw(s)  # raises the sampler's own message: how many rows, how many needed, what to do
    oracle, oracle_reason, network = ("", "", None) if not mass else \
        choose_oracle(cfg, teacher_model, teacher_path, input_shape, s, probe)
    notes = tuple(n for n in (layout_note(teacher_model, input_shape), output_warning) if n)
    if mass:
        notes += (f"oracle: {oracle}, {oracle_reason}",)
    return Prepared(cfg, teacher_model, teacher_path, teacher_hash, sampler, device, probe, probe_logits,
                    (draw_s + label_s) / max(len(probe), 1), input_shape, dim, s, required_s, oracle, oracle_reason,
                    network, notes)


def _plan(p: Prepared, *, timed: bool) -> Plan:
    """The plan of a prepared run: memory always; with ``timed``, each stage's time from the probes
    (:mod:`pacverify.pipeline.plan`)."""
    from pacverify.pipeline.mass import holdout_points

    cfg, s = p.cfg, p.samples
    n_classes = int(p.probe_logits.shape[1])
    confident = torch.softmax(p.probe_logits.double(), dim=1).max(1).values.numpy() >= cfg.kappa
    fraction = float(confident.mean()) if len(confident) else 0.0
    memory = _memory_estimate(cfg, s, p.dim, n_classes)
    base = Plan(cfg.guarantee, s, p.samples_required, p.dim, p.input_shape, n_classes, fraction, memory,
                notes=p.notes)
    if not timed:
        return base
    forward_s, gradient_s = P.teacher_times(p.teacher, p.probe, p.device)
    student_needed = cfg.guarantee == "ball" or p.oracle == "student"
    epoch_s = bound_s = None
    if student_needed:
        epoch_s, bound_s = P.probe_student(p.teacher, p.probe, student=cfg.student, method=cfg.method, seed=cfg.seed,
                                           norm=cfg.norm, radius=3 * cfg.delta, domain=cfg.domain, device=p.device,
                                           distill_options=dict(cfg.distill_options))
    probe = P.Probe(forward_s, gradient_s, epoch_s, bound_s, fraction)
    available = getattr(p.sampler, "available_fresh", None)
    if cfg.guarantee == "ball":
        draws = P.coverage_draws(cfg, p.dim, None if available is None else available(s))
        stages = P.ball_estimates(cfg, probe, s, p.dim, n_classes, draws)
    else:
        oracle_cost = None
        if p.oracle == "teacher":
            from pacverify.verify.oracle import estimate_cost

            flat = p.probe.reshape(len(p.probe), -1).astype(np.float64)
            oracle_cost = estimate_cost(p.network, s, points=flat, norm=cfg.norm,  # type: ignore[arg-type]
                                        cap=float(cfg.radius_cap or 2 * cfg.delta), tol=cfg.radius_tol,
                                        method=cfg.verify_method, domain=cfg.domain, seed=cfg.seed)
        holdout = holdout_points(_HoldoutSizing(cfg, p.sampler, s))  # type: ignore[arg-type]
        stages = P.mass_estimates(cfg, probe, s, n_classes, holdout, p.oracle, oracle_cost)
    return dataclasses.replace(base, stages=stages)


@dataclass(frozen=True)
class _HoldoutSizing:
    """The three fields :func:`~pacverify.pipeline.mass.holdout_points` reads, before a Setup exists."""

    cfg: CertifySettings
    sampler: Sampler
    samples: int


def plan(teacher: str | os.PathLike | torch.nn.Module, **settings) -> Plan:
    """What ``certify(teacher, **settings)`` would do, without doing it (``pacverify certify --dry-run``): the
    settings validated and the teacher and data probed exactly as ``certify`` does (InputError for what it would
    refuse), the sample size, the memory estimate and each stage's estimated time from short timed probes of the
    teacher, the distiller and the verifier (:mod:`pacverify.pipeline.plan`). Writes nothing; a run that would not
    fit in memory raises InputError with the numbers, as ``certify`` would."""
    p = _prepare(teacher, settings)
    _check_fits(_plan(p, timed=False), p.cfg)
    return _plan(p, timed=True)


def _check_fits(the_plan: Plan, cfg: CertifySettings) -> None:
    """InputError with the numbers when the run's estimated memory exceeds what this machine has."""
    s, dim = the_plan.samples, the_plan.dim
    check_memory(the_plan.memory_bytes, f"certify with s = {s} points of dimension m = {dim}",
                 f"fewer points need less (a larger --eps or --eta: pacverify samples --dim {dim} shows the sizes"
                 f"{'' if cfg.samples is None else ', or a smaller --samples'}), or use a machine with more memory")


def choose_oracle(cfg: CertifySettings, teacher: torch.nn.Module, teacher_path: Path | None,
                  input_shape: tuple[int, ...], s: int, probe: np.ndarray | None = None) -> tuple[str, str, object]:
    """Mass mode: which oracle gives the lower radii, why, and the teacher's Network when it is the teacher.

    ``teacher``: the engine must read the teacher (else InputError saying why and what to do). ``student``: always.
    ``auto``: the teacher when the engine reads it and the estimated cost of its radius search at the s points fits
    ``cfg.oracle_budget`` seconds (timed on ``probe``, points of the sample's stream); else the student.
    """
    from pacverify.verify.oracle import estimate_cost, teacher_network

    if cfg.oracle == "student":
        return "student", "requested (--oracle student): the teacher's radii come from the student by Prop 4.3", None
    network, why = teacher_network(teacher, teacher_path, input_shape, sample=probe)
    if network is None:
        if cfg.oracle == "teacher":
            raise InputError(f"--oracle teacher: {why}; use --oracle student (the distilled student's radii, under "
                             "the transfer assumptions) or --oracle auto")
        return "student", f"chosen by --oracle auto because {why}", None
    if cfg.oracle == "teacher":
        return "teacher", f"requested (--oracle teacher); {why}", network
    flat = None if probe is None else probe.reshape(len(probe), -1).astype(np.float64)
    cost = estimate_cost(network, s, points=flat, norm=cfg.norm, cap=float(cfg.radius_cap or 2 * cfg.delta),
                         tol=cfg.radius_tol, method=cfg.verify_method, domain=cfg.domain, seed=cfg.seed)
    if cost > cfg.oracle_budget:
        return "student", (f"chosen by --oracle auto: {why}, but its radius search at {s} points would take about "
                           f"{P.duration(cost)}, over the budget of {P.duration(cfg.oracle_budget)}"), None
    return "teacher", f"chosen by --oracle auto: {why}; estimated cost {P.duration(cost)} at {s} points", network


def _too_few_rows_for_ball(cfg: CertifySettings, dim: int, s: int, rows: int) -> str:
    """Ball mode refused for a data source with fewer rows than s, with what mass mode needs and reaches."""
    need = pac.sample_size(dim, cfg.eps, cfg.eta, norm=cfg.norm, guarantee="mass", bound="tight")
    try:
        reach = f"; {rows} rows reach ε = {pac.min_eps(rows, dim, cfg.eta, norm=cfg.norm, guarantee='mass', bound='tight'):.4g}"
    except InputError:
        reach = f"; {rows} rows are too few for mass mode at any ε ≤ 0.5 too"
    return (f"ball mode needs s = {s} rows for m = {dim} (ε = {cfg.eps:g}, η = {cfg.eta:g}, {cfg.bound} bound) but the "
            f"data has {rows} rows; the dimension-free mass mode (--guarantee mass) needs s = {need} at these ε and η"
            f"{reach} (pacverify samples --dim {dim} --samples {rows} --eta {cfg.eta:g} shows both)")


_PROBE_POINTS = 64
_BYTES_PER_VALUE = 48
"""Memory per coordinate of the sample: float32 points (4), their float64 copies (2 × 8), the distillation tensors
and input gradients (3 × 4), the cache and points.npz buffers (2 × 4), with room for transient copies."""
_BYTES_PER_POINT = 512  # labels, confidences, logits, status, radii, ρ and the other per-point arrays


def _memory_estimate(cfg: CertifySettings, s: int, dim: int, n_classes: int) -> float:
    """Bytes a run with s points of dimension m needs at its peak (an estimate, generous rather than tight)."""
    fresh = min(1000, s) * dim * 4 * 2
    batch = cfg.coverage_batch or max(200, math.ceil(50 / cfg.eps))  # as the coverage stage sizes it, at most
    coverage = min(cfg.coverage_points * (batch + 1) * dim, MAX_COVERAGE_FLOATS) * (4 + 8 + 8)
    return s * (dim * _BYTES_PER_VALUE + _BYTES_PER_POINT + 16 * n_classes) + fresh + coverage


def _teacher_on(model: torch.nn.Module, points: np.ndarray, device: torch.device, what: str) -> torch.Tensor:
    """The teacher's logits on ``points``; any failure of the teacher's own code is an :class:`InputError`."""
    try:
        return teacher_logits(model, points, device=device)
    except (InputError, MemoryError):
        raise
    except Exception as exc:  # e.g. torch.jit.Error from a TorchScript teacher, which is no RuntimeError
        raise InputError(f"the teacher failed {what} {len(points)} points of shape {tuple(points.shape[1:])}: "
                         f"{error_line(exc)}") from None



def _check_outputs(kind: str, probe_logits) -> str | None:
    """What the probe says about ``--outputs``: InputError when "probabilities" was declared and the outputs are not
    (rows ≥ 0 summing to 1); a warning line when "logits" is assumed and the outputs look like probabilities (the
    softmax of probabilities is not the model's confidence)."""
    if kind == "probabilities" and not looks_like_probabilities(torch.exp(torch.as_tensor(probe_logits))):
        raise InputError("--outputs probabilities: the teacher's outputs on the probe are not probabilities (rows "
                         "≥ 0 summing to 1); give --outputs logits (or costs) to match the model")
    if kind == "logits" and looks_like_probabilities(probe_logits):
        return ("warning: the teacher's outputs look like probabilities (every probe row ≥ 0 and summing to 1) but are "
                "taken as logits; if the model ends in a softmax, give --outputs probabilities")
    return None

def _check_confident(labels, kappa: float, s: int) -> None:
    """Stop before distillation when no sample point is κ-confident: there would be nothing to verify."""
    if labels.required(kappa).size == 0:
        top = float(np.max(labels.confidence)) if len(labels.confidence) else float("nan")
        raise InputError(f"the teacher is κ-confident at no sample point (its largest confidence on the {s} points "
                         f"is {top:.4g} < κ = {kappa:g}), so there is nothing to verify; lower --kappa (at least 0.5) "
                         "or check that the teacher and the data belong together")


def _clean(out_dir: Path, created: bool, before: set[Path], keep: tuple[str, ...] = ()) -> None:
    """Remove what this run wrote: the whole directory if it created it, else the new entries (``keep`` stays)."""
    if created and not keep:
        shutil.rmtree(out_dir, ignore_errors=True)
    else:
        remove_new(out_dir, before, keep=keep)
