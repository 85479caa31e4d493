"""Teacher loading (every format, with consent where the file carries code), the ONNX-to-torch evaluator, students.

Poisoned files of every kind are in test_model_safety.py.
"""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from pacverify.errors import InputError, UnsupportedOperationError
from pacverify.models import (
    build_student,
    call_model,
    load_student,
    load_teacher,
    resolve_device,
    save_student,
    teacher_logits,
)
from pacverify.onnx_io.torch_module import onnx_to_torch

FACTORY = """
import torch
from torch import nn

def make():
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, 2))
"""


def _teacher() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, 2))


def _input_grad(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    model(x)[:, 0].sum().backward()
    return x.grad


def _onnx_export(model: nn.Module, example: torch.Tensor, path, opset: int = 17, fold: bool = True) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (example,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                          opset_version=opset, dynamic_axes={"x": {0: "b"}, "y": {0: "b"}},
                          do_constant_folding=fold)


def _save(fmt: str, model: nn.Module, tmp_path):
    model = model.eval()
    if fmt == "torchscript":
        path = tmp_path / "teacher.pt"
        torch.jit.save(torch.jit.script(model), str(path))
    elif fmt == "export":
        path = tmp_path / "teacher.pt2"
        program = torch.export.export(model, (torch.zeros(4, 3),), dynamic_shapes=({0: torch.export.Dim("batch")},))
        torch.export.save(program, str(path))
    elif fmt == "export-static":
        path = tmp_path / "static.pt2"
        torch.export.save(torch.export.export(model, (torch.zeros(4, 3),)), str(path))
    elif fmt == "onnx":
        path = tmp_path / "teacher.onnx"
        _onnx_export(model, torch.zeros(2, 3), path)
    else:
        path = tmp_path / "weights.pt"
        torch.save(model.state_dict(), path)
    return path


@pytest.mark.parametrize("fmt", ["torchscript", "export", "export-static", "onnx", "state_dict"])
def test_teacher_formats_round_trip_with_gradients(tmp_path, fmt):
    model = _teacher().eval()
    (tmp_path / "arch.py").write_text(FACTORY)
    path = _save(fmt, model, tmp_path)
    arch = f"{tmp_path / 'arch.py'}:make" if fmt == "state_dict" else None
    carries_code = fmt in ("torchscript", "export", "export-static")  # loading runs code from the file
    if carries_code:
        with pytest.raises(InputError, match="--trust-pickle"):
            load_teacher(path, arch=arch, device="cpu")
    loaded = load_teacher(path, arch=arch, trust_pickle=carries_code, device="cpu")
    assert not any(p.requires_grad for p in loaded.parameters())
    x = torch.randn(9, 3)  # 9 is not the static batch of 4: chunked and padded
    torch.testing.assert_close(teacher_logits(loaded, x, batch_size=5), model(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_input_grad(loaded, x), _input_grad(model, x), atol=1e-5, rtol=1e-5)


def test_teacher_is_put_in_eval_mode(tmp_path):
    model = _teacher().train()
    torch.jit.save(torch.jit.script(model), str(tmp_path / "t.pt"))
    loaded = load_teacher(tmp_path / "t.pt", trust_pickle=True, device="cpu")
    x = torch.randn(64, 3)
    torch.testing.assert_close(teacher_logits(loaded, x), teacher_logits(loaded, x))  # dropout is off


def test_pickled_teacher_needs_trust(tmp_path):
    path = tmp_path / "full.pt"
    torch.save(_teacher(), path)
    with pytest.raises(InputError) as info:
        load_teacher(path, device="cpu")
    message = str(info.value)
    for word in ("executes code", "--trust-pickle", "torch.onnx.export", "state_dict", "--arch", "torch.nn"):
        assert word in message
    assert "\n" not in message
    loaded = load_teacher(path, trust_pickle=True, device="cpu")
    x = torch.randn(5, 3)
    torch.testing.assert_close(loaded(x), _teacher().eval()(x))


def test_teacher_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_teacher(tmp_path / "none.pt", device="cpu")
    torch.save(_teacher().state_dict(), tmp_path / "sd.pt")
    with pytest.raises(InputError, match="--arch MODULE:FACTORY"):
        load_teacher(tmp_path / "sd.pt", device="cpu")
    (tmp_path / "arch.py").write_text("from torch import nn\ndef make():\n    return nn.Linear(3, 2)\n")
    with pytest.raises(InputError, match="does not fit"):
        load_teacher(tmp_path / "sd.pt", arch=f"{tmp_path / 'arch.py'}:make", device="cpu")
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 64)
    with pytest.raises(InputError, match="could not be loaded"):
        load_teacher(tmp_path / "junk.pt", device="cpu")
    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(InputError):
        load_teacher(tmp_path / "junk.onnx", device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(InputError, match="device must be one of"):
        resolve_device("tpu")


def test_call_model_checks_the_output_shape():
    with pytest.raises(InputError, match=r"logits of shape \(batch, classes >= 2\)"):
        call_model(nn.Linear(3, 1), torch.zeros(2, 3))
    with pytest.raises(InputError, match="failed on inputs of shape"):
        call_model(nn.Linear(4, 2), torch.zeros(2, 3))


class _Zoo(nn.Module):
    """Many ONNX ops in one graph: Conv, BatchNorm, MaxPool, AvgPool, Sigmoid, Tanh, Softmax, Gelu, view-flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, stride=1, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 2, stride=2, padding=(0, 1))
        self.fc = nn.Linear(4 * 1 * 3 + 4, 5)
        self.ln = nn.LayerNorm(5)

    def forward(self, x):
        h = torch.sigmoid(self.bn(self.conv(x)))
        h = nn.functional.max_pool2d(h, 2, ceil_mode=True) + nn.functional.avg_pool2d(h, 2, ceil_mode=True)
        h = torch.tanh(self.conv2(h))
        pooled = h.mean(dim=(2, 3))
        flat = torch.cat([h.view(h.size(0), -1), pooled], dim=1)
        z = self.ln(nn.functional.gelu(self.fc(flat)))
        return z - torch.softmax(z, dim=1).clamp(0.1, 0.9) + nn.functional.leaky_relu(z[:, :1])


@pytest.mark.parametrize("opset", [13, 17])
def test_onnx_evaluator_matches_onnxruntime_and_torch_gradients(tmp_path, opset):
    torch.manual_seed(1)
    model = _Zoo().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "zoo.onnx"
    _onnx_export(model, torch.zeros(2, 2, 5, 7), path, opset=opset, fold=False)
    evaluator = onnx_to_torch(path)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"Conv", "BatchNormalization", "MaxPool", "AveragePool", "Sigmoid", "Tanh", "Softmax", "Erf", "Shape",
            "Gather", "Reshape", "Concat", "ReduceMean", "Clip", "LeakyRelu", "Slice"} <= ops
    x = torch.randn(3, 2, 5, 7)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(evaluator(x).detach().numpy(), expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(_input_grad(evaluator, x), _input_grad(model, x), atol=1e-5, rtol=1e-4)


def test_onnx_evaluator_refuses_unknown_ops():
    node = helper.make_node("Einsum", ["x", "x"], ["y"], equation="bi,bi->bi")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 2])])
    with pytest.raises(UnsupportedOperationError, match="Einsum"):
        onnx_to_torch(helper.make_model(graph))


@pytest.mark.parametrize("spec, hidden", [("mlp:2x64", [64, 64]), ("mlp:32-16-8", [32, 16, 8]), ("linear", [])])
def test_mlp_students(spec, hidden):
    student = build_student(spec, (4,), 3, seed=0)
    widths = [m.out_features for m in student if isinstance(m, nn.Linear)]
    assert widths == hidden + [3]
    assert {type(m) for m in student} <= {nn.Flatten, nn.Linear, nn.ReLU}
    assert student(torch.zeros(5, 4)).shape == (5, 3)


def test_cnn_student_and_dropout():
    student = build_student("cnn:8-16k3s1p1-fc32", (1, 8, 8), 10, dropout=0.2, seed=0)
    assert {type(m) for m in student} <= {nn.Flatten, nn.Linear, nn.ReLU, nn.Conv2d, nn.Dropout}
    assert isinstance(student[-2], nn.Dropout) and isinstance(student[-1], nn.Linear)
    assert student(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(InputError, match=r"\(C, H, W\)"):
        build_student("cnn:8", (64,), 10)


@pytest.mark.parametrize("spec", ["mlp", "mlp:2x", "mlp:0x4", "mlp:4-a", "cnn:", "cnn:fc8", "resnet:18", "mlp:2x0"])
def test_bad_student_specs(spec):
    with pytest.raises(InputError, match="student spec"):
        build_student(spec, (4,), 2)


def test_student_init_depends_only_on_the_seed():
    torch.manual_seed(123)
    a = build_student("mlp:2x16", (3,), 2, seed=5)
    torch.manual_seed(999)
    b = build_student("mlp:2x16", (3,), 2, seed=5)
    c = build_student("mlp:2x16", (3,), 2, seed=6)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters(), strict=True))


def test_student_file_round_trip_is_weights_only(tmp_path):
    student = build_student("cnn:4-fc8", (1, 6, 6), 3, dropout=0.1, seed=2).eval()
    save_student(student, tmp_path / "student.pt")
    raw = torch.load(tmp_path / "student.pt", weights_only=True)
    assert raw["spec"] == "cnn:4-fc8" and raw["input_shape"] == [1, 6, 6]
    loaded = load_student(tmp_path / "student.pt")
    x = torch.randn(4, 1, 6, 6)
    torch.testing.assert_close(loaded(x), student(x))
    # a student file is also a valid teacher (ISD, or distilling further)
    torch.testing.assert_close(load_teacher(tmp_path / "student.pt", device="cpu")(x), student(x))
    torch.save({"a": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not a pacverify student file"):
        load_student(tmp_path / "other.pt")


def test_onnx_teacher_with_a_declared_layout_takes_flat_rows_and_says_so(tmp_path):
    """ACAS Xu's graphs declare inputs (1, 1, 1, 5) and subtract a (1, 1, 1, 5) mean before a Flatten: rows of 5 used
    to broadcast into one (1, 5·n) row and fail. Rows are now reshaped to the declared layout, with a note."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from pacverify.models import layout_note, load_teacher

    rng = np.random.default_rng(0)
    mean, w, b = rng.normal(size=(1, 1, 1, 3)), rng.normal(size=(3, 4)), rng.normal(size=4)
    graph = helper.make_graph(
        [helper.make_node("Sub", ["input", "mean"], ["centred"]),
         helper.make_node("Flatten", ["centred"], ["flat"], axis=1),
         helper.make_node("MatMul", ["flat", "W"], ["mm"]), helper.make_node("Add", ["mm", "B"], ["logits"])],
        "acas_like", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 1, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(mean.astype(np.float32), "mean"), numpy_helper.from_array(w.astype(np.float32), "W"),
         numpy_helper.from_array(b.astype(np.float32), "B")])
    path = tmp_path / "acas_like.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    teacher = load_teacher(path, device="cpu")
    x = rng.normal(size=(6, 3)).astype(np.float32)
    expected = (x - mean.reshape(1, 3)) @ w + b
    got = teacher(torch.from_numpy(x)).detach().numpy()
    assert got.shape == (6, 4) and np.allclose(got, expected, atol=1e-5)
    assert np.allclose(teacher(torch.from_numpy(x.reshape(6, 1, 1, 3))).detach().numpy(), expected, atol=1e-5)
    note = layout_note(teacher, (3,))
    assert note is not None and "(1, 1, 3)" in note and "(3,)" in note
    assert layout_note(teacher, (1, 1, 3)) is None and layout_note(teacher, (4,)) is None
