"""VNN-LIB reader: boxes, and/or output structure, prop_6's input disjunction, clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SHARED
from hypothesis import given, settings
from hypothesis import strategies as st

from pacverify.errors import InputError
from pacverify.verify.property import OutputProperty
from pacverify.verify.vnnlib import VnnlibProperty, parse_vnnlib, read_vnnlib

HEAD = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n" \
       "(declare-const Y_2 Real)\n"
BOX = "(assert (<= X_0 1.5)) (assert (>= X_0 -0.5)) (assert (<= X_1 2)) (assert (>= X_1 0))\n"


def test_box_and_single_comparison():
    vnnlib = parse_vnnlib(HEAD + "; a comment (assert (<= X_0 9))\n" + BOX + "(assert (>= Y_0 3.25))")
    assert isinstance(vnnlib, VnnlibProperty)
    assert (vnnlib.n_inputs, vnnlib.n_outputs, len(vnnlib.regions)) == (2, 3, 1)
    region = vnnlib.regions[0]
    np.testing.assert_array_equal(region.lower, [-0.5, 0.0])
    np.testing.assert_array_equal(region.upper, [1.5, 2.0])
    # Y_0 >= 3.25  <=>  -Y_0 <= -3.25
    torch.testing.assert_close(region.prop.C, torch.tensor([[[-1.0, 0.0, 0.0]]], dtype=torch.float64))
    torch.testing.assert_close(region.prop.d, torch.tensor([[-3.25]], dtype=torch.float64))
    assert region.prop.n_clauses == 1


def test_or_of_ands_keeps_clause_structure_and_unsafe_semantics():
    text = HEAD + BOX + "(assert (or (and (<= Y_0 Y_1) (<= Y_0 Y_2)) (and (>= Y_2 (+ Y_0 1)))))"
    prop = parse_vnnlib(text).regions[0].prop
    assert prop.n_clauses == 2 and prop.clause.tolist() == [0, 0, 1]
    # y = (0, 1, 2): clause 0 holds (y0 <= y1 and y0 <= y2) -> unsafe
    # y = (5, 1, 2): clause 0 fails, clause 1 (y2 >= y0 + 1) fails -> safe
    # y = (5, 9, 6.5): clause 1 holds -> unsafe
    y = torch.tensor([[0.0, 1.0, 2.0], [5.0, 1.0, 2.0], [5.0, 9.0, 6.5]], dtype=torch.float64)
    big = prop.select(torch.zeros(3, dtype=torch.long))
    assert big.is_unsafe(y).tolist() == [True, False, True]


def test_input_disjunction_gives_two_regions_and_empty_boxes_are_dropped():
    text = HEAD + "(assert (or (and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1))" \
                  "            (and (>= X_0 2) (<= X_0 3) (>= X_1 0) (<= X_1 1))" \
                  "            (and (>= X_0 5) (<= X_0 4) (>= X_1 0) (<= X_1 1))))\n(assert (<= Y_1 Y_0))"
    vnnlib = parse_vnnlib(text)
    assert [r.lower[0] for r in vnnlib.regions] == [0.0, 2.0]
    assert all(r.prop.n_clauses == 1 for r in vnnlib.regions)


def test_linear_terms_and_equality():
    text = HEAD + BOX + "(assert (= (* 2 Y_0) (- Y_1 (* 0.5 Y_2) 1)))"
    prop = parse_vnnlib(text).regions[0].prop
    # 2 y0 - y1 + 0.5 y2 + 1 = 0  as two rows  <= 0 and >= 0, one clause
    torch.testing.assert_close(prop.C[0], torch.tensor([[2.0, -1.0, 0.5], [-2.0, 1.0, -0.5]], dtype=torch.float64))
    torch.testing.assert_close(prop.d[0], torch.tensor([-1.0, 1.0], dtype=torch.float64))


@pytest.mark.parametrize("body, message", [
    (BOX + "(assert (<= X_0 Y_0))", "mixes inputs and outputs"),
    (BOX + "(assert (<= (+ X_0 X_1) 1))", "several inputs"),
    (BOX + "(assert (<= (* Y_0 Y_1) 1))", "non-linear"),
    (BOX + "(assert (=> (<= Y_0 1) (<= Y_1 1)))", "unsupported operator '=>'"),
    ("(assert (<= X_0 1)) (assert (>= X_0 0)) (assert (<= Y_0 1))", "X_1 has no finite"),
    (BOX + "(assert (<= Y_0 1)", "unbalanced"),
    (BOX + "(assert (<= Y_7 1))", "before it is declared"),
    (BOX + "(check-sat)", "unsupported command"),
    (BOX + "(assert (<= Y_0 one))", "expected a number"),
])
def test_unsupported_input_is_a_clear_input_error(body, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        parse_vnnlib(HEAD + body)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_vnnlib(tmp_path / "nope.vnnlib")


VNN = SHARED / "vnncomp"


@pytest.mark.skipif(not VNN.is_dir(), reason="../shared/vnncomp (VNN-COMP data) is not present")
def test_vnncomp_files_parse():
    mnist = read_vnnlib(VNN / "mnistfc" / "vnnlib" / "prop_0_0.03.vnnlib")
    assert (mnist.n_inputs, mnist.n_outputs, len(mnist.regions)) == (784, 10, 1)
    region = mnist.regions[0]
    assert region.prop.n_clauses == 9 and np.all(region.lower >= 0) and np.all(region.upper <= 1)
    assert np.all(region.upper - region.lower <= 0.06 + 1e-6)
    # label 4: every clause is  Y_4 - Y_j <= 0
    assert torch.all(region.prop.C[0, :, 4] == 1) and torch.all(region.prop.d == 0)
    prop6 = read_vnnlib(VNN / "acasxu" / "vnnlib" / "prop_6.vnnlib")
    assert len(prop6.regions) == 2 and prop6.regions[0].lower[1] > 0 > prop6.regions[1].upper[1]
    prop7 = read_vnnlib(VNN / "acasxu" / "vnnlib" / "prop_7.vnnlib").regions[0].prop
    assert prop7.n_clauses == 2 and prop7.C.shape == (1, 6, 5)


def test_property_whose_input_boxes_are_all_empty_is_unsat(tmp_path):
    from verify_nets import network_to_onnx, sum_threshold_net

    from pacverify.verify.api import verify_vnnlib

    model = tmp_path / "net.onnx"
    network_to_onnx(sum_threshold_net(0.9), model)
    prop = tmp_path / "empty.vnnlib"
    prop.write_text("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
                    "(declare-const Y_1 Real)\n(assert (>= X_0 1)) (assert (<= X_0 0)) (assert (>= X_1 0))\n"
                    "(assert (<= X_1 1)) (assert (>= Y_1 Y_0))\n")
    result = verify_vnnlib(model, prop)
    assert result.status.value == "unsat" and "empty" in result.detail


def test_implied_rows_keep_the_unsafe_set_and_strengthen_proofs():
    prop = parse_vnnlib(HEAD + BOX + "(assert (or (and (<= Y_0 Y_1) (<= Y_0 Y_2)) (and (>= Y_2 (+ Y_0 1)))))").regions[0].prop
    implied = prop.with_implied_rows()
    assert implied.C.shape[1] == prop.C.shape[1] + 1 and implied.clause.tolist() == [0, 0, 1, 0]
    y = torch.randn(500, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3
    many, more = prop.select(torch.zeros(500, dtype=torch.long)), implied.select(torch.zeros(500, dtype=torch.long))
    assert torch.equal(many.is_unsafe(y), more.is_unsafe(y))
    torch.testing.assert_close(many.violation(y), more.violation(y))
    # lower bounds of the rows of C·y: neither row of clause 0 (y0 - y1 <= 0, y0 - y2 <= 0) is proved violated,
    # but their mean is (0.25 > 0), so clause 0 is empty; clause 1 (y0 - y2 <= -1) is proved by 5 > -1
    lower = torch.tensor([[-1.0, -1.0, 5.0, 0.25]], dtype=torch.float64)
    lower_single = lower[:, :3]
    assert not bool(prop.proven(lower_single)[0]) and bool(implied.proven(lower)[0])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), rows=st.integers(1, 6), clauses=st.integers(1, 3))
def test_best_rows_keep_one_row_per_clause_and_contain_the_unsafe_set(seed, rows, clauses):
    """``best_rows``: per problem and clause, the row with the highest lower bound above its d; its unsafe set contains
    the property's (an output the property calls unsafe, it calls unsafe), so proving it proves the property."""
    g = torch.Generator().manual_seed(seed)
    clauses = min(clauses, rows)
    clause = torch.cat([torch.arange(clauses), torch.randint(0, clauses, (rows - clauses,), generator=g)])
    B, n = 4, 3
    prop = OutputProperty(torch.randn(B, rows, n, generator=g, dtype=torch.float64),
                          torch.randn(B, rows, generator=g, dtype=torch.float64), clause, strict=bool(seed % 2))
    lower = torch.randn(B, rows, generator=g, dtype=torch.float64)
    best = prop.best_rows(lower)
    assert best.C.shape == (B, clauses, n) and best.clause.tolist() == list(range(clauses))
    margin = lower - prop.d
    for b in range(B):
        for k in range(clauses):
            members = torch.nonzero(clause == k).reshape(-1)
            r = int(members[margin[b, members].argmax()])
            assert torch.equal(best.C[b, k], prop.C[b, r]) and float(best.d[b, k]) == float(prop.d[b, r])
    y = torch.randn(300, n, generator=g, dtype=torch.float64) * 3
    for b in range(B):
        index = torch.full((300,), b)
        assert not bool((prop.select(index).is_unsafe(y) & ~best.select(index).is_unsafe(y)).any())
