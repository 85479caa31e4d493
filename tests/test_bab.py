"""Branch and bound: sound against dense sampling, complete on small networks, honest about budgets."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers_nets import random_mlp, sample_in_set
from hypothesis import given, settings
from hypothesis import strategies as st
from verify_nets import sum_threshold_net

from pacverify.errors import InputError
from pacverify.verify.bab import BRANCHING_RULES, BabConfig, branch_and_bound
from pacverify.verify.bab_leaf import decide_leaf
from pacverify.verify.property import OutputProperty, robustness_property
from pacverify.verify.result import PointVerdict
from pacverify.verify.sets import perturbation_set


def _problem(widths, seed, radius, norm, n_points=3):
    net = random_mlp(widths, seed)
    x = torch.rand(n_points, widths[0], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    labels = net(x).argmax(1)
    return net, perturbation_set(x, radius, norm), robustness_property(labels, widths[-1])


def _violated_by_sampling(net, input_set, prop, n=3000, seed=0):
    """(B,) bool: some sampled point of each set (centre, corners / sphere, faces, uniform) is unsafe."""
    pts = sample_in_set(input_set, n, seed)                       # (n, B, m)
    y = net(pts.reshape(-1, pts.shape[-1]))                       # (n·B, out), point-major
    every = prop.select(torch.arange(pts.shape[1]).repeat(n))
    return every.is_unsafe(y).reshape(n, pts.shape[1]).any(0)


def _check_decisions(net, input_set, prop, decisions):
    sampled = _violated_by_sampling(net, input_set, prop)
    lower, upper = input_set.interval()
    for b, decision in enumerate(decisions):
        if decision.verdict is PointVerdict.VERIFIED:
            assert not bool(sampled[b]), "VERIFIED although a sampled point of the set is a counterexample"
        if decision.verdict is PointVerdict.FALSIFIED:
            x = torch.from_numpy(decision.counterexample)
            assert bool(((x >= lower[b]) & (x <= upper[b])).all())
            if norm_of(input_set) == "2":
                assert float((x - input_set.center[b]).norm()) <= float(input_set.radius[b])
            assert bool(prop.select(torch.tensor([b])).is_unsafe(net(x[None]))[0])


def norm_of(input_set):
    return "2" if hasattr(input_set, "center") and hasattr(input_set, "radius") else "inf"


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), norm=st.sampled_from(["inf", "2"]), split=st.sampled_from(["input", "relu"]),
       radius=st.floats(0.05, 0.5))
def test_sound_against_dense_sampling(seed, norm, split, radius):
    if norm == "2" and split == "input":
        split = "relu"                    # input splitting is for boxes
    net, input_set, prop = _problem([2, 12, 12, 3], seed, radius, norm)
    decisions = branch_and_bound(net, input_set, prop, BabConfig(split=split, max_domains=600, timeout=3, seed=seed))
    _check_decisions(net, input_set, prop, decisions)


@pytest.mark.parametrize("split, rules, float32_ascent, box_alpha",
                         [("input", BRANCHING_RULES, True, 5), ("input", BRANCHING_RULES, True, 0)]
                         + [("input", (rule,), True, 5) for rule in BRANCHING_RULES]
                         + [("relu", BRANCHING_RULES, True, 5), ("relu", BRANCHING_RULES, False, 5)])
def test_complete_on_small_networks(split, rules, float32_ascent, box_alpha):
    """Every problem on 2-8-8-2 and 3-10-3 networks over boxes is decided: no UNKNOWN (input splitting with its
    portfolio, with and without α-CROWN on the boxes CROWN leaves open, and with each branching rule alone; ReLU
    splitting with its α-CROWN steps in float32 and in float64)."""
    counts = {v: 0 for v in PointVerdict}
    for seed in range(4):
        for widths in ([2, 8, 8, 2], [3, 10, 3]):
            net, input_set, prop = _problem(widths, seed, 0.3, "inf")
            decisions = branch_and_bound(net, input_set, prop, BabConfig(split=split, timeout=20, input_branching=rules,
                                                                         float32_ascent=float32_ascent,
                                                                         box_alpha_iterations=box_alpha))
            _check_decisions(net, input_set, prop, decisions)
            for d in decisions:
                counts[d.verdict] += 1
    assert counts[PointVerdict.UNKNOWN] == 0
    assert counts[PointVerdict.VERIFIED] > 0 and counts[PointVerdict.FALSIFIED] > 0   # both outcomes exercised


def test_the_portfolio_interleaves_its_rules_by_work_exactly():
    """Each rule's search in the portfolio is the search it would run alone, round for round, and the rounds run in
    the order of the work done before each (ties to the earlier rule): so the portfolio's verdict is that of the
    rule whose deciding round starts at the least work, after exactly the rounds that start before it."""
    from pacverify.verify import bab

    config = BabConfig(batch=8)
    checked = 0
    for seed in range(6):
        net, input_set, prop = _problem([2, 8, 8, 2], seed, 0.9, "inf", n_points=1)
        clause = prop.clause_property(0) if prop.n_clauses > 1 else prop
        rounds = {}     # rule -> [(work before the round, subdomains it bounded)], verdict
        for rule in BRANCHING_RULES:
            search, per_round, decision = bab._InputSearch(net, input_set, clause, config, None, rule), [], None
            while decision is None:
                work, domains = search.work, search.domains
                decision = search.round(config.max_domains)
                per_round.append((work, search.domains - domains))
            assert search.work > 0
            rounds[rule] = (per_round, decision.verdict)
        key = {rule: (per_round[-1][0], i) for i, (rule, (per_round, _)) in enumerate(rounds.items())}
        winner = min(key, key=key.get)
        expected = sum(domains for rule, (per_round, _) in rounds.items()
                       for j, (work, domains) in enumerate(per_round)
                       if (work, list(rounds).index(rule)) < key[winner] or (rule == winner and j == len(per_round) - 1))
        together = bab._input_bab(net, input_set, [clause], replace(config, input_branching=BRANCHING_RULES), None)
        assert together.verdict is rounds[winner][1]
        assert together.domains == expected
        checked += len(rounds[winner][0]) > 1
    assert checked >= 2        # some problems needed several rounds


@pytest.mark.parametrize("rule", ["widest", "lookahead"])
def test_input_splitting_without_room_for_priors_goes_on_without_them(monkeypatch, rule):
    """Past ``PRIOR_BYTES`` of inherited bounds a search keeps none, and still decides as dense sampling says."""
    from pacverify.verify import bab
    from pacverify.verify.sets import Box

    net, input_set, prop = _problem([2, 8, 8, 2], 3, 0.6, "inf", n_points=1)     # 6 rounds for either rule
    search = bab._InputSearch(net, input_set, prop, BabConfig(batch=4, box_alpha_iterations=0), None, rule)
    assert search.round(4) is None
    assert search.has_prior and len(search.pool.fields) == 2 + 2 * len(net.relu_widths())
    monkeypatch.setattr(bab, "PRIOR_BYTES", 0)
    assert search.round(4) is None and search.open > 0
    assert not search.has_prior and not search.keep_prior and len(search.pool.fields) == 2
    for seed in range(3):
        net, input_set, prop = _problem([2, 8, 8, 2], seed, 0.3, "inf")
        assert isinstance(input_set, Box)
        decisions = branch_and_bound(net, input_set, prop, BabConfig(split="input", timeout=20, input_branching=(rule,)))
        _check_decisions(net, input_set, prop, decisions)
        assert all(d.verdict is not PointVerdict.UNKNOWN for d in decisions)


def test_relu_splitting_checks_the_optimised_bounds_minimisers_first():
    """Problems whose unsafe set is reached are answered at the root, before any split, by PGD from the
    minimisers of the optimised bounds; every such counterexample is in the set and unsafe."""
    seen = 0
    for seed in range(6):
        net, input_set, prop = _problem([3, 10, 10, 3], seed, 0.4, "inf", n_points=4)
        decisions = branch_and_bound(net, input_set, prop, BabConfig(split="relu", timeout=10))
        _check_decisions(net, input_set, prop, decisions)
        seen += sum("optimised bounds' minimisers" in d.detail for d in decisions)
    assert seen > 0


def test_a_paused_relu_search_resumes_where_it_stopped():
    """A search stopped by its budget and resumed reaches the same verdict after the same subdomains as one
    never stopped (what lets clauses that ran out of their share continue with the time others left)."""
    from pacverify.verify.bab import _relu_bab
    from pacverify.verify.bounds.alpha import optimised_intermediate
    resumed = 0
    for seed in range(6):
        net, input_set, prop = _problem([3, 16, 16, 3], seed, 0.3, "inf", n_points=1)
        fixed = optimised_intermediate(net, input_set)
        for k in range(prop.n_clauses):
            clause = prop.clause_property(k)
            whole = _relu_bab(net, input_set, clause, BabConfig(batch=4), None, fixed)
            keep: list = []
            first = _relu_bab(net, input_set, clause, BabConfig(batch=4, max_domains=8), None, fixed, None, keep)
            if whole.domains <= 8:
                continue
            assert first.verdict is PointVerdict.UNKNOWN and len(keep) == 1
            rest = _relu_bab(net, input_set, clause, BabConfig(batch=4), None, fixed, keep[0])
            assert (rest.verdict, rest.domains) == (whole.verdict, whole.domains)
            # and the work is not redone: counted from zero, the resumed part bounds only what was left
            again = _relu_bab(net, input_set, clause, BabConfig(batch=4), None, fixed, replace(keep[0], domains=0))
            assert again.domains == whole.domains - first.domains
            resumed += 1
    assert resumed > 0


def test_disjunctive_property_with_conjunction_clauses():
    """Unsafe: (z1 >= 0.95 and z1 <= 1.05) or z1 >= 3 over [0, r]^2 for the net z1 = x0 + x1: sat iff 2r >= 0.95."""
    net = sum_threshold_net(0.0)
    C = torch.tensor([[[0.0, -1.0], [0.0, 1.0], [0.0, -1.0]]], dtype=torch.float64)
    prop = OutputProperty(C, torch.tensor([[-0.95, 1.05, -3.0]], dtype=torch.float64), torch.tensor([0, 0, 1]))
    for r, expected in ((0.45, PointVerdict.VERIFIED), (0.5, PointVerdict.FALSIFIED)):
        input_set = perturbation_set(torch.full((1, 2), r / 2, dtype=torch.float64), r / 2, "inf")
        for split in ("input", "relu"):
            decision = branch_and_bound(net, input_set, prop, BabConfig(split=split, timeout=10))[0]
            assert decision.verdict is expected, (r, split, decision)


def test_budget_out_is_unknown_never_verified():
    net, input_set, prop = _problem([2, 16, 16, 3], 3, 0.4, "inf", n_points=4)
    sampled = _violated_by_sampling(net, input_set, prop)
    for split in ("input", "relu"):
        for d, bad in zip(branch_and_bound(net, input_set, prop, BabConfig(split=split, max_domains=1, batch=1)),
                          sampled, strict=True):
            assert d.verdict is not PointVerdict.VERIFIED or not bool(bad)
            assert d.verdict in (PointVerdict.UNKNOWN, PointVerdict.FALSIFIED, PointVerdict.VERIFIED)


def test_leaf_lp_proves_and_refutes():
    # one hidden neuron z = x0 - x1 fixed active (x0 >= x1), output y = z; unsafe y <= -0.1: empty on that piece
    from pacverify.network import Affine, Network, Relu
    net = Network((Affine(torch.tensor([[1.0, -1.0]], dtype=torch.float64), torch.zeros(1, dtype=torch.float64)),
                   Relu(), Affine(torch.ones(1, 1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))), (2,))
    box = (np.zeros(2), np.ones(2))
    C, clause = np.array([[1.0]]), np.array([0])
    assert decide_leaf(net, *box, [np.array([1])], C, np.array([-0.1]), clause).proved
    answer = decide_leaf(net, *box, [np.array([1])], C, np.array([0.5]), clause)   # y <= 0.5 is reachable
    assert not answer.proved and answer.candidate is not None and answer.candidate[0] - answer.candidate[1] <= 0.5


def test_config_is_checked():
    with pytest.raises(InputError, match="split"):
        BabConfig(split="sideways")
    with pytest.raises(InputError, match="timeout"):
        BabConfig(timeout=0)
    with pytest.raises(InputError, match="float32_ascent"):
        BabConfig(float32_ascent=1)
    for value in (-1, True, 2.0):
        with pytest.raises(InputError, match="box_alpha_iterations"):
            BabConfig(box_alpha_iterations=value)
    for rules in ((), ("widest", "widest"), ("sideways",), ["widest"]):
        with pytest.raises(InputError, match="input_branching"):
            BabConfig(input_branching=rules)
    with pytest.raises(InputError, match="input splitting needs box"):
        net, input_set, prop = _problem([2, 4, 2], 0, 0.1, "2", n_points=1)
        branch_and_bound(net, input_set, prop, BabConfig(split="input"))


def test_one_table_of_bound_methods():
    from pacverify.verify import api, bab
    from pacverify.verify.bab import bound_routine
    from pacverify.verify.bounds import (
        BOUND_METHOD_NAMES,
        BOUND_METHODS,
        alpha_crown,
        crown,
        crown_f32,
        crown_ibp,
        ibp,
    )

    assert BOUND_METHOD_NAMES == tuple(BOUND_METHODS) == ("ibp", "crown-ibp", "crown-f32", "crown", "alpha-crown")
    assert BOUND_METHODS == {"ibp": ibp, "crown-ibp": crown_ibp, "crown-f32": crown_f32, "crown": crown,
                             "alpha-crown": alpha_crown}
    net, input_set, prop = _problem([3, 8, 8, 3], 4, 0.05, "inf")
    for name, routine in BOUND_METHODS.items():   # the search's lower-only routines give the same lower bounds
        full = routine(net, input_set, prop.C)
        torch.testing.assert_close(bound_routine(name, iterations=20)(net, input_set, prop.C).lower, full.lower)
    for bad in ("deeppoly", "CROWN", None):
        with pytest.raises(InputError, match="method must be one of ibp, crown-ibp, crown-f32, crown, alpha-crown"):
            bound_routine(bad)
        with pytest.raises(InputError, match="method must be one of auto, ibp, crown-ibp, crown-f32, crown, alpha-crown"):
            BabConfig(method=bad)
        with pytest.raises(InputError, match="method must be one of ibp, crown-ibp, crown-f32, crown, alpha-crown"):
            api.verify_points(net, (input_set.lower + input_set.upper) / 2, 0.05, "inf", method=bad)
    assert not hasattr(api, "METHODS") and not hasattr(bab, "METHODS")


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), final_relu=st.booleans(), norm=st.sampled_from(["inf", "2"]))
def test_intercept_score_is_what_removing_the_intercept_adds(seed, final_relu, norm):
    """The branching score of every unstable neuron equals the rise of CROWN's lower bound (rows summed)
    when that neuron's upper line loses its intercept; stable neurons score 0."""
    from dataclasses import replace

    from pacverify.verify.bab import intercept_scores
    from pacverify.verify.bounds import crown
    from pacverify.verify.bounds.common import output_layers
    from pacverify.verify.bounds.linear import Rows, lower_values, pull_back
    from pacverify.verify.bounds.relax import relax_relu

    net = random_mlp([4, 9, 7, 3], seed, final_relu=final_relu)
    gen = torch.Generator().manual_seed(seed)
    input_set = perturbation_set(torch.rand(2, 4, generator=gen, dtype=torch.float64), 0.6, norm)
    C = torch.randn(2, 2, 3, generator=gen, dtype=torch.float64)
    pre = crown(net, input_set, C, return_intermediate=True).pre_activation
    scores = intercept_scores(net, C, pre)
    layers, C_left = output_layers(net, C)
    start = None if C_left is None else Rows(C_left, torch.zeros(2, 2, dtype=torch.float64))

    def bound(relaxations):
        return lower_values(pull_back(layers, start, relaxations, both=False), input_set).sum(1)

    relaxations = [relax_relu(lo, hi) for lo, hi in pre]
    base = bound(relaxations)
    checked = 0
    for k, relax in enumerate(relaxations):
        assert bool((scores[k] >= 0).all()) and bool((scores[k][~relax.unstable] == 0).all())
        for b, i in torch.nonzero(relax.unstable).tolist()[:4]:
            intercept = relax.up_intercept.clone()
            intercept[b, i] = 0.0
            changed = relaxations[:k] + [replace(relax, up_intercept=intercept)] + relaxations[k + 1:]
            assert float(bound(changed)[b] - base[b]) == pytest.approx(float(scores[k][b, i]), abs=1e-9)
            checked += 1
    assert checked > 0 or not any(bool(r.unstable.any()) for r in relaxations)


