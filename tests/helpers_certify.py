"""Small, fast certification settings shared by the certify/check tests (m = 2, s in the hundreds)."""
from __future__ import annotations

import numpy as np

from pacverify.synthetic import pocket_teacher, sigmoid_teacher

# s = sample_size(2, 0.5, 0.1) = 244 points; distillation budget sized for CI.
TINY = dict(eps=0.5, eta=0.1, kappa=0.9, synthetic="gaussians", epochs=30, coverage_points=50, attack_steps=30,
            attack_restarts=3, timeout=1.0)


def robust_teacher():
    """Sigmoid teacher (a = 3): κ = 0.9-confident only where its exact radius |x·1|/√2 ≥ 0.52 > 3δ for δ = 0.05."""
    return sigmoid_teacher(3.0)


def non_robust_teacher():
    """Sigmoid teacher with class-flipping pockets of L1 radius 0.15 at the two class modes of the data."""
    mode = 1 / np.sqrt(2)
    return pocket_teacher(3.0, np.array([[mode, mode], [-mode, -mode]]), 0.15)


def onnx_teacher(model, path, dim: int = 2):
    """Save a teacher as ONNX (a format pacverify reads without running code from the file, so no --trust-pickle)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.zeros(2, dim),), str(path), dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "b"}, "y": {0: "b"}})
    return path
