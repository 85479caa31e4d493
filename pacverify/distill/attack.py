"""Projected gradient attacks on torch modules (Madry et al.; used by IGDM, 003 Eq 14, and the markers).

These work on any differentiable ``nn.Module`` (teachers and students alike); the verifier's own
attacks work on its :class:`~pacverify.verify.network.Network` type. An attack only ever *finds*
counterexamples: a point it fails to break is not proven robust.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pacverify.errors import InputError
from pacverify.models import module_device
from pacverify.validation import check_norm, check_positive, check_samples


def _per_sample_norm(t: torch.Tensor, norm: str) -> torch.Tensor:
    flat = t.flatten(1)
    return flat.abs().amax(dim=1) if norm == "inf" else torch.linalg.vector_norm(flat, dim=1)


def project(delta: torch.Tensor, radius: float | torch.Tensor, norm: str) -> torch.Tensor:
    """Project each row of ``delta`` onto the ball {‖δ‖ ≤ radius} of the given norm ('2' or 'inf')."""
    radius = torch.as_tensor(radius, dtype=delta.dtype, device=delta.device)
    radius = radius.expand(delta.shape[0]).reshape(-1, *[1] * (delta.dim() - 1))
    if norm == "inf":
        return torch.maximum(torch.minimum(delta, radius), -radius)
    scale = torch.clamp(radius.flatten() / _per_sample_norm(delta, "2").clamp_min(1e-12), max=1.0)
    return delta * scale.reshape(radius.shape)


def random_in_ball(shape: tuple[int, ...], radius: float, norm: str, generator: torch.Generator) -> torch.Tensor:
    """Uniform random points in the ball (L∞: the box; L2: uniform direction, radius·U^(1/d))."""
    if norm == "inf":
        return (torch.rand(shape, generator=generator) * 2 - 1) * radius
    direction = torch.randn(shape, generator=generator)
    direction = direction / _per_sample_norm(direction, "2").clamp_min(1e-12).reshape(-1, *[1] * (len(shape) - 1))
    d = int(np.prod(shape[1:]))
    r = radius * torch.rand(shape[0], generator=generator) ** (1.0 / d)
    return direction * r.reshape(-1, *[1] * (len(shape) - 1))


def ascent_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest-ascent direction of unit size in the norm: sign(g) for L∞, g/‖g‖₂ for L2 (per row)."""
    if norm == "inf":
        return grad.sign()
    return grad / _per_sample_norm(grad, "2").clamp_min(1e-12).reshape(-1, *[1] * (grad.dim() - 1))


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, radius: float, norm: str = "2", steps: int = 10,
        step_size: float | None = None, random_start: bool = True, seed: int = 0,
        domain: tuple[float, float] | None = None) -> torch.Tensor:
    """Perturbations δ (same shape as x) with ‖δ_i‖ ≤ radius that ascend CE(model(x + δ), y).

    Steepest ascent in the given norm (normalised gradient for L2, sign for L∞), projected after
    every step; ``step_size`` defaults to 2.5·radius/steps. With ``domain`` (which must contain x) the
    point x + δ is also kept inside the box; clipping towards a box containing x never lengthens δ, so
    δ stays in the ball. Only the input receives gradients; the model's parameters are untouched.
    """
    norm, radius = check_norm(norm), check_positive(radius, "radius")
    steps = check_samples(steps, "steps")
    alpha = 2.5 * radius / steps if step_size is None else check_positive(step_size, "step_size")
    generator = torch.Generator().manual_seed(seed)
    x = x.detach()
    if domain is not None and (x.min() < domain[0] or x.max() > domain[1]):
        raise InputError(f"pgd: the points must lie in the domain [{domain[0]:g}, {domain[1]:g}]")
    delta = (random_in_ball(tuple(x.shape), radius, norm, generator).to(x) if random_start
             else torch.zeros_like(x))
    for _ in range(steps):
        delta = _clip_domain(x, delta, domain).requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model(x + delta), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, delta)
        delta = project(delta.detach() + alpha * ascent_direction(grad, norm), radius, norm)
    return _clip_domain(x, delta, domain).detach()


def _clip_domain(x: torch.Tensor, delta: torch.Tensor, domain: tuple[float, float] | None) -> torch.Tensor:
    return delta if domain is None else torch.clamp(x + delta, domain[0], domain[1]) - x


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
