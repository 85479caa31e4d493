"""Mass mode (``--guarantee mass``, docs/theory.md "Mass mode"): its stages and the certificate it assembles.

The sample is sized by the ε-net bound with VC dimension 2 (the ranges {x : conf_T(x) ≥ κ, rob_T(x) < ρ}), so it
does not grow with the input dimension. At every sample point an *oracle* gives a lower radius l_i ≤ rob_T(x_i):

* ``teacher`` — the teacher's own certified radius from pacverify's bound propagation (:data:`TEACHER_ORACLE`);
* ``student`` — the distilled student's certified radius carried to the teacher by Prop 4.3 of 004
  (:data:`STUDENT_ORACLE`; needs the transfer premises).

A bisected PGD attack on the teacher gives an upper radius u_i ≥ rob_T(x_i) (u_i < l_i refutes the oracle), and
fresh draws check the guarantee on held-out data. :func:`assemble` builds the
:class:`~pacverify.certificate.schema.MassCertificateBody` and the per-point arrays of ``points.npz``.
"""
from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from pacverify import pac
from pacverify._version import __version__
from pacverify.certificate import schema as S
from pacverify.certificate.mass import (
    KAPPA_TABLE,
    MassEvidence,
    conditional_eps,
    confidence_steps,
    confident_fraction_lower,
    dkw_margin,
    holdout_test,
    mass_verdict,
    radius_at,
)
from pacverify.certificate.statements import (
    DELTA_T_PREMISES,
    environment,
    holdout_sentence,
    mass_assumptions,
    mass_conditional_statement,
    mass_statement,
    quantiles,
    search_warning,
)
from pacverify.data import count_duplicates
from pacverify.pipeline.ball import _recorded_path
from pacverify.pipeline.runner import Stage
from pacverify.pipeline.stages import (
    DISTILL,
    EXPORT,
    FRESH,
    LABEL,
    SAMPLE,
    Exported,
    Labels,
    Sample,
    Setup,
    _student_network,
    confidence,
    margins_over,
    on_gpu,
    runner,
    teacher_logits_over,
)
from pacverify.progress import counter, prefixed

DEFAULT_HOLDOUT = 3000
SCOPE = ("The statement is about probability mass, not about balls: it bounds how much of D_X is κ-confident and "
         "not M(κ)-robust; it says nothing about a particular input and nothing where the teacher is not κ-confident.")
FORMULA = "delta_T = M(kappa) = min{ l_i : conf_T(x_i) >= kappa } (mass mode: the radius the mass statement is about)"


# --- lower radii ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Lower:
    """l_i ≤ rob_T(x_i) at every sample point (under the student oracle: under the transfer premises)."""

    lower: np.ndarray          # (s,)
    student_radius: np.ndarray  # (s,) the student's certified radius r_i (student oracle; empty otherwise)
    factor: np.ndarray         # (s,) min_j min((g_T/g_S)_j·ρ_j, 1) (student oracle; empty otherwise)
    time_s: float


@dataclass(frozen=True)
class _ChunkJob:
    """What every chunk of a per-point stage shares (put once into Ray's object store on that executor)."""

    model: Any
    flat: np.ndarray
    labels: np.ndarray
    norm: str
    domain: Any
    seed: int
    options: dict
    progress: Any = None  # in this process only: (done, total) over all points


def _over_chunks(setup: Setup, fn, job: _ChunkJob, part: str, *, within: bool = False, gpu: bool = False) -> list:
    """``fn(job, chunk)`` over the fixed chunks of :func:`pacverify.executor.chunk_ranges` on the run's executor,
    in chunk order. Each chunk is seeded from (seed, chunk index): the result does not depend on the executor.
    Progress: points per finished chunk, or (``within``, in this process) as ``fn`` reports them inside a chunk."""
    from pacverify.executor import LocalExecutor, chunk_ranges, map_points

    tick = counter(setup.ticker, part)
    on = runner(setup)
    if within and isinstance(on, LocalExecutor):
        return on.map_chunks(fn, replace(job, progress=tick), chunk_ranges(len(job.flat)))
    return map_points(on, fn, job, len(job.flat), progress=tick, gpu=gpu)


