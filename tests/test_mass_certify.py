"""Mass mode end to end on real data: scikit-learn's digits (m = 64) and a small CNN teacher read by the engine.

The docs/quickstart-real-data.md steps on the real 1,797 rows (fewer training epochs): ball mode is refused with what
mass mode needs, mass mode certifies with the teacher as its own oracle and a few thousand points at most, the
certificate's numbers follow from its arrays, ``check`` confirms it and rejects an edited lower radius; the student
oracle lists the transfer assumptions.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from pacverify import pac
from pacverify.certificate.io import load_certificate
from pacverify.certificate.mass import radius_at
from pacverify.certificate.schema import MASS_SCHEMA, MassCertificateBody, Verdict
from pacverify.errors import InputError
from pacverify.pipeline.check import Outcome, check_certificate
from pacverify.pipeline.run import certify

pytest.importorskip("sklearn")
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits_teacher.py"
FAST = dict(attack_steps=10, attack_restarts=1, attack_bisection=4, holdout=200)


def _example():
    spec = importlib.util.spec_from_file_location("digits_teacher", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["digits_teacher"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    example = _example()
    x, y = example.digits(seed=0)
    model = example.train(x, y, epochs=4, seed=0)
    teacher, data = example.save(model, x, tmp_path_factory.mktemp("digits"))
    return teacher, data


@pytest.fixture(scope="module")
def mass_cert(digits, tmp_path_factory):
    teacher, data = digits
    out = tmp_path_factory.mktemp("mass")
    cert = certify(teacher, out=out, guarantee="mass", data=str(data), domain=(0.0, 1.0), norm="inf", delta=0.005,
                   eps=0.05, eta=0.01, kappa=0.9, **FAST)
    return cert, out


def test_ball_mode_is_refused_with_what_mass_mode_needs(digits, tmp_path):
    teacher, data = digits
    with pytest.raises(InputError) as info:
        certify(teacher, out=tmp_path / "ball", data=str(data), domain=(0.0, 1.0), norm="inf", delta=0.005,
                eps=0.05, eta=0.01)
    message = str(info.value)
    assert "ball mode needs s = 2" in message and "1797" in message
    need = pac.sample_size(64, 0.05, 0.01, guarantee="mass", bound="tight")
    assert f"--guarantee mass) needs s = {need}" in message and "reach ε = " in message
    assert not (tmp_path / "ball").exists()


def test_mass_mode_certifies_digits_with_the_teacher_as_oracle(mass_cert):
    cert, out = mass_cert
    record = cert.record
    assert isinstance(record, MassCertificateBody) and record.schema == MASS_SCHEMA
    p = record.pac
    assert (p.guarantee, p.vc_dimension, p.bound, p.dim) == ("mass", 2, "tight", 64)
    assert p.samples == pac.sample_size(64, 0.05, 0.01, guarantee="mass", bound="tight") < 2000
    assert pac.sample_size(64, 0.05, 0.01, norm="inf") > 100_000  # what ball mode would need (d = 2m for L∞)
    assert record.oracle.used == "teacher" and "read by the engine" in record.oracle.reason
    assert not any("Transfer" in a for a in record.statements.assumptions)  # nothing transferred
    assert any(a.startswith("Exact arithmetic (teacher oracle)") for a in record.statements.assumptions)
    a = cert.arrays
    lower, upper, conf = a["lower"], a["upper"], a["teacher_confidence"]
    assert (lower >= 0).all() and (lower <= record.oracle.cap + 1e-12).all()
    assert (upper >= lower).all() and record.oracle.inconsistent == 0
    m = radius_at(conf, lower, 0.9)[0]
    assert record.confidence_map.radius == m == cert.delta_T
    assert record.verdict is (Verdict.CERTIFIED if m >= 0.005 else Verdict.NOT_CERTIFIED)
    assert f"M(κ) = {m:.6g}" in record.statements.pac
    assert record.holdout.points == 200 and record.holdout.radius == m
    assert (out / "report.html").read_text().count("data:image/png") == 1
    written = json.loads((out / "certificate.json").read_text())
    assert written["relaxation"]["delta_T"] == m and written["pac"]["samples"] == p.samples


def test_check_confirms_and_rejects_an_edited_lower_radius(mass_cert, digits, tmp_path):
    cert, out = mass_cert
    teacher, data = digits
    result = check_certificate(out, teacher=teacher, data=data)
    assert result.outcome is Outcome.CONFIRMED, result.problems + result.unchecked
    # a forgery: every lower radius doubled, the map and the statements recomputed, the digest redone
    import shutil

    from pacverify.certificate.io import write_certificate
    from pacverify.pipeline import mass as ms

    forged_dir = tmp_path / "forged"
    shutil.copytree(out, forged_dir)
    arrays = dict(cert.arrays)
    arrays["lower"] = np.minimum(arrays["lower"] * 2, arrays["upper"])
    cmap = ms.confidence_map(arrays["teacher_confidence"], arrays["lower"], 0.9, 0.05, 0.01)
    record = dataclasses.replace(cert.record, confidence_map=cmap,
                                 relaxation=dataclasses.replace(cert.record.relaxation, delta_T=cmap.radius))
    write_certificate(record, arrays, forged_dir)
    forged = check_certificate(forged_dir, teacher=teacher, data=data)
    assert forged.outcome is Outcome.REJECTED
    assert any("not re-proven" in p for p in forged.problems)


def test_the_student_oracle_lists_the_transfer_assumptions(digits, tmp_path):
    teacher, data = digits
    cert = certify(teacher, out=tmp_path, guarantee="mass", oracle="student", data=str(data), domain=(0.0, 1.0),
                   norm="inf", delta=0.005, eps=0.1, eta=0.05, kappa=0.9, student="mlp:1x32", epochs=5, **FAST)
    record = cert.record
    assert record.oracle.used == "student" and record.files.student_onnx is not None
    assert any(a.startswith("Transfer") for a in record.statements.assumptions)
    assert not any(a.startswith("Exact arithmetic") for a in record.statements.assumptions)
    a = cert.arrays
    np.testing.assert_allclose(a["lower"], a["teacher_radius_factor"] * a["student_radius"])
    assert (a["lower"][a["student_label"] != a["teacher_label"]] == 0).all()
    assert (a["teacher_radius_factor"] <= 1).all()
    assert record.oracle.student_disagrees == int((a["student_label"] != a["teacher_label"]).sum())
    assert load_certificate(tmp_path).record == record


def test_attack_budget_defaults_per_mode():
    from pacverify.pipeline.settings import BALL_ATTACK, MASS_ATTACK, CertifySettings

    ball = CertifySettings(delta=0.1, eps=0.1, eta=0.1, synthetic="gaussians").validated()
    mass = CertifySettings(delta=0.1, eps=0.1, eta=0.1, synthetic="gaussians", guarantee="mass").validated()
    assert (ball.pgd_steps, ball.pgd_restarts) == BALL_ATTACK == (50, 10)
    assert (mass.pgd_steps, mass.pgd_restarts) == MASS_ATTACK == (20, 1)
    explicit = CertifySettings(delta=0.1, eps=0.1, eta=0.1, synthetic="gaussians", guarantee="mass", attack_steps=7,
                               attack_restarts=3).validated()
    assert (explicit.pgd_steps, explicit.pgd_restarts) == (7, 3)


def test_oracle_teacher_refuses_a_teacher_the_engine_cannot_read(tmp_path):
    import torch

    teacher = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Sigmoid(), torch.nn.Linear(8, 2))
    with pytest.raises(InputError, match="--oracle teacher: .*--oracle student"):
        certify(teacher, out=tmp_path / "o", guarantee="mass", oracle="teacher", synthetic="gaussians",
                delta=0.1, eps=0.1, eta=0.1)


@pytest.mark.parametrize("norm", ["2", "inf"])
def test_lower_and_upper_radii_bracket_the_exact_radius_of_the_sigmoid_teacher(norm, tmp_path):
    """The sigmoid teacher's logits are linear: rob_T(x) = |Σx|/‖1‖_* exactly (√m for L2, m for L∞). Every l_i is at
    most it (the teacher oracle is sound), every finite u_i at least it (a real counterexample), and M(κ) follows."""
    from pacverify.synthetic import sigmoid_teacher

    cert = certify(sigmoid_teacher(3.0), out=tmp_path, guarantee="mass", synthetic="gaussians", norm=norm,
                   delta=0.05, eps=0.1, eta=0.1, kappa=0.9, **FAST)
    a = cert.arrays
    x = a["points"].reshape(len(a["points"]), -1).astype(np.float64)
    exact = np.abs(x.sum(1)) / (np.sqrt(x.shape[1]) if norm == "2" else x.shape[1])
    assert (a["lower"] <= exact + 1e-9).all()
    finite = np.isfinite(a["upper"])
    assert (a["upper"][finite] >= exact[finite] - 1e-6).all()
    assert cert.record.oracle.used == "teacher" and cert.record.oracle.inconsistent == 0
    assert cert.record.pac.samples == pac.sample_size(2, 0.1, 0.1, guarantee="mass", bound="tight")
    m = radius_at(a["teacher_confidence"], a["lower"], 0.9)[0]
    assert cert.delta_T == m and (cert.verdict is Verdict.CERTIFIED) == (m >= 0.05)


def test_ball_mode_accepts_the_tight_bound(tmp_path):
    from helpers_certify import TINY, robust_teacher

    cert = certify(robust_teacher(), out=tmp_path, delta=0.05, bound="tight", **TINY)
    assert cert.record.pac.bound == "tight"
    assert cert.record.pac.samples == pac.sample_size(2, 0.5, 0.1, bound="tight") < pac.sample_size(2, 0.5, 0.1)
    assert cert.verdict is Verdict.CERTIFIED


def test_cli_mass_mode_prints_the_map_gates_and_checks(cli, tmp_path):
    import xml.etree.ElementTree as ET

    from helpers_certify import onnx_teacher

    from pacverify.synthetic import sigmoid_teacher

    teacher = onnx_teacher(sigmoid_teacher(3.0), tmp_path / "teacher.onnx")
    out = tmp_path / "out"
    args = ["certify", teacher, "--guarantee", "mass", "--synthetic", "gaussians", "--delta", "0.05", "--eps", "0.1",
            "--eta", "0.1", "--holdout", "300", "--attack-steps", "10", "--attack-restarts", "2", "--attack-bisection",
            "3", "--out", out]
    res = cli(*args, "--junit", tmp_path / "junit.xml")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("verdict: CERTIFIED") and "M(κ) = " in res.stdout
    assert "teacher oracle: chosen by --oracle auto" in res.stdout and "Held-out check: of 300 fresh draws" in res.stdout
    cases = {c.get("name"): c.find("failure") is None for c in ET.parse(tmp_path / "junit.xml").iter("testcase")}
    assert cases == {"mass guarantee": True, "oracle consistency": True, "held-out check": True}
    res = cli("check", out / "certificate.json", "--teacher", teacher)
    assert res.returncode == 0 and res.stdout.startswith("CONFIRMED: CERTIFIED"), res.stdout
    # δ above every proven radius: NOT_CERTIFIED, exit 1
    res = cli(*args[:7], "1.0", *args[8:])
    assert res.returncode == 1 and res.stdout.startswith("verdict: NOT_CERTIFIED")


def test_a_counterexample_closer_than_a_proven_radius_refutes_and_shows_the_pair(tmp_path):
    """u_i < l_i is impossible for a sound oracle: the verdict is REFUTED and the reasons name the point."""
    import torch

    from pacverify.pipeline import mass as ms
    from pacverify.pipeline.settings import CertifySettings
    from pacverify.pipeline.stages import Labels, Sample, Setup
    from pacverify.synthetic import sigmoid_teacher

    cfg = CertifySettings(delta=0.05, eps=0.5, eta=0.1, synthetic="gaussians", guarantee="mass").validated()
    n = 70
    x = np.random.default_rng(0).normal(size=(n, 2)).astype(np.float32)
    setup = Setup(cfg=cfg, teacher=sigmoid_teacher(3.0), teacher_path=None, teacher_hash="h", sampler=None,
                  source={"kind": "synthetic", "source": "gaussians", "sha256": None}, input_shape=(2,), dim=2,
                  samples=n, samples_required=n, out_dir=tmp_path, device=torch.device("cpu"), oracle="teacher",
                  oracle_reason="test")
    lower = np.full(n, 0.08)
    upper = np.full(n, np.inf)
    upper[5] = 0.03
    cex = np.full((n, 2), np.nan)
    cex[5] = x[5] + 0.03
    results = {"sample": Sample(x), "label": Labels(np.zeros(n, np.int64), np.full(n, 0.95), 2),
               "lower": ms.Lower(lower, np.zeros(0), np.zeros(0), 0.0), "upper": ms.Upper(upper, cex, 0.0),
               "holdout": ms.HeldOut(np.zeros(0), np.zeros(0, bool), 0.08, "not run: test")}
    record, arrays = ms.assemble(setup, results, {})
    assert record.verdict is Verdict.REFUTED and record.oracle.inconsistent == 1
    assert any("first at sample point 5" in r and "u_i = 0.03" in r for r in record.reasons)
    assert arrays["upper_cex_index"].tolist() == [5]
