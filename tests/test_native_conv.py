"""Native convolutions (issue 13): a :class:`Conv` layer is the linear map of its dense matrix, kept as a convolution;
the bound routines give the same bounds on it as on the dense network, CROWN's rows of a convolution's neurons as
patches equal the full rows, sampled points never leave the bounds (hypothesis, both norms), the exact MILP range lies
within them, and the reader keeps large convolutions native where the graph allows."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from helpers_nets import assert_samples_inside_nested_bounds, exact_range_milp
from hypothesis import given, settings
from hypothesis import strategies as st
from test_residual_graphs import _export

from pacverify.errors import InputError
from pacverify.network import Affine, Conv, Network, Relu, conv_out_shape
from pacverify.onnx_io import load_network, onnx_input
from pacverify.verify.bounds import crown, ibp
from pacverify.verify.bounds.common import abs_column_sums, prepare, rounding_margins
from pacverify.verify.bounds.crown import relax_network
from pacverify.verify.bounds.linear import Select, lower_values, pull_back
from pacverify.verify.bounds.patches import lower_values_from
from pacverify.verify.output_rows import margin_rows
from pacverify.verify.sets import perturbation_set

F64 = torch.float64
# (in_shape, C_out, kernel, stride, pads (top, left, bottom, right), dilation, groups)
FORMS = [((2, 7, 6), 4, (3, 3), (2, 2), (1, 0, 2, 1), (1, 1), 1),
         ((4, 9, 9), 4, (3, 3), (1, 1), (1, 1, 1, 1), (2, 2), 2),
         ((1, 1, 10), 3, (1, 3), (1, 2), (0, 1, 0, 0), (1, 1), 1),      # a 1-D convolution (height 1)
         ((3, 8, 8), 6, (4, 4), (2, 2), (1, 1, 1, 1), (1, 1), 3),
         ((2, 5, 5), 3, (5, 5), (1, 1), (0, 0, 0, 0), (1, 1), 1)]       # a kernel as large as the image


def _conv(in_shape, c_out, kernel, stride, pads, dilation, groups, gen: torch.Generator, scale: float = 1.0) -> Conv:
    weight = torch.randn(c_out, in_shape[0] // groups, *kernel, generator=gen, dtype=F64)
    weight *= scale / (weight[0].numel() ** 0.5)
    size = conv_out_shape(in_shape, tuple(weight.shape), stride, pads, dilation)
    bias = torch.randn(size[0] * size[1] * size[2], generator=gen, dtype=F64) * 0.2
    return Conv(weight, bias, in_shape, stride, pads, dilation, groups)


def _torch_reference(layer: Conv, x: torch.Tensor) -> torch.Tensor:
    top, left, bottom, right = layer.pads
    image = torch.nn.functional.pad(x.reshape(-1, *layer.in_shape), (left, right, top, bottom))
    out = torch.nn.functional.conv2d(image, layer.kernel, None, layer.stride, 0, layer.dilation, layer.groups)
    return out.reshape(x.shape[0], -1) + layer.bias


@pytest.mark.parametrize("form", FORMS)
def test_a_conv_layer_is_the_linear_map_of_its_dense_matrix(form):
    gen = torch.Generator().manual_seed(0)
    layer = _conv(*form, gen=gen)
    x = torch.randn(5, layer.in_features, generator=gen, dtype=F64)
    W = layer.dense_weight()
    assert W.shape == (layer.out_features, layer.in_features)
    assert torch.allclose(layer(x), _torch_reference(layer, x), atol=1e-12)
    assert torch.allclose(x @ W.T + layer.bias, layer(x), atol=1e-12)
    A = torch.randn(3, 2, layer.out_features, generator=gen, dtype=F64)
    assert torch.allclose(layer.pull(A), A @ W, atol=1e-12)
    assert torch.allclose(layer.row_norms(), W.norm(dim=1), atol=1e-12)
    assert torch.allclose(abs_column_sums(layer), W.abs().sum(0), atol=1e-12)
    assert torch.allclose(layer.abs().dense_weight(), W.abs())


def _conv_net(seed: int, *, first=FORMS[0], c2: int = 3, scale: float = 1.5) -> Network:
    """conv (``first``) → ReLU → conv 3×3 stride 1 pad 1 → ReLU → conv 2×2 stride 2 → ReLU → dense → 3 logits."""
    gen = torch.Generator().manual_seed(seed)
    a = _conv(*first, gen=gen, scale=scale)
    b = _conv(a.out_shape, c2, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, gen, scale)
    c = _conv(b.out_shape, 2, (2, 2), (2, 2), (0, 0, 1, 1), (1, 1), 1, gen, scale)
    head = Affine(torch.randn(3, c.out_features, generator=gen, dtype=F64) / c.out_features ** 0.5,
                  torch.randn(3, generator=gen, dtype=F64) * 0.2)
    return Network((a, Relu(), b, Relu(), c, Relu(), head), a.in_shape)


@pytest.mark.parametrize("norm, radius, domain", [("inf", 0.1, None), ("2", 0.5, None), ("2", 0.5, (0.0, 1.0)),
                                                  ("inf", 0.2, (0.0, 1.0))])
def test_bounds_on_native_convolutions_equal_those_on_the_dense_network(norm, radius, domain):
    """IBP and CROWN (whose intermediate rows of convolutional neurons are patches) give the dense network's bounds, and
    the same rounding margins. (α-CROWN is not compared: Adam's normalised steps turn differences of rounding in a
    gradient into different slopes; its soundness is tested below.)"""
    for first in FORMS[:4]:
        net = _conv_net(1, first=first)
        dense = net.dense()
        assert all(isinstance(layer, (Affine, Relu)) for layer in dense.layers)
        x = torch.rand(4, net.in_features, generator=torch.Generator().manual_seed(2), dtype=F64)
        assert torch.allclose(net(x), dense(x), atol=1e-12)
        s = perturbation_set(x, radius, norm, domain)
        C = margin_rows(net(x).argmax(1), 3)
        for fn in (ibp, crown):
            native, reference = fn(net, s, C), fn(dense, s, C)
            assert torch.allclose(native.lower, reference.lower, atol=1e-9, rtol=1e-9)
            assert torch.allclose(native.upper, reference.upper, atol=1e-9, rtol=1e-9)
        m_native, m_dense = rounding_margins(net, s, C), rounding_margins(dense, s, C)
        assert torch.allclose(m_native.output, m_dense.output, rtol=1e-12)
        for a, b in zip(m_native.relu, m_dense.relu, strict=True):
            assert torch.allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize("norm, domain", [("inf", (0.0, 1.0)), ("2", None), ("2", (0.0, 1.0))])
def test_patch_rows_equal_full_rows(norm, domain):
    """The lower values of rows started at every neuron of each convolutional layer, pulled back as patches (windows
    reaching into the padding, strides, dilations, groups, a 1-D convolution), equal those of the full rows."""
    for first in FORMS:
        net = _conv_net(3, first=first)
        x = torch.rand(2, net.in_features, generator=torch.Generator().manual_seed(4), dtype=F64)
        problem = prepare(net, perturbation_set(x, 0.3, norm, domain), None, None, None)
        relaxed = relax_network(net, problem)
        for position in (1, 3, 5):                 # the ReLU layers; rows on the conv before each
            patches, full = patch_and_full_lower_values(relaxed, problem, position)
            assert torch.allclose(patches, full, atol=1e-10, rtol=1e-10), (first, position)


def patch_and_full_lower_values(relaxed, problem, position: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower values of rows started at every neuron of ``relaxed.layers[position − 1]``'s output (signs alternating,
    every point), pulled back as patches and as full rows."""
    layers = relaxed.layers[:position]
    width, points = layers[-1].out_features, problem.input_set.batch_size
    owner = torch.arange(points).repeat_interleave(width)
    neuron = torch.arange(width).repeat(points)
    select = Select(neuron, owner, torch.where(neuron % 2 == 0, 1.0, -1.0).to(F64))
    k = sum(isinstance(layer, Relu) for layer in layers)
    patches = lower_values_from(layers, select, relaxed.relaxations[:k], problem.input_set)
    return patches, lower_values(pull_back(layers, select, relaxed.relaxations[:k]), problem.input_set)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), form=st.sampled_from(FORMS), norm=st.sampled_from(["2", "inf"]),
       radius=st.floats(0.02, 0.6), clip=st.booleans())
