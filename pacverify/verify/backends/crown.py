"""The built-in backend: pacverify's bound propagation (IBP / CROWN / α-CROWN) and branch and bound."""
from __future__ import annotations

import torch

from pacverify.verify.bab import BabConfig, bound_routine, branch_and_bound
from pacverify.verify.backends import Backend
from pacverify.verify.network import Network
from pacverify.verify.property import OutputProperty
from pacverify.verify.result import Decision
from pacverify.verify.sets import InputSet


class CrownBackend(Backend):
    """Bounds from :mod:`pacverify.verify.bounds`; decisions from :func:`~pacverify.verify.bab.branch_and_bound`."""

    name = "crown"

    def bounds(self, net: Network, input_set: InputSet, prop: OutputProperty, *, method: str) -> torch.Tensor:
        return bound_routine(method)(net, input_set, prop.C).lower

    def decide(self, net: Network, input_set: InputSet, prop: OutputProperty, *, timeout: float | None,
               method: str, seed: int) -> list[Decision]:
        # the search picks its own bound method (BabConfig.method "auto"); ``method`` is the incomplete pass's
        return branch_and_bound(net, input_set, prop, BabConfig(timeout=timeout, seed=seed))