def test_lookahead_passes_max_domains_by_fewer_than_one_set_of_halves():
    """A lookahead round bounds whole sets of 2m halves: the search stops with fewer than max_domains + 2m bounded."""
    for seed in range(3):
        net, input_set, prop = _problem([2, 8, 8, 2], 3, 0.6 + 0.3 * seed, "inf", n_points=1)
        for budget in (1, 3, 9):
            config = BabConfig(split="input", max_domains=budget, batch=8, input_branching=("lookahead",))
            (decision,) = branch_and_bound(net, input_set, prop, config)
            assert decision.domains < budget + 2 * 2
            if decision.verdict is PointVerdict.UNKNOWN:
                assert decision.domains >= budget


@pytest.mark.parametrize("conjunction", [False, True])
def test_alpha_on_open_boxes_is_sound_and_proves_boxes_crown_leaves_open(conjunction):
    """``_alpha_proved`` (α-CROWN on each clause's best row, the box's own pre-activation bounds fixed): every box CROWN
    proves it proves too (it starts from CROWN's slopes), no box it proves has a sampled counterexample, and it proves
    some boxes CROWN leaves open — for robustness (one row per clause) and for one conjunctive clause with implied
    rows ("output 0 is the largest", ACAS Xu's prop_2 shape)."""
    from pacverify.verify import bab
    from pacverify.verify.bounds.crown import crown_with_coefficients
    from pacverify.verify.sets import Box

    more = 0
    for seed in range(10):
        net = random_mlp([3, 16, 16, 16, 4], seed)
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(48, 3, generator=g, dtype=torch.float64)
        w = torch.rand(48, 1, generator=g, dtype=torch.float64) * 0.3
        box = Box(x - w, x + w)
        if conjunction:
            C = torch.eye(4, dtype=torch.float64)[1:] - torch.eye(4, dtype=torch.float64)[0]   # y_j − y_0 <= 0, all j
            prop = OutputProperty(C.expand(48, -1, -1), torch.zeros(48, 3, dtype=torch.float64),
                                  torch.zeros(3, dtype=torch.long)).with_implied_rows()
        else:
            prop = robustness_property(net(x).argmax(1), 4)
        result, _, _ = crown_with_coefficients(net, box, prop.C)
        by_crown = prop.proof_margin(result.bounds.lower) > 0
        by_alpha, work = bab._alpha_proved(net, box.lower, box.upper, prop, result.bounds.lower,
                                           result.pre_activation, 5)
        assert work > 0
        assert bool((by_alpha | ~by_crown).all())
        assert not bool((by_alpha & _violated_by_sampling(net, box, prop, n=2000, seed=seed)).any())
        more += int((by_alpha & ~by_crown).sum())
    assert more > 0


