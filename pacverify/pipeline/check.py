"""``pacverify check``: re-derive a certificate from its evidence and compare every claim.

A certificate is CONFIRMED only when ``check`` can rebuild its whole body, claim by claim, from the
files themselves and the user's own consent flags — never from values or flags it reads in the
certificate. It:

1. verifies the integrity digest and the file hashes; files are resolved relative to the
   certificate's directory, and a recorded path that leaves it is refused unless the user names
   the file on the command line;
2. re-derives the sample when the source allows it (a built-in distribution; a data file whose
   sha256 matches; a sampler only when the user passes ``--sampler``) and compares it with
   ``points.npz``;
3. ties ``student.pt`` to ``student.onnx`` (equal outputs on the sample) and re-verifies the ONNX
   student at 3δ at every required point, re-proving each recorded certified radius;
4. with the teacher: recomputes its labels and confidences, the margins, ρ and gradient cosines,
   δ_T, the distillation markers, the coverage estimate, and attacks the teacher again in every
   claimed ball with at least the recorded budget (any counterexample → REFUTED);
5. assembles the body the evidence supports with the same sentences as ``certify`` and compares it
   with the recorded one, field by field (timings and environment excepted).

Outcomes: CONFIRMED (exit = the verdict's code), REJECTED (exit 1: a claim does not follow from the
evidence), REFUTED (exit 3: a teacher counterexample lies in a claimed ball), UNCHECKED (exit 1: a
claim could not be re-derived — which ones are listed; e.g. no teacher file).
"""
from __future__ import annotations

import dataclasses
import enum
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from pacverify import pac
from pacverify.certificate.io import Certificate, body_digest, load_certificate, read_body
from pacverify.certificate.schema import CertificateBody, FileRef, MassCertificateBody, MassParameters, Verdict
from pacverify.data import make_sampler
from pacverify.errors import InputError
from pacverify.executor import get_executor
from pacverify.fileio import sha256_file
from pacverify.models import as_logits, load_student, load_teacher, resolve_device
from pacverify.pipeline import stages as st
from pacverify.pipeline.ball import assemble
from pacverify.pipeline.settings import CertifySettings
from pacverify.validation import check_positive

REL_TOL = 1e-6
PARITY_TOLERANCE = 1e-4
IGNORED = ("timings", "environment", "integrity")


class Outcome(enum.Enum):
    CONFIRMED = "CONFIRMED"
    REJECTED = "REJECTED"
    REFUTED = "REFUTED"
    UNCHECKED = "UNCHECKED"


@dataclass(frozen=True)
class CheckResult:
    """``outcome`` and why: ``problems`` (claims the evidence contradicts), ``unchecked`` (claims not
    re-derived), ``notes`` (what was done)."""

    certificate: Certificate
    outcome: Outcome
    problems: list[str]
    unchecked: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def confirmed(self) -> bool:
        return self.outcome is Outcome.CONFIRMED

    @property
    def verdict(self) -> Verdict:
        return self.certificate.verdict

    @property
    def exit_code(self) -> int:
        """The verdict's exit code when confirmed (0/1/3); 3 when refuted; 1 when rejected or unchecked."""
        if self.outcome is Outcome.CONFIRMED:
            return self.verdict.exit_code
        return 3 if self.outcome is Outcome.REFUTED else 1


class _Log:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.unchecked: list[str] = []
        self.notes: list[str] = []
        self.refutations: list[str] = []


def check_certificate(path: str | os.PathLike, *, teacher: str | os.PathLike | None = None,
                      data: str | os.PathLike | None = None, sampler: str | None = None,
                      timeout: float | None = None, arch: str | None = None,
                      trust_pickle: bool = False, labels: str | os.PathLike | None = None,
                      executor: str = "local", ray_address: str | None = None) -> CheckResult:
    """Re-check the certificate at ``path`` (``certificate.json`` or its directory); see the module docstring.

    ``teacher`` / ``data``: files named by the user (they may lie anywhere). ``sampler``: the user's
    ``module:function`` to re-derive a sampler-drawn sample (imports the user's code). ``arch`` /
    ``trust_pickle``: the user's consent to import a teacher architecture or unpickle a teacher file.
    ``timeout``: seconds of branch and bound per point (default: twice the recorded). ``labels``: the labels file
    of a ``certify --labels`` run when it is not where the certificate records it. ``executor`` / ``ray_address``:
    where the student's proofs and radii are re-derived (:mod:`pacverify.executor`; the same chunks and seeds as
    any executor, so the result does not depend on it). Raises
    :class:`InputError` only for a file that is not a readable certificate or a bad argument; every
    other defect is in the result.
    """
    if timeout is not None:
        timeout = check_positive(timeout, "--timeout")
    raw, _, _ = read_body(path)
    cert = load_certificate(path)
    record = cert.record
    log = _Log()
    if raw["integrity"]["body_sha256"] != body_digest(raw) or cert.body != raw:
        log.problems.append("the certificate body was edited after it was written (integrity digest mismatch)")
    files = _resolve_files(cert, teacher, log)
    if log.problems:  # nothing below can be trusted on swapped or edited files
        return CheckResult(cert, Outcome.REJECTED, log.problems, log.unchecked, log.notes)
    _check_sample_size(cert, log)
    runner = get_executor(executor, ray_address)  # an unreachable cluster is an InputError before any work
    try:
        expected: CertificateBody | MassCertificateBody | None
        if isinstance(record, MassCertificateBody):
            expected, refuted = _rederive_mass(cert, files, data, sampler, timeout, arch, trust_pickle, log, runner)
        else:
            expected, refuted = _rederive(cert, files, data, sampler, timeout, arch, trust_pickle, log, labels,
                                          runner)
    except InputError as exc:
        log.problems.append(f"the certificate's evidence could not be rechecked: {exc}")
        expected, refuted = None, False
    finally:
        runner.close()
    if expected is not None:
        _compare(record, expected, log)
    if log.problems:  # the certificate does not follow from its own evidence: that comes first
        outcome = Outcome.REJECTED
    elif refuted:
        outcome = Outcome.REFUTED
    elif log.unchecked:
        outcome = Outcome.UNCHECKED
    else:
        outcome = Outcome.CONFIRMED
    return CheckResult(cert, outcome, log.problems + log.refutations, log.unchecked, log.notes)


