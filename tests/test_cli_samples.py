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


# --- guarantee and bound (issue 11): the side-by-side table -------------------------------------------------------

def _rows(out):
    return {(row["dim"], row["guarantee"], row["bound"]): row for row in json.loads(out.stdout)["table"]}


def test_default_shows_both_modes_and_bounds(cli):
    out = cli("samples", "--dim", "784", "--eps", "0.05", "--eta", "0.01")
    assert out.returncode == 0, out.stderr
    lines = {tuple(line.split()[1:3]): line.split() for line in out.stdout.splitlines()
             if line.split()[:1] == ["784"]}
    assert set(lines) == {("ball", "thm38*"), ("ball", "tight"), ("mass", "thm38"), ("mass", "tight*")}
    assert lines["ball", "thm38*"][-1] == "1562135" and lines["ball", "tight"][-1] == "353478"
    assert lines["mass", "thm38"][-1] == "2492" and lines["mass", "tight*"][-1] == "1116"
    assert "default bound of each guarantee (ball: thm38, mass: tight)" in out.stdout
    assert "m = 784: s = 1562135 (ball/thm38) exceeds" in out.stderr  # only 1.56e6 > 1e6 rows
    assert len(out.stderr.strip().splitlines()) == 1


def test_json_default_keeps_rows_and_adds_table(cli):
    out = cli("samples", "--dim", "2,784", "--eps", "0.05", "--eta", "0.01", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    # rows: the ball-mode Thm 3.8 rows as before; table: every (m, guarantee, bound)
    assert [(r["samples"], r["guarantee"], r["bound"], r["default"]) for r in data["rows"]] == [
        (3720, "ball", "thm38", True), (1562135, "ball", "thm38", True)]
    table = _rows(out)
    assert len(table) == 8
    assert table[784, "mass", "tight"]["samples"] == 1116 and table[784, "mass", "tight"]["d"] == 2
    assert table[784, "mass", "tight"]["default"] and not table[784, "mass", "thm38"]["default"]
    assert table[2, "ball", "tight"]["samples"] == pac.sample_size(2, 0.05, 0.01, bound="tight")
    assert data["default_bounds"] == {"ball": "thm38", "mass": "tight"}
    assert set(data["bounds"]) == {"thm38", "tight"}


@pytest.mark.parametrize("args, expected", [
    (["--guarantee", "mass"], {("mass", "thm38"), ("mass", "tight")}),
    (["--bound", "tight"], {("ball", "tight"), ("mass", "tight")}),
    (["--guarantee", "mass", "--bound", "tight"], {("mass", "tight")}),
    (["--guarantee", "ball", "--bound", "thm38"], {("ball", "thm38")}),
])
def test_selection_shows_matching_rows(cli, args, expected):
    out = cli("samples", "--dim", "784", "--eps", "0.05", "--eta", "0.01", *args, "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert {(r["guarantee"], r["bound"]) for r in data["rows"]} == expected
    assert data["rows"] == data["table"]
    for row in data["rows"]:
        kw = {"guarantee": row["guarantee"], "bound": row["bound"]}
        assert row["samples"] == pac.sample_size(784, 0.05, 0.01, **kw)
    text = cli("samples", "--dim", "784", "--eps", "0.05", "--eta", "0.01", *args)
    shown = {(line.split()[1], line.split()[2].rstrip("*")) for line in text.stdout.splitlines()
             if line.split()[:1] == ["784"]}
    assert shown == expected


def test_mass_mode_text(cli):
    out = cli("samples", "--dim", "784", "--eps", "0.05", "--eta", "0.01", "--guarantee", "mass", "--bound", "tight")
    assert out.returncode == 0, out.stderr
    assert "1116" in out.stdout and "d = 2" in out.stdout and "whatever m" in out.stdout
    assert out.stderr == ""


def test_solve_per_row_and_too_few_rows(cli):
    out = cli("samples", "--dim", "784", "--samples", "5000", "--eta", "0.01", "--json")
    assert out.returncode == 0, out.stderr
    table = _rows(out)
    for bound in ("thm38", "tight"):
        ball = table[784, "ball", bound]
        assert ball["too_few"] and ball["eps"] is None
        assert ball["needs"] == pac.sample_size(784, 0.5, 0.01, bound=bound)
        mass = table[784, "mass", bound]
        assert mass["eps"] == pac.min_eps(5000, 784, 0.01, guarantee="mass", bound=bound)
        assert "too_few" not in mass
    assert table[784, "mass", "tight"]["eps"] < table[784, "mass", "thm38"]["eps"]
    assert out.stderr.strip() == ("warning: m = 784: samples = 5000 is too few for any eps in (0, 0.5] with "
                                  "ball/thm38 needs at least 127294, ball/tight needs at least 22918")
    text = cli("samples", "--dim", "784", "--samples", "5000", "--eta", "0.01")
    assert text.returncode == 0 and "too few (needs" in text.stdout


def test_solve_for_eta_per_row(cli):
    out = cli("samples", "--dim", "2", "--samples", "3720", "--eps", "0.05", "--bound", "tight", "--json")
    assert out.returncode == 0, out.stderr
    table = _rows(out)
    assert table[2, "mass", "tight"]["eta"] == pac.min_eta(3720, 2, 0.05, guarantee="mass", bound="tight")
    assert table[2, "ball", "tight"]["eta"] == pac.min_eta(3720, 2, 0.05, bound="tight")


def test_all_rows_too_few_is_one_line(cli):
    out = cli("samples", "--dim", "784", "--samples", "5000", "--eta", "0.01", "--guarantee", "ball")
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "too few" in lines[0] and "22918" in lines[0]


@pytest.mark.parametrize("args, word", [
    (["--guarantee", "volume"], "--guarantee"),
    (["--bound", "loose"], "--bound"),
    (["--bound", "Thm38"], "--bound"),
])
def test_bad_names_exit_2(cli, args, word):
    out = cli("samples", "--dim", "2", "--eps", "0.05", "--eta", "0.01", *args)
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and word in lines[0] and "invalid choice" in lines[0]