def test_paused_clause_searches_get_the_time_a_decided_clause_leaves(monkeypatch):
    """The schedule of clause searches (``_by_clause``) uses the whole timeout: when a resumed search ends early,
    a search still paused resumes again with what is left, until the deadline. The searches here are stand-ins
    that record the deadlines they were given: clause 0 always runs until its deadline and pauses; clause 1 pauses
    at once the first time and is decided at once the second."""
    import time

    import pacverify.verify.bab as bab

    net, input_set, prop = _always_unsafe_two_clauses()
    given: dict[int, list[float]] = {0: [], 1: []}

    def stand_in(net, input_set, clause, config, deadline, fixed, resume=None, keep=None):
        k = 0 if bool(clause.C[0, 0, 1] == 1) else 1
        given[k].append(deadline)
        if k == 0 or len(given[1]) == 1:
            if k == 0:
                time.sleep(max(0.0, deadline - time.monotonic()))
            keep.append(bab._ReluSearch([], torch.zeros(1), domains=len(given[k])))
            return bab.Decision(PointVerdict.UNKNOWN, domains=len(given[k]), detail="budget spent")
        return bab.Decision(PointVerdict.VERIFIED, domains=1, detail="proved")

    _missing_attack(monkeypatch)
    monkeypatch.setattr(bab, "_relu_bab", stand_in)
    config = BabConfig(split="relu", timeout=2.0)
    start = time.monotonic()
    decision = branch_and_bound(net, input_set, prop, config)[0]
    deadline = start + config.timeout
    assert decision.verdict is PointVerdict.UNKNOWN and "clause 0" in decision.detail and "clause 1" not in decision.detail
    assert len(given[1]) == 2
    # clause 0 ran three times: its first share, a resumed share before clause 1 was decided, then the rest
    assert len(given[0]) == 3 and given[0][-1] == pytest.approx(deadline, abs=0.05)
    assert time.monotonic() >= deadline - 0.05