# --- files -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Files:
    student_onnx: Path
    student_pt: Path
    teacher: Path | None


def _inside(cert: Certificate, ref: FileRef, name: str, log: _Log) -> Path | None:
    """The recorded file, resolved against the certificate's directory; None (and a problem) if it leaves it."""
    assert cert.directory is not None
    if ref.path is None:
        log.problems.append(f"the certificate records no path for the {name}")
        return None
    path = (cert.directory / ref.path).resolve()
    if not path.is_relative_to(cert.directory.resolve()):
        log.problems.append(f"the {name} path {ref.path!r} leaves the certificate's directory; name the file on "
                            "the command line to use it")
        return None
    if not path.is_file():
        log.problems.append(f"the {name} file {path} is missing")
        return None
    if sha256_file(path) != ref.sha256:
        log.problems.append(f"the {name} file {path} does not match its recorded sha256")
        return None
    return path


def _resolve_files(cert: Certificate, teacher: str | os.PathLike | None, log: _Log) -> _Files:
    rec = cert.record.files
    onnx_path = None if rec.student_onnx is None else _inside(cert, rec.student_onnx, "student ONNX", log)
    pt_path = None if rec.student_pt is None else _inside(cert, rec.student_pt, "student.pt", log)
    _inside(cert, rec.points, "points", log)
    teacher_path: Path | None = None
    if teacher is not None:
        teacher_path = Path(teacher)
        if not teacher_path.is_file():
            raise InputError(f"teacher file {teacher_path} does not exist")
        if sha256_file(teacher_path) != rec.teacher.sha256:
            log.problems.append(f"teacher file {teacher_path} does not match its recorded sha256")
            teacher_path = None
    elif rec.teacher.path is not None:
        assert cert.directory is not None
        candidate = (cert.directory / rec.teacher.path).resolve()
        if not candidate.is_relative_to(cert.directory.resolve()):
            log.unchecked.append(f"the recorded teacher path {rec.teacher.path!r} leaves the certificate's directory "
                                 "and was not opened: pass --teacher FILE")
        elif candidate.is_file() and sha256_file(candidate) == rec.teacher.sha256:
            teacher_path = candidate
        elif candidate.is_file():
            log.problems.append(f"teacher file {candidate} does not match its recorded sha256")
        else:
            log.unchecked.append(f"the teacher file {candidate} is missing: pass --teacher FILE")
    else:
        log.unchecked.append("the certificate names no teacher file (an in-memory teacher): pass --teacher FILE")
    return _Files(onnx_path or Path(), pt_path or Path(), teacher_path)


def _check_sample_size(cert: Certificate, log: _Log) -> None:
    p = cert.record.pac
    if isinstance(p, MassParameters):
        need = pac.sample_size(p.dim, p.eps, p.eta, norm=p.norm, bound=p.bound, guarantee="mass")
        if p.guarantee != "mass" or p.vc_dimension != 2:
            log.problems.append(f"a mass-mode certificate must have guarantee 'mass' and VC dimension 2, not "
                                f"{p.guarantee!r} and {p.vc_dimension}")
    else:
        need = pac.sample_size(p.dim, p.eps, p.eta, norm=p.norm, bound=p.bound)
    points = cert.arrays["points"]
    if p.samples < need:
        log.problems.append(f"the certificate claims {p.samples} samples, below the {need} that the ε-net bound "
                            "needs")
    if len(points) != p.samples:
        log.problems.append(f"the side file holds {len(points)} points, the certificate claims {p.samples}")
    if int(np.prod(points.shape[1:])) != p.dim:
        log.problems.append(f"the points have dimension {int(np.prod(points.shape[1:]))}, the certificate claims "
                            f"{p.dim}")


# --- re-derivation -----------------------------------------------------------------------------------------------

