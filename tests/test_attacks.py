"""PGD falsification: reported counterexamples lie in the set and violate; known ones are found."""
from __future__ import annotations

import math

import torch
from helpers_nets import random_mlp, torch_threads
from hypothesis import given, settings
from hypothesis import strategies as st
from verify_nets import sum_threshold_net

from pacverify.attacks import in_set, project_l2_box
from pacverify.verify.attacks import attack_set, pgd_attack
from pacverify.verify.property import OutputProperty, robustness_property
from pacverify.verify.sets import perturbation_set

ORIGIN = torch.zeros(1, 2, dtype=torch.float64)


def _attack(net, center, radius, norm, labels, domain=None, **kw):
    r = torch.full((center.shape[0],), float(radius), dtype=torch.float64)
    lo, hi = center - r[:, None], center + r[:, None]
    if domain is not None:
        lo, hi = lo.clamp(min=domain[0]), hi.clamp(max=domain[1])
    prop = robustness_property(labels, net.out_features)
    if norm == "inf":
        return pgd_attack(net, prop, lo, hi, **kw), (lo, hi, None, None)
    return pgd_attack(net, prop, lo, hi, center=center, radius=r, **kw), (lo, hi, center, r)


def test_finds_the_known_counterexample_linf():
    net = sum_threshold_net(0.9)
    res, _ = _attack(net, ORIGIN, 0.5, "inf", torch.tensor([0]))
    assert bool(res.found[0])
    x = res.inputs[0]
    assert x.abs().max() <= 0.5 and x.sum() > 0.9


def test_finds_the_known_counterexample_l2_and_none_where_none_exists():
    net = sum_threshold_net(0.9)
    # max of x0 + x1 over the L2 ball of radius r is r·sqrt(2): 0.707 < 0.9 < 0.990
    res, _ = _attack(net, ORIGIN, 0.7, "2", torch.tensor([0]))
    assert bool(res.found[0]) and res.inputs[0].norm() <= 0.7 and res.inputs[0].sum() > 0.9
    res, _ = _attack(net, ORIGIN, 0.5, "2", torch.tensor([0]))
    assert not bool(res.found[0])


def test_domain_box_is_respected():
    net = sum_threshold_net(0.9)
    # inside [0, 0.4]^2 the sum never exceeds 0.8: the corner (0.5, 0.5) of the bare ball must not be reported
    for norm in ("inf", "2"):
        res, _ = _attack(net, ORIGIN, 0.8, norm, torch.tensor([0]), domain=(0.0, 0.4))
        assert not bool(res.found[0])
        assert res.inputs.min() >= 0.0 and res.inputs.max() <= 0.4


def test_general_property_with_a_conjunction():
    net = sum_threshold_net(0.9)
    # unsafe: z1 >= 0.6 and z1 <= 0.7  (i.e. 0.6 <= x0 + x1 <= 0.7) within the box [0, 0.5]^2
    C = torch.tensor([[[0.0, -1.0], [0.0, 1.0]]], dtype=torch.float64)
    prop = OutputProperty(C, torch.tensor([[-0.6, 0.7]], dtype=torch.float64), torch.tensor([0, 0]))
    res = pgd_attack(net, prop, torch.zeros(1, 2, dtype=torch.float64), torch.full((1, 2), 0.5, dtype=torch.float64))
    assert bool(res.found[0]) and 0.6 <= float(res.outputs[0, 1]) <= 0.7


def test_a_misclassified_centre_is_its_own_counterexample():
    net = sum_threshold_net(0.9)
    res, _ = _attack(net, ORIGIN, 1e-3, "inf", torch.tensor([1]), restarts=1, steps=1)
    assert bool(res.found[0])


def test_seeded_and_reproducible():
    net = random_mlp([4, 16, 3], 3)
    x = torch.rand(12, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    labels = net(x).argmax(1)
    a, _ = _attack(net, x, 0.3, "inf", labels, seed=7)
    b, _ = _attack(net, x, 0.3, "inf", labels, seed=7)
    assert torch.equal(a.found, b.found) and torch.equal(a.inputs, b.inputs)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), norm=st.sampled_from(["inf", "2"]), radius=st.floats(0.01, 1.0),
       use_domain=st.booleans())
def test_reported_counterexamples_are_in_the_set_and_change_the_class(seed, norm, radius, use_domain):
    net = random_mlp([3, 10, 10, 3], seed, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(6, 3, generator=gen, dtype=torch.float64)
    labels = net.to(dtype=torch.float64)(x).argmax(1)
    res, (lo, hi, center, r) = _attack(net, x, radius, norm, labels, domain=(0.0, 1.0) if use_domain else None,
                                       steps=20, restarts=3, seed=seed)
    assert bool(in_set(res.inputs, lo, hi, center, r).all())
    z = net.to(dtype=torch.float64)(res.inputs)
    changed = z.max(1).values > z.gather(1, labels[:, None]).squeeze(1)
    assert torch.equal(res.found, changed)
    # the box is [x − r, x + r] rounded in float64: allow one rounding step
    if norm == "inf":
        assert (res.inputs - x).abs().max() <= radius * (1 + 1e-12) + 1e-15
    else:
        assert ((res.inputs - x).norm(dim=1) <= radius).all()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), radius=st.floats(0.01, 2.0))
