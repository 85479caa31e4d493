"""Rows pulled back through convolutions in float32, charged their rounding errors (:mod:`pacverify.verify.bounds.conv32`,
method "crown-f32" on convolutional networks; issue 13): which convolutions are marked, sampled points and the exact
MILP range never leave the bounds (hypothesis, both norms, patches and full rows), the bounds stay within a few
charges of float64 CROWN's, and networks on which the float32 product alone is above the exact value (a kernel float32
rounds, a kernel float32 flushes to zero) or overflows."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from helpers_nets import exact_range_milp, sample_in_set
from hypothesis import given, settings
from hypothesis import strategies as st
from test_native_blocks import _native
from test_native_conv import FORMS, _conv, _conv_net, _tiny_conv_net

from pacverify.network import Affine, Block, Conv, Network, Relu, Term
from pacverify.verify.bounds import conv32, crown, crown_f32, ibp
from pacverify.verify.output_rows import margin_rows
from pacverify.verify.sets import perturbation_set

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _mark_small_convolutions():
    """The networks here are small: crown_f32 marks their convolutions whatever their size (conv32.MIN_WORK is a
    speed threshold only), so that the float32 pulls are what is tested."""
    before = conv32.MIN_WORK
    conv32.MIN_WORK = 0
    yield
    conv32.MIN_WORK = before


def _flags(net: Network) -> list[bool]:
    return [isinstance(layer, Conv) and layer.float32_products for layer in net.layers]


def test_mark_chooses_convolutions_that_follow_a_relu_and_keeps_the_function():
    net = _conv_net(0)
    marked = conv32.mark(net, min_work=0)
    assert _flags(marked) == [False, False, True, False, True, False, False]   # not the first layer, not the head
    x = torch.rand(3, net.in_features, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert torch.equal(marked(x), net(x))
    as32 = net.to(dtype=torch.float32)
    assert conv32.mark(as32, min_work=0) is as32 and not any(_flags(as32))   # float64 networks only
    huge = dataclasses.replace(net.layers[2], kernel=net.layers[2].kernel * 2.0 ** 70)
    assert _flags(conv32.mark(dataclasses.replace(net, layers=net.layers[:2] + (huge,) + net.layers[3:]), min_work=0))[2] is False
    dense = net.dense()
    assert conv32.mark(dense, min_work=0) is dense


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), form=st.sampled_from(FORMS), norm=st.sampled_from(["2", "inf"]),
       radius=st.floats(0.02, 0.6), clip=st.booleans())
def test_sampled_outputs_never_leave_the_float32_pull_bounds(seed, form, norm, radius, clip):
    """Both bounds of the marked network's CROWN (rows of the convolutions' neurons as patches, the margins' rows at
    full width) contain the outputs at 100 sampled points, lie within IBP's, and within 1e-4 of float64 CROWN's."""
    net = _conv_net(seed, first=form)
    gen = torch.Generator().manual_seed(seed)
    center = torch.rand(2, net.in_features, generator=gen, dtype=F64)
    s = perturbation_set(center, radius, norm, (0.0, 1.0) if clip else None)
    C = margin_rows(net(center).argmax(1), 3)
    marked = conv32.mark(net, min_work=0)
    assert any(_flags(marked))
    bounds, reference, interval = crown(marked, s, C), crown(net, s, C), ibp(marked, s, C)
    points = sample_in_set(s, 100, seed)
    values = torch.einsum("bko,pbo->pbk", C, net(points.reshape(-1, net.in_features)).reshape(100, 2, -1))
    assert (values >= bounds.lower).all() and (values <= bounds.upper).all()
    assert (bounds.lower >= interval.lower - 1e-9).all() and (bounds.upper <= interval.upper + 1e-9).all()
    scale = 1 + reference.lower.abs()
    assert ((reference.lower - bounds.lower).abs() <= 1e-4 * scale).all()
    mixed = crown_f32(net, s, C, upper=False).lower   # each point float32's bound, or float64's where it rechecked
    for b in range(2):
        assert torch.allclose(mixed[b], bounds.lower[b], rtol=1e-12, atol=1e-12) \
            or torch.allclose(mixed[b], reference.lower[b], rtol=1e-12, atol=1e-12)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_the_exact_range_of_a_tiny_conv_net_lies_within_the_float32_pull_bounds(seed):
    net = _tiny_conv_net(seed)
    marked = conv32.mark(net, min_work=0)
    assert _flags(marked)[2]
    center = torch.rand(1, 9, generator=torch.Generator().manual_seed(seed), dtype=F64)
    s = perturbation_set(center, 0.4, "inf")
    c = np.array([1.0, -1.0])
    low, high = exact_range_milp(net, s.lower[0].numpy(), s.upper[0].numpy(), c)
    bound = crown(marked, s, torch.as_tensor(c)[None, None])
    assert float(bound.lower[0, 0]) <= low + 1e-7 and float(bound.upper[0, 0]) >= high - 1e-7


def _two_channel_net(kernel: tuple[float, float], head: tuple[float, float] = (1.0, -1.0)) -> Network:
    """x (1 entry) → relu(x) → a 1×1 convolution to two channels with the two kernel entries → ``head`` · (ch0, ch1)."""
    first = Affine(torch.ones(1, 1, dtype=F64), torch.zeros(1, dtype=F64))
    conv = Conv(torch.tensor(kernel, dtype=F64).reshape(2, 1, 1, 1), torch.zeros(2, dtype=F64), (1, 1, 1))
    out = Affine(torch.tensor([head], dtype=F64), torch.zeros(1, dtype=F64))
    return Network((first, Relu(), conv, out), (1,))


def _exact_and_bound(net: Network, low: float, high: float) -> tuple[float, float, float]:
    """(the exact minimum of the output over x in [low, high] (linear in relu(x) ≥ 0: at an end), the marked
    network's CROWN lower bound, the value of the float32 product alone at the end that is the minimum)."""
    s = perturbation_set(torch.tensor([[(low + high) / 2]], dtype=F64), (high - low) / 2, "inf")
    marked = conv32.mark(net, min_work=0)
    assert _flags(marked)[2]
    ends = torch.tensor([[low], [high]], dtype=F64)
    exact = float(net(ends).min())
    conv, head = marked.layers[2], marked.layers[3].weight
    row32 = conv.pull(head.to(torch.float32), conv.kernel.to(torch.float32)).to(F64)   # μ̃ without its charge
    uncharged = float((row32 * ends.clamp(min=0)).sum(1).min())
    return exact, float(crown(marked, s).lower[0, 0]), uncharged


def test_a_kernel_float32_rounds_is_charged_where_the_float32_product_alone_is_too_high():
    """ch0 − ch1 = −2^-28·relu(x): float32 rounds 1 + 2^-28 to 1, so its product alone says 0 ≥ the exact minimum
    −2^-28·high; the charge (|λ|·|W − W̃|·H) brings the bound below it."""
    exact, bound, uncharged = _exact_and_bound(_two_channel_net((1.0, 1.0 + 2.0 ** -28)), 0.5, 2.0)
    assert exact == -(2.0 ** -28) * 2.0 and uncharged == 0.0 > exact
    assert bound <= exact
    assert bound >= exact - 5 * 2.0 ** -22   # within the charge: γ_4·|λ|·|W̃|·H (n = 2 terms; λ = ±1, H = 2), twice


def test_a_kernel_float32_flushes_to_zero_is_charged():
    exact, bound, uncharged = _exact_and_bound(_two_channel_net((1e-50, 0.0)), 0.5, 2.0)
    assert exact == 1e-50 * 0.5 and uncharged == 0.0
    exact, bound, uncharged = _exact_and_bound(_two_channel_net((-1e-50, 0.0)), 0.5, 2.0)
    assert exact == -1e-50 * 2.0 and uncharged == 0.0 > exact
    assert exact - 1e-60 <= bound <= exact


def test_a_float32_product_that_overflows_is_pulled_in_float64():
    """Rows of magnitude 1e36 times a kernel of 1e5 overflow float32: pull_rows declines, and the bound is float64
    CROWN's (up to the margins' slack)."""
    net = _two_channel_net((1e5, 2e5), head=(1e36, -1e36))
    conv = conv32.mark(net, min_work=0).layers[2]
    H = torch.ones(1, 1, dtype=F64)
    assert conv32.pull_rows(conv, torch.tensor([[1e36, -1e36]], dtype=F64), H, None) is None
    s = perturbation_set(torch.tensor([[1.0]], dtype=F64), 0.5, "inf")
    bound, reference = crown(conv32.mark(net, min_work=0), s).lower, crown(net, s).lower
    assert bool(torch.isfinite(bound).all())
    assert torch.allclose(bound, reference, rtol=1e-12)
    assert float(bound[0, 0]) <= float(net(torch.tensor([[1.5]], dtype=F64))[0, 0])


def test_crown_f32_on_a_conv_net_gives_crowns_verdicts():
    from pacverify.verify import verify_points

    net = _conv_net(5, first=FORMS[0], scale=1.2)
    x = torch.rand(12, net.in_features, generator=torch.Generator().manual_seed(6), dtype=F64)
    for radius in (0.02, 0.2):
        a = verify_points(net, x.numpy(), radius, "inf", domain=(0.0, 1.0), method="crown-f32", attack=False)
        b = verify_points(net, x.numpy(), radius, "inf", domain=(0.0, 1.0), method="crown", attack=False)
        assert [v.name for v in a.verdicts] == [v.name for v in b.verdicts]
        assert {v.name for v in a.verdicts} & {"VERIFIED"} or radius == 0.2


def test_the_rows_of_a_convolutions_neurons_are_charged_too():
    """relu(1e-50·h − 1e-50) for h = relu(x), x in [0.5, 2]: its exact range is [0, 1e-50]. The convolution's neuron
    is unstable, so CROWN bounds it by a row started at it (a patch, :func:`~.conv32.pull_windows`): float32 flushes
    the kernel to zero, and that row alone would put the neuron's upper bound at −1e-50, below its lower one (the
    subdomain would be declared empty, every bound +inf). Charged, the bounds contain the exact range."""
    first = Affine(torch.ones(1, 1, dtype=F64), torch.zeros(1, dtype=F64))
    conv = Conv(torch.full((1, 1, 1, 1), 1e-50, dtype=F64), torch.full((1,), -1e-50, dtype=F64), (1, 1, 1))
    net = Network((first, Relu(), conv, Relu(), Affine(torch.ones(1, 1, dtype=F64), torch.zeros(1, dtype=F64))), (1,))
    assert _flags(conv32.mark(net, min_work=0))[2]
    s = perturbation_set(torch.tensor([[1.25]], dtype=F64), 0.75, "inf")
    bounds = crown(conv32.mark(net, min_work=0), s)
    assert not bool(bounds.infeasible.any())
    assert float(bounds.lower[0, 0]) <= 0.0 and float(bounds.upper[0, 0]) >= 1e-50


def test_terms_bounds_the_products_of_every_entry_of_the_transposed_convolution():
    """n of the γ_n charge: the most nonzero entries of a column of the dense matrix (the products one entry of A·W
    sums), for strides, dilations, groups and a kernel as large as the image; attained on some of them."""
    attained = 0
    for form in FORMS + [((3, 9, 9), 4, (4, 4), (2, 2), (1, 1, 1, 1), (1, 1), 1),
                         ((2, 11, 11), 2, (3, 3), (2, 2), (2, 2, 2, 2), (2, 2), 1),
                         ((2, 11, 11), 2, (3, 3), (3, 3), (0, 0, 0, 0), (2, 2), 2)]:
        layer = _conv(*form, gen=torch.Generator().manual_seed(0))
        most = int((layer.dense_weight() != 0).sum(0).max())
        assert most <= conv32.terms(layer), form
        attained += most == conv32.terms(layer)
    assert attained >= 5


def test_crown_f32_rechecks_in_float64_the_points_its_charges_leave_near_zero():
    """ch0 − ch1 = 2^-20·relu(x) for x in [0.5, 2]: the exact minimum 2^-21 is positive and float64 CROWN proves it;
    the float32 pull's charge (γ_4·|λ|·|W̃|·H, about 16u·2 per channel) puts the float32 bound below zero, within a few
    charges of it, so crown_f32 recomputes that point in float64 and proves it."""
    from pacverify.verify.bounds.float32 import RECHECK_CHARGES, _conv_lower

    net = _two_channel_net((1.0 + 2.0 ** -20, 1.0))
    s = perturbation_set(torch.tensor([[1.25]], dtype=F64), 0.75, "inf")
    fast, charge = _conv_lower(conv32.mark(net, min_work=0), s, None, None)
    exact = 2.0 ** -20 * 0.5
    assert float(fast[0, 0]) < 0 < exact and float(fast[0, 0]) > -RECHECK_CHARGES * float(charge[0, 0])
    assert float(crown(net, s).lower[0, 0]) > 0
    assert 0 < float(crown_f32(net, s).lower[0, 0]) <= exact


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**16), index=st.sampled_from([0, 1]), norm=st.sampled_from(["2", "inf"]),
       radius=st.floats(0.02, 0.6), clip=st.booleans())