def _source_setting(src, data: str | None, sampler: str | None) -> dict[str, Any]:
    """The certify setting naming the recorded data source (the user's ``--data`` / ``--sampler`` take precedence)."""
    if src.kind == "data":
        return {"data": data or src.source}
    return {"sampler": sampler or src.source} if src.kind == "sampler" else {"synthetic": src.source}


def _settings(record: CertificateBody, data: str | None, sampler: str | None, arch: str | None,
              trust_pickle: bool) -> CertifySettings:
    s, p, src = record.settings, record.pac, record.files.data
    source = _source_setting(src, data, sampler)
    return CertifySettings(
        delta=p.delta, eps=p.eps, eta=p.eta, kappa=p.kappa, norm=p.norm, tv=p.tv, samples=p.samples, bound=p.bound,
        student=s.student, method=s.method, epochs=s.epochs, distill_options=dict(s.distill_options), device=s.device,
        seed=s.seed, arch=arch, trust_pickle=trust_pickle, verify_method=s.verify_method, complete=s.complete,
        timeout=s.timeout_per_point, radius_cap=record.relaxation.cap, radius_tol=record.relaxation.tol,
        attack_steps=s.attack.steps, attack_restarts=s.attack.restarts, attack_starts=record.teacher_check.starts,
        attack_random_samples=record.teacher_check.random_samples,
        attack_fresh_points=record.teacher_check.fresh_points, coverage_points=s.coverage.points,
        coverage_batch=s.coverage.batch, domain=None if s.domain is None else (s.domain[0], s.domain[1]),
        allow_duplicates=s.allow_duplicates, global_check=s.global_check, global_timeout=s.global_timeout,
        outputs=s.outputs, **source)


def _sampler(cert: Certificate, cfg: CertifySettings, data: str | os.PathLike | None, sampler: str | None,
             log: _Log):
    """The sampler that re-derives the sample, or None (and an unchecked claim) when the source does not allow it."""
    src = cert.record.files.data
    if src.kind == "synthetic":
        return make_sampler(src.source, seed=cfg.seed, domain=cfg.domain, kind="synthetic",
                            allow_duplicates=cfg.allow_duplicates)
    if src.kind == "data":
        path = Path(data) if data is not None else None
        if path is None:
            assert cert.directory is not None
            candidate = (cert.directory / src.source).resolve()
            if candidate.is_relative_to(cert.directory.resolve()) and candidate.is_file():
                path = candidate
        path = _recorded_file(path, src.sha256, "data file", f"the sample could not be re-derived: the data file "
                              f"{src.source!r} is not in the certificate's directory (pass --data FILE)", log)
        if path is None:
            return None
        return make_sampler(str(path), seed=cfg.seed, domain=cfg.domain, kind="data",
                            allow_duplicates=cfg.allow_duplicates)
    if sampler is None:
        log.unchecked.append(f"the sample could not be re-derived: it was drawn by the sampler {src.source!r}, "
                             "whose code check runs only when you pass --sampler MODULE:FUNCTION")
        return None
    return make_sampler(sampler, seed=cfg.seed, domain=cfg.domain, kind="sampler",
                        allow_duplicates=cfg.allow_duplicates)


def _recorded_source(record: CertificateBody | MassCertificateBody) -> dict:
    """The run's ``{kind, source, sha256}`` as the certificate records it (without the duplicate count)."""
    return {k: v for k, v in dataclasses.asdict(record.files.data).items() if k != "duplicates"}


def _rederived_sample(cert: Certificate, cfg: CertifySettings, data, sampler_spec, log: _Log):
    """``(sampler, matches)``: the sampler that re-derives the sample (None when the source does not allow it) and
    whether its draw equals ``points.npz`` (a mismatch is a problem; without a sampler nothing is compared)."""
    points = cert.arrays["points"]
    sampler = _sampler(cert, cfg, data, sampler_spec, log)
    if sampler is None:
        return None, True
    drawn = sampler.draw(len(points))
    if drawn.shape != points.shape or not np.array_equal(drawn.astype(np.float32), points.astype(np.float32)):
        log.problems.append("the points in points.npz are not the sample the recorded source and seed draw")
        return sampler, False
    log.notes.append(f"the sample was re-derived from its source ({cert.record.files.data.kind}) and matches")
    return sampler, True


