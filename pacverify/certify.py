"""``pacverify certify``: Algorithm 1 of 004 end to end (DESIGN.md §1–2).

validate → s = sample_size(m, ε, η) → draw s points → teacher labels and confidences → distill
(KDIGA by default) → ONNX export with onnxruntime parity → verify the student at radius 3δ at
every point where the *teacher* is κ-confident → certified radii and ρ_i → δ_T (Prop 4.3) →
attack the teacher in every claimed ball → coverage of the statement → verdict → certificate.

Every stage is cached in ``OUT/.pacverify-cache`` under a key made of content hashes of its
inputs (:mod:`pacverify.stages`): a rerun with the same inputs and seed reuses finished stages.
The statements and the certificate body are assembled in :mod:`pacverify.statements`.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pacverify import pac
from pacverify.certificate import STATUS_CODE, Certificate, write_certificate
from pacverify.data import Sampler, make_sampler
from pacverify.errors import InputError
from pacverify.fileio import atomic_write_bytes, ensure_dir, sha256_arrays, sha256_file
from pacverify.guarantee import Evidence, ball_hits, coverage_lower_bound, decide_verdict, relaxed_delta
from pacverify.models import load_student, load_teacher, resolve_device, teacher_logits
from pacverify.report import write_report
from pacverify.stages import StageCache
from pacverify.statements import build_body
from pacverify.teacher_check import TeacherModel, attack_teacher
from pacverify.validation import (check_delta, check_eps, check_eta, check_kappa, check_norm, check_positive,
                                  check_samples, check_seed, check_tv)
from pacverify.onnx_io.reader import load_network
from pacverify.verify.api import certified_radius, verify_points
from pacverify.verify.result import Verdict as PointVerdict

VERIFY_METHODS = ("ibp", "crown", "alpha-crown")


@dataclass(frozen=True)
class CertifySettings:
    """Everything that determines a certification run (all validated by :meth:`validated`).

    Sources: exactly one of ``data`` (array file), ``sampler`` (``module:function``) or
    ``synthetic`` (built-in distribution name) — or a ready :class:`~pacverify.data.Sampler`.
    ``samples``: draw this many points instead of the minimum of Thm 3.8 (never fewer).
    ``complete``: branch and bound on points the bounds leave unknown, ``timeout`` s each.
    ``radius_cap``/``radius_tol``: the certified-radius search (default 6δ and 3δ/64).
    ``coverage_points``/``coverage_batch``: the Monte Carlo coverage estimate (0 points: skip).
    """

    delta: float
    eps: float
    eta: float
    kappa: float = 0.9
    norm: str = "2"
    tv: float = 0.0
    data: str | None = None
    sampler: str | Sampler | None = None
    synthetic: str | None = None
    samples: int | None = None
    student: str = "mlp:2x64"
    method: str = "kdiga"
    epochs: int | None = None
    distill_options: dict = field(default_factory=dict)
    device: str = "auto"
    seed: int = 0
    arch: str | None = None
    trust_pickle: bool = False
    verify_method: str = "crown"
    complete: bool = True
    timeout: float = 2.0
    radius_cap: float | None = None
    radius_tol: float | None = None
    attack_steps: int = 50
    attack_restarts: int = 5
    coverage_points: int = 200
    coverage_batch: int | None = None
    domain: tuple[float, float] | None = None

    def validated(self) -> "CertifySettings":
        sources = [s for s in (self.data, self.sampler, self.synthetic) if s is not None]
        if len(sources) != 1:
            raise InputError("give exactly one data source: --data FILE, --sampler MODULE:FUNCTION or --synthetic NAME")
        if self.verify_method not in VERIFY_METHODS:
            raise InputError(f"verify method must be one of {', '.join(VERIFY_METHODS)}, got {self.verify_method!r}")
        delta = check_delta(self.delta)
        return replace(
            self, delta=delta, eps=check_eps(self.eps), eta=check_eta(self.eta), kappa=check_kappa(self.kappa),
            norm=check_norm(self.norm), tv=check_tv(self.tv), seed=check_seed(self.seed),
            samples=None if self.samples is None else check_samples(self.samples),
            timeout=check_positive(self.timeout, "timeout"),
            radius_cap=check_positive(self.radius_cap if self.radius_cap is not None else 6 * delta, "radius cap"),
            radius_tol=check_positive(self.radius_tol if self.radius_tol is not None else 3 * delta / 64,
                                      "radius tol"),
            attack_steps=check_samples(self.attack_steps, "attack steps"),
            attack_restarts=check_samples(self.attack_restarts, "attack restarts"),
            coverage_points=int(self.coverage_points) if self.coverage_points == 0
            else check_samples(self.coverage_points, "coverage points"))

    def source_description(self) -> dict:
        if self.data is not None:
            return {"kind": "data", "source": str(self.data), "sha256": sha256_file(self.data)}
        if self.synthetic is not None:
            return {"kind": "synthetic", "source": str(self.synthetic), "sha256": None}
        name = self.sampler if isinstance(self.sampler, str) else getattr(self.sampler, "description", "sampler")
        return {"kind": "sampler", "source": str(name), "sha256": None}


Progress = Callable[[str, str], None]


def _quiet(stage: str, message: str) -> None:
    return None


def certify(teacher: str | os.PathLike | torch.nn.Module, *, out: str | os.PathLike | None = None,
            progress: Progress | None = None, show_bars: bool = False, **settings) -> Certificate:
    """Run Algorithm 1 of 004 on ``teacher`` and write the certificate into ``out``.

    ``settings`` are the fields of :class:`CertifySettings` (``delta``, ``eps``, ``eta`` required).
    ``out`` defaults to a new temporary directory. ``progress(stage, message)`` is called as stages
    start and end. Returns the :class:`~pacverify.certificate.Certificate`; its verdict is
    CERTIFIED only if every κ-confident sample point was proven 3δ-robust for the student, the
    student agrees with the teacher there, and the teacher attack found no counterexample in a
    claimed ball. Bad input raises :class:`InputError` before anything is written.
    """
    cfg = CertifySettings(**settings).validated()
    say = progress or _quiet
    device = resolve_device(cfg.device)
    # everything that can be checked is checked before anything is written
    if isinstance(teacher, torch.nn.Module):
        teacher_model, teacher_path = teacher.eval(), None
        teacher_hash = sha256_arrays(*[t.detach().cpu().numpy() for t in teacher.state_dict().values()])
    else:
        teacher_path = Path(teacher).resolve()
        teacher_model = load_teacher(teacher_path, arch=cfg.arch, trust_pickle=cfg.trust_pickle, device=device)
        teacher_hash = sha256_file(teacher_path)
    sampler = cfg.sampler if isinstance(cfg.sampler, Sampler) else make_sampler(
        cfg.data or cfg.sampler or cfg.synthetic, seed=cfg.seed, domain=cfg.domain,
        kind="data" if cfg.data else "sampler" if cfg.sampler else "synthetic")
    source = cfg.source_description()
    probe = sampler.draw(1)
    teacher_logits(teacher_model, probe, device=device)  # a teacher of another input shape fails here
    input_shape = tuple(probe.shape[1:])
    dim = int(np.prod(input_shape))
    required_s = pac.sample_size(dim, cfg.eps, cfg.eta, norm=cfg.norm)
    if cfg.samples is not None and cfg.samples < required_s:
        raise InputError(f"samples = {cfg.samples} is below the {required_s} that Thm 3.8 needs for m = {dim}, "
                         f"eps = {cfg.eps:g}, eta = {cfg.eta:g}")
    s = cfg.samples or required_s
    available = getattr(sampler, "available_fresh", None)
    if available is not None and available(0) < s:
        sampler.draw(s)  # raises the sampler's own message: how many rows, how many needed, what to do
    target = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="pacverify-"))
    created = not target.exists()
    out_dir = ensure_dir(target)
    try:
        return _run(teacher_model, teacher_path, teacher_hash, sampler, source, cfg, input_shape, dim, s,
                    required_s, out_dir, device, say, show_bars)
    except InputError:
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise


def _run(teacher_model, teacher_path, teacher_hash, sampler, source, cfg, input_shape, dim, s, required_s,
         out_dir: Path, device, say: Progress, show_bars: bool) -> Certificate:
    cache = StageCache(out_dir)
    timings: dict[str, float] = {}

    def timed(stage: str, message: str, fn):
        say(stage, message)
        start = time.perf_counter()
        result = fn()
        timings[stage] = round(time.perf_counter() - start, 3)
        reused = getattr(result, "reused", False)
        say(stage, f"done in {timings[stage]:.1f} s" + (" (reused)" if reused else ""))
        return result

    base_key = {"teacher": teacher_hash, "source": source, "seed": cfg.seed, "domain": cfg.domain}

    # 2. sample and label -------------------------------------------------------------------------
    sample = timed("sample", f"drawing s = {s} points (m = {dim})", lambda: cache.run(
        "sample", dict(base_key, s=s), lambda: ({"points": sampler.draw(s)}, {})))
    points = sample.arrays["points"]
    points_hash = sha256_arrays(points)

    def label():
        logits = teacher_logits(teacher_model, points, device=device)
        if not torch.isfinite(logits).all():
            raise InputError("the teacher returned NaN or infinite logits on the sample")
        probs = torch.softmax(logits.double(), dim=1)
        return {"label": logits.argmax(1).numpy(), "confidence": probs.max(1).values.numpy()}, \
            {"n_classes": int(logits.shape[1])}

    labelled = timed("label", "labelling with the teacher", lambda: cache.run(
        "label", {"teacher": teacher_hash, "points": points_hash}, label))
    teacher_label, confidence = labelled.arrays["label"], labelled.arrays["confidence"]
    n_classes = int(labelled.meta["n_classes"])
    required = confidence >= cfg.kappa

    # 3. distill and export -----------------------------------------------------------------------
    fresh_n = min(1000, s)
    fresh = _fresh(sampler, fresh_n, after=s)
    distill_key = {"teacher": teacher_hash, "points": points_hash, "student": cfg.student, "method": cfg.method,
                   "epochs": cfg.epochs, "options": cfg.distill_options, "seed": cfg.seed, "norm": cfg.norm,
                   "fresh": None if fresh is None else sha256_arrays(fresh)}

    def run_distill():
        from pacverify.distill import distill
        from pacverify.models import save_student

        options = dict(cfg.distill_options, method=cfg.method, seed=cfg.seed, norm=cfg.norm)
        if cfg.epochs is not None:
            options["epochs"] = cfg.epochs
        result = distill(teacher_model, points, student=cfg.student, device=device, progress=show_bars,
                         x_fresh=fresh, **options)
        with tempfile.TemporaryDirectory() as tmp:
            save_student(result.student, Path(tmp) / "student.pt")
            blob = (Path(tmp) / "student.pt").read_bytes()
        summary = result.as_dict()
        summary.pop("history", None)
        return {"student_pt": np.frombuffer(blob, dtype=np.uint8)}, summary

    distilled = timed("distill", f"distilling into {cfg.student} with {cfg.method}",
                      lambda: cache.run("distill", distill_key, run_distill))
    student_pt = atomic_write_bytes(out_dir / "student.pt", distilled.arrays["student_pt"].tobytes())
    student = load_student(student_pt)

    def run_export():
        from pacverify.onnx_io.export import export_onnx

        report = export_onnx(student, out_dir / "student.onnx", input_shape, sample=points[:4096], seed=cfg.seed)
        return report

    export = timed("export", "exporting the student to ONNX (onnxruntime parity)", run_export)
    onnx_path = out_dir / "student.onnx"
    network = load_network(onnx_path)

    # 4. verify the student at 3δ where the teacher is κ-confident --------------------------------
    flat = points.reshape(s, -1).astype(np.float64)
    with torch.no_grad():
        student_label = network(torch.as_tensor(flat, dtype=network.dtype)).argmax(1).numpy()
    idx = np.nonzero(required)[0]
    onnx_hash = sha256_file(onnx_path)
    verify_key = {"onnx": onnx_hash, "points": points_hash, "required": sha256_arrays(idx),
                  "labels": sha256_arrays(teacher_label), "radius": 3 * cfg.delta, "norm": cfg.norm,
                  "method": cfg.verify_method, "complete": cfg.complete, "timeout": cfg.timeout,
                  "domain": cfg.domain, "seed": cfg.seed}

    def run_verify():
        if idx.size == 0:
            return {"verdict": np.zeros(0, np.int8), "cex": np.zeros((0, dim))}, {"time_s": 0.0}
        result = verify_points(network, flat[idx], 3 * cfg.delta, cfg.norm, labels=teacher_label[idx],
                               method=cfg.verify_method, complete=cfg.complete, timeout=cfg.timeout,
                               domain=cfg.domain, seed=cfg.seed)
        codes = np.array([_POINT_CODE[v] for v in result.verdicts], dtype=np.int8)
        cex = np.full((idx.size, dim), np.nan)
        for i, x in result.counterexamples.items():
            cex[i] = np.asarray(x).reshape(-1)
        return {"verdict": codes, "cex": cex}, {"time_s": result.time_s}

    verified = timed("verify", f"verifying the student at radius 3δ = {3 * cfg.delta:g} at {idx.size} points",
                     lambda: cache.run("verify", verify_key, run_verify))
    point_codes = verified.arrays["verdict"]

    def run_radius():
        if idx.size == 0:
            return {"radius": np.zeros(0)}, {}
        result = certified_radius(network, flat[idx], cfg.norm, labels=teacher_label[idx],
                                  method=cfg.verify_method, cap=cfg.radius_cap, tol=cfg.radius_tol,
                                  domain=cfg.domain, seed=cfg.seed, attack=False)
        return {"radius": np.asarray(result.radius, dtype=np.float64)}, {}

    radii = timed("radius", "searching certified radii", lambda: cache.run(
        "radius", dict(verify_key, cap=cfg.radius_cap, tol=cfg.radius_tol), run_radius)).arrays["radius"]
    # a point proven at 3δ has r_i ≥ 3δ, whatever the bisection grid reached
    radii = np.where(point_codes == _POINT_CODE[PointVerdict.VERIFIED], np.maximum(radii, 3 * cfg.delta), radii)

    # 5. ρ_i, δ_T and the teacher cross-check ------------------------------------------------------
    from pacverify.distill.quality import margin_gradient_ratio

    rho = timed("rho", "margin-gradient ratios", lambda: margin_gradient_ratio(
        teacher_model, student, points[idx], cfg.norm) if idx.size else np.zeros(0))
    delta_t = relaxed_delta(radii, rho)
    teacher_fn = TeacherModel(teacher_model, input_shape, device=device)

    def run_attacks():
        kwargs = dict(n_classes=n_classes, domain=cfg.domain, steps=cfg.attack_steps,
                      restarts=cfg.attack_restarts, seed=cfg.seed)
        at_delta = attack_teacher(teacher_fn, flat[idx], teacher_label[idx], 3 * cfg.delta, cfg.norm, **kwargs)
        at_dt = attack_teacher(teacher_fn, flat[idx], teacher_label[idx], 3 * delta_t, cfg.norm, **kwargs)
        return {"found_delta": at_delta.found, "cex_delta": at_delta.counterexamples,
                "found_delta_t": at_dt.found, "cex_delta_t": at_dt.counterexamples}, {}

    attacks = timed("teacher_check", "attacking the teacher in the claimed balls", lambda: cache.run(
        "teacher_check", dict(base_key, points=points_hash, required=sha256_arrays(idx), delta=cfg.delta,
                              delta_t=delta_t, norm=cfg.norm, steps=cfg.attack_steps,
                              restarts=cfg.attack_restarts), run_attacks)).arrays

    # 6. coverage and the 2-D map ----------------------------------------------------------------
    coverage = timed("coverage", "estimating the coverage of the statement", lambda: _coverage(
        sampler, cfg, dim, after=s))
    grid = _grid(teacher_model, points, device) if dim == 2 else {}

    # 7. verdict and certificate ------------------------------------------------------------------
    agrees = student_label[idx] == teacher_label[idx]
    evidence = Evidence(verified=point_codes == _POINT_CODE[PointVerdict.VERIFIED], agrees=agrees,
                        teacher_refuted_delta=attacks["found_delta"],
                        teacher_refuted_delta_t=attacks["found_delta_t"] if delta_t > 0 else np.zeros(idx.size, bool))
    verdict, reasons = decide_verdict(evidence)
    status = np.full(s, STATUS_CODE["not confident"], dtype=np.int8)
    status[idx] = np.select([~agrees, point_codes == _POINT_CODE[PointVerdict.VERIFIED],
                             point_codes == _POINT_CODE[PointVerdict.FALSIFIED]],
                            [STATUS_CODE["disagree"], STATUS_CODE["verified"], STATUS_CODE["falsified"]],
                            STATUS_CODE["unknown"])
    arrays = _arrays(points, teacher_label, confidence, required, student_label, status, idx, radii, rho,
                     verified.arrays["cex"], attacks, grid)
    body = build_body(cfg=cfg, verdict=verdict, reasons=reasons, dim=dim, samples=s, required_s=required_s,
                      n_classes=n_classes, idx=idx, status=status[idx], radii=radii, rho=rho, delta_t=delta_t,
                      attacks=attacks, coverage=coverage, distilled=distilled.meta, export=export,
                      teacher_path=teacher_path, teacher_hash=teacher_hash, source=source,
                      onnx_hash=onnx_hash, student_pt_hash=sha256_file(student_pt), timings=timings,
                      verify_time=float(verified.meta.get("time_s", 0.0)), device=str(device))
    cert = write_certificate(body, arrays, out_dir)
    write_report(cert, html_path=out_dir / "report.html", markdown_path=out_dir / "report.md")
    return cert


_POINT_CODE = {PointVerdict.VERIFIED: 1, PointVerdict.FALSIFIED: 2, PointVerdict.UNKNOWN: 3}


def _fresh(sampler: Sampler, n: int, *, after: int) -> np.ndarray | None:
    """A held-out sample for the quality markers, or None when a data file has no rows left."""
    available = getattr(sampler, "available_fresh", None)
    if available is not None:
        n = min(n, available(after))
    return sampler.fresh(n, after=after) if n > 0 else None


MAX_COVERAGE_FLOATS = 20_000_000


def _coverage(sampler: Sampler, cfg: CertifySettings, dim: int, *, after: int) -> dict:
    """Monte Carlo coverage bound of :func:`pacverify.guarantee.coverage_lower_bound`, sized to the data and memory."""
    n = cfg.coverage_points
    batch = cfg.coverage_batch or max(200, math.ceil(50 / cfg.eps))
    budget = MAX_COVERAGE_FLOATS // max(dim, 1)
    available = getattr(sampler, "available_fresh", None)
    if available is not None:
        budget = min(budget, available(after))
    if n and budget < n * (batch + 1):
        batch = budget // max(n, 1) - 1
    if n == 0 or batch < 1:
        return {"lower": 0.0, "confidence": None, "points": 0, "batch": 0,
                "note": "not estimated: too few fresh points (a data file with few spare rows, or coverage off)"}
    draws = sampler.fresh(n * (batch + 1), after=after).reshape(n * (batch + 1), -1).astype(np.float64)
    centers, refs = draws[:n], draws[n:].reshape(n, batch, -1)
    bound = coverage_lower_bound(ball_hits(centers, refs, cfg.delta, cfg.norm), batch, cfg.eps)
    return bound.as_dict()


def _grid(teacher: torch.nn.Module, points: np.ndarray, device, size: int = 160) -> dict:
    """The teacher's class on a size×size grid around the 2-D sample, for the report's map."""
    flat = points.reshape(len(points), 2)
    lo, hi = flat.min(0), flat.max(0)
    pad = 0.05 * (hi - lo) + 1e-6
    gx, gy = np.meshgrid(np.linspace(lo[0] - pad[0], hi[0] + pad[0], size),
                         np.linspace(lo[1] - pad[1], hi[1] + pad[1], size))
    grid_points = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32).reshape(-1, *points.shape[1:])
    labels = teacher_logits(teacher, grid_points, device=device).argmax(1).numpy().reshape(size, size)
    return {"grid_x": gx, "grid_y": gy, "grid_label": labels}


def _arrays(points, teacher_label, confidence, required, student_label, status, idx, radii, rho, student_cex,
            attacks, grid) -> dict:
    s = len(points)
    full_radius = np.full(s, np.nan)
    full_radius[idx] = radii
    full_rho = np.full(s, np.nan)
    full_rho[idx] = rho
    out = {"points": points, "teacher_label": teacher_label, "teacher_confidence": confidence,
           "required": required, "student_label": student_label, "status": status,
           "certified_radius": full_radius, "rho": full_rho}
    for name, found, cex in (("student_cex", ~np.isnan(student_cex).any(1) if len(student_cex) else np.zeros(0, bool),
                              student_cex),
                             ("teacher_cex_delta", attacks["found_delta"], attacks["cex_delta"]),
                             ("teacher_cex_delta_t", attacks["found_delta_t"], attacks["cex_delta_t"])):
        out[f"{name}_index"] = idx[found]
        out[name] = cex[found] if len(cex) else np.zeros((0, points.reshape(s, -1).shape[1]))
    out.update(grid)
    return out
