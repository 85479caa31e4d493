"""The certificate's sentences and body: what is claimed, on which assumptions, with which evidence.

Pure assembly of numbers computed elsewhere into the schema of docs/certificate.md. The PAC
sentences come from :func:`pacverify.pac.pac_statement` (DESIGN.md §2) and are never printed
without the assumptions they rest on.
"""
from __future__ import annotations

import datetime as _dt
import platform
import sys

import numpy as np

from pacverify import __version__, pac
from pacverify.guarantee import Verdict, local_teacher_radii

QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


def assumptions(*, tv: float, source_kind: str) -> list[str]:
    """The assumptions of the PAC statements (004 §4.1, Thm 4.4, Obs 4.5), in words."""
    out = [
        "Perfect student (Eq 7 and Prop 4.2 of 004): the student reproduces the teacher's predictions and input "
        "gradients, so that local robustness proven for the student transfers to the teacher. This is not proven; "
        "the distillation markers and δ_T measure how far it holds.",
        "Local linearity (004 §4.1): teacher and student are locally (piecewise) linear around each sample point "
        "over the verified balls.",
        "i.i.d. sampling (Thm 3.8 of 004): the sample points are independent draws from the input distribution D_X"
        + (" — the rows of the data file are assumed to be such draws (not sorted, deduplicated or augmented)."
           if source_kind == "data" else "."),
    ]
    if tv > 0:
        out.append(f"Distribution shift (Obs 4.5 of 004): the deployment distribution D' is within total-variation "
                   f"distance Λ = {tv:g} of D_X; this bound is the user's, not checked.")
    return out


def quantiles(values: np.ndarray) -> dict:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {}
    finite = np.where(np.isinf(values), np.finfo(np.float64).max, values)
    return {f"{q:g}": (float("inf") if v == np.finfo(np.float64).max else float(v))
            for q, v in zip(QUANTILES, np.quantile(finite, QUANTILES, method="lower"))}


def environment(device: str) -> dict:
    import onnx
    import onnxruntime
    import torch

    return {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
            "numpy": np.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "device": device}


def coverage_sentence(coverage: dict, delta: float, eps: float) -> str:
    if not coverage.get("points"):
        return f"Coverage was not estimated ({coverage.get('note', 'no fresh points')})."
    return (f"With confidence {coverage['confidence']:g}, at least {coverage['lower']:.1%} of D_X lies in its own "
            f"δ-ball (δ = {delta:g}) of mass ≥ ε = {eps:g} — the kind of ball the PAC statement is about "
            f"(Monte Carlo: {coverage['points']} points × {coverage['batch']} reference draws, exact binomial bounds).")


def warnings(markers: dict, coverage: dict) -> list[str]:
    """Plain-language flags for weak evidence: they change no verdict, they say what to distrust."""
    out = []
    agreement = markers.get("agreement_fresh", markers.get("agreement"))
    if agreement is not None and agreement < 0.99:
        out.append(f"the student agrees with the teacher on only {agreement:.1%} of a fresh sample: the perfect-student "
                   "assumption is far from true")
    eq13 = markers.get("eq13_fraction")
    if eq13 is not None and eq13 < 0.9:
        out.append(f"Eq 13 of 004 holds at only {eq13:.1%} of the sample points: the student is less confident than "
                   "the teacher there, so its robustness may overstate the teacher's (004 §5)")
    gc = markers.get("gc_mean")
    if gc is not None and gc < 0.9:
        out.append(f"mean gradient cosine GC = {gc:.3f} < 0.9: input gradients are poorly aligned")
    if coverage.get("points") and coverage.get("lower", 0.0) == 0.0:
        out.append("no part of D_X could be shown to lie in δ-balls of mass ≥ ε: the PAC statement may be about "
                   "no point at all; a larger δ or a smaller ε (more samples) makes it say more")
    return out