def _rederive(cert: Certificate, files: _Files, data, sampler_spec, timeout, arch, trust_pickle,
              log: _Log, labels_file: str | os.PathLike | None = None,
              executor=None) -> tuple[CertificateBody | None, bool]:
    record, arrays = cert.record, cert.arrays
    assert cert.directory is not None and isinstance(record, CertificateBody)
    labels_path = _labels_file(cert, labels_file, log)
    cfg = _settings(record, None if data is None else str(data), sampler_spec, arch, trust_pickle)
    cfg = dataclasses.replace(cfg, labels=None if labels_path is None else str(labels_path)).validated()
    points = arrays["points"]
    input_shape = tuple(points.shape[1:])
    sampler, matches = _rederived_sample(cert, cfg, data, sampler_spec, log)
    if not matches:
        return None, False
    teacher_model = None
    if files.teacher is not None:
        teacher_model = as_logits(load_teacher(files.teacher, arch=arch, trust_pickle=trust_pickle, device="cpu"),
                                  cfg.outputs)
    setup = st.Setup(cfg=cfg, teacher=teacher_model, teacher_path=files.teacher,  # type: ignore[arg-type]
                     teacher_hash=record.files.teacher.sha256 or "", sampler=sampler,  # type: ignore[arg-type]
                     source=_recorded_source(record),
                     input_shape=input_shape,
                     dim=record.pac.dim, samples=record.pac.samples, samples_required=record.pac.samples_required,
                     out_dir=cert.directory, device=resolve_device("cpu"), executor=executor)
    sample = st.Sample(points)
    exported = _exported(setup, files, sample, log)
    if teacher_model is None:
        labels = st.Labels(arrays["teacher_label"], arrays["teacher_confidence"], record.pac.n_classes)
        log.unchecked.append("without the teacher, its labels, confidences, the required set, ρ, margins, δ_T, the "
                             "distillation markers, the coverage and the teacher attack were not re-derived")
    else:
        labels = st.label_sample(setup, sample)
    # proofs get more branch-and-bound time than the run had (the recorded settings stay as they were)
    longer = dataclasses.replace(setup, cfg=dataclasses.replace(cfg, timeout=timeout or 2 * cfg.timeout))
    proof = st.verify_student(longer, sample, labels, exported)
    radii = _reprove_radii(longer, sample, labels, exported, arrays, log)
    if teacher_model is None:
        _student_side_only(record, labels, exported, proof, log)
        return None, False
    relaxation = st.relax(setup, sample, labels, exported, radii)
    attacks, refuted = _reattack(setup, sample, labels, relaxation, record, arrays, log)
    fresh = st.draw_fresh(setup) if sampler is not None else st.Fresh(None)
    coverage = st.estimate_coverage(setup) if sampler is not None else st.CoverageEstimate(
        dataclasses.asdict(record.coverage))
    if sampler is None:
        log.unchecked.append("the coverage estimate and the held-out markers were not re-derived (no sampler)")
    distill = _distill_summary(setup, record, sample, fresh)
    results = {"sample": sample, "label": labels, "export": exported, "verify": proof, "radius": radii,
               "rho": relaxation, "teacher_check": attacks, "coverage": coverage, "distill": distill,
               "grid": st.DecisionGrid({}), "global": _recheck_global(setup, exported, record, arrays, log),
               "accuracy": _recheck_accuracy(setup, labels, exported, proof, radii, record, arrays, log)}
    expected, _ = assemble(setup, results, record.timings)
    if record.files.labels is not None and labels_path is None:  # what could not be re-derived is not compared
        expected = dataclasses.replace(expected, files=dataclasses.replace(expected.files, labels=record.files.labels))
    if sampler is None:  # the fresh draws could not be made: the fresh-point attack counts are not compared
        expected = dataclasses.replace(expected, teacher_check=dataclasses.replace(
            expected.teacher_check, fresh_points=record.teacher_check.fresh_points,
            fresh_points_attacked=record.teacher_check.fresh_points_attacked,
            fresh_points_attacked_delta_T=record.teacher_check.fresh_points_attacked_delta_T))
    log.notes.append("the distillation's training facts (epochs run, early stop, notes) are taken from the "
                     "certificate: they describe the training run, not a claim")
    return expected, refuted


def _labels_file(cert: Certificate, given: str | os.PathLike | None, log: _Log) -> Path | None:
    """The labels file of a ``certify --labels`` run, its sha256 checked: the user's ``--labels`` or the recorded
    path (relative to the certificate's directory when inside it); None (and an unchecked claim) when absent."""
    ref = cert.record.files.labels  # type: ignore[union-attr]
    if ref is None:
        return None
    assert cert.directory is not None and ref.path is not None
    return _recorded_file(Path(given) if given is not None else (cert.directory / ref.path), ref.sha256, "labels file",
                          f"the verified robust accuracy was not re-derived: the labels file {ref.path!r} was not "
                          "found (pass --labels FILE)", log)


def _recorded_file(path: Path | None, sha256: str | None, what: str, missing: str, log: _Log) -> Path | None:
    """``path`` when it is a file whose sha256 is the recorded one; None otherwise, with ``missing`` as an unchecked
    claim (no file) or a problem (another file)."""
    if path is None or not path.is_file():
        log.unchecked.append(missing)
        return None
    if sha256_file(path) != sha256:
        log.problems.append(f"the {what} {path} does not match the recorded sha256")
        return None
    return path


def _recheck_accuracy(setup: st.Setup, labels: st.Labels, exported: st.Exported, proof: st.StudentProof,
                      radii: st.Radii, record: CertificateBody, arrays: dict, log: _Log) -> st.LabelledAccuracy:
    """The ``accuracy`` claim recomputed from the labels file and the re-derived proofs; the recorded one (left
    unchecked) when the labels or the sample's rows are not available."""
    if record.accuracy is None:
        return st.LabelledAccuracy(None, np.zeros(0, np.int64))
    if setup.cfg.labels is None or setup.sampler is None:
        if setup.sampler is None and setup.cfg.labels is not None:
            log.unchecked.append("the verified robust accuracy was not re-derived: the sample's rows are unknown "
                                 "without the data file")
        return st.LabelledAccuracy(dataclasses.asdict(record.accuracy),
                                   np.asarray(arrays.get("true_label", np.zeros(0)), dtype=np.int64))
    return st.labelled_accuracy(setup, labels, exported, proof, radii)