def test_residual_blocks_convolutions_are_pulled_in_float32_soundly(seed, index, norm, radius, clip):
    """The convolutions inside residual Blocks (ResNet's block types at toy size, read from ONNX) are marked when a
    ReLU precedes the Block; sampled points never leave the marked network's bounds, which stay within 1e-4 of float64
    CROWN's."""
    net = _native(index)
    marked = conv32.mark(net, min_work=0)
    blocks = [layer for layer in marked.layers if isinstance(layer, Block)]
    assert blocks and all(conv32.is_marked(block) for block in blocks)
    center = torch.rand(2, net.in_features, generator=torch.Generator().manual_seed(seed), dtype=F64)
    s = perturbation_set(center, radius, norm, (0.0, 1.0) if clip else None)
    C = margin_rows(net(center).argmax(1), 3)
    bounds, reference = crown(marked, s, C), crown(net, s, C)
    points = sample_in_set(s, 100, seed)
    values = torch.einsum("bko,pbo->pbk", C, net(points.reshape(-1, net.in_features)).reshape(100, 2, -1))
    assert (values >= bounds.lower).all() and (values <= bounds.upper).all()
    assert ((reference.lower - bounds.lower).abs() <= 1e-4 * (1 + reference.lower.abs())).all()


def test_a_block_whose_kernel_float32_rounds_is_charged():
    """A Block [conv(h₁) − (1 + 2^-28)·conv'(h₂)] as one part after h = relu((x, x)), x in [0.5, 2], then the identity:
    exact minimum −2^-28·2; the float32 product alone says 0; charged, the bound lies below the exact minimum."""
    first = Affine(torch.ones(2, 1, dtype=F64), torch.zeros(2, dtype=F64))
    one = Conv(torch.ones(1, 1, 1, 1, dtype=F64), torch.zeros(1, dtype=F64), (1, 1, 1))
    more = Conv(torch.full((1, 1, 1, 1), -(1.0 + 2.0 ** -28), dtype=F64), torch.zeros(1, dtype=F64), (1, 1, 1))
    block = Block(((Term(0, one), Term(1, more)),), torch.zeros(1, dtype=F64), 2)
    net = Network((first, Relu(), block, Affine(torch.ones(1, 1, dtype=F64), torch.zeros(1, dtype=F64))), (1,))
    marked = conv32.mark(net, min_work=0)
    assert conv32.is_marked(marked.layers[2])
    s = perturbation_set(torch.tensor([[1.25]], dtype=F64), 0.75, "inf")
    exact = -(2.0 ** -28) * 2.0
    assert float(net(torch.tensor([[2.0]], dtype=F64))[0, 0]) == exact
    row32 = sum(float(t.op.pull(torch.ones(1, 1, dtype=torch.float32), t.op.kernel.to(torch.float32))[0, 0])
                for t in block.parts[0])
    assert row32 == 0.0   # the float32 product alone: 0·h
    assert float(crown(marked, s).lower[0, 0]) <= exact


