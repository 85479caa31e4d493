"""PAC sample sizes for ε-nets of δ-balls, their inverses, the TV shift and the PAC sentence.

Pure functions, no I/O. The mathematics is DESIGN.md §2:

* Thm 3.8 of 004 (Mitzenmacher & Upfal): an i.i.d. sample of size
  ``s >= 8d/ε · ln(16d/ε) + 4/ε · ln(2/η)`` is an ε-net with probability ≥ 1 − η for a range
  space of VC dimension d, for 0 < ε, η ≤ 1/2.
* Thm 4.4 of 004 (Eq 10): for L2 balls in R^m, d = m + 1 (Dudley 1979).
* Obs 4.5 of 004: an ε-net for D is an (ε + Λ)-net for every D' with TV(D, D') ≤ Λ.
* The tight ε-net bound (``bound="tight"``, docs/theory.md): the double-sampling proof of the ε-net theorem
  (Haussler–Welzl; Mitzenmacher & Upfal, proof of Thm 14.8) with Sauer's lemma kept as the sum Φ_d(2s),
  ``s >= 2/(ε ln 2) · (ln(1/η) + ln Φ_d(2s) − ln(1 − e^{−εs/8}))``.
* Mass mode (``guarantee="mass"``): the ranges {x : conf_T(x) ≥ κ, rob_T(x) < ρ} are pre-images of quadrants
  of the plane, VC dimension 2 whatever the input dimension.
"""
from __future__ import annotations

import math
import struct
import sys

from pacverify.errors import InputError
from pacverify.names import BOUNDS, GUARANTEES
from pacverify.validation import (
    check_choice,
    check_delta,
    check_dim,
    check_eps,
    check_eta,
    check_kappa,
    check_norm,
    check_samples,
    check_tv,
)

# Relative slack that makes the ceiling in sample_size conservative: float64 evaluates the bound
# to ~1e-15 relative error, so a value that lies just below an integer in floating point may lie
# just above it exactly. Rounding up past that band can only add one sample, never remove one.
_CEIL_SLACK = 1e-12

# The tight bound evaluates ln Φ_d(2s) from lgamma differences (ln C(n, k) for n up to 2s): their rounding
# error, relative to the bound, stays far below 1e-12 for d ≤ n of practical size, but a cancellation of two
# values near n·ln n is involved, so a wider conservative band is used than for Thm 3.8. It can add one sample
# (when the bound lies within 1e-10·s below an integer), never remove one.
_TIGHT_SLACK = 1e-10

TYPICAL_DATASET_ROWS = 1_000_000

#: The bound each guarantee uses when none is named (DESIGN.md §2; the command line and certify follow it).
DEFAULT_BOUND = {"ball": "thm38", "mass": "tight"}

#: The inequality behind each bound, in words for output (d: VC dimension).
BOUND_FORMULAS = {
    "thm38": "Thm 3.8 of 004: s >= 8d/eps*ln(16d/eps) + 4/eps*ln(2/eta)",
    "tight": "double-sampling eps-net bound: s >= 2/(eps*ln 2)*(ln(1/eta) + ln Phi_d(2s) - ln(1 - exp(-eps*s/8))), "
             "Phi_d(n) = sum_{i<=d} C(n, i)",
}

_LN2 = math.log(2.0)


def _check_bound(bound: str) -> str:
    return check_choice(bound, BOUNDS, "bound")


def _check_guarantee(guarantee: str) -> str:
    return check_choice(guarantee, GUARANTEES, "guarantee")


def _check_vc(d: int) -> int:
    return check_dim(d, "VC dimension (d)")


