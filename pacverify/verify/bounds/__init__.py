"""Sound bounds on ``C f(x)`` over input sets: IBP, CROWN and α-CROWN, batched over points.

Every routine returns :class:`Bounds` with ``lower <= C f(x) <= upper`` for every x in each point's
input set (that satisfies the split constraints, when given). See docs/verifier.md.

:data:`BOUND_METHODS` is the one table of bound methods by name ("ibp", "crown-ibp", "crown-f32", "crown", "alpha-crown";
"crown-ibp" is CROWN's backward pass over interval pre-activation bounds, :func:`.crown.crown_ibp`; "crown-f32" is
CROWN with float32 products and a-posteriori rounding charges, :mod:`.float32`):
the verifier's ``method`` arguments, the command line's ``--method`` / ``--verify-method`` choices
and branch and bound all take their names from it (:data:`BOUND_METHOD_NAMES`, in order of cost).
"""
from __future__ import annotations

from typing import Callable

from pacverify.errors import InputError
from pacverify.verify.bounds.alpha import alpha_crown
from pacverify.verify.bounds.crown import crown, crown_ibp
from pacverify.verify.bounds.float32 import crown_f32
from pacverify.verify.bounds.ibp import ibp
from pacverify.verify.bounds.types import Bounds, PropagationResult

BOUND_METHODS: dict[str, Callable] = {"ibp": ibp, "crown-ibp": crown_ibp, "crown-f32": crown_f32, "crown": crown,
                                     "alpha-crown": alpha_crown}
BOUND_METHOD_NAMES: tuple[str, ...] = tuple(BOUND_METHODS)


def check_bound_method(method, *, extra: tuple[str, ...] = ()) -> str:
    """``method`` if it names a bound method (or one of ``extra``, e.g. "auto"); InputError naming the choices."""
    allowed = extra + BOUND_METHOD_NAMES
    if not isinstance(method, str) or method not in allowed:
        raise InputError(f"method must be one of {', '.join(allowed)}, got {method!r}")
    return method


__all__ = ["BOUND_METHODS", "BOUND_METHOD_NAMES", "Bounds", "PropagationResult", "alpha_crown", "check_bound_method",
           "crown", "crown_f32", "crown_ibp", "ibp"]
