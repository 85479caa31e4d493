"""``pacverify check``: re-check a certificate independently of the run that produced it.

Recomputes everything the certificate's verdict rests on from the files themselves:
the body digest, the file hashes, the sample size of Thm 3.8, the student's classes, a fresh
verification of the student ONNX at every required point at radius 3δ, a re-proof of every
recorded certified radius r_i, δ_T of Prop 4.3, the PAC sentences, and the verdict. When the
teacher file is present, its hash, labels, confidences, ρ_i and recorded counterexamples are
rechecked too. Any mismatch rejects the certificate with the reason.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pacverify import pac
from pacverify.certificate import STATUS_CODE, Certificate, body_digest, load_certificate
from pacverify.errors import InputError
from pacverify.fileio import sha256_file
from pacverify.guarantee import Evidence, Verdict, decide_verdict, relaxed_delta
from pacverify.onnx_io.reader import load_network
from pacverify.verify.api import verify_points
from pacverify.verify.result import Verdict as PointVerdict

REL_TOL = 1e-6


@dataclass(frozen=True)
class CheckResult:
    """``confirmed``: the certificate's verdict was reproduced; ``problems``: reasons for rejection."""

    certificate: Certificate
    confirmed: bool
    problems: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> Verdict:
        return self.certificate.verdict

    @property
    def exit_code(self) -> int:
        """The verdict's exit code when confirmed (0/1/3); 1 when rejected."""
        return self.verdict.exit_code if self.confirmed else 1


def check_certificate(path: str | os.PathLike, *, teacher: str | os.PathLike | None = None,
                      timeout: float | None = None) -> CheckResult:
    """Re-check the certificate at ``path`` (``certificate.json`` or its directory).

    ``teacher`` overrides the recorded teacher path; ``timeout`` the per-point time of the complete
    search (default: twice the recorded one). Raises :class:`InputError` only for a file that is
    not a readable certificate; every other defect is a rejection in the result.
    """
    cert = load_certificate(path)
    problems: list[str] = []
    notes: list[str] = []
    body, arrays = cert.body, cert.arrays
    if body.get("integrity", {}).get("body_sha256") != body_digest(body):
        problems.append("the certificate body was edited after it was written (integrity digest mismatch)")
    _check_files(cert, teacher, problems, notes)
    if problems:  # nothing below can be trusted on swapped or edited files
        return CheckResult(cert, False, problems, notes)
    _check_sample_size(body, arrays, problems)
    try:
        _check_evidence(cert, teacher, timeout, problems, notes)
    except (InputError, KeyError, ValueError) as exc:
        problems.append(f"the certificate's evidence could not be rechecked: {exc}")
    return CheckResult(cert, not problems, problems, notes)


def _check_files(cert: Certificate, teacher, problems: list[str], notes: list[str]) -> None:
    files = cert.body["files"]
    for key in ("student_onnx", "points", "student_pt"):
        path = cert.path(key)
        if not path.is_file():
            problems.append(f"{key.replace('_', ' ')} file {path} is missing")
        elif sha256_file(path) != files[key]["sha256"]:
            problems.append(f"{key.replace('_', ' ')} file {path} does not match its recorded sha256")
    teacher_path = _teacher_path(cert, teacher)
    if teacher_path is None:
        notes.append("the teacher file is not available: its hash, labels, ρ_i and counterexamples were not rechecked")
    elif sha256_file(teacher_path) != files["teacher"]["sha256"]:
        problems.append(f"teacher file {teacher_path} does not match its recorded sha256")


def _teacher_path(cert: Certificate, teacher) -> Path | None:
    candidate = teacher if teacher is not None else cert.body["files"]["teacher"].get("path")
    if candidate is None:
        return None
    path = Path(candidate)
    if teacher is not None and not path.is_file():
        raise InputError(f"teacher file {path} does not exist")
    return path if path.is_file() else None


