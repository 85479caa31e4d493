"""Ball mode (Thm 4.4 + Prop 4.2/4.3 of 004): its list of stages and the certificate it assembles.

:data:`BALL_MODE` is the pipeline; :func:`assemble` turns the stage outputs into the typed
certificate sections of :mod:`pacverify.certificate.schema` and the per-point arrays of
``points.npz``. A second guarantee mode is another module of this shape.
"""
from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pacverify import pac
from pacverify._version import __version__
from pacverify.certificate import schema as S
from pacverify.certificate.guarantee import Evidence, decide_verdict
from pacverify.certificate.schema import PointStatus, Verdict
from pacverify.certificate.statements import (
    DELTA_T_PREMISES,
    assumptions,
    coverage_sentence,
    delta_t_note,
    environment,
    quantiles,
    search_warning,
    weak_evidence_flags,
)
from pacverify.data import count_duplicates
from pacverify.fileio import sha256_file
from pacverify.pipeline.stages import (
    ACCURACY,
    COVERAGE,
    DISTILL,
    EXPORT,
    FRESH,
    GLOBAL,
    GRID,
    LABEL,
    RADIUS,
    RELAX,
    SAMPLE,
    TEACHER_CHECK,
    VERIFY,
    Setup,
)

BALL_MODE = (SAMPLE, LABEL, FRESH, DISTILL, EXPORT, VERIFY, RADIUS, RELAX, TEACHER_CHECK, COVERAGE, GRID, GLOBAL,
             ACCURACY)

SCOPE = ("The statements are conditional on the assumptions; the formal proof covers the student only. "
         "Nothing is claimed at points where the teacher is not κ-confident.")
RELAXATION_FORMULA = ("delta_T = min_i min_j min((g_T/g_S)_ij * rho_ij, 1) * r_i / 3 over every runner-up class j "
                      "(Prop 4.3 of 004, DESIGN.md §2)")
TEACHER_CHECK_NOTE = "finding no counterexample proves nothing; a counterexample in a claimed ball refutes the claim"


def point_status(required: np.ndarray, s: int, agrees: np.ndarray, proof_codes: np.ndarray) -> np.ndarray:
    """The (s,) :class:`PointStatus` codes: disagreement first, then the student's verdict at 3δ."""
    status = np.full(s, PointStatus.NOT_CONFIDENT, dtype=np.int8)
    status[required] = np.where(agrees, proof_codes, PointStatus.DISAGREE)
    return status


