"""The mathematics of the certificate beyond sample sizes: δ_T, coverage, verdicts.

Pure functions on arrays; the orchestration in :mod:`pacverify.certify` calls them.

* :func:`relaxed_delta` — the δ_T relaxation of Prop 4.3 of 004 as DESIGN.md §2 fixes it.
* :func:`coverage_lower_bound` — a finite-sample lower confidence bound on the fraction of
  D_X whose own δ-ball has mass ≥ ε (the part of D_X the PAC statement can speak about).
* :func:`decide_verdict` — CERTIFIED / NOT_CERTIFIED / REFUTED from the evidence.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
from scipy import stats

from pacverify.errors import InputError
from pacverify.validation import check_eps, check_probability


class Verdict(enum.Enum):
    """Outcome of ``pacverify certify`` / ``check``; ``exit_code`` is the CLI's (DESIGN.md §4)."""

    CERTIFIED = "CERTIFIED"
    NOT_CERTIFIED = "NOT_CERTIFIED"
    REFUTED = "REFUTED"

    @property
    def exit_code(self) -> int:
        return {"CERTIFIED": 0, "NOT_CERTIFIED": 1, "REFUTED": 3}[self.value]


def relaxed_delta(certified_radii: np.ndarray, rho: np.ndarray) -> float:
    """δ_T = min_i min(ρ_i, 1) · r_i / 3 (Prop 4.3 of 004, DESIGN.md §2).

    ``certified_radii`` (N,) are the student's proven radii r_i at the required points (0 where
    nothing is proven), ``rho`` (N,) the margin-gradient ratios ρ_i = ‖∇g_S‖ / ‖∇g_T‖. The
    teacher's local radius is min(ρ_i, 1)·r_i — shrunk when the student's margin is flatter than
    the teacher's, never enlarged past the student's. The /3 turns local radii at sample points
    into the global δ of Thm 4.4. An empty set of required points gives δ_T = 0 (nothing is
    claimed). NaN entries are refused; ρ = +inf (zero teacher gradient) counts as min(ρ, 1) = 1.
    """
    radii = np.asarray(certified_radii, dtype=np.float64).reshape(-1)
    rho = np.asarray(rho, dtype=np.float64).reshape(-1)
    if radii.shape != rho.shape:
        raise InputError(f"certified radii and rho must have one entry per point, got {radii.shape} and {rho.shape}")
    if np.isnan(radii).any() or np.isnan(rho).any():
        raise InputError("certified radii and rho must not contain NaN")
    if (radii < 0).any() or (rho < 0).any():
        raise InputError("certified radii and rho must be >= 0")
    if radii.size == 0:
        return 0.0
    return float(np.min(np.minimum(rho, 1.0) * radii) / 3.0)


def local_teacher_radii(certified_radii: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """The per-point teacher radii min(ρ_i, 1) · r_i of Prop 4.3 (before the /3 of Thm 4.4)."""
    return np.minimum(np.asarray(rho, dtype=np.float64), 1.0) * np.asarray(certified_radii, dtype=np.float64)


def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """One-sided exact (Clopper–Pearson) lower confidence bound for a binomial proportion.

    P(p < bound) ≤ alpha for every true p. Returns 0 for zero successes.
    """
    if trials <= 0 or not 0 <= successes <= trials:
        raise InputError(f"need 0 <= successes <= trials and trials > 0, got {successes} of {trials}")
    if successes == 0:
        return 0.0
    return float(stats.beta.ppf(alpha, successes, trials - successes + 1))


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
    """Exact lower confidence bound on the fraction of D_X whose own δ-ball has mass ≥ ε.

    Set-up: n test points x_j ~ D_X i.i.d., and for each an independent batch of ``batch``
    reference points from D_X; ``hits[j]`` counts the reference points of x_j's batch inside the
    δ-ball around x_j, so hits[j] ~ Bin(batch, p(x_j)) given x_j. Point j is *declared covered*
    when the Clopper–Pearson lower bound of p(x_j) at level ``alpha_point`` is ≥ ε. If
    p(x_j) < ε this happens with probability ≤ alpha_point, so the declared indicator has mean
    π ≤ q + alpha_point, where q = Pr[p(x) ≥ ε]. The declared indicators are i.i.d., hence with
    probability ≥ 1 − alpha, q ≥ CP_lower(declared, n, alpha) − alpha_point.
    """
    eps = check_eps(eps)
    alpha = check_probability(alpha, "alpha")
    alpha_point = check_probability(alpha_point, "alpha_point")
    hits = np.asarray(hits).reshape(-1)
    if hits.size == 0 or batch < 1:
        raise InputError("coverage needs at least one test point and a batch of at least one reference point")
    if (hits < 0).any() or (hits > batch).any():
        raise InputError(f"hits must lie in [0, batch={batch}]")
    mass_lower = np.array([clopper_pearson_lower(int(k), batch, alpha_point) for k in hits])
    declared = int((mass_lower >= eps).sum())
    lower = max(0.0, clopper_pearson_lower(declared, hits.size, alpha) - alpha_point) if declared else 0.0
    return CoverageBound(lower=lower, confidence=1.0 - alpha, points=int(hits.size), batch=int(batch),
                         declared=declared, alpha_point=alpha_point)


def ball_hits(centers: np.ndarray, references: np.ndarray, delta: float, norm: str) -> np.ndarray:
    """hits[j] = #{k : ‖references[j, k] − centers[j]‖ ≤ δ} for centers (n, m), references (n, M, m)."""
    diff = references - centers[:, None, :]
    dist = np.linalg.norm(diff, axis=2) if norm == "2" else np.abs(diff).max(axis=2)
    return (dist <= delta).sum(axis=1)


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
    unverified = int((~evidence.verified).sum())
    disagree = int((~evidence.agrees).sum())
    if unverified:
        reasons.append(f"{unverified} of {n} required points are not proven 3δ-robust for the student")
    if disagree:
        reasons.append(f"the student disagrees with the teacher at {disagree} of {n} required points")
    delta_claimed = not reasons
    refuted_delta = int(evidence.teacher_refuted_delta.sum()) if delta_claimed else 0
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