def _check_sample_size(body: dict, arrays: dict, problems: list[str]) -> None:
    p = body["pac"]
    need = pac.sample_size(p["dim"], p["eps"], p["eta"], norm=p["norm"])
    points = arrays["points"]
    if need != p["samples_required"]:
        problems.append(f"samples_required is {p['samples_required']} but Thm 3.8 gives {need}")
    if p["samples"] < need:
        problems.append(f"the certificate claims {p['samples']} samples, below the {need} that Thm 3.8 needs")
    if len(points) != p["samples"]:
        problems.append(f"the side file holds {len(points)} points, the certificate claims {p['samples']}")
    if int(np.prod(points.shape[1:])) != p["dim"]:
        problems.append(f"the points have dimension {int(np.prod(points.shape[1:]))}, the certificate claims {p['dim']}")


def _check_evidence(cert: Certificate, teacher, timeout, problems: list[str], notes: list[str]) -> None:
    body, arrays = cert.body, cert.arrays
    p, ver, settings = body["pac"], body["verification"], body["settings"]
    delta, norm = p["delta"], p["norm"]
    points = arrays["points"]
    flat = points.reshape(len(points), -1).astype(np.float64)
    teacher_label = arrays["teacher_label"]
    required = arrays["teacher_confidence"] >= p["kappa"]
    if not np.array_equal(required, arrays["required"]):
        problems.append("the required points do not match the recorded teacher confidences and κ")
    idx = np.nonzero(required)[0]
    network = load_network(cert.path("student_onnx"))
    with torch.no_grad():
        student_label = network(torch.as_tensor(flat, dtype=network.dtype)).argmax(1).numpy()
    if not np.array_equal(student_label, arrays["student_label"]):
        problems.append("the student ONNX does not give the recorded student classes")
    agrees = student_label[idx] == teacher_label[idx]
    domain = tuple(settings["domain"]) if settings.get("domain") else None
    time_limit = timeout if timeout is not None else 2 * float(settings["timeout_per_point"])
    verified = np.zeros(idx.size, dtype=bool)
    if idx.size:
        result = verify_points(network, flat[idx], 3 * delta, norm, labels=teacher_label[idx],
                               method=settings["verify_method"], complete=bool(settings["complete"]),
                               timeout=time_limit, domain=domain, seed=int(settings["seed"]))
        verified = np.array([v is PointVerdict.VERIFIED for v in result.verdicts])
    recorded_verified = arrays["status"][idx] == STATUS_CODE["verified"]
    lost = np.nonzero(recorded_verified & ~verified)[0]
    if lost.size:
        problems.append(f"{lost.size} points recorded as verified at 3δ = {3 * delta:g} were not re-proven "
                        f"(first: sample index {idx[lost[0]]})")
    if int(verified.sum()) < ver["verified"] or ver["required"] != idx.size:
        problems.append(f"the verification counts do not match: recorded {ver['verified']} of {ver['required']}, "
                        f"rechecked {int(verified.sum())} of {idx.size}")
    radii = arrays["certified_radius"][idx]
    _check_radii(network, flat[idx], teacher_label[idx], radii, norm, domain, settings, problems)
    rho = arrays["rho"][idx]
    teacher_path = _teacher_path(cert, teacher)
    teacher_found_delta = np.isin(idx, arrays["teacher_cex_delta_index"])
    teacher_found_t = np.isin(idx, arrays["teacher_cex_delta_t_index"])
    if teacher_path is not None:
        rho = _check_teacher(cert, teacher_path, flat, idx, rho, problems)
    delta_t = relaxed_delta(radii, rho)
    if not np.isclose(delta_t, cert.delta_T, rtol=REL_TOL, atol=0):
        problems.append(f"δ_T recomputed from the recorded radii and ρ is {delta_t:.9g}, the certificate says "
                        f"{cert.delta_T:.9g}")
    evidence = Evidence(verified=verified, agrees=agrees, teacher_refuted_delta=teacher_found_delta,
                        teacher_refuted_delta_t=teacher_found_t if delta_t > 0 else np.zeros(idx.size, bool))
    verdict, _ = decide_verdict(evidence)
    if verdict is not cert.verdict:
        problems.append(f"the evidence gives {verdict.value}, the certificate says {cert.verdict.value}")
    common = dict(eps=p["eps"], eta=p["eta"], samples=p["samples"], dim=p["dim"], kappa=p["kappa"], norm=norm,
                  tv=p["tv"])
    if body["statements"]["pac"] != pac.pac_statement(delta=delta, **common):
        problems.append("the PAC statement does not match its parameters")
    expected_t = pac.pac_statement(delta=cert.delta_T, relaxed=True, **common) if cert.delta_T > 0 else None
    if body["statements"]["pac_delta_T"] != expected_t:
        problems.append("the δ_T statement does not match δ_T")


