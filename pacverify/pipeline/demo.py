"""``pacverify demo``: the paper's synthetic experiment (004 §5) certified end to end.

The teacher is the sigmoid teacher of Eq 11 (f_T(x) = (σ(a·x·1), 1 − σ(a·x·1)), a = 1.2) realised
as a ReLU network (:func:`pacverify.synthetic.sigmoid_teacher`) and saved as ONNX; D_X is
the two truncated Gaussians in R² of :class:`pacverify.data.TruncatedGaussians`. The teacher's
exact robust radius at x is |x·1|/√2, and where it is κ = 0.9-confident that is ≥ 1.29 > 3δ = 0.9,
so a correct pipeline certifies it.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from pacverify.certificate.io import Certificate
from pacverify.fileio import atomic_write_bytes, ensure_dir
from pacverify.pipeline.run import certify
from pacverify.synthetic import sigmoid_teacher

DEMO = {"delta": 0.3, "eps": 0.05, "eta": 0.01, "kappa": 0.9, "synthetic": "gaussians"}
TEACHER_SLOPE = 1.2


def write_demo_teacher(path: str | os.PathLike) -> Path:
    """Save the demo's sigmoid teacher as ONNX (whole-file write): a format pacverify reads without running code."""
    import io
    import warnings

    from pacverify.onnx_io.export import _legacy_exporter

    model = sigmoid_teacher(TEACHER_SLOPE, dim=2, width=32).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(2, 2),), buffer,  # type: ignore[arg-type]  # file objects work
                          **_legacy_exporter(), input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17)
    return atomic_write_bytes(path, buffer.getvalue())


def run_demo(out: str | os.PathLike = "pacverify-demo", **overrides) -> Certificate:
    """Write the teacher into ``out`` and certify it with the demo's parameters (``overrides`` win)."""
    out_dir = ensure_dir(out)
    teacher = write_demo_teacher(out_dir / "teacher.onnx")
    return certify(teacher, out=out_dir, **{**DEMO, **overrides})
