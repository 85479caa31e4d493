"""``pacverify verify`` through the real entry point: summaries, JSON keys, VNN-LIB answers, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers_nets import random_mlp
from verify_nets import network_to_onnx, sum_threshold_net

from pacverify.onnx_io import load_network
from pacverify.validation import NORMS
from pacverify.verify.bounds import BOUND_METHOD_NAMES


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli_verify") / "net.onnx"
    network_to_onnx(random_mlp([4, 16, 16, 3], 5), path)
    return path


@pytest.fixture(scope="module")
def points(model):
    x = np.random.default_rng(0).random((12, 4))
    path = model.parent / "points.npy"
    np.save(path, x)
    return path


def _one_error_line(proc, *words):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_points_summary_and_json(cli, model, points, tmp_path):
    out = tmp_path / "out.json"
    proc = cli("verify", model, "--points", points, "--radius", "0.05", "--norm", "inf", "--complete",
               "--timeout", "5", "--threads", "1", "--json", out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].startswith("verified") and "points/s" in proc.stdout
    data = json.loads(out.read_text())
    assert set(data) == {"summary", "points"}
    assert {"verified", "falsified", "unknown", "time_s", "points_per_s"} <= set(data["summary"])
    assert [p["index"] for p in data["points"]] == list(range(12))
    net = load_network(model)
    for p in data["points"]:
        assert set(p) <= {"index", "verdict", "radius", "counterexample"} and p["radius"] == 0.05
        assert p["verdict"] in ("verified", "falsified", "unknown")
        assert ("counterexample" in p) == (p["verdict"] == "falsified")
        if p["verdict"] == "falsified":   # the counterexample is in the ball and changes the class
            x0 = np.load(points)[p["index"]]
            cex = np.asarray(p["counterexample"])
            assert np.abs(cex - x0).max() <= 0.05 + 1e-12
            z = net(torch.tensor(np.stack([x0, cex])))
            assert int(z[1].argmax()) != int(z[0].argmax())
    counts = data["summary"]
    assert counts["verified"] + counts["falsified"] + counts["unknown"] == 12 and counts["unknown"] == 0
    parts = [counts[k] for k in ("bounds_s", "attack_s", "search_s")]
    assert all(t >= 0 for t in parts) and sum(parts) <= counts["time_s"]
    assert f"time by part: bounds {counts['bounds_s']:.3f} s, attack {counts['attack_s']:.3f} s " \
           f"({counts['falsified_by_attack']} falsified)" in proc.stdout


def test_the_attack_budget_option_reaches_the_attack_and_the_summary_says_what_it_did(model, points, tmp_path,
                                                                                       capsys):
    """--attack-budget none attacks every near miss strongly; a tiny budget none, with the fewest quick steps; the
    summary prints the attack's work as a share of the bounds' and the stages' counts from the JSON summary."""
    from pacverify.cli import main
    from pacverify.verify.api import MIN_QUICK_STEPS, QUICK_STEPS

    summaries = {}
    for budget in ("none", "1e-9"):
        out = tmp_path / f"{budget}.json"
        assert main(["verify", str(model), "--points", str(points), "--radius", "0.5", "--norm", "2",
                     "--attack-budget", budget, "--json", str(out)]) == 0
        summaries[budget] = json.loads(out.read_text())["summary"]
    free, tight = summaries["none"], summaries["1e-9"]
    assert free["unknown"] + free["falsified"] > 0          # the attack ran
    assert free["quick_steps"] == QUICK_STEPS and free["attacked_strongly"] == free["near_misses"]
    assert tight["quick_steps"] == MIN_QUICK_STEPS and tight["attacked_strongly"] == 0
    assert free["verified"] == tight["verified"]            # the bounds decide VERIFIED, not the attack
    out = tmp_path / "default.json"
    capsys.readouterr()
    assert main(["verify", str(model), "--points", str(points), "--radius", "0.5", "--norm", "2", "--json",
                 str(out)]) == 0
    s = json.loads(out.read_text())["summary"]
    # within the budget, or (a few open points of a tiny network) only the quick stage's floor
    assert s["attack_work"] <= s["bounds_work"] or (s["quick_steps"] == MIN_QUICK_STEPS and s["attacked_strongly"] == 0)
    assert f"attack work {s['attack_work'] / s['bounds_work']:.2f} of the bounds' (modelled multiply-adds): " \
           f"{s['quick_steps']} quick steps on the open points, {s['attacked_strongly']} of {s['near_misses']} near " \
           f"misses attacked strongly" in capsys.readouterr().out


