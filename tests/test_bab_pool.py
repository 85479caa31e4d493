"""The open-subdomain pool of branch and bound, and the lookahead rule's halves: against plain models of them."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pacverify.verify.bab import _all_halves, _pick_halves
from pacverify.verify.bab_pool import SubdomainPool


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(st.one_of(st.tuples(st.just("take"), st.integers(0, 6)),
                              st.tuples(st.just("put"), st.lists(st.integers(-3, 3), max_size=7))), max_size=25),
       start=st.lists(st.integers(-3, 3), min_size=1, max_size=4))
def test_pool_takes_what_a_sorted_list_would(ops, start):
    """Whatever the puts, takes and growth: a take returns the open rows of lowest priority, every row exactly once,
    with its own fields (rows carry an id, so a row cannot be split from its fields or lost)."""
    next_id = 0

    def rows(priorities):
        nonlocal next_id
        ids = torch.arange(next_id, next_id + len(priorities), dtype=torch.float64)
        next_id += len(priorities)
        return [ids, ids[:, None].repeat(1, 3) * 2], torch.tensor(priorities, dtype=torch.float64)

    fields, priority = rows(start)
    pool = SubdomainPool(fields, priority)
    model = {int(i): float(p) for i, p in zip(fields[0], priority, strict=True)}
    for op, arg in ops:
        if op == "put":
            fields, priority = rows(arg)
            pool.put(fields, priority)
            model.update({int(i): float(p) for i, p in zip(fields[0], priority, strict=True)})
        else:
            (ids, doubled), priority = pool.take(arg)
            expected = sorted(model.values())[:arg]
            assert priority.tolist() == expected
            assert torch.equal(doubled, ids[:, None].repeat(1, 3) * 2)
            for i, p in zip(ids.tolist(), priority.tolist(), strict=True):
                assert model.pop(int(i)) == p
        assert len(pool) == len(model)
    (ids, _), _ = pool.take(len(model) + 5)
    assert sorted(int(i) for i in ids) == sorted(model)


def test_pool_fields_added_only_when_empty_and_dropped_on_demand():
    pool = SubdomainPool([torch.zeros(2, 3)], torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError):
        pool.add_fields([torch.zeros(1, 4)])
    pool.take(2)
    pool.add_fields([torch.zeros(1, 4)])
    pool.put([torch.ones(1, 3), torch.full((1, 4), 7.0)], torch.tensor([0.5]))
    rows, _ = pool.take(1)
    assert torch.equal(rows[1], torch.full((1, 4), 7.0))
    with pytest.raises(ValueError):
        pool.put([torch.ones(1, 3)], torch.tensor([0.5]))   # a field missing
    pool.drop_fields(1)
    assert pool.field_bytes(1) == 0 and len(pool.fields) == 1


def test_all_halves_cover_each_box_along_every_coordinate():
    g = torch.Generator().manual_seed(0)
    lo = torch.rand(4, 3, generator=g, dtype=torch.float64)
    hi = lo + torch.rand(4, 3, generator=g, dtype=torch.float64)
    out_lo, out_hi, splittable = _all_halves(lo, hi)
    assert out_lo.shape == (2 * 3 * 4, 3) and bool(splittable.all())
    for k in range(3):
        left = slice(2 * k * 4, (2 * k + 1) * 4)
        right = slice((2 * k + 1) * 4, (2 * k + 2) * 4)
        other = [j for j in range(3) if j != k]
        for half in (left, right):       # the other coordinates untouched
            assert torch.equal(out_lo[half][:, other], lo[:, other]) and torch.equal(out_hi[half][:, other], hi[:, other])
        assert torch.equal(out_lo[left][:, k], lo[:, k]) and torch.equal(out_hi[right][:, k], hi[:, k])
        assert torch.equal(out_hi[left][:, k], out_lo[right][:, k])     # they meet: no gap
        assert bool((out_hi[left][:, k] > lo[:, k]).all() and (out_lo[right][:, k] < hi[:, k]).all())


def test_pick_halves_prefers_a_coordinate_that_proves_both_halves_and_never_a_degenerate_one():
    lo = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    hi = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float64)   # box 0: coordinate 2 has width 0
    _, _, splittable = _all_halves(lo, hi)
    assert splittable.tolist() == [[True, True], [True, True], [False, True]]
    # margins per (coordinate, half, box): box 0 — coordinate 0 proves one half (0.9), coordinate 1 both (0.1, 0.2),
    # coordinate 2 (degenerate) would score highest; box 1 — no coordinate proves both, coordinate 2's best half is best
    margin = torch.tensor([[[0.9, -1.0], [-2.0, -0.3]],
                           [[0.1, -1.0], [0.2, -0.5]],
                           [[5.0, -0.2], [5.0, -0.1]]], dtype=torch.float64).reshape(-1)
    proved = margin > 0
    pick = _pick_halves(margin, proved, splittable)
    assert pick is not None
    picked = pick.view(2, 2)            # (half, box)
    assert picked[:, 0].tolist() == [2 * 1 * 2 + 0, (2 * 1 + 1) * 2 + 0]      # box 0: coordinate 1
    assert picked[:, 1].tolist() == [2 * 2 * 2 + 1, (2 * 2 + 1) * 2 + 1]      # box 1: coordinate 2
    point = torch.zeros(1, 2, dtype=torch.float64)
    _, _, flat = _all_halves(point, point)
    assert _pick_halves(torch.zeros(4, dtype=torch.float64), torch.zeros(4, dtype=torch.bool), flat) is None
    tiny = torch.tensor([[1.0, 0.0]], dtype=torch.float64)      # coordinate 0 one ulp wide: its midpoint is an end
    _, _, ulp = _all_halves(tiny, torch.tensor([[float(torch.nextafter(tiny[0, 0], torch.tensor(2.0))), 1.0]],
                                               dtype=torch.float64))
    assert ulp.tolist() == [[False], [True]]