def assemble(setup: Setup, results: dict[str, Any],
             timings: Mapping[str, float | str | None]) -> tuple[S.CertificateBody, dict]:
    """The certificate body (``files.points`` and ``integrity`` filled in when written) and the side-file arrays."""
    cfg, s = setup.cfg, setup.samples
    labels, exported = results["label"], results["export"]
    proof, radii, relaxation = results["verify"], results["radius"], results["rho"]
    attacks, coverage, distilled = results["teacher_check"], results["coverage"].section, results["distill"].summary
    idx = labels.required(cfg.kappa)
    delta_t = relaxation.delta_t
    agrees = exported.student_label[idx] == labels.label[idx]
    no_claim = np.zeros(idx.size, bool)
    verdict, reasons = decide_verdict(Evidence(
        verified=proof.verified, agrees=agrees, teacher_refuted_delta=attacks.found_delta,
        teacher_refuted_delta_t=attacks.found_delta_t if delta_t > 0 else no_claim))
    status = point_status(idx, s, agrees, proof.verdict)
    certified = verdict is Verdict.CERTIFIED

    def count(code: PointStatus) -> int:
        return int((status[idx] == code).sum())

    common: dict[str, Any] = dict(eps=cfg.eps, eta=cfg.eta, samples=s, dim=setup.dim, kappa=cfg.kappa, norm=cfg.norm,
                                  tv=cfg.tv, bound=str(cfg.bound))
    markers = dict(distilled.get("markers", {}))
    verify_time = proof.time_s
    record = S.CertificateBody(
        schema=S.SCHEMA,
        tool=S.Tool("pacverify", __version__),
        verdict=verdict,
        reasons=reasons,
        statements=S.Statements(
            pac=pac.pac_statement(delta=cfg.delta, **common),
            pac_delta_T=pac.pac_statement(delta=delta_t, relaxed=True, **common) if delta_t > 0 and certified
            else None,
            delta_T_note=delta_t_note(delta_t, certified),
            assumptions=assumptions(tv=cfg.tv, source_kind=setup.source["kind"]),
            coverage=coverage_sentence(coverage, cfg.delta, cfg.eps, cfg.kappa, cfg.tv),
            scope=SCOPE),
        pac=S.PacParameters(delta=cfg.delta, eps=cfg.eps, eta=cfg.eta, kappa=cfg.kappa, norm=cfg.norm, dim=setup.dim,
                            vc_dimension=pac.vc_dimension(setup.dim, cfg.norm), bound=str(cfg.bound), samples=s,
                            samples_required=setup.samples_required, tv=cfg.tv,
                            shifted_eps=pac.shifted_eps(cfg.eps, cfg.tv), n_classes=labels.n_classes),
        files=S.Files(
            teacher=S.FileRef(_recorded_path(setup.teacher_path, setup.out_dir), setup.teacher_hash),
            student_onnx=S.FileRef("student.onnx", exported.onnx_sha256),
            student_pt=S.FileRef("student.pt", exported.student_pt_sha256),
            data=S.DataSource(**setup.source, duplicates=count_duplicates(results["sample"].points)),
            points=S.FileRef("points.npz", None),
            labels=None if cfg.labels is None else S.FileRef(_recorded_path(Path(cfg.labels), setup.out_dir),
                                                             sha256_file(cfg.labels))),
        warnings=weak_evidence_flags(markers, coverage) + search_warning(distilled.get("auto")),
        settings=S.Settings(
            seed=cfg.seed, arch=cfg.arch, trust_pickle=cfg.trust_pickle, student=cfg.student, method=cfg.method,
            epochs=cfg.epochs, distill_options=dict(cfg.distill_options), verify_method=cfg.verify_method,
            complete=cfg.complete, timeout_per_point=cfg.timeout,
            domain=None if cfg.domain is None else list(cfg.domain),
            attack=S.AttackSettings(cfg.pgd_steps, cfg.pgd_restarts),
            coverage=S.CoverageSettings(cfg.coverage_points, cfg.coverage_batch),
            radius_search=S.RadiusSearch(float(cfg.radius_cap or 0.0), float(cfg.radius_tol or 0.0)),
            device=cfg.device, allow_duplicates=cfg.allow_duplicates, global_check=cfg.global_check,
            global_timeout=cfg.global_timeout, outputs=cfg.outputs),
        distillation=S.Distillation(**{**_marker_defaults(), **markers},
                                    epochs_run=distilled.get("epochs_run"),
                                    stopped_early=distilled.get("stopped_early"),
                                    stop_reason=distilled.get("stop_reason"),
                                    student=str(distilled.get("student", {}).get("spec", cfg.student)),
                                    student_search=distilled.get("auto"),
                                    notes=list(distilled.get("notes", [])),
                                    onnx_parity_max_abs_diff=exported.parity_max_abs_diff),
        verification=S.Verification(radius=3 * cfg.delta, norm=cfg.norm, method=cfg.verify_method,
                                    complete=cfg.complete, required=int(idx.size),
                                    verified=count(PointStatus.VERIFIED), falsified=count(PointStatus.FALSIFIED),
                                    unknown=count(PointStatus.UNKNOWN), disagree=count(PointStatus.DISAGREE),
                                    not_confident=s - int(idx.size)),
        relaxation=S.Relaxation(delta_T=delta_t, rho_quantiles=quantiles(relaxation.rho),
                                margin_ratio_quantiles=quantiles(relaxation.margin_ratio),
                                gradient_cosine_quantiles=quantiles(relaxation.cosine[~np.isnan(relaxation.cosine)]),
                                certified_radius_quantiles=quantiles(radii.radius),
                                teacher_radius_quantiles=quantiles(relaxation.factor * radii.radius),
                                cap=float(cfg.radius_cap or 0.0), tol=float(cfg.radius_tol or 0.0),
                                formula=RELAXATION_FORMULA, premises=list(DELTA_T_PREMISES)),
        teacher_check=S.TeacherCheck(attack="pgd+random" if attacks.random_samples else "pgd",
                                     steps=cfg.pgd_steps, restarts=cfg.pgd_restarts, starts=cfg.attack_starts,
                                     random_samples=attacks.random_samples, fresh_points=attacks.fresh_points,
                                     fresh_points_attacked=attacks.fresh_attacked_delta,
                                     fresh_points_attacked_delta_T=attacks.fresh_attacked_delta_t if delta_t > 0 else 0,
                                     radius_delta=3 * cfg.delta, radius_delta_T=3 * delta_t, checked=int(idx.size),
                                     counterexamples_delta=int(np.sum(attacks.found_delta)),
                                     counterexamples_delta_T=int(np.sum(attacks.found_delta_t)) if delta_t > 0 else 0,
                                     note=TEACHER_CHECK_NOTE),
        coverage=S.Coverage(**coverage),
        global_check=None if results["global"].section is None else S.GlobalCheck(**results["global"].section),
        accuracy=None if results["accuracy"].section is None else S.Accuracy(**results["accuracy"].section),
        timings={**timings, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                 "verify_points_per_second": (idx.size / verify_time) if verify_time > 0 else None},
        environment=S.Environment(**environment(str(setup.device), setup.executor)),
        integrity=S.Integrity(""),
    )
    arrays = _arrays(setup, results, idx, status)
    return record, arrays


