"""Teacher cross-check (DESIGN.md §2): attack the *teacher* in every ball the certificate claims.

The certificate's claims rest on transfer assumptions (perfect student, local linearity) that
no proof covers; a counterexample found on the teacher inside a claimed ball contradicts them
and turns the verdict into REFUTED. Finding none proves nothing, and the report says so.

The attack is the package's one PGD core (:func:`pacverify.attacks.attack`, margin loss), run on the
teacher directly: the teacher only has to be an :class:`~pacverify.attacks.Attackable` on flat inputs,
which :class:`TeacherModel` makes of a torch module. Counterexamples are confirmed by a forward pass of
the teacher in its own dtype — the function the user deploys — and must lie inside the ball (and the
domain), checked in float64.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pacverify.attacks import Attackable, attack


class TeacherModel:
    """A torch module taking inputs of ``input_shape`` as an :class:`~pacverify.attacks.Attackable` on flat
    (B, m) inputs.

    A call reshapes the batch, runs the module in its own dtype (``module_dtype``) on its own ``device``,
    and returns the logits in the dtype and on the device of the call's input, so float64 points are
    attacked and checked on exactly what the teacher computes.
    """

    def __init__(self, module: torch.nn.Module, input_shape: tuple[int, ...], *,
                 device: torch.device | str = "cpu", module_dtype: torch.dtype = torch.float32):
        self.module = module
        self.input_shape = tuple(input_shape)
        self.module_device = torch.device(device)
        self.module_dtype = module_dtype

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shaped = x.reshape(x.shape[0], *self.input_shape).to(self.module_device, self.module_dtype)
        return self.module(shaped).to(x.device, x.dtype)


@dataclass(frozen=True)
class TeacherCheck:
    """Per attacked ball: ``found`` (N,) bool and, where found, the counterexample (N, m) (NaN elsewhere)."""

    found: np.ndarray
    counterexamples: np.ndarray
    radius: float
    steps: int
    restarts: int


def attack_teacher(teacher: Attackable, centers: np.ndarray, labels: np.ndarray, radius: float, norm: str, *,
                   n_classes: int, domain: tuple[float, float] | None = None, steps: int = 50, restarts: int = 5,
                   seed: int = 0, batch_size: int = 1024) -> TeacherCheck:
    """PGD on the teacher in the ``norm``-ball of ``radius`` around each centre (flat, (N, m)), keeping ``labels``.

    ``teacher`` maps flat float64 (B, m) points to logits (e.g. a :class:`TeacherModel`). ``domain``
    (lo, hi) clips the balls to the input domain. Returns confirmed counterexamples only: inside the
    ball (and domain) and classified differently from ``labels`` by the teacher. ``n_classes`` is the
    number of logits the teacher returns.
    """
    centers = np.asarray(centers, dtype=np.float64).reshape(len(centers), -1)
    n = len(centers)
    found = np.zeros(n, dtype=bool)
    cex = np.full(centers.shape, np.nan)
    if n == 0 or radius <= 0:
        return TeacherCheck(found, cex, float(radius), steps, restarts)
    for start in range(0, n, batch_size):
        sl = slice(start, min(n, start + batch_size))
        result = attack(teacher, torch.as_tensor(centers[sl]), torch.as_tensor(labels[sl]), float(radius),
                        norm=norm, loss="margin", domain=domain, steps=steps, restarts=restarts, seed=seed + start)
        if result.outputs.shape[1] != n_classes:
            raise ValueError(f"the teacher returns {result.outputs.shape[1]} logits, expected n_classes={n_classes}")
        hit = result.found.numpy()
        found[sl] = hit
        cex[sl][hit] = result.inputs.numpy()[hit]
    return TeacherCheck(found, cex, float(radius), steps, restarts)
