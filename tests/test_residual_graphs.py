"""Residual and branching graphs, and MaxPool (issue 13, in part): the reader lowers them exactly to the chain of Affine and ReLU
layers (other live tensors carried through each ReLU layer as relu(q), relu(−q), or relu(q) alone when q is a ReLU
output); the bound routines then hold on them as on any chain: sampled points (checked by onnxruntime) never leave
IBP / CROWN / α-CROWN bounds, IBP ⊇ CROWN ⊇ α-CROWN, and the exact MILP range lies within the bounds."""
from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers_nets import exact_range_milp, sample_in_set
from hypothesis import given, settings
from hypothesis import strategies as st

from pacverify.network import Affine, Relu
from pacverify.onnx_io import load_network, onnx_input
from pacverify.verify.bounds import alpha_crown, crown, crown_ibp, ibp
from pacverify.verify.output_rows import margin_rows
from pacverify.verify.sets import perturbation_set


class ResidualMLP(torch.nn.Module):
    """x → h = relu(W0 x) → two blocks h ← relu(h + W2 relu(W1 h)) → logits; the skips carry ReLU outputs."""

    def __init__(self, n_in: int = 4, width: int = 6, n_out: int = 3, blocks: int = 2) -> None:
        super().__init__()
        self.inp = torch.nn.Linear(n_in, width)
        self.blocks = torch.nn.ModuleList(torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.ReLU(),
                                                              torch.nn.Linear(width, width)) for _ in range(blocks))
        self.out = torch.nn.Linear(width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x))
        for block in self.blocks:
            h = torch.relu(h + block(h))
        return self.out(h)


class PreActivationSkip(torch.nn.Module):
    """A skip that carries a tensor of either sign (a pre-activation) across two ReLUs, and a branch concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = torch.nn.Linear(3, 5), torch.nn.Linear(5, 5), torch.nn.Linear(5, 5)
        self.out = torch.nn.Linear(10, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.a(x)                      # either sign
        h = self.c(torch.relu(self.b(torch.relu(z))))
        return self.out(torch.cat([h - z, torch.relu(h)], dim=1))


class ResNetBlockCNN(torch.nn.Module):
    """Conv → BN → ReLU, one basic residual block (conv-BN-ReLU-conv-BN + identity, ReLU), global average pool."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(1, channels, 3, padding=1), torch.nn.BatchNorm2d(channels),
                                        torch.nn.ReLU())
        self.block = torch.nn.Sequential(torch.nn.Conv2d(channels, channels, 3, padding=1),
                                         torch.nn.BatchNorm2d(channels), torch.nn.ReLU(),
                                         torch.nn.Conv2d(channels, channels, 3, padding=1),
                                         torch.nn.BatchNorm2d(channels))
        self.head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(channels, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        return self.head(torch.relu(h + self.block(h)))


def _export(model: torch.nn.Module, shape: tuple[int, ...]) -> bytes:
    model.eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            with torch.no_grad():
                module.running_mean.uniform_(-0.3, 0.3)
                module.running_var.uniform_(0.5, 1.5)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, *shape), buffer, dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return buffer.getvalue()


def _onnxruntime(data: bytes, net, points: torch.Tensor) -> torch.Tensor:
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    flat = points.reshape(-1, net.in_features).numpy()
    out = session.run(None, {"x": onnx_input(net, flat)})[0]
    return torch.as_tensor(out, dtype=torch.float64).reshape(*points.shape[:-1], -1)


@pytest.mark.parametrize("build, shape", [(ResidualMLP, (4,)), (PreActivationSkip, (3,)), (ResNetBlockCNN, (1, 5, 5))])
def test_residual_graphs_are_read_and_agree_with_onnxruntime(build, shape):
    torch.manual_seed(0)
    model = build()
    data = _export(model, shape)
    assert any(n.op_type in ("Add", "Sub", "Concat") for n in onnx.load_from_string(data).graph.node)
    net = load_network(data)
    x = torch.rand(64, *shape) * 4 - 2
    reference = _onnxruntime(data, net, x.reshape(64, -1).double())
    assert torch.allclose(net(x.reshape(64, -1).double()), reference, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(net(x.reshape(64, -1).double()).float(), model(x), atol=1e-5)


def test_relu_output_skips_are_carried_by_one_stable_relu_each():
    """The skips of a residual MLP carry ReLU outputs: one carried neuron per entry (no ±pair), so the network is
    as wide as the block plus its skip; a tensor of either sign is carried as a ±pair."""
    net = load_network(_export(ResidualMLP(width=6), (4,)))
    widths = net.relu_widths()
    assert widths == [6, 12, 6, 12, 6], widths  # block ReLU layers: 6 own + 6 carried; the joins: 6
    # a tensor of either sign costs a ±pair per entry: 5 own + the pre-activation z (5) carried as 10 at the first two
    # ReLU layers; at the last one, h − z (5) carried as 10
    assert load_network(_export(PreActivationSkip(), (3,))).relu_widths() == [15, 15, 15]


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), which=st.sampled_from(["mlp", "pre", "cnn"]), norm=st.sampled_from(["2", "inf"]),
       radius=st.floats(0.05, 0.8))
