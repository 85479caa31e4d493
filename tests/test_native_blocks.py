"""Residual blocks kept native (issue 13): a :class:`Block` layer (convolutions and identities on slices of its input,
summed per part) is the linear map of its dense matrix; the reader keeps a residual block's convolutions native
where the skip meets them; the bound routines give the dense network's bounds on it, sampled points never leave the
bounds (hypothesis, both norms), and the exact MILP range lies within them."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from helpers_nets import assert_samples_inside_nested_bounds, exact_range_milp
from hypothesis import given, settings
from hypothesis import strategies as st
from test_native_conv import patch_and_full_lower_values
from test_residual_graphs import PreActivationSkip, ResidualMLP, ResNetBlockCNN, _export

from pacverify.errors import InputError
from pacverify.network import Affine, Block, Conv, Network, Relu, Scale, Term
from pacverify.onnx_io import load_network, onnx_input
from pacverify.verify.bounds import crown, ibp
from pacverify.verify.bounds.common import rounding_margins
from pacverify.verify.output_rows import margin_rows
from pacverify.verify.sets import perturbation_set

F64 = torch.float64


class _ResNetDown(torch.nn.Module):
    """A stem, a downsampling block (conv stride 2 + a 1×1 projection of the skip, both with BatchNorm) and an
    identity block, global average pool, 3 logits: ResNet20's block types at toy size."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.BatchNorm2d(2), torch.nn.ReLU())
        self.down = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, 2, 1, bias=False), torch.nn.BatchNorm2d(3),
                                        torch.nn.ReLU(), torch.nn.Conv2d(3, 3, 3, 1, 1, bias=False),
                                        torch.nn.BatchNorm2d(3))
        self.project = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1, 2, bias=False), torch.nn.BatchNorm2d(3))
        self.same = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, 1, 1, bias=False), torch.nn.BatchNorm2d(3),
                                        torch.nn.ReLU(), torch.nn.Conv2d(3, 3, 3, 1, 1, bias=False),
                                        torch.nn.BatchNorm2d(3))
        self.head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = torch.relu(self.down(h) + self.project(h))
        return self.head(torch.relu(self.same(h) + h))


def _models() -> list[tuple[bytes, tuple[int, ...]]]:
    torch.manual_seed(0)
    return [(_export(ResNetBlockCNN(), (1, 5, 5)), (1, 5, 5)), (_export(_ResNetDown(), (1, 6, 6)), (1, 6, 6))]


MODELS = _models()


def _native(index: int) -> Network:
    return load_network(MODELS[index][0], native_conv_entries=0)


def _random_block(gen: torch.Generator) -> Block:
    """Two parts on a 2×4×4 + 5 input: [conv of the image + a dense map of the tail], [a scale of the image]."""
    conv = Conv(torch.randn(3, 2, 3, 3, generator=gen, dtype=F64), torch.zeros(3 * 2 * 2, dtype=F64), (2, 4, 4),
                (2, 2), (1, 1, 0, 0))
    tail = Affine(torch.randn(12, 5, generator=gen, dtype=F64), torch.zeros(12, dtype=F64))
    scale = Scale(torch.randn(32, generator=gen, dtype=F64))
    return Block(((Term(0, conv), Term(32, tail)), (Term(0, scale),)), torch.randn(44, generator=gen, dtype=F64), 37)


def test_a_block_is_the_linear_map_of_its_dense_matrix():
    gen = torch.Generator().manual_seed(0)
    block = _random_block(gen)
    W = block.dense_weight()
    assert W.shape == (44, 37)
    x, A = torch.randn(5, 37, generator=gen, dtype=F64), torch.randn(2, 5, 44, generator=gen, dtype=F64)
    assert torch.allclose(block(x), x @ W.T + block.bias, atol=1e-12)
    assert torch.allclose(block.pull(A), A @ W, atol=1e-12)
    assert torch.allclose(block.abs().dense_weight(), W.abs(), atol=1e-12)
    assert torch.allclose(block.abs().bias, block.bias.abs())
    assert torch.allclose(block.row_norms(), torch.linalg.vector_norm(W, dim=1), atol=1e-12)
    assert torch.allclose(block.negated()(x), -block(x), atol=1e-12)
    assert torch.allclose(block.to(dtype=torch.float32)(x.float()), block(x).float(), atol=1e-4)
    with torch.no_grad():
        net = Network((block, Relu(), Affine(torch.ones(1, 44, dtype=F64), torch.zeros(1, dtype=F64))), (37,))
        assert torch.allclose(net.as_module()(x), net(x), atol=1e-12)


def test_a_block_refuses_overlapping_terms_and_unequal_widths():
    gen = torch.Generator().manual_seed(1)
    a, b = Scale(torch.ones(4, dtype=F64)), Scale(torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match="disjoint"):
        Block(((Term(0, a), Term(2, a)),), torch.zeros(4, dtype=F64), 6)
    with pytest.raises(ValueError, match="one output width"):
        Block(((Term(0, a), Term(4, b)),), torch.zeros(4, dtype=F64), 7)
    with pytest.raises(ValueError, match="bias"):
        Block(((Term(0, a),),), torch.randn(5, generator=gen, dtype=F64), 4)


