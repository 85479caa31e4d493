"""The mathematics of the certificate beyond sample sizes: δ_T, coverage, verdicts.

Pure functions on arrays; the pipeline stages (:mod:`pacverify.pipeline.stages`) call them.

* :func:`relaxed_delta` — the δ_T relaxation of Prop 4.3 of 004 as DESIGN.md §2 fixes it.
* :func:`coverage_lower_bound` — a finite-sample lower confidence bound on the fraction of
  D_X whose own δ-ball has mass ≥ ε (the part of D_X the PAC statement can speak about).
* :func:`decide_verdict` — CERTIFIED / NOT_CERTIFIED / REFUTED from the evidence.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from pacverify.certificate.schema import Verdict
from pacverify.errors import InputError
from pacverify.norms import vector_norm
from pacverify.validation import check_probability


def teacher_radius_factor(rho: np.ndarray, margin_ratio: np.ndarray | None = None) -> np.ndarray:
    """Per point, min over runner-ups j of min((g_T/g_S)_j · ρ_j, 1) (Prop 4.3 of 004, DESIGN.md §2).

    ``rho`` and ``margin_ratio`` have shape (N,) or (N, J) (one column per runner-up class); a missing
    ``margin_ratio`` is taken as 1 (equal margins). Under the premises of Prop 4.3 (equal classes, both
    models affine on the ball with parallel margin gradients) the teacher's radius for margin j is
    (g_T/g_S)·ρ_j times the student's, which is at least the student's certified radius r_i; the factor
    is capped at 1 (never enlarged past the student's). ρ = +inf (zero teacher gradient) caps at 1; a
    margin ratio ≤ 0 (the student's margin not positive) gives 0. NaN is refused.
    """
    rho = np.asarray(rho, dtype=np.float64)
    ratio = np.ones_like(rho) if margin_ratio is None else np.asarray(margin_ratio, dtype=np.float64)
    if rho.shape != ratio.shape:
        raise InputError(f"rho and the margin ratios must have the same shape, got {rho.shape} and {ratio.shape}")
    if np.isnan(rho).any() or np.isnan(ratio).any():
        raise InputError("rho and the margin ratios must not contain NaN")
    if (rho < 0).any():
        raise InputError("rho must be >= 0")
    with np.errstate(invalid="ignore"):
        factor = np.where(ratio > 0, np.minimum(np.where(np.isinf(rho), 1.0, ratio * rho), 1.0), 0.0)
    return factor if factor.ndim == 1 else (factor.min(axis=1) if factor.shape[1] else np.ones(len(factor)))


def local_teacher_radii(certified_radii: np.ndarray, rho: np.ndarray,
                        margin_ratio: np.ndarray | None = None) -> np.ndarray:
    """The per-point teacher radii of Prop 4.3, :func:`teacher_radius_factor` · r_i (before the /3 of Thm 4.4)."""
    radii = np.asarray(certified_radii, dtype=np.float64).reshape(-1)
    factor = teacher_radius_factor(rho, margin_ratio)
    if radii.shape != factor.shape:
        raise InputError(f"certified radii and rho must have one entry per point, got {radii.shape} and "
                         f"{np.shape(rho)}")
    if np.isnan(radii).any():
        raise InputError("certified radii must not contain NaN")
    if (radii < 0).any():
        raise InputError("certified radii must be >= 0")
    return factor * radii


def relaxed_delta(certified_radii: np.ndarray, rho: np.ndarray, margin_ratio: np.ndarray | None = None) -> float:
    """δ_T = min_i min_j min((g_T/g_S)_j·ρ_ij, 1)·r_i / 3 (Prop 4.3 of 004, DESIGN.md §2).

    ``certified_radii`` (N,) are the student's proven radii r_i at the required points (0 where
    nothing is proven); ``rho`` and ``margin_ratio`` as in :func:`teacher_radius_factor`. The /3 turns
    local radii at sample points into the global δ of Thm 4.4. No required point gives δ_T = 0.

    >>> round(relaxed_delta([2.2 + 3.0], [1.0], [2.2 / 5.2]), 6)  # teacher margin x1, student x1 + 3, at x1 = 2.2
    0.733333
    """
    local = local_teacher_radii(certified_radii, rho, margin_ratio)
    return float(local.min() / 3.0) if local.size else 0.0


def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """One-sided exact (Clopper–Pearson) lower confidence bound for a binomial proportion.

    P(p < bound) ≤ alpha for every true p. Returns 0 for zero successes.
    """
    if trials <= 0 or not 0 <= successes <= trials:
        raise InputError(f"need 0 <= successes <= trials and trials > 0, got {successes} of {trials}")
    if successes == 0:
        return 0.0
    # the lower end of the two-sided exact interval at level 1 - 2·alpha is the one-sided bound at level alpha
    return float(stats.binomtest(successes, trials).proportion_ci(1 - 2 * alpha, method="exact").low)


def clopper_pearson_lower_many(successes: np.ndarray, trials: int, alpha: float) -> np.ndarray:
    """:func:`clopper_pearson_lower` for many success counts at once (the same exact bound, vectorised:
    the alpha-quantile of Beta(k, n − k + 1), 0 where k = 0)."""
    k = np.asarray(successes, dtype=np.float64).reshape(-1)
    with np.errstate(invalid="ignore"):
        out = stats.beta.ppf(alpha, np.maximum(k, 1), trials - k + 1)
    return np.where(k > 0, out, 0.0)


@dataclass(frozen=True)
class CoverageBound:
    """Lower confidence bound on q = Pr_{x~D_X}[ mass of the δ-ball around x ≥ ε ].

    ``lower`` holds with probability ≥ ``confidence`` over the Monte Carlo draws.
    """

    lower: float
    confidence: float
    points: int
    batch: int
    declared: int
    alpha_point: float

    def as_dict(self) -> dict:
        return {"lower": self.lower, "confidence": self.confidence, "points": self.points, "batch": self.batch,
                "declared_covered": self.declared, "alpha_point": self.alpha_point}


def coverage_lower_bound(hits: np.ndarray, batch: int, eps: float, *, alpha: float = 0.01,
                         alpha_point: float = 0.01) -> CoverageBound:
    """Exact lower confidence bound on q = Pr_{x~D_X}[ p(x) ≥ ε ] for a per-point mass p(x) seen through hits.

    Set-up: n test points x_j ~ D_X i.i.d., and for each an independent batch of ``batch`` reference
    points from D_X; ``hits[j]`` counts the reference points of x_j's batch that fall in the set whose
    mass p(x_j) is meant (for the PAC statement: the κ-confident part of the δ-ball around x_j), so
    hits[j] ~ Bin(batch, p(x_j)) given x_j. Point j is *declared covered* when the Clopper–Pearson
    lower bound of p(x_j) at level ``alpha_point`` is ≥ ε. If p(x_j) < ε this happens with
    probability ≤ alpha_point, so the declared indicator has mean π ≤ q + alpha_point. The declared
    indicators are i.i.d., hence with probability ≥ 1 − alpha, q ≥ CP_lower(declared, n, alpha) − alpha_point.
    ``eps`` may be any threshold in (0, 1] (ε, or ε + 2Λ for a shifted distribution).
    """
    eps = _in_unit_interval(eps, "coverage threshold")
    alpha = check_probability(alpha, "alpha")
    alpha_point = check_probability(alpha_point, "alpha_point")
    hits = np.asarray(hits).reshape(-1)
    if hits.size == 0 or batch < 1:
        raise InputError("coverage needs at least one test point and a batch of at least one reference point")
    if (hits < 0).any() or (hits > batch).any():
        raise InputError(f"hits must lie in [0, batch={batch}]")
    mass_lower = clopper_pearson_lower_many(hits, batch, alpha_point)
    declared = int((mass_lower >= eps).sum())
    lower = max(0.0, clopper_pearson_lower(declared, hits.size, alpha) - alpha_point) if declared else 0.0
    return CoverageBound(lower=lower, confidence=1.0 - alpha, points=int(hits.size), batch=int(batch),
                         declared=declared, alpha_point=alpha_point)


def shifted_coverage(hits: np.ndarray, batch: int, eps: float, tv: float, **kwargs) -> dict:
    """Coverage for any D' with TV(D_X, D') ≤ Λ = ``tv`` (Obs 4.5), from draws of D_X.

    A confident part of D_X-mass ≥ ε + 2Λ has D'-mass ≥ ε + Λ, and D' gives any event at least its
    D_X-probability minus Λ; so :func:`coverage_lower_bound` at threshold ε + 2Λ, minus Λ, bounds the fraction
    of D' whose own ball's confident part has D'-mass ≥ ε + Λ. ``tv = 0`` is the plain bound at ε.
    Returns the certificate's ``coverage`` section (``threshold`` = ε + 2Λ).
    """
    threshold = eps + 2 * tv
    bound = coverage_lower_bound(hits, batch, threshold, **kwargs)
    return dict(bound.as_dict(), lower=max(0.0, bound.lower - tv), threshold=threshold, note=None)


def _in_unit_interval(value: float, name: str) -> float:
    out = check_probability(value, name)
    if out <= 0:
        raise InputError(f"{name} must lie in (0, 1], got {value!r}")
    return out


def ball_hits(centers: np.ndarray, references: np.ndarray, delta: float, norm: str,
              counted: np.ndarray | None = None) -> np.ndarray:
    """hits[j] = #{k : ‖references[j, k] − centers[j]‖ ≤ δ and counted[j, k]} for centers (n, m), references
    (n, M, m) and an optional (n, M) bool mask ``counted`` (e.g. the teacher is κ-confident at the reference)."""
    inside = vector_norm(references - centers[:, None, :], norm, axis=2) <= delta
    return (inside if counted is None else inside & np.asarray(counted, dtype=bool)).sum(axis=1)


@dataclass(frozen=True)
class Evidence:
    """What the verdict depends on, per required (κ-confident) point; arrays of shape (N,)."""

    verified: np.ndarray          # student proven 3δ-robust
    agrees: np.ndarray            # student argmax == teacher argmax
    teacher_refuted_delta: np.ndarray    # a teacher counterexample within 3δ
    teacher_refuted_delta_t: np.ndarray  # a teacher counterexample within 3·δ_T


def decide_verdict(evidence: Evidence) -> tuple[Verdict, list[str]]:
    """CERTIFIED iff every required point is verified and agreed on and no claim is contradicted.

    * REFUTED when the teacher has a counterexample inside a ball the certificate claims: the
      3δ-balls when the δ statement is made, the 3·δ_T-balls whenever δ_T > 0 is reported
      (callers pass all-False for δ_T when δ_T = 0).
    * NOT_CERTIFIED when some required point is not verified (falsified or unknown) or the
      student disagrees with the teacher there (condition 14a of 004 fails).
    * An empty set of required points is NOT_CERTIFIED: nothing was checked, nothing is claimed.
    Returns the verdict and the reasons (sentences) behind it.
    """
    n = len(evidence.verified)
    reasons: list[str] = []
    if n == 0:
        return Verdict.NOT_CERTIFIED, ["no sample point is κ-confident for the teacher: nothing could be checked"]
    unverified = int((~evidence.verified & evidence.agrees).sum())
    disagree = int((~evidence.agrees).sum())
    if unverified:
        reasons.append(f"{unverified} of {n} required points are not proven 3δ-robust for the student (counting only "
                       "points where it agrees with the teacher)")
    if disagree:
        reasons.append(f"the student disagrees with the teacher at {disagree} of {n} required points (these count as "
                       "unproven)")
    delta_claimed = not reasons
    found_delta = np.asarray(evidence.teacher_refuted_delta, dtype=bool)
    if not delta_claimed and found_delta.any():  # no claim to refute, but the transfer visibly fails there
        proven = int((found_delta & evidence.verified & evidence.agrees).sum())
        reasons.append(f"the teacher attack found counterexamples within 3δ at {int(found_delta.sum())} required "
                       f"points, {proven} of them proven 3δ-robust for the student: the transfer assumptions fail "
                       "there")
    refuted_delta = int(found_delta.sum()) if delta_claimed else 0
    refuted_t = int(evidence.teacher_refuted_delta_t.sum())
    if refuted_delta or refuted_t:
        parts = []
        if refuted_delta:
            parts.append(f"{refuted_delta} of the claimed 3δ-balls")
        if refuted_t:
            parts.append(f"{refuted_t} of the claimed 3·δ_T-balls")
        return Verdict.REFUTED, reasons + [f"the teacher attack found counterexamples in {' and '.join(parts)}"]
    if reasons:
        return Verdict.NOT_CERTIFIED, reasons
    return Verdict.CERTIFIED, [f"all {n} required points are proven 3δ-robust for the student, which agrees with "
                               "the teacher there, and the teacher attack found no counterexample"]
