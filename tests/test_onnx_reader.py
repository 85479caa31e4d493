"""The ONNX reader: every supported op form agrees with onnxruntime; bad models get clear errors."""
from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import SHARED
from helpers_nets import conv_model
from onnx import TensorProto, helper, numpy_helper

from pacverify.errors import InputError, UnsupportedOperationError
from pacverify.network import Affine, Relu
from pacverify.onnx_io import _attrs, load_network, onnx_input
from pacverify.onnx_io.torch_module import onnx_to_torch

VNN = SHARED / "vnncomp"
RNG = np.random.default_rng(0)


def _const(name: str, array) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def _model(nodes, shape, inits, out_shape=None, opset=13, extra_inputs=()) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape), *extra_inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _agrees(model: onnx.ModelProto, n: int = 6, low: float = -2.0, high: float = 2.0):
    """Max |reader − onnxruntime| over random float32 inputs; returns the network."""
    data = model.SerializeToString()
    net = load_network(data)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    points = RNG.uniform(low, high, (n, net.in_features)).astype(np.float32)
    if net.meta["batch"] == "dynamic":
        reference = session.run(None, {net.input_name: onnx_input(net, points)})[0].reshape(n, -1)
    else:
        reference = np.concatenate([session.run(None, {net.input_name: onnx_input(net, p[None])})[0].reshape(1, -1)
                                    for p in points])
    ours = net(torch.as_tensor(points, dtype=torch.float64)).numpy()
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() < 1e-5
    return net


@pytest.mark.skipif(not VNN.is_dir(), reason="../shared/vnncomp (VNN-COMP data) is not present")
@pytest.mark.parametrize("path", [
    VNN / "mnistfc/onnx/mnist-net_256x2.onnx",
    VNN / "acasxu/onnx/ACASXU_run2a_1_1_batch_2000.onnx",
    VNN / "acasxu/onnx/ACASXU_run2a_3_7_batch_2000.onnx",
    VNN / "acasxu/onnx/ACASXU_run2a_5_9_batch_2000.onnx",
])
def test_vnncomp_networks_agree_with_onnxruntime(path):
    model = onnx.load(str(path))
    net = _agrees(model, n=5, low=0.0, high=1.0)
    widths = net.relu_widths()
    assert widths == ([256, 256] if "mnist" in path.name else [50] * 6)
    # the final Affine has no ReLU after it: the two slices differ in length by one
    assert all(isinstance(a, Affine) and isinstance(r, Relu)
               for a, r in zip(net.layers[::2], net.layers[1::2], strict=False))


@pytest.mark.parametrize("trans_b, alpha, beta, c_shape", [
    (0, 1.0, 1.0, (3,)), (1, 1.0, 1.0, (3,)), (1, 0.5, 2.0, (1, 3)), (0, -1.5, 0.25, ()), (1, 2.0, 1.0, None)])
def test_gemm_forms_on_the_live_a_operand(trans_b, alpha, beta, c_shape):
    w = RNG.normal(size=(3, 4) if trans_b else (4, 3))
    inits = [_const("w", w)] + ([] if c_shape is None else [_const("c", RNG.normal(size=c_shape))])
    node = helper.make_node("Gemm", ["x", "w"] + ([] if c_shape is None else ["c"]), ["y"], transB=trans_b,
                            alpha=alpha, beta=beta)
    _agrees(_model([node], ["N", 4], inits))


def test_gemm_with_transposed_and_right_hand_live_operands():
    # transA on a fixed (4, 1) input: op(A) = A^T is (1, 4)
    w = RNG.normal(size=(4, 3))
    _agrees(_model([helper.make_node("Gemm", ["x", "w", "c"], ["y"], transA=1)], [4, 1],
                   [_const("w", w), _const("c", RNG.normal(size=3))]))
    # the live tensor as B: y = W x^T (transB=1) on a fixed (1, 4) input, and y = W x on (4, 1)
    _agrees(_model([helper.make_node("Gemm", ["w", "x"], ["y"], transB=1, alpha=0.7)], [1, 4],
                   [_const("w", RNG.normal(size=(3, 4)))]))
    _agrees(_model([helper.make_node("Gemm", ["w", "x", "c"], ["y"], transA=1)], [4, 1],
                   [_const("w", RNG.normal(size=(4, 3))), _const("c", RNG.normal(size=(3, 1)))]))
    # several rows: (2, 4) fixed input, product with a (4, 3) matrix → (2, 3)
    _agrees(_model([helper.make_node("Gemm", ["x", "w"], ["y"])], [2, 4], [_const("w", w)]))