def _recheck_global(setup: st.Setup, exported: st.Exported, record: CertificateBody, arrays: dict,
                    log: _Log) -> st.GlobalOutcome:
    """The ``global_check`` claim: "verified" is proven again (twice the recorded time budget), a "falsified" pair is
    checked by a float64 forward pass of the ONNX student, "unknown" claims nothing. The budget-dependent counts
    (proven fraction, boxes) are taken from the certificate; the statement is rebuilt from them."""
    from pacverify.certificate.statements import global_sentence

    g = record.global_check
    empty = np.zeros((0, setup.dim))
    if g is None:
        return st.GlobalOutcome(None, empty)
    cfg = setup.cfg
    pair = np.asarray(arrays.get("global_pair", empty), dtype=np.float64)
    if g.verdict == "verified":
        longer = dataclasses.replace(setup, cfg=dataclasses.replace(cfg, global_timeout=2 * g.timeout))
        again = st.global_check(longer, exported)
        if again.section is None or again.section["verdict"] != "verified":
            log.problems.append("the student's global robustness on the domain was not proven again (twice the "
                                "recorded time budget)")
        else:
            log.notes.append("the student's global robustness on the domain was proven again")
    elif g.verdict == "falsified":
        net = st._student_network(setup).to("cpu", torch.float64)
        lo, hi = cfg.domain if cfg.domain is not None else (-math.inf, math.inf)
        ok = pair.shape == (2, setup.dim) and bool(((pair >= lo) & (pair <= hi)).all())
        if ok:
            with torch.no_grad():
                z = net(torch.as_tensor(pair))
            conf = float(torch.softmax(z[0], 0).max())
            dist = float(np.max(np.abs(pair[1] - pair[0])) if cfg.norm == "inf" else np.linalg.norm(pair[1] - pair[0]))
            ok = conf >= g.kappa and int(z[0].argmax()) != int(z[1].argmax()) and dist <= g.radius * (1 + 1e-9)
        if not ok:
            log.problems.append("the recorded global counterexample pair is not a κ-confident point with another "
                                "class within 3δ")
    section = dict(verdict=g.verdict, radius=3 * cfg.delta, kappa=cfg.kappa, norm=cfg.norm, timeout=cfg.global_timeout,
                   proven_fraction=g.proven_fraction, boxes_done=g.boxes_done, boxes_open=g.boxes_open,
                   statement=global_sentence(g.verdict, g.proven_fraction, 3 * cfg.delta, cfg.kappa, cfg.norm,
                                             tuple(cfg.domain) if cfg.domain is not None else (-math.inf, math.inf),
                                             cfg.global_timeout))
    return st.GlobalOutcome(section, pair)


def _exported(setup: st.Setup, files: _Files, sample: st.Sample, log: _Log) -> st.Exported:
    """The ONNX student's classes, and the tie between student.pt and student.onnx (equal outputs on the sample)."""
    from pacverify.onnx_io.export import INPUT_NAME, OUTPUT_NAME
    from pacverify.onnx_io.reader import load_network

    student = load_student(files.student_pt)
    session = ort.InferenceSession(str(files.student_onnx), providers=["CPUExecutionProvider"])
    x = sample.points.astype(np.float32)
    with torch.no_grad():
        torch_out = student(torch.from_numpy(x)).numpy()
    onnx_out = np.concatenate([session.run([OUTPUT_NAME], {INPUT_NAME: x[i:i + 4096]})[0]
                               for i in range(0, len(x), 4096)]) if len(x) else np.zeros((0, 2))
    diff = float(np.abs(torch_out - onnx_out).max()) if len(x) else 0.0
    if diff > PARITY_TOLERANCE * (1.0 + float(np.abs(torch_out).max(initial=0.0))):
        log.problems.append(f"student.pt and student.onnx are different networks (outputs differ by {diff:.3g} on the "
                            "sample); ρ and δ_T come from student.pt")
    network = load_network(files.student_onnx)
    with torch.no_grad():
        student_label = network(torch.as_tensor(sample.flat, dtype=network.dtype)).argmax(1).numpy()
    # the recorded export parity is a fact of the export run (random inputs included): not compared
    return st.Exported(sha256_file(files.student_onnx), sha256_file(files.student_pt), math.nan, student_label)


