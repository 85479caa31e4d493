"""The two perturbation norms of pacverify (L2 and L∞) and their duals, in one place.

``norm`` is always the string ``"2"`` or ``"inf"`` (validated by :func:`pacverify.validation.check_norm`).
"""
from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

NORMS = ("2", "inf")
DUAL = {"2": "2", "inf": "1"}
_ORD = {"2": 2.0, "inf": float("inf"), "1": 1.0}

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def vector_norm(diff: ArrayT, norm: str, axis: int = -1) -> ArrayT:
    """‖diff‖ along ``axis`` in ``norm`` ("2", "inf", or "1" for the dual of L∞), for numpy arrays or torch tensors.

    >>> float(vector_norm(np.array([3.0, -4.0]), "2")), float(vector_norm(np.array([3.0, -4.0]), "inf"))
    (5.0, 4.0)
    """
    if norm not in _ORD:
        raise ValueError(f"norm must be one of {', '.join(_ORD)}, got {norm!r}")
    if isinstance(diff, torch.Tensor):
        return torch.linalg.vector_norm(diff, ord=_ORD[norm], dim=axis)
    return np.linalg.norm(np.asarray(diff), ord=_ORD[norm], axis=axis)


def dual_norm(coefficients: ArrayT, norm: str, axis: int = -1) -> ArrayT:
    """‖a‖_* along ``axis``: the dual of ``norm`` (L2 → L2, L∞ → L1), so that max_{‖u‖ ≤ r} a·u = r‖a‖_*."""
    return vector_norm(coefficients, DUAL[norm], axis)