def test_labels_give_verified_robust_accuracy_beside_clean_accuracy(model, points, tmp_path, capsys):
    """Issue 17: with true labels, the number people compare (verified robust accuracy) and the clean accuracy."""
    from pacverify.cli import main

    net = load_network(model)
    x = np.load(points)
    own = net(torch.tensor(x)).argmax(1).numpy()
    labels = own.copy()
    labels[:3] = (own[:3] + 1) % 3  # three points misclassified
    path = tmp_path / "labels.npy"
    np.save(path, labels)
    out = tmp_path / "out.json"
    assert main(["verify", str(model), "--points", str(points), "--radius", "0.01", "--norm", "inf", "--labels",
                 str(path), "--json", str(out)]) == 0
    summary = json.loads(out.read_text())["summary"]
    assert summary["clean_accuracy"] == 9 / 12
    assert summary["verified_robust_accuracy"] == summary["verified"] / 12 <= 9 / 12
    assert "verified robust accuracy" in capsys.readouterr().out


def test_certified_radius_json(cli, model, points, tmp_path):
    out = tmp_path / "radius.json"
    proc = cli("verify", model, "--points", points, "--radius", "max", "--norm", "2", "--cap", "0.5", "--tol", "0.01",
               "--json", out)
    assert proc.returncode == 0, proc.stderr
    assert "certified radius" in proc.stdout
    data = json.loads(out.read_text())
    summary = data["summary"]
    assert summary["search"] == "itp" and summary["passes"] >= 1
    assert f"radius search itp: {summary['passes']} passes, {summary['bounded'] / summary['points']:.2f} bounds per " \
           f"point" in proc.stdout
    radii = [p["radius"] for p in data["points"]]
    assert all(0 <= r <= 0.5 for r in radii) and any(r > 0 for r in radii)
    assert all((p["verdict"] == "verified") == (p["radius"] > 0) for p in data["points"])


