"""The built-in backend ``native``: pacverify's own bound propagation (IBP, CROWN or α-CROWN, by name from
:data:`~pacverify.verify.bounds.BOUND_METHODS`) and branch and bound. Its former name ``crown`` is still accepted
(:data:`~pacverify.verify.backends.BACKEND_ALIASES`)."""
from __future__ import annotations

import torch

from pacverify.network import Network
from pacverify.verify.bab import BabConfig, bound_routine, branch_and_bound
from pacverify.verify.backends.base import Backend
from pacverify.verify.property import OutputProperty
from pacverify.verify.result import Decision
from pacverify.verify.sets import InputSet


class NativeBackend(Backend):
    """Bounds from :mod:`pacverify.verify.bounds`; decisions from :func:`~pacverify.verify.bab.branch_and_bound`."""

    name = "native"

    def bounds(self, net: Network, input_set: InputSet, prop: OutputProperty, *, method: str) -> torch.Tensor:
        return bound_routine(method)(net, input_set, prop.C).lower

    def decide(self, net: Network, input_set: InputSet, prop: OutputProperty, *, timeout: float | None,
               method: str, seed: int) -> list[Decision]:
        # the search picks its own bound method (BabConfig.method "auto"); ``method`` is the incomplete pass's
        return branch_and_bound(net, input_set, prop, BabConfig(timeout=timeout, seed=seed))