@pytest.mark.parametrize("index", [0, 1])
def test_residual_blocks_are_read_native_and_agree_with_onnxruntime(index):
    """With ``native_conv_entries=0`` a residual block's convolutions stay native: the layer that carries the skip is
    a Block ``[conv1(x), x]``, the one after the Add ``conv2(h) + x`` (or ``+ projection(x)``); the network agrees
    with onnxruntime and with the default (dense) read, and carries the skip as one stable ReLU per entry as before."""
    data, shape = MODELS[index]
    native, dense = _native(index), load_network(data)
    kinds = [type(layer).__name__ for layer in native.layers]
    assert kinds.count("Block") == (2 if index == 0 else 4), kinds
    assert kinds[0] == "Conv" and not any(isinstance(layer, (Conv, Block)) for layer in dense.layers)
    assert native.relu_widths() == dense.relu_widths()
    x = torch.rand(8, int(np.prod(shape)), generator=torch.Generator().manual_seed(index), dtype=F64)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    reference = torch.as_tensor(session.run(None, {"x": onnx_input(native, x.numpy())})[0], dtype=F64)
    assert torch.allclose(native(x), reference, atol=1e-5)
    assert torch.allclose(native(x), dense(x), atol=1e-10)


def test_the_dense_limit_no_longer_refuses_a_block_convolution():
    """Before Block layers, a convolution meeting the skip Add was built dense and refused above max_dense_entries;
    now the first dense matrix the reader needs is the global average pool's, and the refusal names it."""
    with pytest.raises(InputError, match="GlobalAveragePool.*max_dense_entries=100"):
        load_network(MODELS[0][0], native_conv_entries=0, max_dense_entries=100)


@pytest.mark.parametrize("norm, radius, domain", [("inf", 0.05, (0.0, 1.0)), ("2", 0.3, None), ("2", 0.3, (0.0, 1.0))])
def test_bounds_on_blocks_equal_those_on_the_dense_network(norm, radius, domain):
    for index in (0, 1):
        net = _native(index)
        dense = net.dense()
        x = torch.rand(4, net.in_features, generator=torch.Generator().manual_seed(2), dtype=F64)
        s = perturbation_set(x, radius, norm, domain)
        C = margin_rows(net(x).argmax(1), 3)
        for fn in (ibp, crown):
            native, reference = fn(net, s, C), fn(dense, s, C)
            assert torch.allclose(native.lower, reference.lower, atol=1e-9, rtol=1e-9), (index, fn)
            assert torch.allclose(native.upper, reference.upper, atol=1e-9, rtol=1e-9), (index, fn)
        m_native, m_dense = rounding_margins(net, s, C), rounding_margins(dense, s, C)
        assert torch.allclose(m_native.output, m_dense.output, rtol=1e-12)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), index=st.sampled_from([0, 1]), norm=st.sampled_from(["2", "inf"]),
       radius=st.floats(0.02, 0.6), clip=st.booleans())
def test_sampled_outputs_never_leave_block_bounds(seed, index, norm, radius, clip):
    net = _native(index)
    center = torch.rand(2, net.in_features, generator=torch.Generator().manual_seed(seed), dtype=F64)
    s = perturbation_set(center, radius, norm, (0.0, 1.0) if clip else None)
    C = margin_rows(net(center).argmax(1), 3)
    assert_samples_inside_nested_bounds(net, s, C, seed)


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_the_exact_range_of_a_residual_block_net_lies_within_the_bounds(seed):
    net = _native(0)
    center = torch.rand(1, net.in_features, generator=torch.Generator().manual_seed(seed), dtype=F64)
    s = perturbation_set(center, 0.1, "inf")
    c = np.array([1.0, -1.0, 0.0])
    exact = exact_range_milp(net, s.lower[0].numpy(), s.upper[0].numpy(), c)
    for fn in (ibp, crown):
        bound = fn(net, s, torch.as_tensor(c)[None, None])
        assert float(bound.lower[0, 0]) <= exact[0] + 1e-7 and float(bound.upper[0, 0]) >= exact[1] - 1e-7


def test_verification_and_radii_on_blocks_equal_the_dense_network():
    from pacverify.verify import certified_radius, verify_points

    net = _native(1)
    dense = net.dense()
    x = torch.rand(10, net.in_features, generator=torch.Generator().manual_seed(6), dtype=F64)
    for radius in (0.01, 0.1):
        a = verify_points(net, x.numpy(), radius, "inf", domain=(0.0, 1.0), seed=0)
        b = verify_points(dense, x.numpy(), radius, "inf", domain=(0.0, 1.0), seed=0)
        assert [v.name for v in a.verdicts] == [v.name for v in b.verdicts]
    ra = certified_radius(net, x[:4].numpy(), "2", cap=1.0, tol=1e-3, attack=False)
    rb = certified_radius(dense, x[:4].numpy(), "2", cap=1.0, tol=1e-3, attack=False)
    assert np.allclose(np.asarray(ra.radius), np.asarray(rb.radius), atol=1e-9)


