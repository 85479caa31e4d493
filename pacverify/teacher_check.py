"""Teacher cross-check (DESIGN.md §2): attack the *teacher* in every ball the certificate claims.

The certificate's claims rest on transfer assumptions (perfect student, local linearity) that
no proof covers; a counterexample found on the teacher inside a claimed ball contradicts them
and turns the verdict into REFUTED. Finding none proves nothing, and the report says so.

The attack is the verifier's PGD (:func:`pacverify.verify.attacks.pgd_attack`), run on the
teacher through :class:`TeacherModel`, a thin adapter that gives a torch module the interface
the attack uses. Counterexamples are confirmed by a forward pass of the teacher in its own
dtype — the function the user deploys — and must lie inside the ball.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pacverify.verify.attacks import pgd_attack
from pacverify.verify.property import robustness_property


class TeacherModel:
    """Adapter: a torch module taking inputs of ``input_shape`` as a function of flat (B, m) inputs.

    ``forward`` runs the module in its own dtype and device and returns logits in the dtype of
    the call's input, so float64 checks see exactly what the teacher computes.
    """

    def __init__(self, module: torch.nn.Module, input_shape: tuple[int, ...], *,
                 device: torch.device | str = "cpu", module_dtype: torch.dtype = torch.float32,
                 dtype: torch.dtype | None = None):
        self.module = module
        self.input_shape = tuple(input_shape)
        self.module_device = torch.device(device)
        self.module_dtype = module_dtype
        self.dtype = dtype or module_dtype
        self.device = self.module_device

    def to(self, device=None, dtype=None) -> "TeacherModel":
        return TeacherModel(self.module, self.input_shape, device=self.module_device, module_dtype=self.module_dtype,
                            dtype=dtype or self.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shaped = x.reshape(x.shape[0], *self.input_shape).to(self.module_device, self.module_dtype)
        return self.module(shaped).to(x.device, x.dtype)

    __call__ = forward


@dataclass(frozen=True)
class TeacherCheck:
    """Per attacked ball: ``found`` (N,) bool and, where found, the counterexample (N, m) (NaN elsewhere)."""

    found: np.ndarray
    counterexamples: np.ndarray
    radius: float
    steps: int
    restarts: int


def attack_teacher(teacher: TeacherModel, centers: np.ndarray, labels: np.ndarray, radius: float, norm: str, *,
                   n_classes: int, domain: tuple[float, float] | None = None, steps: int = 50, restarts: int = 5,
                   seed: int = 0, batch_size: int = 1024) -> TeacherCheck:
    """PGD on the teacher in the ``norm``-ball of ``radius`` around each centre (flat, (N, m)), keeping ``labels``.

    ``domain`` (lo, hi) clips the balls to the input domain. Returns confirmed counterexamples
    only: inside the ball (and domain) and classified differently from ``labels`` by the teacher.
    """
    centers = np.asarray(centers, dtype=np.float64).reshape(len(centers), -1)
    n = len(centers)
    found = np.zeros(n, dtype=bool)
    cex = np.full(centers.shape, np.nan)
    if n == 0 or radius <= 0:
        return TeacherCheck(found, cex, float(radius), steps, restarts)
    lo_dom, hi_dom = (-np.inf, np.inf) if domain is None else domain
    for start in range(0, n, batch_size):
        sl = slice(start, min(n, start + batch_size))
        c = torch.as_tensor(centers[sl])
        if norm == "inf":
            lower, upper = (c - radius).clamp(min=lo_dom), (c + radius).clamp(max=hi_dom)
            center = rad = None
        else:
            lower = torch.full_like(c, lo_dom).maximum(c - radius)
            upper = torch.full_like(c, hi_dom).minimum(c + radius)
            center, rad = c, torch.full((len(c),), float(radius), dtype=torch.float64)
        prop = robustness_property(torch.as_tensor(labels[sl]), n_classes)
        result = pgd_attack(teacher.to(dtype=torch.float64), prop, lower, upper, center=center, radius=rad,
                            steps=steps, restarts=restarts, seed=seed + start)
        hit = result.found.numpy()
        found[sl] = hit
        cex[sl][hit] = result.inputs.numpy()[hit]
    return TeacherCheck(found, cex, float(radius), steps, restarts)