def _recorded_path(path: Path | None, out_dir: Path) -> str | None:
    """A file's path as the certificate records it: relative to the certificate's directory when inside it."""
    if path is None:
        return None
    resolved, base = Path(path).resolve(), Path(out_dir).resolve()
    return str(resolved.relative_to(base)) if resolved.is_relative_to(base) else str(resolved)


def _marker_defaults() -> dict:
    return {"n_fresh": 0, "agreement_fresh": None, "eq13_fraction_fresh": None, "gd_mean_fresh": None,
            "gc_mean_fresh": None, "llm_radius": None, "llm_student_mean": None, "llm_teacher_mean": None}


def _arrays(setup: Setup, results: dict[str, Any], idx: np.ndarray, status: np.ndarray) -> dict[str, np.ndarray]:
    s, dim = setup.samples, setup.dim
    sample, labels, exported = results["sample"], results["label"], results["export"]
    proof, radii, relaxation, attacks = results["verify"], results["radius"], results["rho"], results["teacher_check"]
    full_radius = np.full(s, np.nan)
    full_radius[idx] = radii.radius
    per_point = {}
    for name, values in (("rho", relaxation.rho), ("margin_ratio", relaxation.margin_ratio),
                         ("gradient_cosine", relaxation.cosine), ("teacher_radius_factor", relaxation.factor)):
        per_point[name] = np.full(s, np.nan)
        per_point[name][idx] = values
    out = {"points": sample.points, "teacher_label": labels.label, "teacher_confidence": labels.confidence,
           "required": labels.confidence >= setup.cfg.kappa, "student_label": exported.student_label,
           "status": status, "certified_radius": full_radius, **per_point}
    student_found = ~np.isnan(proof.cex).any(1) if len(proof.cex) else np.zeros(0, bool)
    for name, found, cex in (("student_cex", student_found, proof.cex),
                             ("teacher_cex_delta", attacks.found_delta, attacks.cex_delta),
                             ("teacher_cex_delta_t", attacks.found_delta_t, attacks.cex_delta_t)):
        found = np.asarray(found, dtype=bool)
        out[f"{name}_index"] = idx[found]
        out[name] = cex[found] if len(cex) else np.zeros((0, dim))
    out.update(results["grid"].arrays)
    if len(results["global"].pair):
        out["global_pair"] = results["global"].pair
    if len(results["accuracy"].true_label):
        out["true_label"] = results["accuracy"].true_label
    return out
