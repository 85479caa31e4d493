"""CI gating: requirements checked against a certificate, JUnit XML, GitHub Actions annotations.

A *requirement* is one named pass/fail line a CI system shows: distillation agreement,
verification, teacher cross-check, coverage, and (when asked) a minimum δ_T.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pacverify.certificate.io import Certificate
from pacverify.certificate.schema import MassCertificateBody, Verdict
from pacverify.fileio import atomic_write_text


@dataclass(frozen=True)
class Requirement:
    name: str
    passed: bool
    message: str


def requirements(cert: Certificate, *, min_delta_t: float | None = None,
                 min_coverage: float = 0.0) -> list[Requirement]:
    """The requirements a CI gate checks, read from the certificate's typed sections."""
    record = cert.record
    if isinstance(record, MassCertificateBody):
        return _mass_requirements(record, cert.delta_T, min_delta_t)
    ver, teacher, cov = record.verification, record.teacher_check, record.coverage
    out = [
        Requirement("distillation agreement", ver.disagree == 0,
                    f"student agrees with the teacher at {ver.required - ver.disagree} of {ver.required} "
                    "required points"),
        Requirement("verification", ver.required > 0 and ver.verified == ver.required,
                    f"{ver.verified} of {ver.required} required points proven {ver.radius:g}-robust "
                    f"({ver.falsified} falsified, {ver.unknown} unknown)"),
        Requirement("teacher cross-check", record.verdict is not Verdict.REFUTED
                    and teacher.counterexamples_delta == 0 and teacher.counterexamples_delta_T == 0,
                    f"{teacher.counterexamples_delta} teacher counterexamples within 3δ, "
                    f"{teacher.counterexamples_delta_T} within 3·δ_T"),
        Requirement("coverage", cov.lower >= min_coverage,
                    f"at least {cov.lower:.3g} of D_X lies in δ-balls of mass ≥ ε "
                    f"(confidence {cov.confidence:g}; required ≥ {min_coverage:g})" if cov.points else
                    f"coverage was not estimated ({cov.note}); required ≥ {min_coverage:g}"),
    ]
    if min_delta_t is not None:
        dt = cert.delta_T
        out.append(Requirement("minimum delta_T", dt >= min_delta_t, f"δ_T = {dt:.6g}, required ≥ {min_delta_t:g}"))
    return out


def _mass_requirements(record: MassCertificateBody, radius: float, min_delta_t: float | None) -> list[Requirement]:
    """Mass mode: M(κ) ≥ δ, the oracle consistent with the attack, the held-out check not significant."""
    p, o, h = record.pac, record.oracle, record.holdout
    out = [
        Requirement("mass guarantee", radius >= p.delta,
                    f"M(κ) = {radius:.6g} at κ = {p.kappa:g}, required ≥ δ = {p.delta:g}"),
        Requirement("oracle consistency", o.inconsistent == 0,
                    f"{o.inconsistent} sample points with a teacher counterexample closer than the proven radius"),
        Requirement("held-out check", not h.significant,
                    f"{h.members} of {h.points} fresh draws in R(M(κ), κ)" + (f", p-value {h.p_value:.3g}"
                                                                             if h.p_value is not None else "")),
    ]
    if min_delta_t is not None:
        out.append(Requirement("minimum delta_T", radius >= min_delta_t,
                               f"M(κ) = {radius:.6g}, required ≥ {min_delta_t:g}"))
    return out


def junit_xml(reqs: list[Requirement], *, suite: str = "pacverify certify", time_s: float = 0.0) -> str:
    """A JUnit XML document with one test case per requirement."""
    failures = sum(not r.passed for r in reqs)
    root = ET.Element("testsuites")
    node = ET.SubElement(root, "testsuite", name=suite, tests=str(len(reqs)), failures=str(failures),
                         errors="0", time=f"{time_s:.3f}")
    for req in reqs:
        case = ET.SubElement(node, "testcase", classname="pacverify", name=req.name)
        if req.passed:
            ET.SubElement(case, "system-out").text = req.message
        else:
            ET.SubElement(case, "failure", message=req.message).text = req.message
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(path: str | os.PathLike, reqs: list[Requirement], *, time_s: float = 0.0) -> Path:
    return atomic_write_text(path, junit_xml(reqs, time_s=time_s))


def github_annotations(cert: Certificate, reqs: list[Requirement]) -> str:
    """Workflow-command lines (``::error``/``::notice``) for GitHub Actions."""
    lines = []
    for req in reqs:
        kind = "notice" if req.passed else "error"
        lines.append(f"::{kind} title=pacverify {req.name}::{_escape(req.message)}")
    lines.append(f"::notice title=pacverify verdict::{cert.verdict.value}; δ_T = {cert.delta_T:.6g}")
    return "\n".join(lines)


def step_summary(cert: Certificate, reqs: list[Requirement]) -> str:
    """Markdown for ``$GITHUB_STEP_SUMMARY``."""
    lines = [f"### pacverify: {cert.verdict.value}", "", cert.record.statements.pac, "",
             "| requirement | result | detail |", "|---|---|---|"]
    lines += [f"| {r.name} | {'pass' if r.passed else 'FAIL'} | {r.message} |" for r in reqs]
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def emit_github(cert: Certificate, reqs: list[Requirement], environ: Mapping[str, str] | None = None) -> str | None:
    """When running under GitHub Actions, return the annotation lines and append the step summary."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    if env.get("GITHUB_ACTIONS") != "true":
        return None
    summary = env.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as handle:  # the runner's own append-only file
            handle.write(step_summary(cert, reqs))
    return github_annotations(cert, reqs)