def _reprove_radii(setup: st.Setup, sample: st.Sample, labels: st.Labels, exported: st.Exported,
                   arrays: dict, log: _Log) -> st.Radii:
    """Every recorded r_i > 0 is proven again (:func:`_reprove`: the bounds, then branch and bound where they leave a
    point open: the radius search may have proved r_i from a pass at a larger radius, whose coarser intermediate
    bounds a fresh pass at r_i does not reuse)."""
    idx = labels.required(setup.cfg.kappa)
    recorded = np.asarray(arrays["certified_radius"], dtype=np.float64)[idx]
    if np.isnan(recorded).any():
        log.problems.append("a required point has no recorded certified radius")
        return st.Radii(np.nan_to_num(recorded))
    _reprove(st._student_network(setup), sample.flat[idx], recorded, labels.label[idx], setup.cfg, None,
             "certified radii", log, executor=st.runner(setup))
    return st.Radii(recorded)


def _reattack(setup: st.Setup, sample: st.Sample, labels: st.Labels, relaxation: st.Relaxation,
              record: CertificateBody, arrays: dict, log: _Log) -> tuple[st.TeacherAttack, bool]:
    """The recorded attack again (same seed and budget), plus an independent one (another seed), merged."""
    attacks = st.attack_teacher_stage(setup, sample, labels, relaxation)
    extra_setup = dataclasses.replace(setup, cfg=dataclasses.replace(setup.cfg, seed=setup.cfg.seed + 7919))
    extra = st.attack_teacher_stage(extra_setup, sample, labels, relaxation)
    new_only = (extra.found_delta & ~attacks.found_delta) | (extra.found_delta_t & ~attacks.found_delta_t)
    log.notes.append(f"the teacher was attacked again in every claimed ball ({setup.cfg.attack_steps} steps × "
                     f"{setup.cfg.attack_restarts} restarts, twice, with the recorded and another seed)")
    found_any = bool(attacks.found_delta.any() or attacks.found_delta_t.any() or new_only.any())
    refuted = False
    if record.verdict is not Verdict.REFUTED and found_any:
        claimed_delta = record.verdict is Verdict.CERTIFIED
        hit_delta = (attacks.found_delta | extra.found_delta) if claimed_delta else np.zeros_like(attacks.found_delta)
        hit_t = (attacks.found_delta_t | extra.found_delta_t) if relaxation.delta_t > 0 else \
            np.zeros_like(attacks.found_delta_t)
        if hit_delta.any() or hit_t.any():
            refuted = True
            log.refutations.append(f"the teacher has counterexamples in {int(hit_delta.sum())} claimed 3δ-balls and "
                                f"{int(hit_t.sum())} claimed 3·δ_T-balls: the certificate's claim is refuted")
    return attacks, refuted


def _distill_summary(setup: st.Setup, record: CertificateBody, sample: st.Sample, fresh: st.Fresh) -> st.Distilled:
    from pacverify.distill.quality import quality_markers

    student = load_student(setup.out_dir / (record.files.student_pt.path or "student.pt"))
    markers = quality_markers(setup.teacher, student, sample.points, fresh.points, norm=setup.cfg.norm)
    d = record.distillation
    summary = {"markers": markers.as_dict(), "epochs_run": d.epochs_run, "stopped_early": d.stopped_early,
               "stop_reason": d.stop_reason, "student": {"spec": d.student}, "auto": d.student_search,
               "notes": list(d.notes)}
    return st.Distilled(np.zeros(0, np.uint8), summary)


def _student_side_only(record: CertificateBody, labels: st.Labels, exported: st.Exported, proof: st.StudentProof,
                       log: _Log) -> None:
    """Without the teacher: the student's verification counts on the recorded required set must still hold."""
    idx = labels.required(record.pac.kappa)
    agrees = exported.student_label[idx] == labels.label[idx]
    ver = record.verification
    verified = int((proof.verified & agrees).sum())
    if ver.required != idx.size or verified < ver.verified:
        log.problems.append(f"the verification counts do not match: recorded {ver.verified} of {ver.required}, "
                            f"rechecked {verified} of {idx.size}")


# --- mass mode -----------------------------------------------------------------------------------------------------

def _mass_settings(record: MassCertificateBody, data: str | None, sampler: str | None, arch: str | None,
                   trust_pickle: bool) -> CertifySettings:
    s, p, src = record.settings, record.pac, record.files.data
    source = _source_setting(src, data, sampler)
    return CertifySettings(
        delta=p.delta, eps=p.eps, eta=p.eta, kappa=p.kappa, norm=p.norm, tv=p.tv, samples=p.samples,
        guarantee="mass", bound=p.bound, oracle=s.oracle, holdout=s.holdout, attack_bisection=s.attack.bisection,
        student=s.student, method=s.method, epochs=s.epochs, distill_options=dict(s.distill_options), device=s.device,
        seed=s.seed, arch=arch, trust_pickle=trust_pickle, verify_method=s.verify_method,
        radius_cap=s.radius_search.cap, radius_tol=s.radius_search.tol, attack_steps=s.attack.steps,
        attack_restarts=s.attack.restarts, domain=None if s.domain is None else (s.domain[0], s.domain[1]),
        allow_duplicates=s.allow_duplicates, outputs=s.outputs, **source)


