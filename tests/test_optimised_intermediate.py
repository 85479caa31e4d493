"""α-CROWN's optimised intermediate bounds (the roots of ReLU branch and bound): sound by sampling and
against the exact range of a MILP, never looser than CROWN's; and α-CROWN optimises its own value,
so rows whose interval bound beats CROWN's still improve."""
from __future__ import annotations

import torch
from helpers_nets import exact_range_milp, pre_activations, random_mlp, sample_in_set
from hypothesis import given, settings
from hypothesis import strategies as st

from pacverify.network import Network, Relu
from pacverify.verify.bounds import alpha_crown, crown, ibp
from pacverify.verify.bounds.alpha import optimised_intermediate
from pacverify.verify.sets import perturbation_set


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**20), norm=st.sampled_from(["2", "inf"]), depth=st.integers(2, 4))
def test_optimised_intermediate_bounds_are_sound_and_at_least_crowns(seed, norm, depth):
    net = random_mlp([4] + [10] * depth + [3], seed)
    gen = torch.Generator().manual_seed(seed)
    s = perturbation_set(torch.rand(3, 4, generator=gen, dtype=torch.float64), 0.4, norm)
    optimised = optimised_intermediate(net, s, iterations=10)
    reference = crown(net, s, return_intermediate=True).pre_activation
    pre = pre_activations(net, sample_in_set(s, 300, seed))
    for z, (lower, upper), (crown_lower, crown_upper) in zip(pre, optimised, reference, strict=True):
        assert bool((z >= lower).all()) and bool((z <= upper).all())
        assert bool((lower >= crown_lower).all()) and bool((upper <= crown_upper).all())


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**20))
def test_optimised_intermediate_bounds_contain_the_exact_range(seed):
    """On a box, each pre-activation's exact min and max (a MILP on the network cut before that ReLU)
    lie within the optimised bounds."""
    net = random_mlp([3, 6, 6, 6, 2], seed)
    gen = torch.Generator().manual_seed(seed)
    s = perturbation_set(torch.rand(1, 3, generator=gen, dtype=torch.float64), 0.3, "inf")
    optimised = optimised_intermediate(net, s, iterations=10)
    cuts = [i for i, layer in enumerate(net.layers) if isinstance(layer, Relu)]
    for k, cut in enumerate(cuts):
        prefix = Network(tuple(net.layers[:cut]), net.input_shape)
        lower, upper = optimised[k]
        for i in range(lower.shape[1]):
            c = torch.zeros(lower.shape[1], dtype=torch.float64)
            c[i] = 1.0
            exact = exact_range_milp(prefix, s.lower[0].numpy(), s.upper[0].numpy(), c.numpy())
            assert float(lower[0, i]) <= exact[0] + 1e-7 and float(upper[0, i]) >= exact[1] - 1e-7


def test_alpha_optimises_rows_where_the_interval_bound_is_higher():
    """Rows whose interval (IBP) bound is above CROWN's value (so the reported bound is the interval's)
    still have α-CROWN's gradient: most of them end above it. Optimising the intersected value
    instead gives those rows no gradient, and none of them would move."""
    dominated = improved = 0
    for seed in range(6):
        net = random_mlp([5, 16, 16, 16, 4], seed)
        gen = torch.Generator().manual_seed(seed)
        s = perturbation_set(torch.rand(4, 5, generator=gen, dtype=torch.float64), 0.5, "inf")
        fixed = optimised_intermediate(net, s)
        interval = ibp(net, s, intermediate=fixed).lower
        crown_lower = crown(net, s, intermediate=fixed, upper=False).lower
        alpha_lower = alpha_crown(net, s, intermediate=fixed, upper=False, iterations=30).lower
        rows = crown_lower == interval
        dominated += int(rows.sum())
        improved += int((rows & (alpha_lower > crown_lower + 1e-6)).sum())
    assert dominated >= 10, "the test needs rows where the interval bound wins"
    assert improved >= dominated // 2
