"""One place that checks every user-facing parameter (DESIGN.md §2, §4).

Both the Python API and the command line call these functions, so a bad value gets the
same message everywhere: the parameter's name, the allowed range and the bad value.
Each function returns the value converted to its canonical type, or raises
:class:`pacverify.errors.InputError`.
"""
from __future__ import annotations

import decimal
import math
import numbers
import os
import re
from typing import Any

from pacverify.errors import InputError

NORMS = ("2", "inf")


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        raise InputError(f"{name} must be a number, got {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(out):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    return out


def check_delta(delta: Any, name: str = "delta (δ)") -> float:
    """Robustness radius δ: a finite number > 0."""
    out = _real(name, delta)
    if out <= 0:
        raise InputError(f"{name} must be > 0, got {delta!r}")
    return out


check_radius = check_delta


def _in_range(name: str, value: Any, lo: float, hi: float, *, lo_open: bool, hi_open: bool,
              why: str = "") -> float:
    out = _real(name, value)
    ok_lo = out > lo if lo_open else out >= lo
    ok_hi = out < hi if hi_open else out <= hi
    if not (ok_lo and ok_hi):
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise InputError(f"{name} must lie in {interval}{why}, got {value!r}")
    return out


_THM38 = " (the ε-net theorem, Thm 3.8 of 004, says nothing outside it)"


def check_eps(eps: Any, name: str = "eps (ε)") -> float:
    """Ball mass ε of the ε-net theorem (Thm 3.8 of 004): 0 < ε ≤ 1/2."""
    return _in_range(name, eps, 0.0, 0.5, lo_open=True, hi_open=False, why=_THM38)


def check_eta(eta: Any, name: str = "eta (η)") -> float:
    """Failure probability η of the ε-net theorem (Thm 3.8 of 004): 0 < η ≤ 1/2."""
    return _in_range(name, eta, 0.0, 0.5, lo_open=True, hi_open=False, why=_THM38)


def check_kappa(kappa: Any, name: str = "kappa (κ)") -> float:
    """Confidence threshold κ (Def 3.2 of 004): 0.5 ≤ κ < 1."""
    return _in_range(name, kappa, 0.5, 1.0, lo_open=False, hi_open=True)


def check_tv(tv: Any, name: str = "tv (Λ)") -> float:
    """Total-variation distance Λ of Obs 4.5 of 004: 0 ≤ Λ < 1."""
    return _in_range(name, tv, 0.0, 1.0, lo_open=False, hi_open=True)


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise InputError(f"{name} must be an integer, got {value!r}")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and float(value).is_integer():
        return int(value)  # type: ignore[call-overload]  # typeshed's Real lacks __int__; int() takes any Real
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
        try:  # 1e6, 2.5e3, 100.0: integral values written as decimals, read exactly
            number = decimal.Decimal(value.strip())
        except decimal.InvalidOperation:
            number = None
        if number is not None and number.is_finite() and number == number.to_integral_value():
            if number.adjusted() > 30:
                raise InputError(f"{name} must be an integer of at most 30 digits, got {value!r}")
            return int(number)
    raise InputError(f"{name} must be an integer, got {value!r}")


def check_dim(dim: Any, name: str = "dim (m)") -> int:
    """Input dimension m: a positive integer."""
    out = _integer(name, dim)
    if out < 1:
        raise InputError(f"{name} must be a positive integer, got {dim!r}")
    return out


def check_positive_int(value: Any, name: str) -> int:
    """Any positive integer that is not a number of sample points (an opset, a thread count, epochs, steps)."""
    out = _integer(name, value)
    if out < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return out


def check_samples(samples: Any, name: str = "samples (s)") -> int:
    """A number of sample points (drawn, held out, compared on): a positive integer."""
    return check_positive_int(samples, name)


def check_seed(seed: Any, name: str = "seed") -> int:
    """Random seed: an integer in [0, 2**63)."""
    out = _integer(name, seed)
    if not 0 <= out < 2**63:
        raise InputError(f"{name} must be an integer in [0, 2**63), got {seed!r}")
    return out


def check_norm(norm: Any, name: str = "norm") -> str:
    """Perturbation norm: '2' (Euclidean) or 'inf' (max-norm). Accepts 2, '2', 'l2', inf, 'inf', 'linf'."""
    if isinstance(norm, numbers.Real) and not isinstance(norm, bool):
        if norm == 2:
            return "2"
        if norm == math.inf:
            return "inf"
    if isinstance(norm, str):
        key = norm.strip().lower()
        if key in ("2", "l2"):
            return "2"
        if key in ("inf", "linf", "l_inf", "infinity"):
            return "inf"
    raise InputError(f"{name} must be one of 2 or inf, got {norm!r}")


def check_positive(value: Any, name: str) -> float:
    """Any strictly positive finite number (timeouts, caps, tolerances)."""
    out = _real(name, value)
    if out <= 0:
        raise InputError(f"{name} must be > 0, got {value!r}")
    return out


def check_probability(value: Any, name: str) -> float:
    """A number in [0, 1]."""
    return _in_range(name, value, 0.0, 1.0, lo_open=False, hi_open=False)


def check_nonnegative(value: Any, name: str) -> float:
    """Any finite number ≥ 0 (loss weights λ, dropout rates, weight decay)."""
    out = _real(name, value)
    if out < 0:
        raise InputError(f"{name} must be >= 0, got {value!r}")
    return out


def check_choice(value: Any, choices: tuple[str, ...], name: str) -> str:
    """One of a fixed set of names (compared case-insensitively); returns the canonical spelling."""
    if isinstance(value, str):
        for choice in choices:
            if value.strip().lower() == choice.lower():
                return choice
    raise InputError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


DOMAIN_FORM = "LO,HI: two finite numbers with LO < HI, e.g. 0,1 or -3,3"


def parse_domain(value: Any) -> tuple[float, float] | None:
    """The input domain box ``[LO, HI]`` (the same bounds for every coordinate) of ``--domain`` and of every
    ``domain=`` argument that takes one pair: None (no domain) stays None; a ``"LO,HI"`` string or a
    sequence of two numbers becomes ``(lo, hi)`` as floats, both finite, ``lo < hi``.

    Raises InputError naming ``--domain``, the expected form and the bad value. (Per-coordinate domains
    are arrays; :mod:`pacverify.verify.sets` checks those.)
    """
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else value
    try:
        if isinstance(parts, (str, bytes)) or any(isinstance(p, bool) for p in parts):
            raise TypeError
        lo, hi = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise InputError(f"--domain must be {DOMAIN_FORM}; got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError(f"--domain must be {DOMAIN_FORM}; got {value!r} (not finite)")
    if not lo < hi:
        raise InputError(f"--domain must be {DOMAIN_FORM}; got {value!r} (LO >= HI)")
    return lo, hi


# --- memory ------------------------------------------------------------------------------------------------------

GIB = 1024 ** 3


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation without swapping (Linux ``MemAvailable``), else the free
    physical memory ``os.sysconf`` reports, else None (unknown: then nothing is refused)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(needed: float, what: str, advice: str) -> None:
    """Raise :class:`InputError` when ``needed`` bytes (an estimate) exceed the available memory.

    The message gives both sizes in GiB, ``what`` needs the memory, and ``advice`` on what to change.
    """
    available = available_memory()
    if available is not None and needed > available:
        raise InputError(f"{what} needs about {needed / GIB:.3g} GiB of memory but about {available / GIB:.3g} GiB "
                         f"are available; {advice}")


# --- errors of other people's code, in one line ------------------------------------------------------------------

_TORCHSCRIPT = "The following operation failed in the TorchScript interpreter"
_RAISED = re.compile(r"^(?:builtins\.)?([A-Za-z_][\w.]*(?:Error|Exception)): (.*)$")


def error_line(exc: BaseException) -> str:
    """``Type: first line of the message`` for an exception raised by code pacverify calls (a user's sampler, a
    teacher). A TorchScript error's first line only says that the interpreter failed: the line naming the
    exception the scripted code raised is used instead."""
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    name = type(exc).__name__
    if lines and lines[0].startswith(_TORCHSCRIPT):
        for line in lines[1:]:
            match = _RAISED.match(line)
            if match:
                return f"TorchScript {match.group(1).rpartition('.')[2]}: {match.group(2)}"
        name = "TorchScript error"
    return f"{name}: {lines[0]}" if lines else name

