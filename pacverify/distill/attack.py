"""PGD robustness estimate of a torch module (used by the distillation benchmarks).

The attack itself is the package's one core, :mod:`pacverify.attacks` (IGDM's perturbations,
003 Eq 14, use :func:`pacverify.attacks.pgd` directly, the quality markers its primitives). An
attack only ever *finds* counterexamples: a point it fails to break is not proven robust.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pacverify.attacks import pgd
from pacverify.models import module_device


def pgd_robust(model: nn.Module, x: np.ndarray | torch.Tensor, radius: float, *, norm: str = "2", steps: int = 20,
               restarts: int = 2, seed: int = 0, batch_size: int = 256,
               domain: tuple[float, float] | None = None) -> np.ndarray:
    """Per point: True when PGD (``restarts`` random starts) found no x' in the ball with another argmax.

    Labels are the model's own argmax at x. An upper estimate of the robust fraction, never a proof.
    """
    device = module_device(model)
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    robust = []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size].to(device)
        with torch.no_grad():
            y = model(xb).argmax(dim=1)
        ok = torch.ones_like(y, dtype=torch.bool)
        for restart in range(restarts):
            delta = pgd(model, xb, y, radius=radius, norm=norm, steps=steps, seed=seed + 7919 * restart + start,
                        domain=domain)
            with torch.no_grad():
                ok &= model(xb + delta).argmax(dim=1) == y
        robust.append(ok.cpu())
    return torch.cat(robust).numpy() if robust else np.zeros(0, dtype=bool)