def _always_unsafe_two_clauses():
    """sum_threshold_net(0) on [0, 1]², two clauses every output satisfies (y1 <= 1e6, y0 <= 1e6): the root's
    bounds prove neither, and the property is false everywhere."""
    net = sum_threshold_net(0.0)
    C = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]], dtype=torch.float64)
    prop = OutputProperty(C, torch.tensor([[1e6, 1e6]], dtype=torch.float64), torch.tensor([0, 1]))
    return net, perturbation_set(torch.full((1, 2), 0.5, dtype=torch.float64), 0.5, "inf"), prop


def _missing_attack(monkeypatch):
    """Stand in for an attack that misses (what happens on properties whose unsafe inputs PGD does not reach)."""
    import pacverify.verify.bab as bab
    from pacverify.attacks import AttackResult

    def missed(net, input_set, prop, **kwargs):
        x = input_set.interval()[0]
        return AttackResult(torch.zeros(x.shape[0], dtype=torch.bool), x, net(x),
                            torch.full((x.shape[0],), torch.inf, dtype=x.dtype))

    monkeypatch.setattr(bab, "bound_guided_attack", missed)


def test_a_clause_the_time_never_reached_is_open_never_proved(monkeypatch):
    """Regression: the time ran out in the root's stage (before any clause search) and the schedule, with no
    clause left open in its record, returned VERIFIED for a property that every input violates."""
    _missing_attack(monkeypatch)
    net, input_set, prop = _always_unsafe_two_clauses()
    decision = branch_and_bound(net, input_set, prop, BabConfig(split="relu", timeout=1e-9))[0]
    assert decision.verdict is PointVerdict.UNKNOWN
    assert "clause 0: not searched" in decision.detail and "clause 1: not searched" in decision.detail


def test_a_clause_after_an_overrun_is_open_never_proved(monkeypatch):
    """The first clause's search is decided (here: a stand-in that says so) after the whole deadline: the second
    clause, never searched, keeps the problem open."""
    import time

    import pacverify.verify.bab as bab

    _missing_attack(monkeypatch)
    seen: list[float] = []

    def overrun_then_prove(net, input_set, clause, config, deadline, fixed, resume=None, keep=None):
        seen.append(deadline)
        time.sleep(0.3)
        return bab.Decision(PointVerdict.VERIFIED, domains=1, detail="proved")

    monkeypatch.setattr(bab, "_relu_bab", overrun_then_prove)
    net, input_set, prop = _always_unsafe_two_clauses()
    decision = branch_and_bound(net, input_set, prop, BabConfig(split="relu", timeout=0.2))[0]
    assert len(seen) == 1 and decision.verdict is PointVerdict.UNKNOWN and "not searched" in decision.detail