def test_vnnlib_sat_and_unsat(cli, tmp_path, capsys):
    from pacverify.cli import main

    path = tmp_path / "sum.onnx"
    network_to_onnx(sum_threshold_net(0.9), path)
    head = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
    box = "(assert (>= X_0 0)) (assert (<= X_0 {r})) (assert (>= X_1 0)) (assert (<= X_1 {r}))\n"
    unsafe = "(assert (>= Y_1 Y_0))\n"    # x0 + x1 >= 0.9
    for r in (0.4, 0.5):
        (tmp_path / f"p{r}.vnnlib").write_text(head + box.format(r=r) + unsafe)
    # unsat in-process (the same main() the console script runs), sat through a real subprocess
    cex = tmp_path / "p.cex"
    assert main(["verify", str(path), "--vnnlib", str(tmp_path / "p0.4.vnnlib"), "--cex", str(cex)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "unsat" and lines[1].startswith("time ") and not cex.exists()
    proc = cli("verify", path, "--vnnlib", tmp_path / "p0.5.vnnlib", "--timeout", "20", "--cex", cex)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "sat" and lines[1].startswith("time ")
    values = dict(pair.strip("() ").split() for pair in cex.read_text().strip()[1:-1].split("\n"))
    x0, x1, y0, y1 = (float(values[k]) for k in ("X_0", "X_1", "Y_0", "Y_1"))
    assert 0 <= x0 <= 0.5 and 0 <= x1 <= 0.5 and x0 + x1 >= 0.9 and y1 >= y0


def test_bad_input_through_the_entry_point_exits_2_with_one_line(cli, model, points, tmp_path):
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(model.read_bytes()[:100])
    _one_error_line(cli("verify", truncated, "--points", points, "--radius", "0.1", "--norm", "inf"), "ONNX")
    out = tmp_path / "never.json"
    _one_error_line(cli("verify", model, "--points", points, "--radius", "0", "--norm", "2", "--json", out), "radius")
    assert not out.exists()


def _bad_cases(model, points, tmp_path):
    sigmoid = tmp_path / "sigmoid.onnx"
    network_to_onnx(random_mlp([4, 8, 3], 1), sigmoid, extra_op="Sigmoid")
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((3, 5)))
    nan = tmp_path / "nan.npy"
    np.save(nan, np.array([[0.1, 0.2, np.nan, 0.3]]))
    labels = tmp_path / "labels.npy"
    np.save(labels, np.full(12, 7))
    empty = tmp_path / "empty.npy"
    np.save(empty, np.zeros((0, 4)))
    complex_points = tmp_path / "complex.npy"
    np.save(complex_points, np.ones((3, 4), dtype=np.complex128))
    text_labels = tmp_path / "text_labels.npy"
    np.save(text_labels, np.array(["a"] * 12))
    base = ["--points", str(points), "--radius", "0.1", "--norm", "inf"]
    return [
        ([str(sigmoid), *base], "Sigmoid"),
        ([str(model), "--points", str(wrong), "--radius", "0.1", "--norm", "inf"], "shape"),
        ([str(model), "--points", str(nan), "--radius", "0.1", "--norm", "inf"], "NaN"),
        ([str(model), "--points", str(points), "--radius", "-1", "--norm", "2"], "radius"),
        ([str(model), "--points", str(points), "--radius", "abc", "--norm", "2"], "radius"),
        ([str(tmp_path / "missing.onnx"), *base], "does not exist"),
        ([str(model), "--points", str(tmp_path / "missing.npy"), "--radius", "0.1", "--norm", "2"], "does not exist"),
        ([str(model), "--points", str(points), "--radius", "0.1", "--norm", "3"], "norm"),
        ([str(model), "--points", str(points), "--radius", "0.1"], "--norm"),
        ([str(model), *base, "--labels", str(labels)], "labels"),
        ([str(model), *base, "--method", "deeppoly"], "method"),
        ([str(model), *base, "--domain", "1,0"], "domain"),
        ([str(model), *base, "--timeout", "-3", "--complete"], "timeout"),
        ([str(model), "--points", str(points), "--radius", "0.1", "--norm", "2", "--backend", "marabou"], "L∞"),
        ([str(model), *base, "--backend", "nope"], "backend"),
        ([str(model), *base, "--threads", "0"], "threads"),
        ([str(model), *base, "--backend", "auto_lirpa"], "auto_LiRPA >= 0.5"),
        ([str(model), "--vnnlib", str(tmp_path / "missing.vnnlib")], "does not exist"),
        ([str(model), "--points", str(empty), "--radius", "0.1", "--norm", "2"], "holds no points"),
        ([str(model), "--points", str(complex_points), "--radius", "0.1", "--norm", "2"], "complex"),
        ([str(model), *base, "--labels", str(text_labels)], "integer class indices"),
        ([str(model), *base, "--json", str(tmp_path)], "is a directory"),
        ([str(model), *base, "--json", str(tmp_path / "nodir" / "o.json")], "does not exist"),
        ([str(model), *base, "--attack-budget", "0"], "--attack-budget"),
        ([str(model), *base, "--attack-budget", "lots"], "--attack-budget"),
        ([str(model), "--points", str(points), "--radius", "max", "--norm", "2", "--attack-budget", "2"],
         "--radius max"),
        ([str(model), "--vnnlib", str(tmp_path / "missing.vnnlib"), "--attack-budget", "2"], "--points only"),
    ]


def _main(argv) -> int:
    """The entry point in-process; argparse usage errors (e.g. a value outside ``choices``) exit via SystemExit."""
    from pacverify.cli import main

    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_bad_inputs_exit_2_with_one_clear_line(model, points, tmp_path, capsys):
    for argv, word in _bad_cases(model, points, tmp_path):
        code = _main(["verify", *argv])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and word in err[0], (argv, err)


@pytest.mark.parametrize("option, bad, names", [
    ("--method", "deeppoly", BOUND_METHOD_NAMES),
    ("--norm", "l1", NORMS),
    ("--backend", "nope", ("native", "marabou", "auto_lirpa", "crown")),
    ("--device", "tpu", ("cpu", "cuda")),
])
def test_closed_options_name_their_choices(model, points, capsys, option, bad, names):
    code = _main(["verify", str(model), "--points", str(points), "--radius", "0.1", "--norm", "inf", option, bad])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "invalid choice" in err[0] and option in err[0], err
    assert all(repr(name) in err[0] for name in names), err


def test_negative_domain_through_the_real_cli(cli, model, points, tmp_path):
    """``--domain -3,3`` (a value starting with '-') parses; so does ``--domain=-3,3``; both give the same answer."""
    outs = []
    for domain in (["--domain", "-3,3"], ["--domain=-3,3"], ["--domain", "-0.5,1.5"]):
        out = tmp_path / f"d{len(outs)}.json"
        proc = cli("verify", model, "--points", points, "--radius", "0.05", "--norm", "inf", *domain, "--threads", "1",
                   "--json", out)
        assert proc.returncode == 0, proc.stderr
        outs.append(json.loads(out.read_text())["points"])
    assert outs[0] == outs[1] == outs[2]   # the points lie in [0, 1]: balls of radius 0.05 stay inside every domain
    proc = cli("verify", model, "--points", points, "--radius", "0.05", "--norm", "inf", "--domain", "-3,-1")
    _one_error_line(proc, "domain")       # the points lie outside [-3, -1]
    proc = cli("verify", model, "--points", points, "--radius", "0.05", "--norm", "inf", "--domain", "3,-3")
    _one_error_line(proc, "--domain", "LO,HI", "'3,-3'")


def test_backend_native_and_its_documented_alias(model, points, capsys):
    from pacverify.cli import main

    for backend in ("native", "crown"):
        assert main(["verify", str(model), "--points", str(points), "--radius", "0.05", "--norm", "inf",
                     "--backend", backend]) == 0
        assert "backend native" in capsys.readouterr().out
    assert _main(["verify", "--help"]) == 0
    assert "former name" in " ".join(capsys.readouterr().out.split())   # the alias is documented where it is accepted


def test_threads_default_to_one_the_environment_and_the_flag_override(model, points, monkeypatch, capsys):
    from pacverify.cli import main

    args = ["verify", str(model), "--points", str(points), "--radius", "0.05", "--norm", "inf", "--no-attack"]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.delenv("PACVERIFY_THREADS", raising=False)
        assert main(args) == 0 and torch.get_num_threads() == 1
        monkeypatch.setenv("PACVERIFY_THREADS", "2")
        assert main(args) == 0 and torch.get_num_threads() == 2
        assert main(args + ["--threads", "1"]) == 0 and torch.get_num_threads() == 1
        capsys.readouterr()
        monkeypatch.setenv("PACVERIFY_THREADS", "zero")
        assert main(args) == 2
        assert "threads" in capsys.readouterr().err
        assert main(args + ["--threads", "0"]) == 2
    finally:
        torch.set_num_threads(before)


def test_progress_bars_show_each_part_on_a_terminal():
    import io

    from pacverify.progress import ProgressReporter

    stream = io.StringIO()
    bars = ProgressReporter(stream, tty=True, delay=0.0)
    for done in (0, 5, 10):
        bars.update("bounds", done, 10)
    bars.update("attack", 3, 3)
    bars.close()
    err = stream.getvalue()
    assert "bounds" in err and "/10" in err and "attack" in err and "/3" in err


def test_progress_in_a_log_is_a_line_per_tenth_with_eta_and_quick_parts_stay_silent():
    import io

    from pacverify.progress import ProgressReporter

    stream = io.StringIO()
    log = ProgressReporter(stream, tty=False, delay=0.0)
    for done in range(0, 101):
        log.update("label", done, 100)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("[label] 1% (1/100)") and "left" in lines[0]
    assert [line.split()[1] for line in lines[1:-1]] == [f"{10 * k}%" for k in range(1, 10)]
    assert lines[-1].startswith("[label] done: 100 in")
    quiet_stream = io.StringIO()
    quick = ProgressReporter(quiet_stream, tty=False)  # the default delay: a part that ends at once prints nothing
    for done in range(0, 11):
        quick.update("bounds", done, 10)
    quick.close()
    assert quiet_stream.getvalue() == ""


def test_the_summary_rate_keeps_three_digits_for_slow_networks():
    """A ConvBig-size network verifies ~0.05 points/s: the summary prints that, not 0.0; fast ones print whole."""
    from pacverify.cli.verify import _rate

    assert _rate(0.0437) == "0.0437" and _rate(5.25) == "5.25" and _rate(3295.4) == "3,295"