def _check_radii(network, x, labels, radii, norm, domain, settings, problems: list[str]) -> None:
    """Every recorded r_i > 0 must be proven again (incomplete bounds, as the radius search used)."""
    positive = np.nonzero(radii > 0)[0]
    if np.isnan(radii).any():
        problems.append("a required point has no recorded certified radius")
        return
    if positive.size == 0:
        return
    result = verify_points(network, x[positive], radii[positive], norm, labels=labels[positive],
                           method=settings["verify_method"], complete=bool(settings["complete"]),
                           timeout=2 * float(settings["timeout_per_point"]), domain=domain,
                           seed=int(settings["seed"]), attack=False)
    failed = [i for i, v in zip(positive, result.verdicts) if v is not PointVerdict.VERIFIED]
    if failed:
        problems.append(f"{len(failed)} recorded certified radii were not re-proven (first: r = {radii[failed[0]]:g})")


def _check_teacher(cert: Certificate, teacher_path: Path, flat: np.ndarray, idx: np.ndarray, rho: np.ndarray,
                   problems: list[str]) -> np.ndarray:
    """Recompute the teacher's labels, confidences and ρ_i, and re-confirm its recorded counterexamples."""
    from pacverify.distill.quality import margin_gradient_ratio
    from pacverify.models import load_student, load_teacher, teacher_logits

    body, arrays = cert.body, cert.arrays
    settings = body["settings"]
    model = load_teacher(teacher_path, arch=settings.get("arch"), trust_pickle=bool(settings.get("trust_pickle")),
                         device="cpu")
    points = arrays["points"]
    logits = teacher_logits(model, points, device="cpu")
    confidence = torch.softmax(logits.double(), 1).max(1).values.numpy()
    if not np.array_equal(logits.argmax(1).numpy(), arrays["teacher_label"]):
        problems.append("the teacher does not give the recorded teacher classes")
    if not np.allclose(confidence, arrays["teacher_confidence"], rtol=1e-5, atol=1e-6):
        problems.append("the teacher does not give the recorded confidences")
    student = load_student(cert.path("student_pt"))
    fresh_rho = margin_gradient_ratio(model, student, points[idx], body["pac"]["norm"]) if idx.size else rho
    if not np.allclose(fresh_rho, rho, rtol=1e-4, atol=1e-6, equal_nan=True):
        problems.append("the recorded ρ_i do not match the teacher and student")
    for key, radius in (("teacher_cex_delta", 3 * body["pac"]["delta"]), ("teacher_cex_delta_t", 3 * cert.delta_T)):
        cex, where = arrays[key], arrays[f"{key}_index"]
        if len(cex) == 0:
            continue
        shaped = cex.reshape(len(cex), *points.shape[1:]).astype(np.float32)
        moved = teacher_logits(model, shaped, device="cpu").argmax(1).numpy() != arrays["teacher_label"][where]
        dist = _distance(cex - flat[where], body["pac"]["norm"])
        if not (moved & (dist <= radius * (1 + 1e-6))).all():
            problems.append(f"a recorded teacher counterexample ({key}) is not confirmed by the teacher")
    return rho


def _distance(diff: np.ndarray, norm: str) -> np.ndarray:
    return np.linalg.norm(diff, axis=1) if norm == "2" else np.abs(diff).max(axis=1)