@pytest.mark.parametrize("last", ["affine", "conv", "block"])
def test_negated_layers_negate_the_network(last):
    """The teacher oracle turns costs into logits by negating the last linear layer: for every layer type the
    network with :meth:`negated` last computes minus the original."""
    gen = torch.Generator().manual_seed(3)
    if last == "block":
        layer = _random_block(gen)
    elif last == "conv":
        layer = Conv(torch.randn(2, 1, 2, 2, generator=gen, dtype=F64), torch.randn(18, generator=gen, dtype=F64),
                     (1, 4, 4))
    else:
        layer = Affine(torch.randn(3, 16, generator=gen, dtype=F64), torch.randn(3, generator=gen, dtype=F64))
    net = Network((layer,), (layer.in_features,))
    flipped = Network((layer.negated(),), (layer.in_features,))
    x = torch.randn(4, layer.in_features, generator=gen, dtype=F64)
    assert torch.allclose(flipped(x), -net(x), atol=1e-12)


@pytest.mark.parametrize("norm, domain", [("inf", (0.0, 1.0)), ("2", None)])
def test_patch_rows_through_blocks_equal_full_rows(norm, domain, monkeypatch):
    """Rows started at every neuron of each convolutional or Block layer (both parts of the layer that carries the
    skip: the convolution's and the identity's) pulled back as patches — through the Blocks' convolutions and
    identities, windows merged where a skip meets a convolution's path — give the full rows' lower values. Rows of a
    part with a convolution never fall back to full rows."""
    from pacverify.verify.bounds import patches as patches_module
    from pacverify.verify.bounds.common import prepare
    from pacverify.verify.bounds.crown import relax_network
    from pacverify.verify.bounds.linear import pull_back

    for index in (0, 1):
        net = _native(index)
        x = torch.rand(2, net.in_features, generator=torch.Generator().manual_seed(4), dtype=F64)
        problem = prepare(net, perturbation_set(x, 0.3, norm, domain), None, None, None)
        relaxed = relax_network(net, problem)
        positions = [i + 1 for i, layer in enumerate(relaxed.layers[:-1]) if isinstance(layer, (Conv, Block))]
        assert len(positions) >= 3
        for position in positions:
            layers = relaxed.layers[:position]
            fallbacks: list[int] = []
            monkeypatch.setattr(patches_module, "pull_back", lambda *a: fallbacks.append(1) or pull_back(*a))
            patches, full = patch_and_full_lower_values(relaxed, problem, position)
            assert torch.allclose(patches, full, atol=1e-10, rtol=1e-10), (index, position)
            gridless = isinstance(layers[-1], Block) and any(
                not any(isinstance(t.op, Conv) for t in part) for part in layers[-1].parts)
            assert len(fallbacks) == int(gridless), (index, position)   # the identity part's rows only


def test_whole_image_windows_at_the_origin_are_the_images():
    """``windows`` reads whole-image windows at the origin without padding or gathering: the shared image for every
    row, or each row's owner's image; the same as a window one entry larger that is cropped."""
    from pacverify.verify.bounds.patches import windows

    gen = torch.Generator().manual_seed(0)
    owner = torch.tensor([2, 0, 1, 2])
    anchor = torch.zeros(4, 2, dtype=torch.long)
    for images in (torch.randn(1, 2, 3, 4, generator=gen, dtype=F64), torch.randn(3, 2, 3, 4, generator=gen, dtype=F64)):
        got = windows(images, anchor, owner, (3, 4))
        larger = windows(images, anchor, owner, (4, 5))[:, :, :3, :4]
        expected = torch.stack([images[0 if images.shape[0] == 1 else int(o)] for o in owner])
        assert torch.equal(got, expected) and torch.equal(larger, expected)


@pytest.mark.parametrize("build, n_in", [(ResidualMLP, 4), (PreActivationSkip, 3)])
def test_wide_carried_layers_become_blocks_of_dense_maps(build, n_in):
    """A carried layer whose dense matrix would exceed ``native_conv_entries`` is a Block of dense maps and
    identities (a skip of either sign as ±identity), instead of one matrix with an identity block: the same function
    and the same CROWN bounds as the dense read."""
    torch.manual_seed(1)
    data = _export(build(), (n_in,))
    native, dense = load_network(data, native_conv_entries=0), load_network(data)
    assert any(isinstance(layer, Block) for layer in native.layers)
    assert not any(isinstance(layer, Block) for layer in dense.layers)
    x = torch.rand(6, n_in, generator=torch.Generator().manual_seed(2), dtype=F64)
    assert torch.allclose(native(x), dense(x), atol=1e-10)
    for norm, radius in (("inf", 0.1), ("2", 0.3)):
        s = perturbation_set(x, radius, norm)
        C = margin_rows(dense(x).argmax(1), dense.out_features)
        assert torch.allclose(crown(native, s, C).lower, crown(dense, s, C).lower, atol=1e-9)