def test_sampled_outputs_never_leave_the_bounds(seed, which, norm, radius):
    torch.manual_seed(seed)
    model, shape = {"mlp": (ResidualMLP(), (4,)), "pre": (PreActivationSkip(), (3,)),
                    "cnn": (ResNetBlockCNN(), (1, 5, 5))}[which]
    data = _export(model, shape)
    net = load_network(data)
    gen = torch.Generator().manual_seed(seed)
    center = torch.rand(2, net.in_features, generator=gen, dtype=torch.float64) * 2 - 1
    s = perturbation_set(center, radius, norm)
    C = margin_rows(net(center).argmax(1), net.out_features)
    points = sample_in_set(s, 150, seed)                   # (150, 2, n)
    values = torch.einsum("bko,pbo->pbk", C, _onnxruntime(data, net, points))
    bounds = {name: fn(net, s, C) for name, fn in (("ibp", ibp), ("crown-ibp", crown_ibp), ("crown", crown),
                                                     ("alpha", lambda *a: alpha_crown(*a, iterations=4)))}
    slack = 1e-5 * (1 + values.abs())                       # onnxruntime computes in float32
    for name, b in bounds.items():
        assert (values >= b.lower - slack).all() and (values <= b.upper + slack).all(), name
    assert (bounds["crown"].lower >= bounds["ibp"].lower - 1e-9).all()
    assert (bounds["crown-ibp"].lower >= bounds["ibp"].lower - 1e-9).all()
    assert (bounds["alpha"].lower >= bounds["crown"].lower).all()


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_the_exact_range_of_a_tiny_residual_net_lies_within_the_bounds(seed):
    """The MILP's exact min and max of a logit difference over an L∞ box, on the lowered residual network."""
    torch.manual_seed(seed)
    net = load_network(_export(ResidualMLP(n_in=2, width=3, n_out=2, blocks=1), (2,)))
    assert all(isinstance(layer, (Affine, Relu)) for layer in net.layers)
    center = torch.rand(1, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    s = perturbation_set(center, 0.4, "inf")
    c = np.array([1.0, -1.0])
    C = torch.as_tensor(c)[None, None]
    exact = exact_range_milp(net, s.lower[0].numpy(), s.upper[0].numpy(), c)
    for fn in (ibp, crown):
        b = fn(net, s, C)
        assert float(b.lower[0, 0]) <= exact[0] + 1e-7 and float(b.upper[0, 0]) >= exact[1] - 1e-7


def test_the_teacher_oracle_reads_a_residual_torch_teacher():
    """A residual torch module (no file) is exported and read for the teacher oracle; its logits agree."""
    from pacverify.verify.oracle import teacher_network

    torch.manual_seed(0)
    model = ResNetBlockCNN().eval()
    net, reason = teacher_network(model, None, (1, 5, 5))
    assert net is not None, reason
    assert "exported to ONNX" in reason
    x = torch.rand(8, 1, 5, 5)
    with torch.no_grad():
        assert torch.allclose(net(x.reshape(8, -1).double()).float(), model(x), atol=1e-5)


@pytest.mark.parametrize("attrs, shape", [
    (dict(kernel_shape=[2, 2], strides=[2, 2]), ["N", 2, 4, 4]),
    (dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), ["N", 1, 4, 5]),
    (dict(kernel_shape=[3, 2], strides=[2, 1], pads=[0, 1, 2, 0], dilations=[1, 2]), ["N", 2, 6, 5]),
    (dict(kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_UPPER"), ["N", 1, 5, 5]),
    (dict(kernel_shape=[3], strides=[2]), ["N", 2, 7]),
    (dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1), ["N", 1, 6, 6]),        # last window runs off the end
    (dict(kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1), ["N", 1, 5, 5]),  # one dropped
    (dict(kernel_shape=[2], strides=[2], ceil_mode=1), ["N", 2, 7]),
])
def test_maxpool_is_lowered_exactly(attrs, shape):
    """MaxPool forms (strides, pads, dilations, auto_pad, ceil_mode, 1-D) after a linear layer (inputs of either sign) agree with
    onnxruntime; each needs ⌈log2 k⌉ ReLU layers (one per tournament round)."""
    from onnx import TensorProto, helper, numpy_helper

    n = int(np.prod(shape[1:]))
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Reshape", ["h", "s"], ["z"]),
             helper.make_node("MaxPool", ["z"], ["y"], **attrs)]
    inits = [numpy_helper.from_array(rng.normal(size=(n, n)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([-1, *shape[1:]], np.int64), "s")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8).SerializeToString()
    net = load_network(data)
    x = torch.as_tensor(rng.uniform(-2, 2, (32, n)))
    reference = _onnxruntime(data, net, x)
    assert torch.allclose(net(x), reference, atol=1e-5)
    window = int(np.prod(attrs["kernel_shape"]))
    assert len(net.relu_widths()) == int(np.ceil(np.log2(window)))


class PoolingCNN(torch.nn.Module):
    """conv → ReLU → MaxPool 2×2 → conv → ReLU → MaxPool 3×3 stride 2 pad 1 → linear (the pools see ReLU outputs)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                       torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                                       torch.nn.MaxPool2d(3, stride=2, padding=1), torch.nn.Flatten(),
                                       torch.nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**16), norm=st.sampled_from(["2", "inf"]), radius=st.floats(0.02, 0.5))
def test_maxpool_networks_are_bounded_soundly(seed, norm, radius):
    """A CNN with two MaxPools (exported by torch): sampled outputs (onnxruntime) never leave the IBP, CROWN and
    α-CROWN bounds, and CROWN is at least as tight as IBP."""
    torch.manual_seed(seed)
    model = PoolingCNN().eval()
    data = _export(model, (1, 8, 8))
    assert "MaxPool" in {n.op_type for n in onnx.load_from_string(data).graph.node}
    net = load_network(data)
    gen = torch.Generator().manual_seed(seed)
    center = torch.rand(2, net.in_features, generator=gen, dtype=torch.float64)
    s = perturbation_set(center, radius * (8 if norm == "2" else 1), norm)
    C = margin_rows(net(center).argmax(1), net.out_features)
    values = torch.einsum("bko,pbo->pbk", C, _onnxruntime(data, net, sample_in_set(s, 150, seed)))
    slack = 1e-5 * (1 + values.abs())
    bounds = {name: fn(net, s, C) for name, fn in (("ibp", ibp), ("crown-ibp", crown_ibp), ("crown", crown),
                                                     ("alpha", lambda *a: alpha_crown(*a, iterations=4)))}
    for name, b in bounds.items():
        assert (values >= b.lower - slack).all() and (values <= b.upper + slack).all(), name
    assert (bounds["crown"].lower >= bounds["ibp"].lower - 1e-9).all()
    assert (bounds["crown-ibp"].lower >= bounds["ibp"].lower - 1e-9).all()


def test_maxpool_of_relu_outputs_carries_one_neuron_per_kept_entry():
    """After a ReLU the pooled entries are non-negative, so the kept operands of each round are carried by one
    stable ReLU each, and the teacher oracle reads the pooling CNN."""
    from pacverify.verify.oracle import teacher_network

    torch.manual_seed(0)
    model = PoolingCNN().eval()
    net = load_network(_export(model, (1, 8, 8)))
    # conv1 ReLU (192); pool 2×2 rounds: 96 differences + 96 kept, then 48 + 48; conv2 ReLU (64) + ...
    widths = net.relu_widths()
    assert widths[:3] == [192, 96 + 96, 48 + 48], widths
    oracle, reason = teacher_network(model, None, (1, 8, 8))
    assert oracle is not None, reason


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_the_exact_range_of_a_tiny_maxpool_net_lies_within_the_bounds(seed):
    """The MILP's exact range of a logit difference of conv → MaxPool 2×2 → linear over an L∞ box, after lowering."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 2), torch.nn.MaxPool2d(2, stride=1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 2)).eval()
    net = load_network(_export(model, (1, 4, 4)))
    center = torch.rand(1, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    s = perturbation_set(center, 0.3, "inf")
    c = np.array([1.0, -1.0])
    exact = exact_range_milp(net, s.lower[0].numpy(), s.upper[0].numpy(), c)
    for fn in (ibp, crown):
        b = fn(net, s, torch.as_tensor(c)[None, None])
        assert float(b.lower[0, 0]) <= exact[0] + 1e-7 and float(b.upper[0, 0]) >= exact[1] - 1e-7