def test_matmul_add_sub_mul_div_neg_chain():
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["a"]),
        helper.make_node("Div", ["a", "std"], ["b"]),
        helper.make_node("MatMul", ["b", "w1"], ["c"]),
        helper.make_node("Add", ["bias", "c"], ["d"]),
        helper.make_node("Relu", ["d"], ["e"]),
        helper.make_node("Mul", ["e", "scale"], ["f"]),
        helper.make_node("Sub", ["shift", "f"], ["g"]),
        helper.make_node("Neg", ["g"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["y"]),
    ]
    inits = [_const("mean", RNG.normal(size=5)), _const("std", RNG.uniform(0.5, 2, size=5)),
             _const("w1", RNG.normal(size=(5, 6))), _const("bias", RNG.normal(size=6)),
             _const("scale", RNG.normal(size=6)), _const("shift", RNG.normal(size=(1, 6))),
             _const("w2", RNG.normal(size=(6, 2)))]
    net = _agrees(_model(nodes, ["N", 5], inits))
    assert net.relu_widths() == [6] and len(net.affine_layers()) == 2  # the affine steps were folded


def test_matmul_with_leading_dims_and_constant_on_the_left():
    _agrees(_model([helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Relu", ["m"], ["r"]),
                    helper.make_node("Flatten", ["r"], ["y"])], ["N", 2, 4], [_const("w", RNG.normal(size=(4, 3)))]))
    _agrees(_model([helper.make_node("MatMul", ["w", "x"], ["y"])], [4, 1], [_const("w", RNG.normal(size=(3, 4)))]))
    _agrees(_model([helper.make_node("MatMul", ["w", "x"], ["m"]), helper.make_node("Flatten", ["m"], ["y"], axis=0)],
                   [4, 2], [_const("w", RNG.normal(size=(3, 4)))]))


def test_reshape_squeeze_unsqueeze_transpose_identity_constant():
    nodes = [
        helper.make_node("Constant", [], ["target"], value=numpy_helper.from_array(np.array([0, 3, 4], np.int64))),
        helper.make_node("Reshape", ["x", "target"], ["a"]),
        helper.make_node("Transpose", ["a"], ["b"], perm=[0, 2, 1]),
        helper.make_node("Unsqueeze", ["b", "axis"], ["c"]),
        helper.make_node("Squeeze", ["c", "axis"], ["d"]),
        helper.make_node("Identity", ["d"], ["e"]),
        helper.make_node("Flatten", ["e"], ["f"]),
        helper.make_node("Gemm", ["f", "w"], ["y"], transB=1),
    ]
    inits = [numpy_helper.from_array(np.array([1], np.int64), "axis"), _const("w", RNG.normal(size=(2, 12)))]
    _agrees(_model(nodes, ["N", 12], inits))