def test_mark_leaves_convolutions_too_small_to_pay_in_float64():
    net = _conv_net(0)
    assert any(_flags(conv32.mark(net, min_work=0)))
    assert conv32.mark(net, min_work=10 ** 9) is net


def test_marked_networks_take_the_margins_slack_and_mark_keeps_within_it():
    """rounding_margins of a marked network are the unmarked network's times FLOAT32_PULL_SLACK (the premise of the
    float64 parts of the pass), and mark stops marking before Π(1 + 4γ_{n+2}) would exceed it: a 1×1 convolution to
    25,000 channels (4γ ≈ 0.006) is marked, a second one after it is not, one to 50,000 channels (≈ 0.012) never."""
    from pacverify.verify.bounds.common import FLOAT32_PULL_SLACK, rounding_margins

    net = _conv_net(0)
    s = perturbation_set(torch.rand(2, net.in_features, generator=torch.Generator().manual_seed(0), dtype=F64), 0.1,
                         "inf")
    plain, slack = rounding_margins(net, s, None), rounding_margins(conv32.mark(net, min_work=0), s, None)
    assert torch.equal(slack.output, plain.output * FLOAT32_PULL_SLACK)
    assert all(torch.equal(a, b * FLOAT32_PULL_SLACK) for a, b in zip(slack.relu, plain.relu, strict=True))

    def wide(channels: int, c_in: int) -> Conv:
        return Conv(torch.full((channels, c_in, 1, 1), 1e-3, dtype=F64), torch.zeros(channels, dtype=F64),
                    (c_in, 1, 1))

    first = Affine(torch.ones(1, 1, dtype=F64), torch.zeros(1, dtype=F64))
    squeeze = Affine(torch.ones(1, 25_000, dtype=F64), torch.zeros(1, dtype=F64))
    two = Network((first, Relu(), wide(25_000, 1), Relu(), squeeze, Relu(), wide(25_000, 1)), (1,))
    assert _flags(conv32.mark(two, min_work=0)) == [False, False, True, False, False, False, False]
    one = Network((first, Relu(), wide(50_000, 1)), (1,))
    assert conv32.mark(one, min_work=0) is one