def test_sampled_outputs_never_leave_native_conv_bounds(seed, form, norm, radius, clip):
    net = _conv_net(seed, first=form)
    gen = torch.Generator().manual_seed(seed)
    center = torch.rand(2, net.in_features, generator=gen, dtype=F64)
    s = perturbation_set(center, radius, norm, (0.0, 1.0) if clip else None)
    C = margin_rows(net(center).argmax(1), 3)
    assert_samples_inside_nested_bounds(net, s, C, seed)


class _NormalisedCNN(torch.nn.Module):
    """(x − mean) / std per channel → conv → BN → ReLU → conv (stride 2) → ReLU → conv → conv (no ReLU between) →
    ReLU → flatten → linear."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.1, 0.3]).reshape(1, 2, 1, 1))
        self.register_buffer("std", torch.tensor([0.5, 0.25]).reshape(1, 2, 1, 1))
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
            torch.nn.Conv2d(4, 4, 4, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(4, 3, 3, padding=1), torch.nn.Conv2d(3, 3, 1), torch.nn.ReLU(), torch.nn.Flatten(),
            torch.nn.Linear(3 * 4 * 4, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - self.mean) / self.std)


def test_the_reader_keeps_large_convolutions_native():
    """With ``native_conv_entries=0`` every convolution the graph allows is native: the input normalisation folds into
    the first, BatchNorm into it too, a convolution followed by another without a ReLU becomes two layers; the network
    agrees with onnxruntime. With the default, these small convolutions stay dense matrices, as before."""
    torch.manual_seed(0)
    data = _export(_NormalisedCNN(), (2, 8, 8))
    native = load_network(data, native_conv_entries=0)
    kinds = [type(layer).__name__ for layer in native.layers]
    assert kinds == ["Conv", "Relu", "Conv", "Relu", "Conv", "Conv", "Relu", "Affine"], kinds
    dense = load_network(data)
    assert not any(isinstance(layer, Conv) for layer in dense.layers)
    x = torch.rand(16, 2 * 8 * 8, dtype=F64)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    reference = torch.as_tensor(session.run(None, {"x": onnx_input(native, x.numpy())})[0], dtype=F64)
    assert torch.allclose(native(x), reference, atol=1e-5)
    assert torch.allclose(dense(x), native(x), atol=1e-10)
    s = perturbation_set(x[:3], 0.05, "inf", (0.0, 1.0))
    C = margin_rows(native(x[:3]).argmax(1), 5)
    # the same layers as dense matrices give the same bounds (the reader's dense network composed the two convolutions
    # without a ReLU between into one matrix: its interval bounds differ)
    assert torch.allclose(crown(native, s, C).lower, crown(native.dense(), s, C).lower, atol=1e-9)


def _tiny_conv_net(seed: int) -> Network:
    gen = torch.Generator().manual_seed(seed)
    a = _conv((1, 3, 3), 2, (2, 2), (1, 1), (0, 0, 0, 0), (1, 1), 1, gen, 1.5)
    b = _conv(a.out_shape, 2, (2, 2), (1, 1), (0, 0, 0, 0), (1, 1), 1, gen, 1.5)
    head = Affine(torch.randn(2, b.out_features, generator=gen, dtype=F64), torch.randn(2, generator=gen, dtype=F64))
    return Network((a, Relu(), b, Relu(), head), (1, 3, 3))


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_the_exact_range_of_a_tiny_native_conv_net_lies_within_the_bounds(seed):
    net = _tiny_conv_net(seed)
    center = torch.rand(1, 9, generator=torch.Generator().manual_seed(seed), dtype=F64)
    s = perturbation_set(center, 0.4, "inf")
    c = np.array([1.0, -1.0])
    exact = exact_range_milp(net, s.lower[0].numpy(), s.upper[0].numpy(), c)
    for fn in (ibp, crown):
        bound = fn(net, s, torch.as_tensor(c)[None, None])
        assert float(bound.lower[0, 0]) <= exact[0] + 1e-7 and float(bound.upper[0, 0]) >= exact[1] - 1e-7


def test_verification_radii_and_branch_and_bound_run_on_native_convolutions():
    """The public entry points take a network with native convolutions: verdicts and certified radii equal those on
    the same network with dense matrices; branch and bound decides every point of a tiny one as the exact MILP does;
    the module form computes the same function."""
    from pacverify.verify import certified_radius, verify_points

    net = _conv_net(5, first=FORMS[0], scale=1.2)
    dense = net.dense()
    x = torch.rand(12, net.in_features, generator=torch.Generator().manual_seed(6), dtype=F64)
    with torch.no_grad():
        assert torch.allclose(net.as_module()(x), net(x), atol=1e-12)
    for radius in (0.02, 0.2):
        a = verify_points(net, x.numpy(), radius, "inf", domain=(0.0, 1.0), seed=0)
        b = verify_points(dense, x.numpy(), radius, "inf", domain=(0.0, 1.0), seed=0)
        assert [v.name for v in a.verdicts] == [v.name for v in b.verdicts]
    ra = certified_radius(net, x[:4].numpy(), "2", cap=1.0, tol=1e-3, attack=False)
    rb = certified_radius(dense, x[:4].numpy(), "2", cap=1.0, tol=1e-3, attack=False)
    assert np.allclose(np.asarray(ra.radius), np.asarray(rb.radius), atol=1e-9)
    decided = 0
    for seed in range(6):
        tiny = _tiny_conv_net(seed)
        center = torch.rand(1, 9, generator=torch.Generator().manual_seed(seed), dtype=F64)
        label = int(tiny(center).argmax())
        radius = 0.2 + 0.3 * seed
        result = verify_points(tiny, center.numpy(), radius, "inf", complete=True, timeout=10, seed=0)
        s = perturbation_set(center, radius, "inf")
        c = np.array([1.0, -1.0]) * (1 if label == 0 else -1)
        low, _ = exact_range_milp(tiny, s.lower[0].numpy(), s.upper[0].numpy(), c)
        verdict = result.verdicts[0].name
        assert verdict != "UNKNOWN"
        assert verdict == ("VERIFIED" if low > 0 else "FALSIFIED"), (seed, verdict, low)
        decided += verdict == "VERIFIED"
    assert 0 < decided < 6   # both answers occur


def test_the_teacher_oracle_reads_a_teacher_with_large_convolutions_natively():
    """A torch CNN whose first convolution's dense matrix would have 8.4M entries (above the native threshold) is
    exported and read with that convolution native; its logits agree with the teacher's."""
    from pacverify.verify.oracle import teacher_network

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 4, 4, stride=4), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 8 * 8, 10)).eval()
    net, reason = teacher_network(model, None, (1, 32, 32))
    assert net is not None, reason
    assert [type(layer).__name__ for layer in net.layers] == ["Conv", "Relu", "Affine", "Relu", "Affine"]
    x = torch.rand(4, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x.reshape(4, -1).double()).float(), model(x), atol=1e-5)


