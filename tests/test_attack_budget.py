"""verify_points' attack within a budget of work counted against the bounds (issue 12, goal 5): the work model,
the counts the attack reports, the budget kept, the closest near misses first, the same verdicts on every run."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers_nets import random_mlp

import pacverify.verify.api as api
from pacverify.attacks import pgd_search
from pacverify.network import Affine, Block, Conv, Relu, Scale, Term
from pacverify.verify.result import PointVerdict
from pacverify.verify.work import PASS_OVERHEAD, PGD_STEP, attack_macs, bound_macs, crown_macs, forward_macs, layer_macs

F64 = torch.float64


def _nonzeros(layer) -> int:
    return int((layer.dense_weight() != 0).sum())


def test_each_layers_work_is_the_multiply_adds_of_its_dense_matrix():
    """Without padding every entry of a map's dense matrix is one multiply-add of its forward pass."""
    gen = torch.Generator().manual_seed(0)
    dense = Affine(torch.randn(5, 3, generator=gen, dtype=F64), torch.zeros(5, dtype=F64))
    conv = Conv(torch.randn(4, 2, 3, 3, generator=gen, dtype=F64) + 5, torch.zeros(64, dtype=F64), (2, 6, 6))
    strided = Conv(torch.randn(6, 1, 2, 2, generator=gen, dtype=F64) + 5, torch.zeros(6 * 9, dtype=F64), (2, 6, 6),
                   stride=(2, 2), groups=2)
    scale = Scale(torch.rand(7, generator=gen, dtype=F64) + 1)
    small = Conv(torch.randn(3, 2, 3, 3, generator=gen, dtype=F64) + 5, torch.zeros(12, dtype=F64), (2, 4, 4))
    tail = Affine(torch.randn(12, 5, generator=gen, dtype=F64) + 5, torch.zeros(12, dtype=F64))
    image = Scale(torch.rand(32, generator=gen, dtype=F64) + 1)
    block = Block(((Term(0, small), Term(32, tail)), (Term(0, image),)), torch.zeros(44, dtype=F64), 37)
    for layer in (dense, conv, strided, scale, block):
        assert layer_macs(layer) == _nonzeros(layer), type(layer).__name__
    assert layer_macs(Relu()) == 0


def test_crown_work_counts_two_rows_per_relu_neuron_and_the_specification_rows():
    net = random_mlp([4, 24, 24, 3], 7)
    assert forward_macs(net) == 4 * 24 + 24 * 24 + 24 * 3
    relu1 = 2 * 24 * (0 + 4)                          # rows pulled through nothing, concretised on 4 inputs
    relu2 = 2 * 24 * (4 * 24 + 4)                     # through the first map
    spec = 2 * (4 * 24 + 24 * 24 + 24 * 3 + 4)        # 2 rows through every map
    assert crown_macs(net, 2) == relu1 + relu2 + spec
    assert bound_macs(net, 2, "crown", 10) == 10 * crown_macs(net, 2) + 3 * PASS_OVERHEAD
    assert bound_macs(net, 2, "alpha-crown", 10, iterations=4) == 5 * bound_macs(net, 2, "crown", 10)
    assert bound_macs(net, 2, "ibp", 10) == 20 * forward_macs(net) + PASS_OVERHEAD
    step = math.ceil(PGD_STEP * forward_macs(net))
    assert 2 * forward_macs(net) <= step and attack_macs(net, 7, 2) == 7 * step + 2 * PASS_OVERHEAD


def test_pgd_counts_the_points_it_ran_the_model_on():
    net = random_mlp([3, 8, 2], 1)
    x = torch.zeros(4, 3, dtype=F64)

    def never_met(logits, problems):              # a margin no step can make negative: no early stop
        return logits[:, :1] * 0 + 1

    full = pgd_search(net, never_met, x - 1, x + 1, steps=6, restarts=3, stop_below=0.0)
    assert (full.evaluations, full.passes) == (7 * 4 * 3, 7)

    def met(logits, problems):                    # met at the first evaluation: the search stops there
        return logits[:, :1] * 0 - 1

    early = pgd_search(net, met, x - 1, x + 1, steps=30, restarts=3, stop_below=0.0)
    assert (early.evaluations, early.passes) == (1 * 4 * 3, 1)


@pytest.fixture(scope="module")
def open_points():
    """A network and points where the bounds leave most points open and the attack finds some counterexamples."""
    net = random_mlp([20, 128, 128, 5], 11)
    x = np.random.default_rng(11).uniform(-1, 1, (1000, 20))
    return net, x, 0.15


