"""PAC sample sizes for ε-nets of δ-balls, their inverses, the TV shift and the PAC sentence.

Pure functions, no I/O. The mathematics is DESIGN.md §2:

* Thm 3.8 of 004 (Mitzenmacher & Upfal): an i.i.d. sample of size
  ``s >= 8d/ε · ln(16d/ε) + 4/ε · ln(2/η)`` is an ε-net with probability ≥ 1 − η for a range
  space of VC dimension d, for 0 < ε, η ≤ 1/2.
* Thm 4.4 of 004 (Eq 10): for L2 balls in R^m, d = m + 1 (Dudley 1979).
* Obs 4.5 of 004: an ε-net for D is an (ε + Λ)-net for every D' with TV(D, D') ≤ Λ.
"""
from __future__ import annotations

import math
import struct
import sys

from pacverify.errors import InputError
from pacverify.validation import (
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

TYPICAL_DATASET_ROWS = 1_000_000


def vc_dimension(dim: int, norm: str | float = "2") -> int:
    """VC dimension d used for the range space of radius-δ balls in R^dim.

    * ``norm='2'``: d = dim + 1, the VC dimension of all closed Euclidean balls in R^dim
      (Dudley 1979), as in Thm 4.4 / Eq 10 of 004.
    * ``norm='inf'``: d = 2·dim. An L∞ ball is an axis-parallel box, and axis-parallel boxes in
      R^dim have VC dimension 2·dim; a sub-family cannot shatter more, so 2·dim is a sound
      upper bound. (004 states only the L2 case; using dim + 1 for cubes would be unproven.)
    """
    dim = check_dim(dim)
    return dim + 1 if check_norm(norm) == "2" else 2 * dim


def _bound(d: int, eps: float, eta: float) -> float:
    """The real-valued right-hand side of Eq 5 of 004."""
    return 8.0 * d / eps * math.log(16.0 * d / eps) + 4.0 / eps * math.log(2.0 / eta)


def sample_size(dim: int, eps: float, eta: float, *, norm: str | float = "2") -> int:
    """Smallest integer s that Thm 3.8 of 004 (Eq 5, with d from :func:`vc_dimension`) accepts.

    With probability ≥ 1 − eta, s i.i.d. points from any distribution D hit every radius-δ ball
    (any δ) of D-mass ≥ eps. Requires 0 < eps ≤ 1/2 and 0 < eta ≤ 1/2.

    >>> sample_size(2, 0.05, 0.01), sample_size(64, 0.05, 0.01), sample_size(784, 0.05, 0.01)
    (3720, 103829, 1562135)
    """
    d = vc_dimension(dim, norm)
    eps, eta = check_eps(eps), check_eta(eta)
    value = _bound(d, eps, eta)
    return math.ceil(value * (1.0 + _CEIL_SLACK))


def _too_few(samples: int, needed: int, what: str) -> InputError:
    return InputError(
        f"samples = {samples} is too few for any {what} in (0, 0.5]: Thm 3.8 needs at least {needed}"
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


def min_eps(samples: int, dim: int, eta: float, *, norm: str | float = "2") -> float:
    """Smallest ε in (0, 1/2] with ``sample_size(dim, ε, eta) <= samples``.

    Exact to the float: the result ε satisfies ``sample_size(dim, ε, eta) <= samples`` and the
    next smaller float does not. The bound of Eq 5 is strictly decreasing in ε, so bisection
    finds it. Raises :class:`InputError` when even ε = 1/2 needs more samples.
    """
    samples, eta = check_samples(samples), check_eta(eta)
    dim = check_dim(dim)
    need = sample_size(dim, 0.5, eta, norm=norm)
    if need > samples:
        raise _too_few(samples, need, "eps")
    return _smallest_passing(lambda e: sample_size(dim, e, eta, norm=norm) <= samples, 0.0, 0.5)


def min_eta(samples: int, dim: int, eps: float, *, norm: str | float = "2") -> float:
    """Smallest η in (0, 1/2] with ``sample_size(dim, eps, η) <= samples``.

    Eq 5 solved for η gives the closed form η = 2·exp(−(ε/4)·(s − 8d/ε·ln(16d/ε))) of
    DESIGN.md §2; the result is that value made exact to the float against
    :func:`sample_size` (whose ceiling carries a tiny conservative slack), so the next
    smaller float needs more than ``samples``. When the closed form underflows, the smallest
    normal float (``sys.float_info.min``) is returned: the true bound is smaller still.
    """
    samples, eps = check_samples(samples), check_eps(eps)
    dim = check_dim(dim)
    need = sample_size(dim, eps, 0.5, norm=norm)
    if need > samples:
        raise _too_few(samples, need, "eta")
    passes = lambda h: sample_size(dim, eps, h, norm=norm) <= samples  # noqa: E731
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
                  norm: str | float = "2", tv: float = 0.0, model: str = "teacher", relaxed: bool = False) -> str:
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
    need = sample_size(dim, eps, eta, norm=norm)
    if samples < need:
        raise InputError(f"samples = {samples} is below the {need} that Thm 4.4 needs for these eps and eta")
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
