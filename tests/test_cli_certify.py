"""``pacverify certify`` / ``check`` / ``report`` through the real entry point: gate files and bad input."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from helpers_certify import onnx_teacher, robust_teacher

TINY_ARGS = ["--delta", "0.05", "--eps", "0.5", "--eta", "0.1", "--epochs", "30", "--timeout", "1"]


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    return onnx_teacher(robust_teacher(), tmp_path_factory.mktemp("t") / "teacher.onnx")


def test_certify_check_report_gate(cli, teacher_file, tmp_path):
    out = tmp_path / "out"
    res = cli("certify", teacher_file, "--synthetic", "gaussians", *TINY_ARGS, "--out", out, "--junit",
              tmp_path / "junit.xml", "--json", tmp_path / "cert.json")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("verdict: CERTIFIED") and "[verify]" in res.stderr
    assert "Perfect student" in res.stdout and "δ_T =" in res.stdout
    body = json.loads((tmp_path / "cert.json").read_text())
    assert body["verdict"] == "CERTIFIED" and body == json.loads((out / "certificate.json").read_text())
    cases = {c.get("name"): c.find("failure") is None for c in ET.parse(tmp_path / "junit.xml").iter("testcase")}
    assert cases == {"distillation agreement": True, "verification": True, "teacher cross-check": True,
                     "coverage": True}
    res = cli("check", out / "certificate.json", "--teacher", teacher_file)  # the teacher lies outside the run's dir
    assert res.returncode == 0 and res.stdout.startswith("CONFIRMED: CERTIFIED"), res.stdout
    res = cli("report", out / "certificate.json", "--html", tmp_path / "r.html", "--markdown", tmp_path / "r.md")
    assert res.returncode == 0 and (tmp_path / "r.html").read_text().count("<figure>") == 4
    # the δ_T gate fails the run (exit 1) without changing the verdict
    res = cli("certify", teacher_file, "--synthetic", "gaussians", *TINY_ARGS, "--out", out, "--quiet",
              "--min-delta-t", "10")
    assert res.returncode == 1 and "gate failed: minimum delta_T" in res.stderr
    assert res.stdout.strip() == "verdict: CERTIFIED" and "[verify]" not in res.stderr   # --quiet: the verdict only


def test_certify_and_check_with_crown_ibp(cli, teacher_file, tmp_path):
    """The bound method "crown-ibp" goes through certify (recorded in the certificate) and check re-derives with it."""
    out = tmp_path / "out"
    res = cli("certify", teacher_file, "--synthetic", "gaussians", *TINY_ARGS, "--out", out, "--verify-method",
              "crown-ibp")
    assert res.returncode in (0, 1), res.stderr
    body = json.loads((out / "certificate.json").read_text())
    assert body["settings"]["verify_method"] == "crown-ibp"
    res = cli("check", out / "certificate.json", "--teacher", teacher_file)
    assert res.returncode == 0 and res.stdout.startswith("CONFIRMED"), res.stdout


def _pickled(path):
    torch.save(robust_teacher(), str(path))
    return path


def _array(path, rows):
    np.save(path, rows)
    return path


@pytest.mark.parametrize("case", ["missing", "corrupt", "pickle", "wrong_dim", "nan", "eps", "few_rows", "unwritable",
                                  "no_source", "kappa"])
def test_bad_input_exits_2_without_files(cli, teacher_file, tmp_path, case):
    out = tmp_path / "out"
    source = ["--synthetic", "gaussians"]
    teacher = teacher_file
    extra: list = []
    words = {"missing": "does not exist", "corrupt": "could not be loaded", "pickle": "trust-pickle",
             "wrong_dim": "shape", "nan": "NaN", "eps": "(0, 0.5]", "few_rows": "rows", "unwritable": "--out",
             "no_source": "--data", "kappa": "kappa"}[case]
    if case == "missing":
        teacher = tmp_path / "nope.pt"
    elif case == "corrupt":
        teacher = tmp_path / "corrupt.pt"
        teacher.write_bytes(b"PK\x03\x04 not really a zip archive" * 10)
    elif case == "pickle":
        teacher = _pickled(tmp_path / "pickled.pt")
    elif case == "wrong_dim":
        teacher = onnx_teacher(torch.nn.Sequential(torch.nn.Linear(3, 2)), tmp_path / "three.onnx", dim=3)
    elif case == "nan":
        rows = np.random.default_rng(0).normal(size=(500, 2)).astype(np.float32)
        rows[7, 1] = np.nan
        source = ["--data", _array(tmp_path / "nan.npy", rows)]
    elif case == "few_rows":
        source = ["--data", _array(tmp_path / "few.npy", np.zeros((10, 2), np.float32))]
    elif case == "eps":
        extra = ["--eps", "0.7"]
    elif case == "unwritable":
        blocker = tmp_path / "file"
        blocker.write_text("x")
        out = blocker / "out"
    elif case == "no_source":
        source = []
    elif case == "kappa":
        extra = ["--kappa", "1.5"]
    args = [*TINY_ARGS, *extra] if case != "eps" else ["--delta", "0.05", "--eta", "0.1", *extra]
    res = cli("certify", teacher, *source, *args, "--out", out)
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert words in lines[0], lines[0]
    assert not out.exists() or case == "unwritable"


def test_check_rejects_garbage(cli, tmp_path):
    (tmp_path / "c.json").write_text("{}")
    res = cli("check", tmp_path / "c.json")
    assert res.returncode == 2 and "not a pacverify certificate" in res.stderr


def test_dry_run_prints_each_stage_estimate_and_writes_nothing(cli, teacher_file, tmp_path):
    out = tmp_path / "out"
    res = cli("certify", teacher_file, "--synthetic", "gaussians", *TINY_ARGS, "--out", out, "--dry-run")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("ball mode: s = ") and "memory about" in lines[0]
    estimated = {line.split()[0]: line for line in lines if line.startswith("  ")}
    assert set(estimated) == {"label", "distill", "verify", "radius", "rho", "teacher_check", "coverage", "total"}
    assert "at most 30 epochs" in estimated["distill"]  # the run's own epoch budget
    assert lines[-1] == "dry run: nothing was written" and not out.exists()


def test_plan_estimates_every_stage_from_probes_and_refuses_what_cannot_fit(teacher_file):
    from pacverify.errors import InputError
    from pacverify.pipeline.run import plan

    the_plan = plan(teacher_file, delta=0.05, eps=0.5, eta=0.1, synthetic="gaussians", epochs=30)
    assert the_plan.samples == the_plan.samples_required and the_plan.dim == 2 and the_plan.n_classes == 2
    assert all(e.seconds > 0 and e.basis for e in the_plan.stages)
    assert the_plan.seconds == pytest.approx(sum(e.seconds for e in the_plan.stages))
    with pytest.raises(InputError, match="GiB"):  # 10^12 points of dimension 2 cannot fit in any memory here
        plan(teacher_file, delta=0.05, eps=0.5, eta=0.1, synthetic="gaussians", samples=10**12)


def test_every_long_stage_reports_its_progress(teacher_file, tmp_path):
    from pacverify.pipeline.run import certify

    ticks: list[tuple[str, int, int]] = []
    certify(teacher_file, out=tmp_path / "out", delta=0.05, eps=0.5, eta=0.1, synthetic="gaussians", epochs=30,
            timeout=1, ticker=lambda part, done, total: ticks.append((part, done, total)))
    last = {part: (done, total) for part, done, total in ticks}
    # every part ends complete (what the bars and log lines show: test_cli_verify's progress tests)
    assert {"label", "distill: epochs", "radius: search", "rho", "teacher attack at 3δ", "coverage"} <= set(last)
    assert all(done == total > 0 for done, total in last.values())
    for part in last:
        counts = [done for p, done, _ in ticks if p == part]
        assert counts == sorted(counts)


def test_labels_give_verified_robust_accuracy_that_check_rederives(cli, teacher_file, tmp_path):
    from pacverify.certificate.io import load_certificate
    from pacverify.certificate.schema import PointStatus
    from pacverify.data import synthetic

    rows = synthetic("gaussians", seed=3).draw(3000).astype(np.float32)
    truth = (rows.sum(1) < 0).astype(np.int64)  # a labelling the teacher does not follow exactly
    truth[::7] = 1 - truth[::7]
    np.save(tmp_path / "x.npy", rows)
    np.save(tmp_path / "y.npy", truth)
    out = tmp_path / "out"
    res = cli("certify", teacher_file, "--data", tmp_path / "x.npy", "--labels", tmp_path / "y.npy", *TINY_ARGS,
              "--out", out)
    assert res.returncode in (0, 1), res.stderr
    cert = load_certificate(out / "certificate.json")
    acc, arrays = cert.record.accuracy, cert.arrays
    assert acc is not None and acc.statement in res.stdout
    true_label = arrays["true_label"]
    assert acc.points == len(true_label) == cert.record.pac.samples
    verified = arrays["status"] == PointStatus.VERIFIED
    assert acc.verified_robust_3delta == pytest.approx(np.mean(verified & (arrays["teacher_label"] == true_label)))
    assert acc.teacher_clean == pytest.approx(np.mean(arrays["teacher_label"] == true_label)) and acc.teacher_clean < 1
    assert acc.verified_robust_3delta <= acc.verified_robust_delta <= acc.student_clean
    assert cert.record.files.labels is not None
    res = cli("check", out / "certificate.json", "--teacher", teacher_file, "--data", tmp_path / "x.npy")
    assert res.returncode == 0 and res.stdout.startswith("CONFIRMED"), res.stdout + res.stderr
    forged = truth.copy()
    forged[:50] = 1 - forged[:50]
    np.save(tmp_path / "y.npy", forged)
    res = cli("check", out / "certificate.json", "--teacher", teacher_file, "--data", tmp_path / "x.npy")
    assert res.returncode != 0 and "labels file" in res.stdout + res.stderr
    res = cli("certify", teacher_file, "--synthetic", "gaussians", "--labels", tmp_path / "y.npy", *TINY_ARGS,
              "--out", tmp_path / "o2")
    assert res.returncode == 2 and "--labels" in res.stderr and not (tmp_path / "o2").exists()


def test_student_auto_records_every_try_and_check_confirms(cli, teacher_file, tmp_path):
    from pacverify.certificate.io import load_certificate
    from pacverify.pipeline.run import certify

    out = tmp_path / "auto"
    cert = certify(teacher_file, out=out, delta=0.05, eps=0.5, eta=0.1, synthetic="gaussians", epochs=5, timeout=1,
                   student="auto", student_budget=30,
                   distill_options={"target_agreement": 1.0, "target_gc": 0.99999})  # out of reach: the ladder runs
    d = cert.record.distillation
    search = d.student_search
    assert search is not None and search["tries"] and not search["reached"]
    assert d.student == search["chosen"] == search["tries"][search["best_index"]]["student"]
    assert cert.record.settings.student == "auto"
    assert any(w.startswith("student auto: targets") for w in cert.record.warnings)
    assert load_certificate(out / "certificate.json").record.distillation.student_search == search
    res = cli("check", out / "certificate.json", "--teacher", teacher_file)
    assert res.returncode == cert.exit_code and res.stdout.startswith("CONFIRMED"), res.stdout


def test_dry_run_with_student_auto_estimates_the_search_by_its_budget(cli, teacher_file, tmp_path):
    res = cli("certify", teacher_file, "--synthetic", "gaussians", *TINY_ARGS, "--student", "auto",
              "--student-budget", "45", "--dry-run")
    assert res.returncode == 0, res.stderr
    distill = next(line for line in res.stdout.splitlines() if line.startswith("  distill"))
    assert "45 s" in distill and "--student auto" in distill


def test_check_refuses_a_ray_address_without_the_ray_executor(cli, tmp_path):
    res = cli("check", tmp_path / "certificate.json", "--ray-address", "auto")
    assert res.returncode == 2 and "--ray-address only applies with --executor ray" in res.stderr


def test_summary_counts_teacher_counterexamples_at_points_proven_for_the_student():
    from types import SimpleNamespace

    from pacverify.certificate.schema import PointStatus
    from pacverify.cli.certify import teacher_attack_line

    status = np.array([PointStatus.VERIFIED, PointStatus.VERIFIED, PointStatus.UNKNOWN, PointStatus.NOT_CONFIDENT,
                       PointStatus.VERIFIED], dtype=np.int8)
    tc = SimpleNamespace(counterexamples_delta=3, checked=4, radius_delta_T=0.0, counterexamples_delta_T=0)
    cert = SimpleNamespace(record=SimpleNamespace(teacher_check=tc),
                           arrays={"status": status, "teacher_cex_delta_index": np.array([1, 2, 4])})
    line = teacher_attack_line(cert)
    assert line.startswith("teacher attack: counterexamples within 3δ at 3 of 4 points")
    assert "(2 of them proven 3δ-robust for the student: the transfer fails there)" in line
    assert "3·δ_T" not in line
    tc.radius_delta_T, tc.counterexamples_delta_T = 0.1, 1
    cert.arrays["teacher_cex_delta_index"] = np.zeros(0, dtype=np.int64)
    line = teacher_attack_line(cert)
    assert "proven" not in line and line.endswith("within 3·δ_T at 1")