def vc_dimension(dim: int, norm: str | float = "2", guarantee: str = "ball") -> int:
    """VC dimension d used for the range space of the guarantee: radius-δ balls in R^dim, or mass mode's ranges.

    * ``guarantee='mass'``: d = 2, whatever ``dim`` and ``norm``. The ranges {x : conf_T(x) ≥ κ, rob_T(x) < ρ}
      are pre-images under x ↦ (rob_T(x), conf_T(x)) of the quadrants [0, ρ) × [κ, 1] of the plane; these
      quadrants have VC dimension 2 and a pre-image cannot shatter more (docs/theory.md, "Mass mode").
    * ``norm='2'``: d = dim + 1, the VC dimension of all closed Euclidean balls in R^dim
      (Dudley 1979), as in Thm 4.4 / Eq 10 of 004.
    * ``norm='inf'``: d = 2·dim. An L∞ ball is an axis-parallel box, and axis-parallel boxes in
      R^dim have VC dimension 2·dim; a sub-family cannot shatter more, so 2·dim is a sound
      upper bound. (004 states only the L2 case; using dim + 1 for cubes would be unproven.)

    >>> vc_dimension(784), vc_dimension(784, "inf"), vc_dimension(784, guarantee="mass")
    (785, 1568, 2)
    """
    dim = check_dim(dim)
    norm = check_norm(norm)
    if _check_guarantee(guarantee) == "mass":
        return 2
    return dim + 1 if norm == "2" else 2 * dim


def _bound(d: int, eps: float, eta: float) -> float:
    """The real-valued right-hand side of Eq 5 of 004."""
    return 8.0 * d / eps * math.log(16.0 * d / eps) + 4.0 / eps * math.log(2.0 / eta)


