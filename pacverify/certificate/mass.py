"""The mathematics of mass mode (``--guarantee mass``): the confidence→robustness map M(κ) and what it certifies.

Pure functions on arrays (docs/theory.md, "Mass mode"). The ranges are R(ρ, κ) = {x : conf_T(x) ≥ κ and
rob_T(x) < ρ}: pre-images under x ↦ (rob_T(x), conf_T(x)) of quadrants of the plane, VC dimension 2, fixed by
the teacher before sampling. With ``lower[i]`` ≤ rob_T(x_i) at every sample point,
M(κ) = min{lower_i : conf_i ≥ κ} leaves R(M(κ), κ) without a sample point, so on the ε-net event
(probability ≥ 1 − η) its D_X-mass is < ε — for every κ at once.

* :func:`radius_at` — M(κ) at given κ values.
* :func:`confidence_steps` — M as a step function: its breakpoints.
* :func:`confident_fraction_lower` — the one-sided DKW lower bound p̲(κ) on Pr[conf_T ≥ κ], all κ at once.
* :func:`mass_verdict` — CERTIFIED / NOT_CERTIFIED / REFUTED at the requested (δ, κ).
* :func:`holdout_test` — the held-out check of the guarantee (Clopper–Pearson interval, binomial p-value).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from pacverify.certificate.schema import Verdict
from pacverify.errors import InputError

KAPPA_TABLE = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def _pairs(confidence: np.ndarray, lower: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    low = np.asarray(lower, dtype=np.float64).reshape(-1)
    if conf.shape != low.shape:
        raise InputError(f"confidences and lower radii must have one entry per point, got {conf.shape} and "
                         f"{low.shape}")
    if np.isnan(conf).any() or np.isnan(low).any():
        raise InputError("confidences and lower radii must not contain NaN")
    if (low < 0).any():
        raise InputError("lower radii must be >= 0")
    return conf, low


def radius_at(confidence: np.ndarray, lower: np.ndarray, kappa: float | np.ndarray) -> np.ndarray:
    """M(κ) = min{lower_i : confidence_i ≥ κ} at each κ (+inf where no point is κ-confident).

    Non-decreasing in κ. Sound as a robustness claim only through the ε-net theorem (docs/theory.md).

    >>> radius_at([0.6, 0.9, 0.95], [0.1, 0.3, 0.2], [0.5, 0.7, 0.92, 0.99]).tolist()
    [0.1, 0.2, 0.2, inf]
    """
    conf, low = _pairs(confidence, lower)
    kappas = np.atleast_1d(np.asarray(kappa, dtype=np.float64))
    order = np.argsort(conf, kind="stable")
    conf_sorted = conf[order]
    # suffix minima: tail[k] = min of lower over the points with the k-th smallest confidence and above
    tail = np.minimum.accumulate(low[order][::-1])[::-1] if low.size else low
    first = np.searchsorted(conf_sorted, kappas, side="left")
    out = np.full(kappas.shape, np.inf)
    inside = first < conf.size
    out[inside] = tail[first[inside]]
    return out


def confidence_steps(confidence: np.ndarray, lower: np.ndarray) -> list[tuple[float, float]]:
    """M as a step function: pairs (κ_k, M_k), κ ascending, meaning M(κ) = M_k for κ_{k−1} < κ ≤ κ_k
    (κ_0 = −∞), and M(κ) = +inf for κ above the last κ_k (the largest confidence in the sample).

    >>> confidence_steps([0.6, 0.9, 0.95], [0.1, 0.3, 0.2])
    [(0.6, 0.1), (0.95, 0.2)]
    """
    conf, low = _pairs(confidence, lower)
    if conf.size == 0:
        return []
    values = np.unique(conf)
    at = radius_at(conf, low, values)
    steps: list[tuple[float, float]] = []
    for k, value in zip(values, at, strict=True):
        if steps and steps[-1][1] == value:
            steps[-1] = (float(k), float(value))
        else:
            steps.append((float(k), float(value)))
    return steps


def dkw_margin(n: int, eta: float) -> float:
    """sqrt(ln(1/η) / (2n)): the one-sided DKW deviation (Massart 1990) that n i.i.d. draws reach with prob ≥ 1 − η."""
    if n <= 0:
        raise InputError("the DKW bound needs at least one point")
    return math.sqrt(math.log(1.0 / eta) / (2.0 * n))


def confident_fraction_lower(confidence: np.ndarray, kappa: float | np.ndarray, eta: float) -> np.ndarray:
    """p̲(κ) = (fraction of points with confidence ≥ κ) − :func:`dkw_margin`, floored at 0.

    By the one-sided Dvoretzky–Kiefer–Wolfowitz inequality with Massart's constant, applied to the
    distribution of −conf_T, Pr_{D_X}[conf_T ≥ κ] ≥ p̲(κ) for every κ at once with probability ≥ 1 − η.
    """
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    kappas = np.atleast_1d(np.asarray(kappa, dtype=np.float64))
    frac = (conf[None, :] >= kappas[:, None]).mean(1) if conf.size else np.zeros(kappas.shape)
    return np.maximum(frac - dkw_margin(conf.size, eta), 0.0)


def conditional_eps(eps: float, p_lower: np.ndarray) -> np.ndarray:
    """ε / p̲(κ) where p̲ > 0 (+inf otherwise): the bound on Pr[rob_T < M(κ) | conf_T ≥ κ]."""
    p = np.asarray(p_lower, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(p > 0, eps / np.where(p > 0, p, 1.0), np.inf)


@dataclass(frozen=True)
class MassEvidence:
    """What decides the mass-mode verdict: M(κ) at the requested κ and the oracle's consistency."""

    radius: float              # M(κ) at the requested κ
    delta: float
    inconsistent: int          # sample points with an attack distance u_i below the proven l_i