def _chunk_progress(job: _ChunkJob, start: int):
    if job.progress is None:
        return None
    return lambda done, total: job.progress(start + done, len(job.flat))


def _lower_chunk(job: _ChunkJob, chunk: tuple[int, int, int]) -> np.ndarray:
    """The teacher's proven radii at the chunk's points (:func:`~pacverify.verify.oracle.teacher_lower_radii`)."""
    from pacverify.executor import chunk_seed
    from pacverify.verify.oracle import teacher_lower_radii

    index, start, stop = chunk
    return np.asarray(teacher_lower_radii(job.model, job.flat[start:stop], job.labels[start:stop], job.norm,
                                          domain=job.domain, seed=chunk_seed(job.seed, index),
                                          progress=_chunk_progress(job, start), **job.options), dtype=np.float64)


def _upper_chunk(job: _ChunkJob, chunk: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Attack radii and counterexamples at the chunk's points (:func:`~pacverify.verify.oracle.attack_radii`)."""
    from pacverify.executor import chunk_seed
    from pacverify.verify.oracle import attack_radii

    index, start, stop = chunk
    upper, cex = attack_radii(job.model, job.flat[start:stop], job.labels[start:stop], job.norm, domain=job.domain,
                              seed=chunk_seed(job.seed, index), **job.options)
    return np.asarray(upper, dtype=np.float64), np.asarray(cex, dtype=np.float64)


def teacher_lower(setup: Setup, sample: Sample, labels: Labels) -> Lower:
    """The teacher's own certified radius at every point (the radius search with sound bounds, up to the cap), over
    the fixed chunks of points on the run's executor."""
    import time

    cfg = setup.cfg
    start = time.perf_counter()
    job = _ChunkJob(setup.teacher_network, sample.flat, labels.label, cfg.norm, cfg.domain, cfg.seed,
                    dict(cap=float(cfg.radius_cap or 2 * cfg.delta), tol=float(cfg.radius_tol or cfg.delta / 32),
                         method=cfg.verify_method))
    lower = np.concatenate(_over_chunks(setup, _lower_chunk, job, "lower radii (teacher)", within=True) or [np.zeros(0)])
    empty = np.zeros(0)
    return Lower(np.asarray(lower, dtype=np.float64), empty, empty, time.perf_counter() - start)


def student_lower(setup: Setup, sample: Sample, labels: Labels, exported: Exported) -> Lower:
    """l_i = min_j min((g_T/g_S)_j·ρ_j, 1)·r_i (Prop 4.3 of 004), r_i the student's certified radius for the
    teacher's class (0 where the student disagrees with the teacher)."""
    import time

    from pacverify.certificate.guarantee import teacher_radius_factor
    from pacverify.models import load_student
    from pacverify.verify.api import certified_radius

    cfg = setup.cfg
    start = time.perf_counter()
    result = certified_radius(_student_network(setup), sample.flat, cfg.norm, labels=labels.label,
                              method=cfg.verify_method, cap=float(cfg.radius_cap or 2 * cfg.delta),
                              tol=float(cfg.radius_tol or cfg.delta / 32), domain=cfg.domain, seed=cfg.seed,
                              attack=False, progress=prefixed(setup.ticker, "lower radii (student)"),
                              executor=runner(setup))
    radius = np.asarray(result.radius, dtype=np.float64)
    radius[exported.student_label != labels.label] = 0.0
    student = load_student(setup.out_dir / "student.pt")
    m = margins_over(setup, student, sample.points, labels.label, "lower radii (student): ρ")
    factor = teacher_radius_factor(m.rho, m.margin_ratio)
    return Lower(factor * radius, radius, factor, time.perf_counter() - start)


def _describe_lower(setup: Setup, *_: Any) -> str:
    return f"proving lower radii at {setup.samples} points with the {setup.oracle} oracle"


TEACHER_LOWER = Stage("lower", teacher_lower, Lower, needs=("sample", "label"), describe=_describe_lower)
STUDENT_LOWER = Stage("lower", student_lower, Lower, needs=("sample", "label", "export"), describe=_describe_lower)


# --- attack upper radii --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Upper:
    """u_i ≥ rob_T(x_i): the distance of the closest confirmed teacher counterexample found (+inf: none)."""

    upper: np.ndarray  # (s,)
    cex: np.ndarray    # (s, m), NaN rows where none
    time_s: float


def _teacher_model(setup: Setup):
    from pacverify.pipeline.teacher_check import TeacherModel

    return TeacherModel(setup.teacher, setup.input_shape, device=setup.device)


def teacher_upper(setup: Setup, sample: Sample, labels: Labels) -> Upper:
    """Bisected PGD on the teacher over radii in (0, cap]; the distance of each confirmed counterexample. Over the
    fixed chunks of points on the run's executor, each chunk's attack seeded from (seed, chunk index)."""
    import time

    cfg = setup.cfg
    start = time.perf_counter()
    job = _ChunkJob(_teacher_model(setup), sample.flat, labels.label, cfg.norm, cfg.domain, cfg.seed,
                    dict(hi=float(cfg.radius_cap or 2 * cfg.delta), steps=cfg.pgd_steps, restarts=cfg.pgd_restarts,
                         bisection=cfg.attack_bisection))
    parts = _over_chunks(setup, _upper_chunk, job, "upper radii", gpu=on_gpu(setup))
    upper = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0)
    cex = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, sample.flat.shape[1]))
    return Upper(np.asarray(upper, dtype=np.float64), np.asarray(cex, dtype=np.float64), time.perf_counter() - start)