def test_opset_11_unsqueeze_attribute_and_shape_gather_reshape():
    # the legacy pattern x.view(x.size(0), -1): Shape -> Gather -> Unsqueeze -> Concat -> Reshape
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n"], ["n1"], axes=[0]),
        helper.make_node("Concat", ["n1", "minus1"], ["t"], axis=0),
        helper.make_node("Reshape", ["x", "t"], ["f"]),
        helper.make_node("Gemm", ["f", "w"], ["y"], transB=1),
    ]
    inits = [numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1"), _const("w", RNG.normal(size=(3, 6)))]
    _agrees(_model(nodes, ["N", 2, 3], inits, opset=11))


@pytest.mark.parametrize("seed, batchnorm, dynamic", [(0, True, True), (1, False, False)])
def test_conv_and_batchnorm_students(seed, batchnorm, dynamic):
    net = _agrees(conv_model(seed, batchnorm=batchnorm, dynamic_batch=dynamic))
    assert net.relu_widths() == [50, 18]


@pytest.mark.parametrize("attrs", [
    dict(strides=[2, 1], pads=[0, 1, 2, 0], dilations=[1, 2]),
    dict(group=2, auto_pad="SAME_UPPER"),
    dict(auto_pad="SAME_LOWER", strides=[2, 2]),
    dict(auto_pad="VALID"),
])
def test_conv_attribute_forms(attrs):
    group = attrs.get("group", 1)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], **attrs), helper.make_node("Flatten", ["c"], ["y"])]
    inits = [_const("w", RNG.normal(size=(4, 2 // group, 3, 3))), _const("b", RNG.normal(size=4))]
    model = _model(nodes, ["N", 2, 6, 5], inits)
    _agrees(model)
    _torch_agrees(model, (3, 2, 6, 5))   # the teacher evaluator shares the pads logic (onnx_io/_attrs.py)


def _torch_agrees(model: onnx.ModelProto, shape: tuple[int, ...]) -> None:
    """The torch evaluator of ONNX teachers (:func:`onnx_to_torch`) agrees with onnxruntime."""
    x = RNG.uniform(-2, 2, shape).astype(np.float32)
    reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    ours = onnx_to_torch(model)(torch.from_numpy(x)).detach().numpy()
    assert ours.shape == reference[0].shape and np.abs(ours - reference[0]).max() < 1e-5


def test_shared_attribute_helpers_by_hand():
    # size 5, kernel 4, stride 2: ceil(5/2) = 3 outputs need (3-1)*2 + 4 - 5 = 3 pad pixels, the odd one at the end
    # for SAME_UPPER and at the beginning for SAME_LOWER
    assert _attrs.conv_pads({"auto_pad": b"SAME_UPPER"}, (5,), (4,), (2,), (1,)) == [1, 2]
    assert _attrs.conv_pads({"auto_pad": "SAME_LOWER"}, (5,), (4,), (2,), (1,)) == [2, 1]
    assert _attrs.conv_pads({"auto_pad": b"VALID", "pads": [1, 1]}, (5,), (4,), (2,), (1,)) == [0, 0]
    assert _attrs.conv_pads({"pads": [0, 1, 2, 3]}, (5, 5), (3, 3), (1, 1), (1, 1)) == [0, 1, 2, 3]
    assert _attrs.conv_pads({}, (5, 5), (3, 3), (1, 1), (1, 1)) == [0, 0, 0, 0]
    assert _attrs.torch_pad_widths([0, 1, 2, 3]) == [1, 3, 0, 2]   # last axis first, (begin, end) per axis
    assert _attrs.axes(None, {"axes": [0, -1]}) == [0, -1]
    assert _attrs.axes(np.array([[2]]), {"axes": [0]}) == [2] == _attrs.axes(torch.tensor([2]), {})
    assert _attrs.axes(None, {}) is None
    assert [_attrs.normalize_axis(a, 3) for a in (-3, -1, 0, 2)] == [0, 2, 0, 2]
    assert _attrs.text(b"NOTSET") == "NOTSET" and _attrs.text(3) == 3


@pytest.mark.parametrize("node, shape, opset", [
    (helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
     (2, 3, 5, 5), 13),
    (helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], pads=[0, 1, 2, 1]), (2, 3, 5, 6), 13),
    (helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], auto_pad="SAME_LOWER"), (2, 1, 4, 4), 13),
    (helper.make_node("Pad", ["x", "pads"], ["y"], mode="constant"), (2, 3, 4), 13),
    (helper.make_node("Squeeze", ["x"], ["y"], axes=[-2]), (2, 3, 1, 4), 11),
    (helper.make_node("Unsqueeze", ["x"], ["y"], axes=[0, -1]), (2, 3), 11),
    (helper.make_node("ReduceMean", ["x"], ["y"], axes=[-1, 1], keepdims=0), (2, 3, 4), 13),
])
def test_torch_evaluator_attribute_forms(node, shape, opset):
    inits = [numpy_helper.from_array(np.array([0, 1, 2, 1, 0, 3], np.int64), "pads")] if node.op_type == "Pad" else []
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    _torch_agrees(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8), shape)


def test_conv1d_and_batchnorm1d():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"], epsilon=1e-3),
             helper.make_node("Relu", ["n"], ["r"]), helper.make_node("Flatten", ["r"], ["y"])]
    inits = [_const("w", RNG.normal(size=(3, 2, 3))), _const("s", RNG.uniform(0.5, 1.5, 3)),
             _const("b", RNG.normal(size=3)), _const("m", RNG.normal(size=3)), _const("v", RNG.uniform(0.5, 2, 3))]
    _agrees(_model(nodes, ["N", 2, 7], inits))


