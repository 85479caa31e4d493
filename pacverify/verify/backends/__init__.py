"""Verification backends behind one interface (``--backend crown|marabou|auto_lirpa``).

A backend answers two questions for a batch of problems (input sets and unsafe sets, see
:class:`~pacverify.verify.property.OutputProperty`):

- :meth:`Backend.bounds`: sound lower bounds (B, R) on ``C·f(x)`` over each set — the incomplete,
  fast pass; ``None`` when the backend has none (then every problem goes to :meth:`Backend.decide`);
- :meth:`Backend.decide`: a complete decision per problem within a time budget
  (VERIFIED / FALSIFIED with a checked counterexample / UNKNOWN).

``crown`` is built in (pacverify's own bound propagation and branch and bound); ``marabou`` needs
the ``pacverify[marabou]`` extra and handles boxes only; ``auto_lirpa`` needs an auto_LiRPA >= 0.5.
Unavailable backends raise :class:`~pacverify.errors.InputError` saying what to install.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from pacverify.errors import InputError
from pacverify.verify.network import Network
from pacverify.verify.property import OutputProperty
from pacverify.verify.result import Decision
from pacverify.verify.sets import InputSet

BACKENDS = ("crown", "marabou", "auto_lirpa")


class Backend(ABC):
    """One way of bounding and deciding problems (module docstring)."""

    name: ClassVar[str]
    always_complete: ClassVar[bool] = False   # True: decide() runs even when completeness was not asked for
    can_decide: ClassVar[bool] = True         # False: no complete search (decide() refuses)

    def check(self, input_set: InputSet, *, complete: bool) -> None:
        """Raise InputError before any work if this backend cannot handle ``input_set`` (default: all sets)."""

    @abstractmethod
    def bounds(self, net: Network, input_set: InputSet, prop: OutputProperty, *, method: str) -> torch.Tensor | None:
        """Sound lower bounds (B, R) of ``prop.C[b]·f(x)`` over set b, or None if the backend has no bound pass."""

    @abstractmethod
    def decide(self, net: Network, input_set: InputSet, prop: OutputProperty, *, timeout: float | None,
               method: str, seed: int) -> list[Decision]:
        """A complete decision per problem, ``timeout`` seconds each (None: no limit)."""


def get_backend(name: str) -> Backend:
    """The backend called ``name`` (one of :data:`BACKENDS`); InputError if unknown or not installed."""
    if name == "crown":
        from pacverify.verify.backends.crown import CrownBackend
        return CrownBackend()
    if name == "marabou":
        from pacverify.verify.backends.marabou import MarabouBackend
        return MarabouBackend()
    if name == "auto_lirpa":
        from pacverify.verify.backends.auto_lirpa import AutoLirpaBackend
        return AutoLirpaBackend()
    raise InputError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
