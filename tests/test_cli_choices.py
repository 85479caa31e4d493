"""Options with a closed set of values declare it (argparse ``choices``), taken from the one table that
defines the names, so a typo exits 2 at once with argparse's message naming the choices."""
from __future__ import annotations

import time

import pytest

from pacverify.cli import build_parser
from pacverify.distill.losses import METHODS as DISTILL_METHODS
from pacverify.models import DEVICES
from pacverify.validation import NORMS
from pacverify.verify.backends import BACKEND_ALIASES, BACKENDS
from pacverify.verify.bounds import BOUND_METHOD_NAMES


def _choices(command: str) -> dict[str, tuple]:
    """option string -> declared choices (None when open) of one sub-command's parser."""
    parser = build_parser(command)
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return {opt: None if a.choices is None else tuple(a.choices) for a in sub._actions for opt in a.option_strings}


@pytest.mark.parametrize("command, expected", [
    ("certify", {"--method": DISTILL_METHODS, "--verify-method": BOUND_METHOD_NAMES, "--norm": NORMS,
                 "--device": DEVICES}),
    ("verify", {"--method": BOUND_METHOD_NAMES, "--norm": NORMS, "--device": ("cpu", "cuda"),
                "--backend": BACKENDS + tuple(BACKEND_ALIASES)}),
    ("distill", {"--method": DISTILL_METHODS, "--norm": NORMS, "--device": DEVICES}),
    ("samples", {"--norm": NORMS}),
])
def test_closed_options_take_their_choices_from_the_tables(command, expected):
    declared = _choices(command)
    for option, names in expected.items():
        assert declared[option] == tuple(names), option


def test_certify_method_typo_exits_2_at_once_naming_the_choices(cli, tmp_path):
    out = tmp_path / "out"
    start = time.monotonic()
    proc = cli("certify", tmp_path / "teacher.pt", "--delta", "0.1", "--eps", "0.1", "--eta", "0.1",
               "--synthetic", "gaussians", "--method", "kdgia", "--out", out, timeout=300)
    elapsed = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "argument --method: invalid choice: 'kdgia'" in lines[0]
    assert all(repr(name) in lines[0] for name in DISTILL_METHODS), lines[0]
    assert proc.stdout == "" and not out.exists()
    assert elapsed < 120   # parsing only: nothing is loaded, sampled or trained


@pytest.mark.parametrize("argv, option", [
    (["certify", "t.pt", "--delta", "0.1", "--eps", "0.1", "--eta", "0.1", "--synthetic", "gaussians",
      "--verify-method", "deeppoly"], "--verify-method"),
    (["certify", "t.pt", "--delta", "0.1", "--eps", "0.1", "--eta", "0.1", "--synthetic", "gaussians",
      "--norm", "1"], "--norm"),
    (["certify", "t.pt", "--delta", "0.1", "--eps", "0.1", "--eta", "0.1", "--synthetic", "gaussians",
      "--device", "gpu"], "--device"),
    (["distill", "t.pt", "--synthetic", "gaussians", "--samples", "10", "--out", "o", "--norm", "l3"], "--norm"),
    (["samples", "--dim", "2", "--eps", "0.05", "--eta", "0.01", "--norm", "1"], "--norm"),
])
def test_typos_in_closed_options_are_usage_errors(capsys, argv, option):
    from pacverify.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and f"argument {option}: invalid choice" in err[0], err