def test_torch_exported_students():
    class Student(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 3, 3, stride=2, padding=1)
            self.bn = torch.nn.BatchNorm2d(3)
            self.fc = torch.nn.Linear(3 * 4 * 4, 5)

        def forward(self, x):
            h = torch.relu(self.bn(self.conv(x)))
            return self.fc(h.view(h.size(0), -1))

    torch.manual_seed(0)
    student = Student()
    with torch.no_grad():
        student.bn.running_mean.uniform_(-0.3, 0.3)
        student.bn.running_var.uniform_(0.5, 1.5)
    student.eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(student, torch.zeros(1, 1, 8, 8), buffer, dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    net = _agrees(onnx.load_from_string(buffer.getvalue()))
    x = torch.rand(4, 1, 8, 8)
    assert torch.allclose(net(x.double()).float(), student(x), atol=1e-5)


def _gemm_model(**kw) -> onnx.ModelProto:
    return _model([helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], ["N", 3],
                  [_const("w", RNG.normal(size=(2, 3)))], **kw)


def test_unsupported_op_names_op_type_and_node():
    model = _model([helper.make_node("Sigmoid", ["x"], ["y"], name="act7")], ["N", 3], [])
    with pytest.raises(UnsupportedOperationError, match=r"'Sigmoid'.*act7"):
        load_network(model)


def test_truncated_and_missing_files_are_input_errors(tmp_path):
    layers = [helper.make_node("Gemm", ["x", "w1"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
              helper.make_node("Gemm", ["r", "w2"], ["y"], transB=1)]
    data = _model(layers, ["N", 8], [_const("w1", RNG.normal(size=(32, 8))),
                                      _const("w2", RNG.normal(size=(4, 32)))]).SerializeToString()
    load_network(data)
    for cut in (len(data) // 2, len(data) - 7, 10):
        path = tmp_path / f"cut{cut}.onnx"
        path.write_bytes(data[:cut])
        with pytest.raises(InputError):
            load_network(path)
    with pytest.raises(InputError, match="not found"):
        load_network(tmp_path / "missing.onnx")
    with pytest.raises(InputError):
        load_network(b"this is not an onnx file")


def test_multiple_inputs_outputs_and_dynamic_dims_are_refused():
    extra = helper.make_tensor_value_info("x2", TensorProto.FLOAT, ["N", 3])
    two_inputs = _model([helper.make_node("Add", ["x", "x2"], ["y"])], ["N", 3], [], extra_inputs=[extra])
    with pytest.raises(InputError, match="exactly one input"):
        load_network(two_inputs)
    two_outputs = _gemm_model()
    two_outputs.graph.output.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3]))
    with pytest.raises(InputError, match="exactly one output"):
        load_network(two_outputs)
    with pytest.raises(InputError, match="dynamic dimensions"):
        load_network(_model([helper.make_node("Identity", ["x"], ["y"])], ["N", "M"], []))


def test_non_sequential_graphs_are_lowered_exactly():
    """A residual Add of a ReLU's input and output, a tensor read again after a later ReLU (carried as ±ReLU
    pairs) and a Concat of two branches are read as chains that agree with onnxruntime."""
    w = _const("w", RNG.normal(size=(3, 3)))
    residual = _model([helper.make_node("Gemm", ["x", "w"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
                       helper.make_node("Add", ["r", "h"], ["y"])], ["N", 3], [w])
    net = _agrees(residual)
    assert sum(isinstance(layer, Relu) for layer in net.layers) == 1
    skip = _model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Identity", ["r"], ["unused"]),
                   helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], ["N", 3], [w])
    _agrees(skip)
    for batch, extra in (("N", 0), (1, 2)):  # a constant block joins the concatenation at a fixed batch of 1
        inputs = ["ra", "b"] + (["c"] if extra else [])
        branches = _model([helper.make_node("Gemm", ["x", "w"], ["a"], transB=1),
                           helper.make_node("Relu", ["a"], ["ra"]), helper.make_node("Neg", ["x"], ["b"]),
                           helper.make_node("Concat", inputs, ["cat"], axis=-1),
                           helper.make_node("Gemm", ["cat", "v"], ["y"], transB=1)], [batch, 3],
                          [w, _const("c", RNG.normal(size=(1, 2))), _const("v", RNG.normal(size=(4, 6 + extra)))])
        _agrees(branches)


def test_a_tensor_read_only_for_its_shape_is_not_carried():
    """Shape(x) after a later ReLU reads x's static shape: x is not carried through the ReLU layer."""
    model = _model([helper.make_node("Gemm", ["x", "w"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
                    helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Reshape", ["r", "s"], ["y"])],
                   ["N", 3], [_const("w", RNG.normal(size=(3, 3)))])
    net = _agrees(model)
    assert net.relu_widths() == [3]


def test_graphs_that_cannot_be_lowered_are_refused():
    """Two input-dependent tensors multiplied, or added with different shapes, are refused naming the node."""
    w = _const("w", RNG.normal(size=(3, 3)))
    product = _model([helper.make_node("Gemm", ["x", "w"], ["h"], transB=1), helper.make_node("Mul", ["x", "h"], ["y"],
                                                                                              name="mul3")],
                     ["N", 3], [w])
    with pytest.raises(InputError, match="mul3.*combines 2 input-dependent tensors"):
        load_network(product)
    shapes = _model([helper.make_node("Gemm", ["x", "w2"], ["h"], transB=1),
                     helper.make_node("Add", ["x", "h"], ["y"], name="add4")], ["N", 3],
                    [_const("w2", RNG.normal(size=(1, 3)))])
    with pytest.raises(InputError, match="add4.*shapes"):
        load_network(shapes)


def test_division_by_the_input_is_refused_and_an_oversized_conv_kept_native_or_refused():
    """A convolution above the dense limit is kept native in a chain (BatchNorm folded into it), the network agreeing
    with the dense one; one whose input is scaled per entry (not per channel) cannot be, and is refused."""
    from pacverify.network import Conv

    with pytest.raises(UnsupportedOperationError, match="Div"):
        load_network(_model([helper.make_node("Div", ["one", "x"], ["y"])], ["N", 3], [_const("one", 1.0)]))
    model = conv_model(0, size=5)
    native = load_network(model, max_dense_entries=100)
    assert [type(layer).__name__ for layer in native.layers] == ["Conv", "Relu", "Conv", "Relu", "Affine"]
    x = torch.as_tensor(RNG.uniform(-2, 2, (5, 25)))
    assert torch.allclose(native(x), load_network(model)(x), atol=1e-10)
    scaled = onnx.ModelProto()
    scaled.CopyFrom(model)
    graph = scaled.graph
    graph.initializer.append(numpy_helper.from_array(RNG.uniform(0.5, 2, (1, 1, 5, 5)).astype(np.float32), "pix"))
    graph.node.insert(0, helper.make_node("Mul", ["x", "pix"], ["xs"], name="per_pixel"))
    graph.node[1].input[0] = "xs"
    with pytest.raises(InputError, match="conv1.*max_dense_entries=100.*kept native only where the map before it"):
        load_network(scaled, max_dense_entries=100)
    assert not any(isinstance(layer, Conv) for layer in load_network(scaled).layers)


def test_affine_steps_fold_only_when_the_product_is_no_larger_than_its_factors():
    bottleneck = _model([helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("MatMul", ["h", "w2"], ["y"])],
                        ["N", 40], [_const("w1", RNG.normal(size=(40, 2))), _const("w2", RNG.normal(size=(2, 40)))])
    net = _agrees(bottleneck)
    assert [tuple(a.weight.shape) for a in net.affine_layers()] == [(2, 40), (40, 2)]  # 40x40 would be larger
    funnel = _model([helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("MatMul", ["h", "w2"], ["y"])],
                    ["N", 4], [_const("w1", RNG.normal(size=(4, 30))), _const("w2", RNG.normal(size=(30, 3)))])
    assert [tuple(a.weight.shape) for a in _agrees(funnel).affine_layers()] == [(3, 4)]


def _pads(values, name="pads") -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


@pytest.mark.parametrize("nodes, shape, inits, opset", [
    ([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])], ["N", 2, 6, 6], [], 13),
    ([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1)],
     ["N", 2, 5, 5], [], 13),
    ([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2],
                       ceil_mode=1)], ["N", 1, 6, 6], [], 13),
    ([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3], strides=[2])], ["N", 3, 7], [], 13),
    ([helper.make_node("GlobalAveragePool", ["x"], ["y"])], ["N", 3, 4, 4], [], 13),
    ([helper.make_node("Pad", ["x", "pads", "v"], ["y"], mode="constant")], ["N", 2, 3, 3],
     [_pads([0, 0, 1, 2, 0, 0, 2, 1]), _const("v", 0.5)], 13),
    ([helper.make_node("Pad", ["x", "pads"], ["y"], mode="edge")], ["N", 2, 3, 3], [_pads([0, 0, 1, 1, 0, 0, 2, 1])],
     13),
    ([helper.make_node("Pad", ["x", "pads"], ["y"], mode="reflect")], ["N", 2, 4, 4], [_pads([0, 0, 1, 2, 0, 0, 2, 1])],
     13),
    ([helper.make_node("Pad", ["x"], ["y"], pads=[0, 0, 1, 0, 0, 2], value=-1.0)], ["N", 2, 3], [], 2),
    ([helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0)], ["N", 3, 2, 4], [], 13),
    ([helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)], ["N", 3, 4], [_pads([-1], "axes")], 13),
])
def test_affine_pooling_padding_and_reductions_agree_with_onnxruntime(nodes, shape, inits, opset):
    """AveragePool, GlobalAveragePool, Pad (constant, edge, reflect; operand and attribute forms) and ReduceMean /
    ReduceSum over non-batch axes are read as affine layers that agree with onnxruntime, alone and inside a ReLU
    network (Conv → op → ReLU → Flatten → Gemm)."""
    _agrees(_model(nodes, shape, inits, opset=opset))