UPPER = Stage("upper", teacher_upper, Upper, needs=("sample", "label"),
              describe=lambda setup, *_: "attacking the teacher for upper radii")


# --- held-out check ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HeldOut:
    confidence: np.ndarray  # (n,) conf_T at the fresh draws
    found: np.ndarray       # (n,) a teacher counterexample within M(κ) (κ-confident draws only)
    radius: float           # M(κ) attacked at
    note: str | None


def holdout_points(setup: Setup) -> int:
    """How many fresh draws the held-out check uses: ``cfg.holdout``, or up to 3000 as the source allows."""
    cfg = setup.cfg
    want = DEFAULT_HOLDOUT if cfg.holdout is None else cfg.holdout
    available = getattr(setup.sampler, "available_fresh", None)
    if available is not None:
        want = min(want, available(setup.samples))
    return max(int(want), 0)


def _holdout_chunk(job: _ChunkJob, chunk: tuple[int, int, int]) -> np.ndarray:
    """PGD at radius ``options["radius"]`` around the chunk's points for their labels: (B,) bool, a confirmed
    counterexample found. Seeded from (seed, chunk index)."""
    from pacverify.attacks import attack
    from pacverify.executor import chunk_seed

    index, start, stop = chunk
    options = dict(job.options)
    radius = options.pop("radius")
    result = attack(job.model, torch.as_tensor(job.flat[start:stop]), torch.as_tensor(job.labels[start:stop]),
                    radius, norm=job.norm, domain=job.domain, seed=chunk_seed(job.seed, index), starts="spread",
                    **options)
    return result.found.cpu().numpy()