def _check_count(value: int, name: str) -> int:
    """A non-negative integer (bools refused), for the arguments of :func:`log_phi`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def _log_falling(n: int, k: int) -> float:
    """ln(n·(n−1)···(n−k+1)) = ln(n!/(n−k)!) for 0 ≤ k ≤ n, accurate to a few ulps of the result for small k."""
    if k <= 4096:
        return k * math.log(n) + math.fsum(math.log1p(-j / n) for j in range(1, k))
    return math.lgamma(n + 1) - math.lgamma(n - k + 1)


def log_phi(d: int, n: int) -> float:
    """ln Φ_d(n), Φ_d(n) = Σ_{i=0..min(d, n)} C(n, i): Sauer's lemma's bound on the number of distinct ranges
    a range space of VC dimension d cuts out of n points. Φ_d(n) = 2^n when d ≥ n.

    Computed in log space: the largest term C(n, k), k = min(d, ⌊n/2⌋), from log-gamma differences, and the
    others as ratios to it, walking away from the peak (the ratios shrink monotonically there) until the rest of
    the sum is below 1e-17 of it (a geometric tail bound), so the cost is a few terms when n ≫ d.

    >>> round(log_phi(2, 10), 12) == round(math.log(1 + 10 + 45), 12), log_phi(5, 3) == 3 * math.log(2)
    (True, True)
    >>> log_phi(0, 7)
    0.0
    """
    d, n = _check_count(d, "d"), _check_count(n, "n")
    if d >= n:
        return n * _LN2
    peak = min(d, n // 2)  # C(n, i) increases up to i = n/2 and decreases after it
    log_top = _log_falling(n, peak) - math.lgamma(peak + 1)
    total = 1.0
    term, i = 1.0, peak  # downward: C(n, i−1)/C(n, i) = i/(n−i+1), decreasing as i decreases
    while i > 0:
        ratio = i / (n - i + 1)
        term *= ratio
        total += term
        i -= 1
        if ratio < 0.5 and term < 1e-17 * total:  # the rest is < term·ratio/(1−ratio) <= term
            break
    term, i = 1.0, peak  # upward to d (only when the peak is n/2 < d): ratio (n−i)/(i+1), decreasing in i
    while i < d:
        ratio = (n - i) / (i + 1)
        term *= ratio
        total += term
        i += 1
        if ratio < 0.5 and term < 1e-17 * total:
            break
    return log_top + math.log(total)


def _tight_rhs(d: int, eps: float, eta: float, s: int) -> float:
    """2/(ε ln 2) · (ln(1/η) + ln Φ_d(2s) − ln(1 − e^{−εs/8})), the right-hand side of the tight bound."""
    return 2.0 / (eps * _LN2) * (-math.log(eta) + log_phi(d, 2 * s) - math.log(-math.expm1(-eps * s / 8.0)))


def tight_bound_holds(d: int, eps: float, eta: float, s: int) -> bool:
    """Whether s i.i.d. points form an ε-net with probability ≥ 1 − η for every range space of VC dimension d
    by the double-sampling argument (Haussler–Welzl; Mitzenmacher & Upfal, proof of Thm 14.8):

        s ≥ 2/(ε ln 2) · (ln(1/η) + ln Φ_d(2s) − ln(1 − e^{−εs/8})).

    E1: some range of mass ≥ ε misses the sample M; E2: some range misses M and holds ≥ εs/2 points of a second
    independent sample T of size s. A fixed range of mass ≥ ε gets ≥ εs/2 points of T with probability
    ≥ 1 − e^{−εs/8} (Chernoff), so Pr[E1] ≤ Pr[E2] / (1 − e^{−εs/8}). Given the 2s points of M ∪ T, at most
    Φ_d(2s) distinct ranges meet them (Sauer), and a range with k ≥ εs/2 of them has all of them in T after a
    random swap of pairs with probability ≤ 2^{−k}: Pr[E2] ≤ Φ_d(2s)·2^{−εs/2}. Asking
    Φ_d(2s)·2^{−εs/2}/(1 − e^{−εs/8}) ≤ η gives the inequality (docs/theory.md, "The tight ε-net bound").

    The comparison is made conservative: the right-hand side is widened by a relative 1e-10 (``_TIGHT_SLACK``),
    so a True here holds for the exact inequality despite float rounding. Requires 0 < ε, η ≤ 1/2, d ≥ 1, s ≥ 1.

    >>> tight_bound_holds(2, 0.05, 0.01, 1116), tight_bound_holds(2, 0.05, 0.01, 1115)
    (True, False)
    """
    d = _check_vc(d)
    eps, eta, s = check_eps(eps), check_eta(eta), check_samples(s)
    return _tight_holds(d, eps, eta, s)


def _tight_holds(d: int, eps: float, eta: float, s: int) -> bool:
    return s >= _tight_rhs(d, eps, eta, s) * (1.0 + _TIGHT_SLACK)


def _tight_size(d: int, eps: float, eta: float) -> int:
    """The smallest s ≥ 1 with :func:`tight_bound_holds` (arguments already checked).

    The passing set is upward closed, so exponential search for a passing value and bisection find its least
    element. Proof: write the inequality as f(s) ≥ 0 with f(s) = a·s − L − ln Φ_d(2s) + ln(1 − e^{−εs/8}),
    a = ε ln 2 / (2(1 + slack)) > 0, L = ln(1/η) > 0. (i) ln Φ_d(n) is concave in n: Φ_d(n+1)/Φ_d(n) =
    1 + Φ_{d−1}(n)/Φ_d(n), and that ratio is 1 for n < d and, for n ≥ d, equals 1/(1 + C(n, d)/Φ_{d−1}(n)) where
    Φ_{d−1}(n)/C(n, d) = Σ_{i<d} d!/i! / ((n−i)···(n−d+1)) does not increase with n. So the increments
    φ(t) = ln Φ_d(2t+2) − ln Φ_d(2t) do not increase, and ln Φ_d(2s) = Σ_{t<s} φ(t) ≥ s·φ(s) (Φ_d(0) = 1).
    (ii) ln(1 − e^{−εs/8}) increases with s. If f(s) ≥ 0 then a·s ≥ L + ln Φ_d(2s) − ln(1 − e^{−εs/8}) >
    ln Φ_d(2s) ≥ s·φ(s), so φ(s') ≤ φ(s) < a for every s' ≥ s, and f(s'+1) − f(s') > a − φ(s') > 0: f keeps
    increasing, every larger s passes. Bracket: for s ≤ L/a, f(s) ≤ −ln Φ_d(2s) + ln(1 − e^{−εs/8}) < 0, so
    ⌊L/a⌋ fails.
    """
    a = eps * _LN2 / 2.0
    lo = max(0, math.floor(-math.log(eta) / a))  # fails (0: no sample at all)
    hi = max(1, 2 * lo)
    while not _tight_holds(d, eps, eta, hi):
        lo, hi = hi, 2 * hi
    while hi - lo > 1:  # invariant: lo fails (or is 0), hi passes
        mid = (lo + hi) // 2
        if _tight_holds(d, eps, eta, mid):
            hi = mid
        else:
            lo = mid
    return hi


def epsnet_size(d: int, eps: float, eta: float, *, bound: str = "thm38") -> int:
    """Smallest integer s that ``bound`` accepts for an ε-net with probability ≥ 1 − η, VC dimension d.

    * ``bound='thm38'``: ⌈8d/ε·ln(16d/ε) + 4/ε·ln(2/η)⌉ (Thm 3.8 of 004), rounded up past float error.
    * ``bound='tight'``: the smallest s ≥ 1 with :func:`tight_bound_holds` (its passing set is upward closed:
      proof in ``_tight_size``), found by exponential search and bisection. Never above Thm 3.8 on the grids
      tested (tests/test_pac_tight.py).

    Non-increasing in ε and η, non-decreasing in d, for both bounds: for Thm 3.8 the closed form is monotone; for
    the tight bound each passing set grows with ε and η (both terms with ε in f(s) increase with it, −ln(1/η)
    increases with η) and shrinks with d (Φ_d grows with d), so its least element moves the other way.

    >>> epsnet_size(2, 0.05, 0.01), epsnet_size(2, 0.05, 0.01, bound="tight")
    (2492, 1116)
    """
    d = _check_vc(d)
    eps, eta = check_eps(eps), check_eta(eta)
    if _check_bound(bound) == "tight":
        return _tight_size(d, eps, eta)
    return math.ceil(_bound(d, eps, eta) * (1.0 + _CEIL_SLACK))


def sample_size(dim: int, eps: float, eta: float, *, norm: str | float = "2", bound: str = "thm38",
                guarantee: str = "ball") -> int:
    """Smallest integer s that the ε-net bound ``bound`` accepts, with d from :func:`vc_dimension`.

    With probability ≥ 1 − eta, s i.i.d. points from any distribution D hit every range of the guarantee of
    D-mass ≥ eps: every radius-δ ball (any δ) in R^dim (``guarantee='ball'``, d = dim + 1 for L2, 2·dim for L∞),
    or every range {x : conf_T(x) ≥ κ, rob_T(x) < ρ} (``guarantee='mass'``, d = 2). ``bound``: "thm38"
    (Thm 3.8 of 004, Eq 5, the default) or "tight" (:func:`tight_bound_holds`; see :func:`epsnet_size`).
    Requires 0 < eps ≤ 1/2 and 0 < eta ≤ 1/2.

    >>> sample_size(2, 0.05, 0.01), sample_size(64, 0.05, 0.01), sample_size(784, 0.05, 0.01)
    (3720, 103829, 1562135)
    >>> sample_size(784, 0.05, 0.01, guarantee="mass"), sample_size(784, 0.05, 0.01, guarantee="mass", bound="tight")
    (2492, 1116)
    """
    d = vc_dimension(dim, norm, guarantee)
    eps, eta = check_eps(eps), check_eta(eta)
    return epsnet_size(d, eps, eta, bound=bound)


_BOUND_NAMES = {"thm38": "Thm 3.8", "tight": "the tight bound"}


def _too_few(samples: int, needed: int, what: str, bound: str = "thm38") -> InputError:
    return InputError(
        f"samples = {samples} is too few for any {what} in (0, 0.5]: {_BOUND_NAMES[bound]} needs at least {needed}"
    )


def _smallest_passing(passes, lo: float, hi: float) -> float:
    """Smallest positive float x in (lo, hi] with ``passes(x)``, for a predicate monotone in x.

    Requires ``passes(hi)`` and ``not passes(lo)`` (or lo = 0). Bisects on the IEEE-754 bit
    patterns, which are ordered like the positive floats they encode: at most 64 steps, and
    the result is exact to the float (its predecessor fails).
    """
    to_bits = lambda x: struct.unpack("<q", struct.pack("<d", x))[0]  # noqa: E731
    from_bits = lambda b: struct.unpack("<d", struct.pack("<q", b))[0]  # noqa: E731
    lo_b, hi_b = to_bits(lo), to_bits(hi)
    while hi_b - lo_b > 1:
        mid_b = (lo_b + hi_b) // 2
        if passes(from_bits(mid_b)):
            hi_b = mid_b
        else:
            lo_b = mid_b
    return from_bits(hi_b)


def _size_at_most(d: int, eps: float, eta: float, bound: str, samples: int) -> bool:
    """``epsnet_size(d, eps, eta, bound=bound) <= samples`` (arguments already checked), with a shortcut for the
    tight bound: every s ≤ ln(1/η)/(ε ln 2 / 2) fails it (``_tight_size``), so such a ``samples`` is too few
    without a search (the search starts above that value, so the answer is the same)."""
    if bound == "tight":
        if math.floor(-math.log(eta) / (eps * _LN2 / 2.0)) >= samples:
            return False
        return _tight_size(d, eps, eta) <= samples
    return math.ceil(_bound(d, eps, eta) * (1.0 + _CEIL_SLACK)) <= samples


def _needed(d: int, eps: float, eta: float, bound: str) -> int:
    return _tight_size(d, eps, eta) if bound == "tight" else math.ceil(_bound(d, eps, eta) * (1.0 + _CEIL_SLACK))


def min_eps(samples: int, dim: int, eta: float, *, norm: str | float = "2", bound: str = "thm38",
            guarantee: str = "ball") -> float:
    """Smallest ε in (0, 1/2] with ``sample_size(dim, ε, eta, norm=norm, bound=bound, guarantee=guarantee)
    <= samples``.

    Exact to the float: the result ε satisfies the inequality and the next smaller float does not. The predicate
    is monotone in ε, so bisection (:func:`_smallest_passing`) finds it: the bound of Eq 5 is strictly decreasing
    in ε; for the tight bound, sample_size ≤ samples holds exactly when s = samples passes
    :func:`tight_bound_holds` (its passing set is upward closed), and that inequality only gets easier as ε
    grows (ε·s·ln 2/2 and ln(1 − e^{−εs/8}) both increase with ε). Raises :class:`InputError` when even
    ε = 1/2 needs more samples.

    >>> e = min_eps(1116, 1, 0.01, guarantee="mass", bound="tight")
    >>> e <= 0.05 < min_eps(1115, 1, 0.01, guarantee="mass", bound="tight")
    True
    """
    samples, eta = check_samples(samples), check_eta(eta)
    d = vc_dimension(dim, norm, guarantee)
    bound = _check_bound(bound)
    if not _size_at_most(d, 0.5, eta, bound, samples):
        raise _too_few(samples, _needed(d, 0.5, eta, bound), "eps", bound)
    return _smallest_passing(lambda e: _size_at_most(d, e, eta, bound, samples), 0.0, 0.5)


def min_eta(samples: int, dim: int, eps: float, *, norm: str | float = "2", bound: str = "thm38",
            guarantee: str = "ball") -> float:
    """Smallest η in (0, 1/2] with ``sample_size(dim, eps, η, norm=norm, bound=bound, guarantee=guarantee)
    <= samples``.

    Thm 3.8: Eq 5 solved for η gives the closed form η = 2·exp(−(ε/4)·(s − 8d/ε·ln(16d/ε))) of DESIGN.md §2; the
    result is that value made exact to the float against :func:`sample_size` (whose ceiling carries a tiny
    conservative slack), so the next smaller float needs more than ``samples``. Tight bound: the same bisection
    on the same predicate, monotone in η because sample_size ≤ samples holds exactly when s = samples passes
    :func:`tight_bound_holds` (upward closed in s), whose right-hand side falls as η grows. When the answer is
    below the smallest normal float (``sys.float_info.min``), that float is returned: the true bound is smaller
    still.
    """
    samples, eps = check_samples(samples), check_eps(eps)
    d = vc_dimension(dim, norm, guarantee)
    bound = _check_bound(bound)
    if not _size_at_most(d, eps, 0.5, bound, samples):
        raise _too_few(samples, _needed(d, eps, 0.5, bound), "eta", bound)
    passes = lambda h: _size_at_most(d, eps, h, bound, samples)  # noqa: E731
    floor = sys.float_info.min
    if passes(floor):
        return floor
    return _smallest_passing(passes, floor, 0.5)


def shifted_eps(eps: float, tv: float) -> float:
    """Obs 4.5 of 004: an ε-net for D is an (ε + Λ)-net for any D' with TV(D, D') ≤ Λ.

    Returns ε + Λ. Raises :class:`InputError` when ε + Λ > 1 (no ball has that mass: the
    guarantee would be empty).
    """
    eps, tv = check_eps(eps), check_tv(tv)
    out = eps + tv
    if out > 1.0:
        raise InputError(f"eps + tv = {out:g} exceeds 1: no ball has that mass; lower tv (Λ)")
    return out


def _norm_name(norm: str) -> str:
    return "L2" if norm == "2" else "L∞"


def epsnet_statement(dim: int, eps: float, eta: float, samples: int, *,
                     norm: str | float = "2", tv: float = 0.0) -> str:
    """The sentence of Thm 3.8 / Obs 4.5 of 004 that a sample size alone buys.

    Raises :class:`InputError` if ``samples`` is below :func:`sample_size`.
    """
    norm = check_norm(norm)
    samples = check_samples(samples)
    need = sample_size(dim, eps, eta, norm=norm)
    if samples < need:
        raise InputError(f"samples = {samples} is below the {need} that Thm 3.8 needs for these eps and eta")
    mass = _mass_clause(eps, tv)
    return (f"With probability at least {1 - eta:g} (η = {eta:g}), {samples} i.i.d. points drawn from D_X "
            f"hit every {_norm_name(norm)} ball in R^{check_dim(dim)} (any radius) {mass}.")


def _mass(eps: float, tv: float) -> str:
    eps = check_eps(eps)
    tv = check_tv(tv)
    if tv == 0:
        return f"probability mass at least ε = {eps:g} under D_X"
    return (f"probability mass at least ε + Λ = {shifted_eps(eps, tv):g} under any distribution D' "
            f"with TV(D_X, D') ≤ Λ = {tv:g}")


def _mass_clause(eps: float, tv: float) -> str:
    return f"of {_mass(eps, tv)}"


def pac_statement(*, delta: float, eps: float, eta: float, samples: int, dim: int, kappa: float,
                  norm: str | float = "2", tv: float = 0.0, model: str = "teacher", relaxed: bool = False,
                  bound: str = "thm38") -> str:
    """The PAC sentence of DESIGN.md §2 (Thm 3.8 + 4.4, Prop 4.2 of 004) with its numbers filled in.

    The range space is {B ∩ C_κ : B a δ-ball}, with C_κ = {x : conf_T(x) ≥ κ} fixed before sampling; its
    VC dimension is at most that of the balls, so s points of Thm 3.8 form an ε-net for it with
    probability ≥ 1 − η: every δ-ball whose κ-confident part has mass ≥ ε holds a κ-confident sample
    point x_i, and every δ-ball around a point of that ball lies in the 3δ-ball around x_i
    (docs/theory.md). It is a conditional claim: it needs the student verified 3δ-robust at every
    κ-confident sample point and agreeing with the teacher there, and the transfer assumptions
    (Prop 4.2: equal outputs, each model a single affine piece on every 3δ-ball). Callers print the
    assumptions with it. ``relaxed``: the δ_T form of Prop 4.3. Raises :class:`InputError` if
    ``samples`` is below :func:`sample_size`.

    >>> pac_statement(delta=0.1, eps=0.05, eta=0.01, samples=3720, dim=2, kappa=0.9)[:60]
    'With probability at least 0.99 (η = 0.01) over the draw of t'
    """
    delta = check_delta(delta)
    kappa = check_kappa(kappa)
    norm = check_norm(norm)
    samples = check_samples(samples)
    need = sample_size(dim, eps, eta, norm=norm, bound=bound)
    if samples < need:
        raise InputError(f"samples = {samples} is below the {need} that the ε-net bound ({bound}) needs for these "
                         "eps and eta")
    if relaxed:
        condition = (f"given that the teacher's local radius min_j min((g_T/g_S)·ρ, 1)·r_i (Prop 4.3) is at least "
                     f"{3 * delta:g} (3δ) and the student agrees with the {model} at every κ-confident sample point")
    else:
        condition = (f"given that the student is {3 * delta:g}-robust (3δ) and agrees with the {model} at every "
                     "κ-confident sample point")
    return (
        f"With probability at least {1 - eta:g} (η = {eta:g}) over the draw of the {samples} i.i.d. sample "
        f"points, the {model} is δ-robust ({_norm_name(norm)}, δ = {delta:g}) at every point of every δ-ball "
        f"whose κ-confident part (the inputs where the {model}'s top softmax probability is at least κ = "
        f"{kappa:g}) has {_mass(eps, tv)} — {condition}, and under the assumptions listed (perfect student: "
        f"equal outputs at the sample points; local linearity: each model a single affine piece on every "
        f"3δ-ball around them; i.i.d. sampling)."
    )
