"""auto_LiRPA backend: bounds from the field's reference engine, when an auto_LiRPA >= 0.5 is installed.

The registry's auto_LiRPA 0.3 requires torch < 1.13 and fails to import on torch 2, and newer
releases are not on the registry (install one from github.com/Verified-Intelligence/auto_LiRPA).
With none importable, choosing this backend is an InputError saying so.

Bounds: the network is rebuilt as a ``torch.nn.Sequential`` (:meth:`Network.as_module`) and bounded
with ``BoundedModule.compute_bounds(C=..., method=...)`` (IBP, CROWN or alpha-CROWN). Boxes use
``PerturbationLpNorm(norm=inf, x_L, x_U)``; L2 balls use ``PerturbationLpNorm(norm=2, eps=r)`` on the
ball alone — a superset of ball ∩ domain, so the bounds stay sound. auto_LiRPA has no complete
search: :meth:`AutoLirpaBackend.decide` refuses (use the native or marabou backend for that).
"""
from __future__ import annotations

import torch

from pacverify.errors import InputError
from pacverify.network import Network
from pacverify.verify.backends.base import Backend
from pacverify.verify.bounds import check_bound_method
from pacverify.verify.property import OutputProperty
from pacverify.verify.result import Decision
from pacverify.verify.sets import Box, InputSet

MIN_VERSION = (0, 5)
_METHODS = {"ibp": "IBP", "crown-ibp": "CROWN-IBP", "crown": "CROWN", "alpha-crown": "alpha-CROWN"}   # BOUND_METHODS name -> auto_LiRPA name
_MISSING = ("the auto_lirpa backend needs auto_LiRPA >= 0.5, which is not importable here (the registry's 0.3 "
            "does not run on torch 2; install a newer one from github.com/Verified-Intelligence/auto_LiRPA) — "
            "or use --backend native")


def _auto_lirpa():
    try:
        import auto_LiRPA
        from auto_LiRPA import BoundedModule, BoundedTensor
        from auto_LiRPA.perturbations import PerturbationLpNorm
    except Exception:   # 0.3 on torch 2 fails with AttributeError inside its own imports
        raise InputError(_MISSING) from None
    version = tuple(int(part) for part in auto_LiRPA.__version__.split(".")[:2] if part.isdigit())
    if version < MIN_VERSION:
        raise InputError(_MISSING + f" (found {auto_LiRPA.__version__})")
    return BoundedModule, BoundedTensor, PerturbationLpNorm


class AutoLirpaBackend(Backend):
    """Incomplete bounds from auto_LiRPA (module docstring)."""

    name = "auto_lirpa"
    can_decide = False

    def check(self, input_set: InputSet, *, complete: bool) -> None:
        _auto_lirpa()
        if complete:
            raise InputError("the auto_lirpa backend computes bounds only (no complete search); "
                             "drop --complete or use --backend native or marabou")

    def bounds(self, net: Network, input_set: InputSet, prop: OutputProperty, *, method: str) -> torch.Tensor:
        BoundedModule, BoundedTensor, PerturbationLpNorm = _auto_lirpa()
        method = check_bound_method(method)
        input_set = input_set.to(net.device, net.dtype)
        module = net.as_module().eval()
        bounded = BoundedModule(module, torch.zeros(1, net.in_features, dtype=net.dtype, device=net.device),
                                device=str(net.device))
        C = prop.C.to(net.device, net.dtype)
        if isinstance(input_set, Box):
            ptb = PerturbationLpNorm(norm=float("inf"), x_L=input_set.lower, x_U=input_set.upper)
            x = BoundedTensor(input_set.center, ptb)
            lower, _ = bounded.compute_bounds(x=(x,), C=C, method=_METHODS[method], bound_upper=False)
            return lower
        lower = torch.empty(C.shape[:2], dtype=net.dtype, device=net.device)
        for radius in torch.unique(input_set.radius):   # one call per distinct radius (eps is a scalar)
            rows = torch.nonzero(input_set.radius == radius).reshape(-1)
            x = BoundedTensor(input_set.center[rows], PerturbationLpNorm(norm=2.0, eps=float(radius)))
            lower[rows], _ = bounded.compute_bounds(x=(x,), C=C[rows], method=_METHODS[method], bound_upper=False)
        return lower

    def decide(self, net: Network, input_set: InputSet, prop: OutputProperty, *, timeout: float | None,
               method: str, seed: int) -> list[Decision]:
        raise InputError("the auto_lirpa backend computes bounds only (no complete search); "
                         "use --backend native or marabou for complete verification")