def mass_verdict(evidence: MassEvidence) -> tuple[Verdict, list[str]]:
    """REFUTED when some u_i < l_i (a counterexample closer than a proven radius: the oracle's claim is false);
    else CERTIFIED when M(κ) ≥ δ ({conf ≥ κ, rob < δ} ⊆ R(M(κ), κ), mass < ε on the ε-net event);
    else NOT_CERTIFIED. Edge: M(κ) = δ certifies (the range uses rob < ρ)."""
    e = evidence
    if e.inconsistent:
        return Verdict.REFUTED, [f"the teacher attack found a counterexample closer than the proven lower radius at "
                                 f"{e.inconsistent} sample point(s): the oracle's lower bound is false there"]
    if e.radius >= e.delta:
        return Verdict.CERTIFIED, [f"M(κ) = {e.radius:.6g} ≥ δ = {e.delta:g}"]
    return Verdict.NOT_CERTIFIED, [f"M(κ) = {e.radius:.6g} < δ = {e.delta:g}: a κ-confident sample point has a "
                                   f"proven radius below δ"]


@dataclass(frozen=True)
class HoldoutResult:
    """The held-out check: ``members`` of n fresh draws lie in R(M(κ), κ) (κ-confident, a teacher counterexample
    within M(κ)); ``rate`` = members / n with a two-sided Clopper–Pearson interval at ``confidence``;
    ``p_value`` = Pr[Bin(n, ε) ≥ members] (small: the mass is above ε — the guarantee failed)."""

    points: int
    confident: int
    attacked: int
    members: int
    rate: float | None
    interval: tuple[float, float] | None
    p_value: float | None
    significant: bool


def holdout_test(members: int, points: int, confident: int, attacked: int, eps: float, eta: float,
                 confidence: float = 0.95) -> HoldoutResult:
    """Counts → :class:`HoldoutResult`; ``significant`` when the p-value is below η."""
    if points <= 0:
        return HoldoutResult(0, 0, 0, 0, None, None, None, False)
    alpha = 1 - confidence
    lo = 0.0 if members == 0 else float(stats.beta.ppf(alpha / 2, members, points - members + 1))
    hi = 1.0 if members == points else float(stats.beta.ppf(1 - alpha / 2, members + 1, points - members))
    p_value = float(stats.binom.sf(members - 1, points, eps))
    return HoldoutResult(points, confident, attacked, members, members / points, (lo, hi), p_value, p_value < eta)
