"""The interface every verification backend implements (:mod:`pacverify.verify.backends` says what each
method answers). It has a module of its own so that the implementations, which the package imports only
on demand, need not import the package."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from pacverify.network import Network
from pacverify.verify.property import OutputProperty
from pacverify.verify.result import Decision
from pacverify.verify.sets import InputSet


class Backend(ABC):
    """One way of bounding and deciding problems (see :mod:`pacverify.verify.backends`)."""

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
