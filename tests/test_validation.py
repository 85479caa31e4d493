"""Every user-facing parameter is checked in one place with messages naming parameter, range and value."""
from __future__ import annotations

import math

import pytest

from pacverify import validation as v
from pacverify.errors import InputError


@pytest.mark.parametrize("func, bad, words", [
    (v.check_delta, 0, ["delta", "> 0", "0"]),
    (v.check_delta, -1.5, ["delta", "-1.5"]),
    (v.check_eps, 0.7, ["eps", "(0, 0.5]", "0.7"]),
    (v.check_eta, 0.0, ["eta", "(0, 0.5]"]),
    (v.check_kappa, 0.4, ["kappa", "[0.5, 1)", "0.4"]),
    (v.check_kappa, 1.0, ["kappa", "[0.5, 1)"]),
    (v.check_tv, 1.0, ["tv", "[0, 1)"]),
    (v.check_dim, 0, ["dim", "positive integer"]),
    (v.check_samples, -4, ["samples", "positive integer"]),
    (v.check_norm, "l1", ["norm", "2 or inf", "l1"]),
    (v.check_seed, -1, ["seed"]),
    (v.check_delta, math.nan, ["delta", "finite"]),
])
def test_messages_name_parameter_range_and_value(func, bad, words):
    with pytest.raises(InputError) as info:
        func(bad)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("given, canonical", [(2, "2"), ("2", "2"), ("L2", "2"), (math.inf, "inf"),
                                               ("inf", "inf"), ("Linf", "inf")])
def test_norm_spellings(given, canonical):
    assert v.check_norm(given) == canonical


def test_accepted_values_are_converted():
    assert v.check_eps("0.5") == 0.5
    assert v.check_kappa(0.5) == 0.5
    assert v.check_dim("12") == 12
    assert v.check_dim(3.0) == 3
    assert v.check_tv(0) == 0.0