def test_cnn_with_pooling_reads_and_its_bounds_contain_sampled_points():
    """A torch CNN with AvgPool2d and a global average pool (AdaptiveAvgPool2d(1)), exported to ONNX, is read; its
    CROWN and IBP bounds contain the outputs (onnxruntime) of points sampled in L2 and L∞ balls."""
    from helpers_nets import sample_in_set

    from pacverify.verify.bounds import crown, ibp
    from pacverify.verify.sets import perturbation_set

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AvgPool2d(2),
                                torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, 1, 6, 6), buffer, dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    proto = onnx.load_from_string(buffer.getvalue())
    assert {"AveragePool", "GlobalAveragePool"} <= {n.op_type for n in proto.graph.node}
    net = _agrees(proto)
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    center = torch.rand(3, 36, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for norm, radius in (("2", 0.5), ("inf", 0.05)):
        s = perturbation_set(center, radius, norm)
        points = sample_in_set(s, 300, 2)  # (300, 3, 36)
        flat = points.reshape(-1, 1, 6, 6).numpy().astype(np.float32)
        values = torch.as_tensor(session.run(None, {"x": flat})[0], dtype=torch.float64).reshape(points.shape[0], 3, 3)
        for method in (ibp, crown):
            bounds = method(net, s)
            slack = 1e-5 * (1 + values.abs())  # onnxruntime computes in float32
            assert (values >= bounds.lower - slack).all() and (values <= bounds.upper + slack).all(), method


def test_pooling_and_padding_that_mix_the_batch_are_refused():
    """A node that pads or reduces over the batch axis, or an AveragePool form without a sound lowering, is refused
    with an error naming the node."""
    pad_batch = _model([helper.make_node("Pad", ["x", "pads"], ["y"], name="padb")], ["N", 3],
                       [_pads([1, 0, 0, 0])])
    with pytest.raises(InputError, match="padb.*mixes the rows of the batch"):
        load_network(pad_batch)
    mean_all = _model([helper.make_node("ReduceMean", ["x"], ["y"], name="meanall", keepdims=0)], ["N", 3], [])
    with pytest.raises(InputError, match="meanall"):
        load_network(mean_all)
    asym = _model([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], pads=[0, 0, 1, 1],
                                    name="pool9")], ["N", 1, 4, 4], [])
    with pytest.raises(InputError, match="pool9.*asymmetric pads"):
        load_network(asym)
