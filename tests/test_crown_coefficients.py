"""CROWN's bounds with the coefficients of its linear lower bounds (one pass), and bounds proved on a superset
as a prior: the same numbers as ``crown``, a sound linear lower bound, sound and tighter pre-activation bounds
on a sub-box (hypothesis; both norms where they apply)."""
from __future__ import annotations

import pytest
import torch
from helpers_nets import pre_activations, random_mlp, sample_in_set, spec_values
from hypothesis import given, settings
from hypothesis import strategies as st

from pacverify.errors import InputError
from pacverify.verify.bounds import crown
from pacverify.verify.bounds.crown import DENSE_FRACTION, crown_with_coefficients
from pacverify.verify.sets import Box, perturbation_set


def _net_and_rows(seed: int, widths: list[int], batch: int, final_relu: bool = False):
    net = random_mlp(widths, seed, final_relu=final_relu)
    gen = torch.Generator().manual_seed(seed)
    C = torch.randn(batch, 3, widths[-1], generator=gen, dtype=torch.float64)
    x = torch.rand(batch, widths[0], generator=gen, dtype=torch.float64)
    return net, x, C


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), norm=st.sampled_from(["inf", "2"]), final_relu=st.booleans(),
       radius=st.sampled_from([0.05, 0.3, 1.0]))
def test_the_bounds_are_crowns_and_the_coefficients_a_sound_linear_bound(seed, norm, final_relu, radius):
    net, x, C = _net_and_rows(seed, [4, 10, 9, 5], 3, final_relu)
    s = perturbation_set(x, radius, norm)
    result, A, c = crown_with_coefficients(net, s, C)
    reference = crown(net, s, C, upper=False, return_intermediate=True)
    assert torch.equal(result.bounds.lower, reference.bounds.lower)
    assert torch.equal(result.bounds.upper, reference.bounds.upper)
    for (lo, hi), (rlo, rhi) in zip(result.pre_activation, reference.pre_activation, strict=True):
        assert torch.equal(lo, rlo) and torch.equal(hi, rhi)
    assert A.shape == (3, 3, 4)
    points = sample_in_set(s, 300, seed)                                   # (S, B, m)
    linear = torch.einsum("bkm,sbm->sbk", A, points) + c
    assert (spec_values(net, C, points) >= linear - 1e-9).all()


def test_chunks_give_the_same_bounds_up_to_their_rounding_margins():
    """The rounding margin is computed per chunk (from its largest input), so the numbers agree to its size."""
    net, x, C = _net_and_rows(3, [3, 8, 8, 4], 7)
    s = perturbation_set(x, 0.2, "inf")
    whole, A, _ = crown_with_coefficients(net, s, C)
    parts, A_parts, _ = crown_with_coefficients(net, s, C, max_batch=2)
    torch.testing.assert_close(whole.bounds.lower, parts.bounds.lower, rtol=0, atol=1e-9)
    torch.testing.assert_close(A, A_parts, rtol=0, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), shrink=st.sampled_from([0.5, 0.2, 0.05]))
def test_a_superset_s_bounds_as_prior_keep_a_sub_box_sound_and_within_the_prior(seed, shrink):
    net, x, C = _net_and_rows(seed, [3, 12, 12, 12, 4], 1)
    parent = perturbation_set(x, 0.5, "inf")
    prior = crown_with_coefficients(net, parent, C)[0].pre_activation
    gen = torch.Generator().manual_seed(seed + 1)
    width = (parent.upper - parent.lower) * shrink
    lo = parent.lower + (parent.upper - parent.lower - width) * torch.rand(1, 3, generator=gen, dtype=torch.float64)
    child = Box(lo, lo + width)
    with_prior, _, _ = crown_with_coefficients(net, child, C, prior=prior)
    points = sample_in_set(child, 300, seed)
    assert (spec_values(net, C, points) >= with_prior.bounds.lower - 1e-9).all()
    for z, (lo_k, hi_k), (plo, phi) in zip(pre_activations(net, points), with_prior.pre_activation, prior,
                                            strict=True):
        assert (z >= lo_k - 1e-9).all() and (z <= hi_k + 1e-9).all()
        assert (lo_k >= plo - 1e-9).all() and (hi_k <= phi + 1e-9).all()   # within the prior, up to the margin


def test_a_prior_of_the_wrong_shape_is_refused():
    net, x, C = _net_and_rows(0, [3, 6, 6, 2], 2)
    s = perturbation_set(x, 0.1, "inf")
    bad = [(torch.zeros(2, 5), torch.zeros(2, 5)), None]
    with pytest.raises(InputError, match=r"prior\[0\] must be a pair"):
        crown_with_coefficients(net, s, C, prior=bad)


@pytest.mark.parametrize("radius", [0.0, 0.1, 0.3, 2.0])
def test_row_maps_counts_the_rows_pulled_back_times_the_maps_they_cross(radius):
    """One hidden layer: the final pass pulls the 3 rows of each point through both maps, and the hidden layer's
    bounds pull a lower and an upper row through the first map for each neuron its interval leaves unstable — for
    every neuron of every point when more than half are unstable (the dense rows of ``unstable_bounds``)."""
    net, x, C = _net_and_rows(4, [4, 12, 5], 3)
    first = net.layers[0]
    centre = x @ first.weight.T + first.bias
    spread = radius * first.weight.abs().sum(1)
    unstable = int(((centre - spread < 0) & (centre + spread > 0)).sum())
    result, _, _ = crown_with_coefficients(net, Box(x - radius, x + radius), C)
    pulled = 2 * 3 * 12 if unstable > DENSE_FRACTION * 3 * 12 else 2 * unstable
    assert result.row_maps == 3 * 3 * 2 + pulled * 1
    assert (unstable > 0) == (radius > 0)