def test_the_attack_keeps_its_budget_and_spends_it_on_the_closest_near_misses_first(open_points, monkeypatch):
    net, x, radius = open_points
    quick: list = []
    strong: list[np.ndarray] = []
    real = api.attack_set

    def recording(net_, input_set, prop, **kw):
        result = real(net_, input_set, prop, **kw)
        if kw.get("restarts") == api.STRONG_RESTARTS:
            strong.append(input_set.center.numpy().copy())
        else:
            quick.append((input_set.center.numpy().copy(), result))
        return result

    monkeypatch.setattr(api, "attack_set", recording)
    free = api.verify_points(net, x, radius, "2", seed=3, attack_budget=None)
    quick.clear()
    strong.clear()
    tight = api.verify_points(net, x, radius, "2", seed=3)              # the default budget, 1
    st_f, st_t = free.stats, tight.stats
    assert st_f["verified_by_bounds"] < 500 and st_f["near_misses"] > 20        # the attack has work to do
    assert st_t["attack_work"] <= st_t["bounds_work"] < st_f["attack_work"]
    assert st_t["quick_steps"] == st_f["quick_steps"] == api.QUICK_STEPS
    assert 0 < st_t["attacked_strongly"] < st_t["near_misses"] == st_f["near_misses"] == st_f["attacked_strongly"]
    # closest first: the quick attack's margin over the centre's, smallest first, among the near misses it left
    [(centres, result)] = quick
    with torch.no_grad():
        z = net(torch.tensor(centres))
    top2 = z.topk(2, dim=1).values
    ratio = result.violation.numpy() / (top2[:, 0] - top2[:, 1]).numpy()
    open_near = np.nonzero(~result.found.numpy() & (ratio <= api.NEAR_MISS))[0]
    closest = open_near[np.argsort(ratio[open_near], kind="stable")]
    np.testing.assert_array_equal(np.concatenate(strong), centres[closest[:st_t["attacked_strongly"]]])
    # the bounds alone decide VERIFIED; every counterexample is in its ball and changes the class
    verified = [v is PointVerdict.VERIFIED for v in free.verdicts]
    assert verified == [v is PointVerdict.VERIFIED for v in tight.verdicts]
    for outcome in (free, tight):
        for i, cex in outcome.counterexamples.items():
            assert np.linalg.norm(cex - x[i]) <= radius
            z = net(torch.tensor(np.stack([x[i], cex])))
            assert int(z[1].argmax()) != int(z[0].argmax())
    assert st_f["falsified_by_attack"] >= st_t["falsified_by_attack"] > 0


def test_the_budgeted_attack_gives_the_same_verdicts_on_every_run(open_points):
    net, x, radius = open_points
    first, second = (api.verify_points(net, x, radius, "2", seed=5) for _ in range(2))
    assert first.verdicts == second.verdicts and first.counterexamples.keys() == second.counterexamples.keys()
    for i, cex in first.counterexamples.items():
        np.testing.assert_array_equal(cex, second.counterexamples[i])
    assert first.stats["attack_work"] == second.stats["attack_work"] <= first.stats["bounds_work"]


def test_a_bad_attack_budget_is_refused(open_points):
    net, x, radius = open_points
    for bad in (0, -1.0, float("nan"), "lots"):
        with pytest.raises(api.InputError, match="attack_budget"):
            api.verify_points(net, x[:3], radius, "2", attack_budget=bad)


def test_a_layer_without_a_work_model_is_named():
    with pytest.raises(TypeError, match="no work model for a object layer"):
        layer_macs(object())


def test_the_bound_minimisers_are_tried_on_the_rows_with_the_lowest_bounds(open_points, monkeypatch):
    """The guided stage gets, per point, the GUIDED_ROWS margins whose bounds are lowest (a counterexample to one
    of them is one to the property) and its counterexamples are confirmed against the whole property."""
    net, x, radius = open_points
    seen: list = []
    real = api.bound_guided_attack

    def recording(net_, input_set, prop, **kw):
        seen.append((input_set.center.numpy().copy(), prop.C.clone()))
        return real(net_, input_set, prop, **kw)

    monkeypatch.setattr(api, "bound_guided_attack", recording)
    result = api.verify_points(net, x, radius, "2", seed=3, attack_budget=None)
    assert seen
    index = {tuple(row): i for i, row in enumerate(x)}
    full = result.lower_bounds
    for centres, C in seen:
        assert C.shape[1] == api.GUIDED_ROWS
        for centre, rows in zip(centres, C, strict=True):
            i = index[tuple(centre)]
            y = int(result.labels[i])
            others = [int(j) for j in torch.nonzero(rows[:, y] == 1, as_tuple=False)[:, 0]]
            assert len(others) == api.GUIDED_ROWS                  # each row is e_y − e_j for some class j
            picked = sorted(int(torch.nonzero(row == -1)[0, 0]) for row in rows)
            order = np.argsort(full[i], kind="stable")[:api.GUIDED_ROWS]
            classes = [j for j in range(net.out_features) if j != y]
            assert picked == sorted(classes[k] for k in order)
    for i, cex in result.counterexamples.items():
        z = net(torch.tensor(np.stack([x[i], cex])))
        assert int(z[1].argmax()) != int(z[0].argmax())


def test_some_clauses_keep_the_picked_rows_and_only_their_counterexamples():
    """A property of single-row clauses restricted per problem to some of them: the picked rows, in order, and
    every output it calls unsafe is unsafe for the whole property; a property with a multi-row clause is refused."""
    from pacverify.verify.property import OutputProperty, robustness_property

    gen = torch.Generator().manual_seed(3)
    prop = robustness_property(torch.tensor([0, 2, 4]), 5)
    pick = torch.tensor([[3, 1], [0, 2], [2, 3]])
    sub = prop.some_clauses(pick)
    assert sub.C.shape == (3, 2, 5) and sub.n_clauses == 2
    for b in range(3):
        for k in range(2):
            assert torch.equal(sub.C[b, k], prop.C[b, int(pick[b, k])])
    outputs = torch.randn(2000, 3, 5, generator=gen, dtype=F64)
    for y in outputs:
        assert bool((~sub.is_unsafe(y) | prop.is_unsafe(y)).all())
    assert bool(torch.stack([sub.is_unsafe(y) for y in outputs]).any())      # the check is not vacuous
    two_rows = OutputProperty(prop.C, prop.d, torch.tensor([0, 0, 1, 2]))
    with pytest.raises(ValueError, match="single rows"):
        two_rows.some_clauses(pick)
