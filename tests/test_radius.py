"""Certified radius: proven radii are verified, never exceed the true radius, and are tight on linear nets."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_nets import random_mlp

from pacverify.network import Affine, Network
from pacverify.verify.api import certified_radius, verify_points
from pacverify.verify.result import PointVerdict


def _linear_net(seed: int, m: int = 3, n: int = 4) -> Network:
    gen = torch.Generator().manual_seed(seed)
    return Network((Affine(torch.randn(n, m, generator=gen, dtype=torch.float64),
                           torch.randn(n, generator=gen, dtype=torch.float64)),), (m,))


def _exact_radius(net: Network, x: np.ndarray, norm: str) -> np.ndarray:
    """Distance from each point to the decision boundary of a linear classifier:
    min_j margin_j / ‖w_y − w_j‖_dual."""
    W, b = net.layers[0].weight.numpy(), net.layers[0].bias.numpy()
    z = x @ W.T + b
    y = z.argmax(1)
    out = []
    for i in range(x.shape[0]):
        dual = 1 if norm == "inf" else 2
        out.append(min((z[i, y[i]] - z[i, j]) / np.linalg.norm(W[y[i]] - W[j], ord=dual)
                       for j in range(W.shape[0]) if j != y[i]))
    return np.array(out)


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_linear_network_radius_is_exact_within_tol(norm):
    net = _linear_net(1)
    x = np.random.default_rng(1).normal(size=(20, 3))
    exact = _exact_radius(net, x, norm)
    tol = 1e-4
    result = certified_radius(net, x, norm, cap=10.0, tol=tol)
    assert np.all(result.radius <= exact)                   # never more than the truth
    assert np.all(result.radius >= np.minimum(exact, 10.0) - tol)   # and within tol of it
    # PGD at the first unproved radius finds the boundary of a linear classifier
    assert np.all(result.radius_upper <= np.minimum(exact, 10.0) + 2 * tol)


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_proven_radius_is_verified_and_below_attack_radius(norm):
    net = random_mlp([5, 24, 24, 4], seed=2)
    x = np.random.default_rng(2).random((16, 5))
    result = certified_radius(net, x, norm, method="crown", cap=1.0, tol=1e-3, domain=(0.0, 1.0))
    assert np.all(result.radius <= result.radius_upper)
    proven = result.radius > 0
    assert proven.any()
    check = verify_points(net, x[proven], result.radius[proven], norm, domain=(0.0, 1.0), attack=False)
    assert all(v is PointVerdict.VERIFIED for v in check.verdicts)
    assert [v is PointVerdict.VERIFIED for v in result.verdicts] == list(proven)


def test_misclassified_point_has_radius_zero_and_is_falsified():
    net = _linear_net(3)
    x = np.random.default_rng(3).normal(size=(4, 3))
    own = net(torch.from_numpy(x)).argmax(1).numpy()
    wrong = (own + 1) % 4
    result = certified_radius(net, x, "2", labels=wrong, cap=1.0)
    assert np.all(result.radius == 0) and all(v is PointVerdict.FALSIFIED for v in result.verdicts)
    for i, cex in result.counterexamples.items():
        np.testing.assert_array_equal(cex, x[i])


def test_complete_refinement_never_lowers_the_radius():
    net = random_mlp([2, 10, 10, 3], seed=4)
    x = np.random.default_rng(4).random((6, 2))
    plain = certified_radius(net, x, "inf", cap=0.5, tol=5e-3)
    refined = certified_radius(net, x, "inf", cap=0.5, tol=5e-3, complete=True, timeout=5)
    assert np.all(refined.radius >= plain.radius - 5e-3)
    assert np.all(refined.radius <= refined.radius_upper)