def test_l2_box_projection_lands_in_the_intersection(seed, radius):
    gen = torch.Generator().manual_seed(seed)
    center = torch.rand(5, 4, generator=gen, dtype=torch.float64)
    x = center + torch.randn(5, 4, generator=gen, dtype=torch.float64)
    lo, hi = torch.zeros_like(center), torch.ones_like(center)
    r = torch.full((5,), radius, dtype=torch.float64)
    p = project_l2_box(x, center, r, lo, hi)
    assert bool(in_set(p, lo, hi, center, r).all())
    inside = project_l2_box(center, center, r, lo, hi)
    torch.testing.assert_close(inside, center)
    # no point of the intersection is much closer to x than p (Dykstra converges to the projection)
    cand = project_l2_box(center + (x - center) * torch.rand(5, 1, generator=gen, dtype=torch.float64),
                          center, r, lo, hi)
    assert ((p - x).norm(dim=1) <= (cand - x).norm(dim=1) + 0.05 * math.sqrt(4)).all()


def test_verify_points_bounds_first_then_attacks_only_the_open_points_cheapest_first():
    """Bounds decide every point they can before any attack; the strong attack sees only near misses; every
    counterexample is in its ball and changes the class; the time of each part is recorded."""
    import numpy as np

    from pacverify.verify.api import verify_points
    from pacverify.verify.result import PointVerdict

    net = random_mlp([4, 24, 24, 3], 7)
    x = np.random.default_rng(7).uniform(-1, 1, (120, 4))
    result = verify_points(net, x, 0.3, "2", seed=0)
    st_ = result.stats
    verified = sum(v is PointVerdict.VERIFIED for v in result.verdicts)
    falsified = sum(v is PointVerdict.FALSIFIED for v in result.verdicts)
    assert 0 < verified < 120 and falsified > 0
    assert np.isfinite(result.lower_bounds).all()            # every point was bounded
    assert st_["verified_by_bounds"] == verified and st_["falsified_by_attack"] == falsified
    assert 0 <= st_["attacked_strongly"] <= 120 - verified
    assert min(st_["bounds_s"], st_["attack_s"], st_["search_s"]) >= 0
    assert st_["bounds_s"] + st_["attack_s"] + st_["search_s"] <= result.time_s
    for i, cex in result.counterexamples.items():
        assert np.linalg.norm(cex - x[i]) <= 0.3 + 1e-9
        z = net(torch.tensor(np.stack([x[i], cex])))
        assert int(z[1].argmax()) != int(z[0].argmax())
    no_attack = verify_points(net, x, 0.3, "2", attack=False)
    assert [v is PointVerdict.VERIFIED for v in no_attack.verdicts] == \
        [v is PointVerdict.VERIFIED for v in result.verdicts]
    assert no_attack.stats["attack_s"] == 0.0 and not no_attack.counterexamples


def test_verify_points_reports_progress_by_block_with_the_same_results(monkeypatch):
    import numpy as np

    import pacverify.verify.api as api

    net = random_mlp([4, 16, 3], 3)
    x = np.random.default_rng(3).uniform(-1, 1, (50, 4))
    plain = api.verify_points(net, x, 0.3, "inf", seed=1)
    monkeypatch.setattr(api, "PROGRESS_BLOCK", 16)
    seen: list = []
    told = api.verify_points(net, x, 0.3, "inf", seed=1, progress=lambda *a: seen.append(a))
    # blocks change the order of BLAS sums only: the same bounds to float64 rounding, the same verdicts
    assert np.allclose(told.lower_bounds, plain.lower_bounds, rtol=0, atol=1e-9) and told.verdicts == plain.verdicts
    assert [s for s in seen if s[0] == "bounds"] == [("bounds", 16, 50), ("bounds", 32, 50), ("bounds", 48, 50),
                                                      ("bounds", 50, 50)]
    attack = [s for s in seen if s[0] == "attack"]
    opened = 50 - told.stats["verified_by_bounds"]
    assert attack == ([("attack", 0, opened), ("attack", opened, opened)] if opened else [])


def test_attack_set_chunks_side_by_side_give_one_threads_result():
    """With two torch threads attack_set's chunks run side by side (each seeded by its start): the same result."""
    net = random_mlp([4, 16, 16, 3], seed=2)
    x0 = torch.rand(8, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    s, prop = perturbation_set(x0, 0.1, "2", (0.0, 1.0)), robustness_property(net(x0).argmax(1), 3)
    results = []
    for threads in (1, 2):
        with torch_threads(threads):
            results.append(attack_set(net, s, prop, seed=3, steps=5, restarts=2, chunk=3))
    assert results[0].found.any() and not results[0].found.all()   # a mix, so that the comparison means something
    for name in ("found", "inputs", "outputs", "violation"):
        assert torch.equal(getattr(results[0], name), getattr(results[1], name))