def test_a_maxpool_on_a_large_convolutional_output_is_refused_in_one_line():
    """The reader lowers MaxPool with dense matrices of the pooled tensor's size squared: on a 16×64×64 ReLU output
    (4.3e9 entries) that is refused by name, at once, instead of exhausting memory."""
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                torch.nn.Flatten(), torch.nn.Linear(16 * 32 * 32, 3))
    with pytest.raises(InputError, match="MaxPool.*4294967296 entries, more than the limit"):
        load_network(_export(model, (1, 64, 64)))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), shared=st.booleans(), P=st.integers(1, 6), Q=st.integers(1, 6))
def test_windows_read_the_image_and_zero_outside_and_expand_places_them_back(seed, shared, P, Q):
    """``windows`` equals a plain loop over each row's window (zero outside the image, anchors reaching past every
    edge); ``expand`` puts the in-image entries of each window back at full width."""
    from pacverify.verify.bounds.patches import Patches, expand, windows

    gen = torch.Generator().manual_seed(seed)
    B, C, H, W = 3, 2, 5, 4
    image = torch.randn(1 if shared else B, C, H, W, generator=gen, dtype=F64)
    T = 7
    anchor = torch.stack([torch.randint(-P, H + 1, (T,), generator=gen), torch.randint(-Q, W + 1, (T,), generator=gen)],
                         dim=1)
    owner = torch.randint(0, B, (T,), generator=gen)
    got = windows(image, anchor, owner, (P, Q))
    for t in range(T):
        for i in range(P):
            for j in range(Q):
                r, c = int(anchor[t, 0]) + i, int(anchor[t, 1]) + j
                inside = 0 <= r < H and 0 <= c < W
                expected = image[0 if shared else owner[t], :, r, c] if inside else torch.zeros(C, dtype=F64)
                assert torch.equal(got[t, :, i, j], expected)
    rows = expand(Patches(got, torch.zeros(T, dtype=F64), anchor, owner, (C, H, W)))
    full = rows.A.reshape(T, C, H, W)
    for t in range(T):
        source = image[0 if shared else owner[t]]
        r0, c0 = int(anchor[t, 0]), int(anchor[t, 1])
        mask = torch.zeros(H, W, dtype=torch.bool)
        mask[max(r0, 0):max(min(r0 + P, H), 0), max(c0, 0):max(min(c0 + Q, W), 0)] = True
        assert torch.equal(full[t], torch.where(mask, source, torch.zeros_like(source)))