def held_out(setup: Setup, labels: Labels, lower: Lower) -> HeldOut:
    """Fresh draws disjoint from the sample: the κ-confident ones are attacked at radius M(κ); a confirmed
    counterexample makes the draw a member of R(M(κ), κ) (docs/theory.md). The labelling and the attack run over
    the fixed chunks of draws on the run's executor, each chunk's attack seeded from (seed, chunk index)."""
    cfg = setup.cfg
    n = holdout_points(setup)
    radius = float(radius_at(labels.confidence, lower.lower, cfg.kappa)[0])
    if n == 0:
        why = "holdout = 0" if cfg.holdout == 0 else "the data file has no rows to spare beyond the sample"
        return HeldOut(np.zeros(0), np.zeros(0, bool), radius, f"not run: {why}")
    points = setup.sampler.fresh(n, after=setup.samples)
    logits = teacher_logits_over(setup, points, "held-out: labelling")
    conf = confidence(logits)
    found = np.zeros(n, bool)
    idx = np.nonzero(conf >= cfg.kappa)[0]
    if idx.size and 0 < radius < np.inf:
        job = _ChunkJob(_teacher_model(setup), points.reshape(n, -1)[idx].astype(np.float64),
                        logits.argmax(1).numpy()[idx], cfg.norm, cfg.domain, cfg.seed,
                        dict(radius=radius, steps=cfg.pgd_steps, restarts=cfg.pgd_restarts))
        found[idx] = np.concatenate(_over_chunks(setup, _holdout_chunk, job, "held-out: attack",
                                                 gpu=on_gpu(setup)))
    note = None if 0 < radius < np.inf else f"M(κ) = {radius:g}: the range R(M(κ), κ) holds no input to attack"
    return HeldOut(conf, found, radius, note)


HOLDOUT = Stage("holdout", held_out, HeldOut, needs=("label", "lower"),
                describe=lambda setup, *_: f"held-out check on {holdout_points(setup)} fresh draws")


TEACHER_ORACLE = (SAMPLE, LABEL, TEACHER_LOWER, UPPER, HOLDOUT)
STUDENT_ORACLE = (SAMPLE, LABEL, FRESH, DISTILL, EXPORT, STUDENT_LOWER, UPPER, HOLDOUT)


def mass_mode(oracle: str) -> tuple[Stage, ...]:
    """The stages of mass mode for the oracle that runs ("teacher" or "student")."""
    return TEACHER_ORACLE if oracle == "teacher" else STUDENT_ORACLE


# --- the certificate -----------------------------------------------------------------------------------------------

EXACT_TIE = 1e-10  # relative float64 margin within which the exact function's evaluation counts as a tie


def exact_keeps_class(network, labels: np.ndarray, cex: np.ndarray, closer: np.ndarray) -> np.ndarray:
    """(s,) bool: at which of the points ``closer`` (a teacher counterexample closer than the proven radius) the
    exact function the teacher oracle proves (``network``, the teacher's graph in float64) keeps the class at the
    counterexample: its margin there is > −EXACT_TIE·(1 + max |logit|) (a float64 tie or better). There the
    counterexample comes from the float32 evaluation of the teacher, not from a false proof; elsewhere (margin
    clearly negative) the proof is contradicted. No network: none."""
    keeps = np.zeros(len(closer), dtype=bool)
    rows = np.nonzero(closer & np.isfinite(cex).all(axis=1))[0] if cex.size else np.zeros(0, dtype=np.int64)
    if network is None or rows.size == 0:
        return keeps
    with torch.no_grad():
        logits = network(torch.as_tensor(cex[rows], dtype=torch.float64).to(network.dtype)).double()
    label = torch.as_tensor(labels[rows], dtype=torch.long)
    own = logits.gather(1, label[:, None])[:, 0]
    others = logits.scatter(1, label[:, None], -torch.inf).amax(1)
    scale = 1 + logits.abs().amax(1)
    keeps[rows] = ((own - others) > -EXACT_TIE * scale).numpy()
    return keeps


def confidence_map(confidence: np.ndarray, lower: np.ndarray, kappa: float, eps: float, eta: float) -> S.ConfidenceMap:
    """M(κ) at the requested κ, as a step function and as a table with p̲(κ) and ε/p̲(κ)."""
    table = np.asarray(KAPPA_TABLE, dtype=np.float64)
    radii = radius_at(confidence, lower, table)
    p_lower = confident_fraction_lower(confidence, table, eta)
    cond = conditional_eps(eps, p_lower)
    counts = [(np.asarray(confidence) >= k).sum() for k in table]
    rows = [S.MapRow(float(k), float(r), int(c), float(p), float(e))
            for k, r, c, p, e in zip(table, radii, counts, p_lower, cond, strict=True)]
    return S.ConfidenceMap(kappa=kappa, radius=float(radius_at(confidence, lower, kappa)[0]),
                           steps=[[k, m] for k, m in confidence_steps(confidence, lower)], table=rows,
                           dkw_margin=dkw_margin(len(confidence), eta))


