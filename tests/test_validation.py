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


@pytest.mark.parametrize("bad", [0, -3, 2.5, "x", True, None])
def test_positive_int_for_counts_that_are_not_samples(bad):
    with pytest.raises(InputError) as info:
        v.check_positive_int(bad, "threads")
    assert "threads" in str(info.value) and "integer" in str(info.value) and repr(bad) in str(info.value)
    assert v.check_positive_int("4", "opset") == 4 and v.check_positive_int(17.0, "opset") == 17


@pytest.mark.parametrize("given, expected", [
    (None, None), ("0,1", (0.0, 1.0)), ("-3,3", (-3.0, 3.0)), (" -1.5 , -0.5 ", (-1.5, -0.5)),
    ("-1e-3,2e0", (-0.001, 2.0)), ((0, 1), (0.0, 1.0)), ([-3, 3], (-3.0, 3.0)), (("0", "255"), (0.0, 255.0)),
])
def test_parse_domain_accepts_none_text_and_pairs(given, expected):
    out = v.parse_domain(given)
    assert out == expected and (out is None or all(type(b) is float for b in out))


@pytest.mark.parametrize("bad", ["1,0", "2,2", "0", "0,1,2", "a,b", "", "inf,1", "0,nan", (1,), (0, 1, 2), (True, 2),
                                 5, [math.inf, 0]])
def test_parse_domain_names_the_option_the_form_and_the_value(bad):
    with pytest.raises(InputError) as info:
        v.parse_domain(bad)
    message = str(info.value)
    assert "--domain" in message and "LO,HI" in message and "LO < HI" in message and repr(bad) in message


def test_there_is_one_domain_parser():
    import pacverify.cli.certify as cli_certify
    import pacverify.cli.distill as cli_distill
    import pacverify.cli.verify as cli_verify
    import pacverify.data as data

    assert not hasattr(data, "check_domain")
    for module in (cli_certify, cli_verify, cli_distill, data):
        assert module.parse_domain is v.parse_domain, module.__name__


# --- integers written as decimals, memory, other code's errors ------------------------------------------------------

@pytest.mark.parametrize("given, expected", [("1e12", 10**12), ("1E3", 1000), ("100.0", 100), ("2.5e1", 25),
                                             (" 7 ", 7), (1e6, 10**6)])
def test_integral_decimals_are_integers(given, expected):
    assert v.check_samples(given) == expected


@pytest.mark.parametrize("bad", ["1.5", "1e-3", "nan", "inf", "-inf", "1e999999999", "", "0x10"])
def test_non_integral_or_absurd_counts_are_refused(bad):
    with pytest.raises(InputError, match="samples .* integer"):
        v.check_samples(bad)


def test_available_memory_is_read_and_check_memory_refuses_with_both_sizes(monkeypatch):
    available = v.available_memory()
    assert available is None or available > 0
    monkeypatch.setattr(v, "available_memory", lambda: 2 * v.GIB)
    v.check_memory(v.GIB, "a small job", "never shown")
    with pytest.raises(InputError) as info:
        v.check_memory(3.5 * v.GIB, "a big job", "use fewer points")
    assert str(info.value) == ("a big job needs about 3.5 GiB of memory but about 2 GiB are available; "
                               "use fewer points")
    monkeypatch.setattr(v, "available_memory", lambda: None)
    v.check_memory(1e30, "anything", "unknown memory: nothing is refused")


def test_available_memory_falls_back_without_proc(monkeypatch):
    import builtins

    real_open = builtins.open

    def no_proc(path, *args, **kwargs):
        if str(path) == "/proc/meminfo":
            raise OSError("no /proc here")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_proc)
    value = v.available_memory()
    assert value is None or value > 0


def test_error_line_is_one_line_and_names_the_exception():
    assert v.error_line(ValueError("first\nsecond")) == "ValueError: first"
    assert v.error_line(KeyError()) == "KeyError"
    scripted = RuntimeError("The following operation failed in the TorchScript interpreter.\nTraceback of "
                            "TorchScript (most recent call last):\n  File x\nbuiltins.RuntimeError: batches\nsecond")
    assert v.error_line(scripted) == "TorchScript RuntimeError: batches"