def test_convolutions_run_without_onednn_nnpack_or_cudnn_and_the_switches_are_restored(monkeypatch):
    """The rounding margins cover plain sums of products: every convolution of a Conv layer runs with oneDNN, NNPACK
    and cuDNN switched off (their Winograd, FFT or TF32 algorithms err otherwise), and the switches come back."""
    seen = []
    for name in ("conv2d", "conv_transpose2d"):
        original = getattr(torch.nn.functional, name)

        def spy(*args, _original=original, **kwargs):
            seen.append((torch.backends.mkldnn.enabled, torch._C._get_nnpack_enabled(), torch.backends.cudnn.enabled))
            return _original(*args, **kwargs)

        monkeypatch.setattr(torch.nn.functional, name, spy)
    before = (torch.backends.mkldnn.enabled, torch._C._get_nnpack_enabled(), torch.backends.cudnn.enabled)
    layer = _conv(*FORMS[0], gen=torch.Generator().manual_seed(0))
    x = torch.rand(2, layer.in_features, dtype=F64)
    layer(x), layer.pull(torch.rand(2, layer.out_features, dtype=F64)), layer.row_norms()
    assert len(seen) == 3 and all(flags == (False, False, False) for flags in seen)
    assert (torch.backends.mkldnn.enabled, torch._C._get_nnpack_enabled(), torch.backends.cudnn.enabled) == before


def test_rows_pulled_back_in_small_blocks_give_the_same_bounds(monkeypatch):
    """Intermediate rows are pulled back in blocks of at most ROW_BYTES (memory flat in a layer's width): with blocks
    of a few rows the CROWN bounds are those of one block, on native convolutions and on dense layers."""
    import sys

    crown_module = sys.modules["pacverify.verify.bounds.crown"]
    net = _conv_net(7, first=FORMS[3])
    x = torch.rand(3, net.in_features, generator=torch.Generator().manual_seed(8), dtype=F64)
    s = perturbation_set(x, 0.2, "2", (0.0, 1.0))
    C = margin_rows(net(x).argmax(1), 3)
    whole = {"native": crown(net, s, C), "dense": crown(net.dense(), s, C)}
    monkeypatch.setattr(crown_module, "ROW_BYTES", 8 * 8 * net.in_features)   # 4 rows of the widest layer
    for name, network in (("native", net), ("dense", net.dense())):
        blocked = crown(network, s, C)
        assert torch.allclose(blocked.lower, whole[name].lower, atol=1e-12), name
        assert torch.allclose(blocked.upper, whole[name].upper, atol=1e-12), name