def assemble(setup: Setup, results: dict[str, Any],
             timings: Mapping[str, float | str | None]) -> tuple[S.MassCertificateBody, dict]:
    """The mass-mode certificate body (``files.points`` and ``integrity`` filled in when written) and its arrays."""
    cfg, s = setup.cfg, setup.samples
    labels, low, up, hold = results["label"], results["lower"], results["upper"], results["holdout"]
    oracle = setup.oracle
    cmap = confidence_map(labels.confidence, low.lower, cfg.kappa, cfg.eps, cfg.eta)
    closer = up.upper < low.lower
    rounding = exact_keeps_class(setup.teacher_network, labels.label, up.cex, closer) if oracle == "teacher" \
        else np.zeros_like(closer)
    contradicted = closer & ~rounding
    inconsistent = int(contradicted.sum())
    verdict, reasons = mass_verdict(MassEvidence(cmap.radius, cfg.delta, inconsistent))
    if inconsistent:  # show the pair: the point, its proven radius and the closer counterexample (points.npz)
        i = int(np.argmax(contradicted))
        reasons.append(f"first at sample point {i}: proven l_i = {low.lower[i]:.6g} but a confirmed teacher "
                       f"counterexample at distance u_i = {up.upper[i]:.6g} (points.npz: upper_cex)")
    p_here = float(confident_fraction_lower(labels.confidence, cfg.kappa, cfg.eta)[0])
    cond_here = float(conditional_eps(cfg.eps, np.array([p_here]))[0])
    confident = hold.confidence >= cfg.kappa
    test = holdout_test(int(hold.found.sum()), len(hold.confidence), int(confident.sum()),
                        int(confident.sum()) if 0 < hold.radius < np.inf else 0, cfg.eps, cfg.eta)
    holdout = S.Holdout(points=test.points, confident=test.confident, attacked=test.attacked, members=test.members,
                        radius=hold.radius, rate=test.rate, interval=None if test.interval is None
                        else list(test.interval), p_value=test.p_value, significant=test.significant, note=hold.note)
    warnings = []
    if test.significant:
        warnings.append(f"the held-out violation rate {test.rate:.4g} is significantly above ε = {cfg.eps:g} "
                        f"(p = {test.p_value:.3g} < η): the guarantee failed on held-out data")
    if inconsistent:
        warnings.append(f"{inconsistent} sample point(s) have a teacher counterexample closer than the proven lower "
                        "radius (u_i < l_i): the oracle is wrong there")
    if rounding.any():
        i = int(np.argmax(rounding))
        warnings.append(f"{int(rounding.sum())} sample point(s) have a counterexample of the teacher as it runs "
                        f"(float32) closer than the proven radius, at which the exact function of its graph — what "
                        f"the teacher oracle proves — keeps its class (first: point {i}, l_i = {low.lower[i]:.6g}, "
                        f"u_i = {up.upper[i]:.6g}): the float32 teacher's rounding error decides the class there, "
                        f"within its logit agreement with the exact function")
    if "distill" in results:
        warnings += search_warning(results["distill"].summary.get("auto"))
    exported = results.get("export")
    student_disagrees = None if exported is None else int((exported.student_label != labels.label).sum())
    premises = list(DELTA_T_PREMISES) if oracle == "student" else []
    record = S.MassCertificateBody(
        schema=S.MASS_SCHEMA,
        tool=S.Tool("pacverify", __version__),
        verdict=verdict,
        reasons=reasons,
        statements=S.MassStatements(
            pac=mass_statement(delta=cfg.delta, eps=cfg.eps, eta=cfg.eta, kappa=cfg.kappa, radius=cmap.radius,
                               samples=s, norm=cfg.norm, bound=str(cfg.bound), oracle=oracle, tv=cfg.tv),
            conditional=mass_conditional_statement(eta=cfg.eta, kappa=cfg.kappa, radius=cmap.radius, p_lower=p_here,
                                                   cond_eps=cond_here, margin=cmap.dkw_margin, samples=s),
            assumptions=mass_assumptions(oracle=oracle, source_kind=setup.source["kind"], tv=cfg.tv,
                                         premises=tuple(premises)),
            oracle=f"{oracle} oracle: {setup.oracle_reason}",
            holdout=holdout_sentence(_plain(holdout), cfg.eps, cfg.eta, cfg.kappa),
            scope=SCOPE),
        pac=S.MassParameters(guarantee="mass", delta=cfg.delta, eps=cfg.eps, eta=cfg.eta, kappa=cfg.kappa,
                             norm=cfg.norm, dim=setup.dim,
                             vc_dimension=pac.vc_dimension(setup.dim, cfg.norm, guarantee="mass"),
                             bound=str(cfg.bound), samples=s, samples_required=setup.samples_required, tv=cfg.tv,
                             shifted_eps=pac.shifted_eps(cfg.eps, cfg.tv), n_classes=labels.n_classes),
        files=S.MassFiles(
            teacher=S.FileRef(_recorded_path(setup.teacher_path, setup.out_dir), setup.teacher_hash),
            student_onnx=None if exported is None else S.FileRef("student.onnx", exported.onnx_sha256),
            student_pt=None if exported is None else S.FileRef("student.pt", exported.student_pt_sha256),
            data=S.DataSource(**setup.source, duplicates=count_duplicates(results["sample"].points)),
            points=S.FileRef("points.npz", None)),
        warnings=warnings,
        settings=S.MassSettings(
            seed=cfg.seed, arch=cfg.arch, trust_pickle=cfg.trust_pickle, oracle=cfg.oracle,
            verify_method=cfg.verify_method,
            radius_search=S.RadiusSearch(float(cfg.radius_cap or 0.0), float(cfg.radius_tol or 0.0)),
            attack=S.MassAttackSettings(cfg.pgd_steps, cfg.pgd_restarts, cfg.attack_bisection),
            holdout=holdout_points(setup), domain=None if cfg.domain is None else list(cfg.domain),
            device=cfg.device, allow_duplicates=cfg.allow_duplicates, student=cfg.student, method=cfg.method,
            epochs=cfg.epochs, distill_options=dict(cfg.distill_options), outputs=cfg.outputs),
        oracle=S.Oracle(requested=cfg.oracle, used=oracle, reason=setup.oracle_reason, method=cfg.verify_method,
                        cap=float(cfg.radius_cap or 0.0), tol=float(cfg.radius_tol or 0.0),
                        proven=int((low.lower > 0).sum()), lower_quantiles=quantiles(low.lower),
                        upper_quantiles=quantiles(up.upper), attacked_found=int(np.isfinite(up.upper).sum()),
                        inconsistent=inconsistent, student_disagrees=student_disagrees, premises=premises),
        confidence_map=cmap,
        relaxation=S.MassRelaxation(delta_T=cmap.radius, formula=FORMULA),
        holdout=holdout,
        timings={**timings, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
        environment=S.Environment(**environment(str(setup.device), setup.executor)),
        integrity=S.Integrity(""),
    )
    arrays = {"points": results["sample"].points, "teacher_label": labels.label,
              "teacher_confidence": labels.confidence, "lower": low.lower, "upper": up.upper,
              "upper_cex_index": np.nonzero(np.isfinite(up.upper))[0],
              "upper_cex": up.cex[np.isfinite(up.upper)],
              "holdout_confidence": hold.confidence, "holdout_member": hold.found}
    if oracle == "student":
        assert exported is not None
        arrays.update(student_label=exported.student_label, student_radius=low.student_radius,
                      teacher_radius_factor=low.factor)
    return record, arrays


def _plain(section: Any) -> dict:
    import dataclasses

    return dataclasses.asdict(section)