def _rederive_mass(cert: Certificate, files: _Files, data, sampler_spec, timeout, arch, trust_pickle,
                   log: _Log, executor=None) -> tuple[MassCertificateBody | None, bool]:
    """Mass mode: the sample, the teacher's labels and confidences, every recorded lower radius re-proven (on the
    teacher, or on the student with the transfer factor recomputed), every recorded attack radius's counterexample
    confirmed, an independent attack looking for u < l, the held-out check redone; then M(κ), the verdict and the
    statements are assembled again and compared."""
    from pacverify.pipeline import mass as ms
    from pacverify.verify.oracle import attack_radii, teacher_network

    record, arrays = cert.record, cert.arrays
    assert isinstance(record, MassCertificateBody) and cert.directory is not None
    cfg = _mass_settings(record, None if data is None else str(data), sampler_spec, arch, trust_pickle).validated()
    points = arrays["points"]
    sampler, matches = _rederived_sample(cert, cfg, data, sampler_spec, log)
    if not matches:
        return None, False
    recorded = {name: np.asarray(arrays[name], dtype=np.float64) for name in ("lower", "upper", "teacher_confidence")}
    cmap = ms.confidence_map(recorded["teacher_confidence"], recorded["lower"], cfg.kappa, cfg.eps, cfg.eta)
    if cmap != record.confidence_map:
        log.problems.append("the map M(κ) in the certificate is not the one its recorded confidences and lower radii "
                            "give")
    if files.teacher is None:
        log.unchecked.append("without the teacher, its labels, confidences, the lower radii, the attack radii and the "
                             "held-out check were not re-derived")
        return None, False
    teacher_model = as_logits(load_teacher(files.teacher, arch=arch, trust_pickle=trust_pickle, device="cpu"),
                              cfg.outputs)
    input_shape = tuple(points.shape[1:])
    oracle = record.oracle.used
    network, why = (teacher_network(teacher_model, files.teacher, input_shape) if oracle == "teacher"
                    else (None, record.oracle.reason))
    if oracle == "teacher" and network is None:
        log.problems.append(f"the certificate says the teacher oracle ran, but {why}")
        return None, False
    setup = st.Setup(cfg=cfg, teacher=teacher_model, teacher_path=files.teacher, teacher_hash=record.files.teacher.sha256
                     or "", sampler=sampler,  # type: ignore[arg-type]
                     source=_recorded_source(record),
                     input_shape=input_shape, dim=record.pac.dim, samples=record.pac.samples,
                     samples_required=record.pac.samples_required, out_dir=cert.directory,
                     device=resolve_device("cpu"), oracle=oracle, oracle_reason=record.oracle.reason,
                     teacher_network=network, executor=executor)
    sample = st.Sample(points)
    labels = st.label_sample(setup, sample)
    lower = recorded["lower"]
    results: dict[str, Any] = {"sample": sample, "label": labels}
    if oracle == "student":
        exported = _exported(setup, files, sample, log)
        results["export"] = exported
        radius = np.asarray(arrays["student_radius"], dtype=np.float64)
        _reprove(st._student_network(setup), sample.flat, radius, labels.label, cfg, timeout, "student radii", log,
                 executor=st.runner(setup))
        from pacverify.certificate.guarantee import teacher_radius_factor

        m = st.margins_over(setup, load_student(files.student_pt), sample.points, labels.label, "ρ")
        factor = teacher_radius_factor(m.rho, m.margin_ratio)
        radius = np.where(exported.student_label != labels.label, 0.0, radius)
        if not np.allclose(factor * radius, lower, rtol=REL_TOL, atol=1e-12):
            log.problems.append("the recorded lower radii are not the student's radii times the transfer factor")
        low = ms.Lower(lower, radius, factor, 0.0)
    else:
        _reprove(network, sample.flat, lower, labels.label, cfg, timeout, "lower radii", log,
                 executor=st.runner(setup))
        low = ms.Lower(lower, np.zeros(0), np.zeros(0), 0.0)
    model = ms._teacher_model(setup)
    upper = recorded["upper"]
    finite = np.nonzero(np.isfinite(upper))[0]
    index = np.asarray(arrays["upper_cex_index"], dtype=np.int64)
    cex = np.asarray(arrays["upper_cex"], dtype=np.float64)
    if not np.array_equal(index, finite) or len(cex) != len(finite):
        log.problems.append("the recorded attack radii and their counterexamples do not match")
    elif finite.size:
        import torch

        from pacverify.norms import vector_norm

        with torch.no_grad():
            classes = model(torch.as_tensor(cex, dtype=torch.float64)).argmax(1).numpy()
        dist = vector_norm(cex - sample.flat[finite], cfg.norm)
        bad = (classes == labels.label[finite]) | (dist > upper[finite] * (1 + 1e-9) + 1e-12)
        if bad.any():
            log.problems.append(f"{int(bad.sum())} recorded attack radii are not backed by a teacher counterexample "
                                "at that distance")
    full_cex = np.full((len(upper), sample.flat.shape[1]), np.nan)
    if len(cex) == len(finite):
        full_cex[finite] = cex
    results["lower"], results["upper"] = low, ms.Upper(upper, full_cex, 0.0)
    again, again_cex = attack_radii(model, sample.flat, labels.label, cfg.norm,
                                    hi=float(cfg.radius_cap or 2 * cfg.delta), steps=cfg.pgd_steps,
                                    restarts=cfg.pgd_restarts, bisection=cfg.attack_bisection, domain=cfg.domain,
                                    seed=cfg.seed + 7919)
    refuted = False
    hits = np.asarray(again) < lower
    if oracle == "teacher":  # a float32 counterexample where the proven exact function keeps its class: rounding
        hits &= ~ms.exact_keeps_class(network, labels.label, np.asarray(again_cex, dtype=np.float64), hits)
    if hits.any() and record.verdict is not Verdict.REFUTED:
        refuted = True
        log.refutations.append(f"an independent attack found teacher counterexamples closer than the proven lower "
                               f"radius at {int(hits.sum())} sample point(s): the certificate's claim is refuted")
    log.notes.append("the teacher was attacked again at every sample point with another seed (u < l refutes)")
    if sampler is not None:
        results["holdout"] = ms.held_out(setup, labels, low)
    else:
        results["holdout"] = ms.HeldOut(np.asarray(arrays["holdout_confidence"], dtype=np.float64),
                                        np.asarray(arrays["holdout_member"], dtype=bool), record.holdout.radius,
                                        record.holdout.note)
        log.unchecked.append("the held-out check was not re-derived (no sampler)")
    expected, _ = ms.assemble(setup, results, record.timings)
    return expected, refuted