def build_body(*, cfg, verdict: Verdict, reasons: list[str], dim: int, samples: int, required_s: int,
               n_classes: int, idx: np.ndarray, status: np.ndarray, radii: np.ndarray, rho: np.ndarray,
               delta_t: float, attacks: dict, coverage: dict, distilled: dict, export, teacher_path, teacher_hash: str,
               source: dict, onnx_hash: str, student_pt_hash: str, timings: dict, verify_time: float,
               device: str) -> dict:
    """The certificate body of docs/certificate.md (without ``files.points``, ``schema``, ``integrity``)."""
    from pacverify.certificate import STATUS_CODE

    def count(name: str) -> int:
        return int((status == STATUS_CODE[name]).sum())

    common = dict(eps=cfg.eps, eta=cfg.eta, samples=samples, dim=dim, kappa=cfg.kappa, norm=cfg.norm, tv=cfg.tv)
    statement = pac.pac_statement(delta=cfg.delta, **common)
    statement_t = pac.pac_statement(delta=delta_t, relaxed=True, **common) if delta_t > 0 else None
    markers = dict(distilled.get("markers", {}))
    required = int(idx.size)
    return {
        "tool": {"name": "pacverify", "version": __version__},
        "verdict": verdict.value,
        "reasons": reasons,
        "statements": {
            "pac": statement,
            "pac_delta_T": statement_t,
            "assumptions": assumptions(tv=cfg.tv, source_kind=source["kind"]),
            "coverage": coverage_sentence(coverage, cfg.delta, cfg.eps),
            "scope": "The statements are conditional on the assumptions; the formal proof covers the student only. "
                     "Nothing is claimed at points where the teacher is not κ-confident.",
        },
        "pac": {"delta": cfg.delta, "eps": cfg.eps, "eta": cfg.eta, "kappa": cfg.kappa, "norm": cfg.norm,
                "dim": dim, "vc_dimension": pac.vc_dimension(dim, cfg.norm), "samples": samples,
                "samples_required": required_s, "tv": cfg.tv,
                "shifted_eps": pac.shifted_eps(cfg.eps, cfg.tv), "n_classes": n_classes},
        "files": {
            "teacher": {"path": None if teacher_path is None else str(teacher_path), "sha256": teacher_hash},
            "student_onnx": {"path": "student.onnx", "sha256": onnx_hash},
            "student_pt": {"path": "student.pt", "sha256": student_pt_hash},
            "data": source,
        },
        "warnings": warnings(markers, coverage),
        "settings": {"seed": cfg.seed, "arch": cfg.arch, "trust_pickle": cfg.trust_pickle, "student": cfg.student, "method": cfg.method, "epochs": cfg.epochs,
                     "distill_options": cfg.distill_options, "verify_method": cfg.verify_method,
                     "complete": cfg.complete, "timeout_per_point": cfg.timeout, "domain": cfg.domain,
                     "attack": {"steps": cfg.attack_steps, "restarts": cfg.attack_restarts},
                     "coverage": {"points": cfg.coverage_points, "batch": cfg.coverage_batch},
                     "radius_search": {"cap": cfg.radius_cap, "tol": cfg.radius_tol}, "device": cfg.device},
        "distillation": {**markers, "epochs_run": distilled.get("epochs_run"),
                         "stopped_early": distilled.get("stopped_early"), "notes": distilled.get("notes", []),
                         "onnx_parity_max_abs_diff": max(d for d in (export.max_abs_diff_random, export.max_abs_diff_sample)
                                                         if d is not None)},
        "verification": {"radius": 3 * cfg.delta, "norm": cfg.norm, "method": cfg.verify_method,
                         "complete": cfg.complete, "required": required, "verified": count("verified"),
                         "falsified": count("falsified"), "unknown": count("unknown"), "disagree": count("disagree"),
                         "not_confident": samples - required},
        "relaxation": {"delta_T": delta_t, "rho_quantiles": quantiles(rho),
                       "certified_radius_quantiles": quantiles(radii),
                       "teacher_radius_quantiles": quantiles(local_teacher_radii(radii, rho)),
                       "cap": cfg.radius_cap, "tol": cfg.radius_tol,
                       "formula": "delta_T = min_i min(rho_i, 1) * r_i / 3 (Prop 4.3 of 004, DESIGN.md §2)"},
        "teacher_check": {"attack": "pgd", "steps": cfg.attack_steps, "restarts": cfg.attack_restarts,
                          "radius_delta": 3 * cfg.delta, "radius_delta_T": 3 * delta_t, "checked": required,
                          "counterexamples_delta": int(np.sum(attacks["found_delta"])),
                          "counterexamples_delta_T": int(np.sum(attacks["found_delta_t"])) if delta_t > 0 else 0,
                          "note": "finding no counterexample proves nothing; a counterexample in a claimed ball "
                                  "refutes the claim"},
        "coverage": coverage,
        "timings": {**timings, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    "verify_points_per_second": (required / verify_time) if verify_time > 0 else None},
        "environment": environment(device),
    }
