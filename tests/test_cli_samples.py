"""``pacverify samples`` through the real entry point."""
from __future__ import annotations

import json

import pytest

from pacverify import __version__, pac


def test_paper_values(cli):
    out = cli("samples", "--dim", "2,64,784", "--eps", "0.05", "--eta", "0.01")
    assert out.returncode == 0, out.stderr
    for value in ("3720", "103829", "1562135"):
        assert value in out.stdout
    assert "exceeds what a typical dataset holds" in out.stderr  # 1.56e6 > 1e6
    assert "depends on" in out.stdout


def test_json_output(cli):
    out = cli("samples", "--dim", "2,64", "--eps", "0.05", "--eta", "0.01", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert [row["samples"] for row in data["rows"]] == [3720, 103829]
    assert data["warnings"] == []


def test_solve_for_eps_and_eta(cli):
    out = cli("samples", "--dim", "2", "--samples", "3720", "--eta", "0.01", "--json")
    eps = json.loads(out.stdout)["rows"][0]["eps"]
    assert eps == pac.min_eps(3720, 2, 0.01) and eps <= 0.05
    out = cli("samples", "--dim", "2", "--samples", "3720", "--eps", "0.05", "--json")
    eta = json.loads(out.stdout)["rows"][0]["eta"]
    assert eta == pac.min_eta(3720, 2, 0.05) and eta <= 0.01


def test_tv_shift_column(cli):
    out = cli("samples", "--dim", "2", "--eps", "0.05", "--eta", "0.01", "--tv", "0.02", "--json")
    assert json.loads(out.stdout)["rows"][0]["shifted_eps"] == pytest.approx(0.07)


def test_inf_norm_uses_2m(cli):
    out = cli("samples", "--dim", "2", "--eps", "0.05", "--eta", "0.01", "--norm", "inf", "--json")
    row = json.loads(out.stdout)["rows"][0]
    assert row["d"] == 4 and row["samples"] == pac.sample_size(2, 0.05, 0.01, norm="inf")


@pytest.mark.parametrize("args, word", [
    (["--dim", "2", "--eps", "0.7", "--eta", "0.01"], "eps"),
    (["--dim", "2", "--eps", "0.05", "--eta", "2"], "eta"),
    (["--dim", "0", "--eps", "0.05", "--eta", "0.01"], "dim"),
    (["--dim", "2,x", "--eps", "0.05", "--eta", "0.01"], "dim"),
    (["--dim", "2", "--eps", "0.05"], "two of"),
    (["--dim", "2", "--samples", "10", "--eta", "0.01"], "too few"),
    (["--dim", "2", "--eps", "0.05", "--eta", "0.01", "--norm", "1"], "norm"),
    (["--dim", "2", "--eps", "0.05", "--eta", "0.01", "--tv", "1.5"], "tv"),
    (["--eps", "0.05", "--eta", "0.01"], "--dim"),
    (["--dim", "2", "--samples", "1.5", "--eta", "0.01"], "integer"),
    (["--dim", "2", "--samples", "1e-3", "--eta", "0.01"], "integer"),
])
def test_bad_input_exits_2_with_one_line(cli, args, word):
    out = cli("samples", *args)
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and word in lines[0]
    assert "Traceback" not in out.stderr


def test_eps_message_names_range(cli):
    out = cli("samples", "--dim", "2", "--eps", "0.7", "--eta", "0.01")
    assert "(0, 0.5]" in out.stderr and "0.7" in out.stderr


def test_version_and_help(cli):
    out = cli("--version")
    assert out.returncode == 0 and __version__ in out.stdout
    for args in (["--help"], ["samples", "--help"]):
        out = cli(*args)
        assert out.returncode == 0 and "usage" in out.stdout