REPROVE_BATCH = 16


def _reprove(network, flat: np.ndarray, radius: np.ndarray, labels: np.ndarray, cfg: CertifySettings, timeout,
             what: str, log: _Log, executor=None) -> None:
    """Every recorded radius > 0 is proven again: by the bounds at once (on ``executor``, None: this process), then by
    branch and bound (``timeout`` s per point, in this process) on the ones the bounds leave open,
    :data:`REPROVE_BATCH` at a time, stopping at the first batch with a point it cannot prove (one unproven radius
    is enough to reject the certificate)."""
    from pacverify.verify.api import verify_points

    positive = np.nonzero(radius > 0)[0]
    if not positive.size:
        return
    kwargs: dict[str, Any] = dict(method=cfg.verify_method, domain=cfg.domain, seed=cfg.seed, attack=False)
    by_bounds = verify_points(network, flat[positive], radius[positive], cfg.norm, labels=labels[positive],
                              complete=False, executor=executor or "local", **kwargs)
    open_ = [i for i, v in zip(positive, by_bounds.verdicts, strict=True) if v.value != "verified"]
    for start in range(0, len(open_), REPROVE_BATCH):
        rows = np.asarray(open_[start:start + REPROVE_BATCH])
        result = verify_points(network, flat[rows], radius[rows], cfg.norm, labels=labels[rows], complete=True,
                               timeout=timeout or 2 * cfg.timeout, **kwargs)
        failed = [i for i, v in zip(rows, result.verdicts, strict=True) if v.value != "verified"]
        if failed:
            log.problems.append(f"recorded {what} were not re-proven (at least {len(failed)} of the "
                                f"{len(open_)} the bounds left open; first: r = {radius[failed[0]]:g})")
            return
    log.notes.append(f"all {positive.size} recorded {what} > 0 were re-proven")


# --- comparison --------------------------------------------------------------------------------------------------

def _compare(record: CertificateBody | MassCertificateBody, expected: CertificateBody | MassCertificateBody,
             log: _Log) -> None:
    got, want = record.to_dict(), expected.to_dict()
    for key in IGNORED:
        got.pop(key, None)
        want.pop(key, None)
    if isinstance(record, MassCertificateBody):  # the auto choice's cost estimate is a timing, not a claim
        for d in (got, want):
            d["oracle"].pop("reason", None)
            d["statements"].pop("oracle", None)
    got["files"]["teacher"].pop("path", None)  # the teacher may be named elsewhere on the command line
    want["files"]["teacher"].pop("path", None)
    for section, key in (("distillation", "onnx_parity_max_abs_diff"), ("files", "points")) if not \
            isinstance(record, MassCertificateBody) else (("files", "points"),):
        # the export's parity is a fact of that run (re-tested as the tie above); the side file's hash was checked
        got[section].pop(key, None)
        want[section].pop(key, None)
    diffs = _differences(got, want, "")
    for where, recorded, derived in diffs[:8]:
        log.problems.append(f"{where}: the certificate says {_short(recorded)}, the evidence gives {_short(derived)}")
    if len(diffs) > 8:
        log.problems.append(f"… and {len(diffs) - 8} more fields differ")
    if record.verdict is not expected.verdict:
        log.problems.append(f"the evidence gives {expected.verdict.value}, the certificate says {record.verdict.value}")


def _differences(a: Any, b: Any, where: str) -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _differences(a.get(key), b.get(key), f"{where}.{key}" if where else key)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{where}[{i}]")]
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return [] if math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-9) else [(where, a, b)]
    return [] if a == b else [(where, a, b)]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


__all__ = ["CheckResult", "Outcome", "check_certificate"]
