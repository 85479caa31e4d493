"""ONNX export: verifier-readable ops, dynamic batch, onnxruntime parity, whole-file writes, refusal."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from pacverify.errors import InputError
from pacverify.models import build_student
from pacverify.onnx_io import load_network
from pacverify.onnx_io.export import VERIFIER_OPS, ExportError, export_onnx


@pytest.mark.parametrize("spec, shape", [("mlp:2x16", (3,)), ("cnn:4-8k3s1p1-fc16", (1, 8, 8)), ("linear", (5,))])
def test_export_is_faithful_and_verifier_readable(tmp_path, spec, shape):
    student = build_student(spec, shape, 4, dropout=0.3, seed=1).eval()
    sample = np.random.default_rng(0).normal(size=(40,) + shape).astype(np.float32)
    path = tmp_path / "student.onnx"
    report = export_onnx(student, path, shape, sample=sample)
    assert report.max_abs_diff_random < 1e-5 and report.max_abs_diff_sample < 1e-5 and report.n_sample == 40
    model = onnx.load(str(path))
    assert set(report.ops) == {n.op_type for n in model.graph.node} and set(report.ops) <= VERIFIER_OPS
    assert "Dropout" not in report.ops
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 7):  # dynamic batch dimension
        x = np.random.default_rng(batch).normal(size=(batch,) + shape).astype(np.float32)
        with torch.no_grad():
            np.testing.assert_allclose(session.run(None, {"input": x})[0], student(torch.from_numpy(x)).numpy(),
                                       atol=1e-5)
    # the verifier's reader lowers it to the same function
    network = load_network(path)
    x = torch.from_numpy(sample[:5]).double()
    with torch.no_grad():
        torch.testing.assert_close(network(x.reshape(5, -1)), student.double()(x), atol=1e-9, rtol=1e-9)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))


def test_ops_the_verifier_cannot_read_are_refused_and_nothing_is_written(tmp_path):
    student = nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 2))
    with pytest.raises(ExportError, match="Sigmoid"):
        export_onnx(student, tmp_path / "s.onnx", (3,))
    assert list(tmp_path.iterdir()) == []


class _TracesOneBranch(nn.Module):
    """Python control flow on values: tracing records one branch, so the ONNX graph is not the module."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 2)

    def forward(self, x):
        return self.a(x) if bool(x[0, 0] > 0) else self.b(x)


def test_a_graph_that_differs_from_torch_is_refused(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(ExportError, match="differs from torch"):
        export_onnx(_TracesOneBranch(), tmp_path / "s.onnx", (2,), sample=np.ones((8, 2), dtype=np.float32))
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments(tmp_path):
    student = build_student("linear", (2,), 2)
    with pytest.raises(InputError, match="opset must be >= 13"):
        export_onnx(student, tmp_path / "s.onnx", (2,), opset=11)
    with pytest.raises(InputError, match="does not exist"):
        export_onnx(student, tmp_path / "missing" / "s.onnx", (2,))
