"""Verification backends behind one interface (``--backend native|marabou|auto_lirpa``).

A backend answers two questions for a batch of problems (input sets and unsafe sets, see
:class:`~pacverify.verify.property.OutputProperty`):

- :meth:`Backend.bounds`: sound lower bounds (B, R) on ``C·f(x)`` over each set — the incomplete,
  fast pass; ``None`` when the backend has none (then every problem goes to :meth:`Backend.decide`);
- :meth:`Backend.decide`: a complete decision per problem within a time budget
  (VERIFIED / FALSIFIED with a checked counterexample / UNKNOWN).

``native`` is built in (pacverify's own bound propagation — IBP, CROWN, α-CROWN — and branch and
bound; ``crown``, its former name, is still accepted: :data:`BACKEND_ALIASES`); ``marabou`` needs the
``pacverify[marabou]`` extra and handles boxes only; ``auto_lirpa`` needs an auto_LiRPA >= 0.5.
Unavailable backends raise :class:`~pacverify.errors.InputError` saying what to install.
"""
from __future__ import annotations

from pacverify.errors import InputError
from pacverify.names import BACKEND_ALIASES, BACKENDS
from pacverify.verify.backends.base import Backend

# Former names still accepted (and documented by ``pacverify verify --help``): BACKEND_ALIASES, alias -> backend.

__all__ = ["BACKENDS", "BACKEND_ALIASES", "Backend", "get_backend"]


def get_backend(name: str) -> Backend:
    """The backend called ``name`` (one of :data:`BACKENDS` or an alias in :data:`BACKEND_ALIASES`);
    InputError if unknown or not installed."""
    name = BACKEND_ALIASES.get(name, name) if isinstance(name, str) else name
    if name == "native":
        from pacverify.verify.backends.native import NativeBackend
        return NativeBackend()
    if name == "marabou":
        from pacverify.verify.backends.marabou import MarabouBackend
        return MarabouBackend()
    if name == "auto_lirpa":
        from pacverify.verify.backends.auto_lirpa import AutoLirpaBackend
        return AutoLirpaBackend()
    raise InputError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
