"""``pacverify certify`` / ``check`` end to end on tiny settings (issue 5)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from helpers_certify import TINY, non_robust_teacher, onnx_teacher, robust_teacher

from pacverify.certificate.io import body_digest
from pacverify.certificate.schema import Verdict
from pacverify.errors import InputError
from pacverify.pipeline.check import check_certificate
from pacverify.pipeline.run import certify
from pacverify.synthetic import sigmoid_radius
from pacverify.testing import assert_certified


@pytest.fixture(scope="module")
def robust_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("robust")
    teacher = onnx_teacher(robust_teacher(), out / "teacher.onnx")
    return certify(teacher, out=out, delta=0.05, seed=0, **TINY), out


def test_robust_teacher_is_certified(robust_run):
    cert, out = robust_run
    assert cert.verdict is Verdict.CERTIFIED
    body, arrays = cert.body, cert.arrays
    assert body["pac"]["samples"] == 244 and len(arrays["points"]) == 244
    assert body["verification"]["verified"] == body["verification"]["required"] > 0
    # the claim is true: the teacher's exact radius at every required point exceeds 3δ
    required = arrays["required"]
    assert (sigmoid_radius(arrays["points"][required]) > 3 * 0.05).all()
    # δ_T is the formula applied to the recorded per-point values
    r, factor = arrays["certified_radius"][required], arrays["teacher_radius_factor"][required]
    ratio, rho = arrays["margin_ratio"][required], arrays["rho"][required]
    assert cert.delta_T == pytest.approx(np.min(factor * r) / 3)
    np.testing.assert_allclose(factor, np.minimum(np.where(np.isinf(rho), 1.0, ratio * rho), 1.0))
    for key in ("verdict", "pac.samples", "pac.delta", "pac.eps", "pac.eta", "relaxation.delta_T"):
        node = body
        for part in key.split("."):
            node = node[part]
    assert (out / "report.html").exists() and (out / "student.onnx").exists()


def test_non_robust_teacher_is_never_certified(tmp_path):
    # through the pytest helper teams use: it must fail, and say why
    with pytest.raises(AssertionError, match=r"pacverify verdict (NOT_CERTIFIED|REFUTED) \("):
        assert_certified(non_robust_teacher(), out=tmp_path, delta=0.1, seed=0, **TINY)


def test_assert_certified_passes_a_certified_run_and_enforces_gates(robust_run):
    cert, out = robust_run
    teacher = out / "teacher.onnx"
    assert assert_certified(teacher, out=out, delta=0.05, seed=0, **TINY).verdict is Verdict.CERTIFIED
    with pytest.raises(AssertionError, match="minimum delta_T"):
        assert_certified(teacher, out=out, delta=0.05, seed=0, min_delta_t=10.0, **TINY)


def test_flattened_student_on_non_robust_teacher_is_not_certified(tmp_path):
    settings = dict(TINY, epochs=2, method="kd")
    cert = certify(non_robust_teacher(), out=tmp_path, delta=0.1, seed=1, **settings)
    assert cert.verdict in (Verdict.NOT_CERTIFIED, Verdict.REFUTED)
    # issue 10 §2: no δ_T claim on a run that is not CERTIFIED; at most "the radius the evidence would support if …"
    st = cert.record.statements
    assert st.pac_delta_T is None
    assert (st.delta_T_note is None) == (cert.delta_T == 0)
    if st.delta_T_note:
        assert "would support if" in st.delta_T_note


def test_check_confirms_genuine(robust_run):
    cert, out = robust_run
    result = check_certificate(out / "certificate.json")
    assert result.confirmed, result.problems
    assert result.exit_code == 0


def _copy(out, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(out, target)
    return target, json.loads((target / "certificate.json").read_text())


def _save(target, body, *, redigest: bool):
    if redigest:
        body["integrity"]["body_sha256"] = body_digest(body)
    (target / "certificate.json").write_text(json.dumps(body))


@pytest.mark.parametrize("redigest", [False, True])
def test_check_rejects_changed_radius(robust_run, tmp_path, redigest):
    target, body = _copy(robust_run[1], tmp_path)
    body["pac"]["delta"] = 1.0  # claims 3δ = 3.0, which the student cannot be proven robust for
    _save(target, body, redigest=redigest)
    result = check_certificate(target)
    assert not result.confirmed and result.exit_code == 1


def test_check_rejects_changed_verdict_and_delta_t(robust_run, tmp_path):
    target, body = _copy(robust_run[1], tmp_path)
    body["relaxation"]["delta_T"] *= 2
    _save(target, body, redigest=True)
    assert any("delta_T" in p for p in check_certificate(target).problems)
    target2, body2 = _copy(robust_run[1], tmp_path / "b")
    body2["verdict"] = "REFUTED"
    _save(target2, body2, redigest=True)
    result = check_certificate(target2)
    assert not result.confirmed and any("evidence gives CERTIFIED" in p for p in result.problems)


def test_check_rejects_swapped_onnx(robust_run, tmp_path):
    from pacverify.models import load_student
    from pacverify.onnx_io.export import export_onnx

    target, _ = _copy(robust_run[1], tmp_path)
    student = load_student(target / "student.pt")
    with torch.no_grad():
        for param in student.parameters():
            param.mul_(1.01)
    export_onnx(student, target / "student.onnx", (2,))
    result = check_certificate(target)
    assert not result.confirmed and any("student ONNX" in p for p in result.problems)


def test_same_seed_same_certificate(robust_run, tmp_path):
    cert, _ = robust_run
    teacher = onnx_teacher(robust_teacher(), tmp_path / "teacher.onnx")
    again = certify(teacher, out=tmp_path, delta=0.05, seed=0, **TINY)

    def stable(body):
        return {k: v for k, v in body.items() if k not in ("timings", "integrity")}

    assert stable(again.body) == stable(cert.body)
    for name, array in cert.arrays.items():
        np.testing.assert_array_equal(again.arrays[name], array, err_msg=name)


def test_rerun_reuses_stages(robust_run, tmp_path):
    cert, out = robust_run
    messages = []
    again = certify(out / "teacher.onnx", out=out, delta=0.05, seed=0, progress=lambda s, m: messages.append((s, m)),
                    **TINY)
    reused = {s for s, m in messages if "(reused" in m}
    assert reused == {"distill"}  # only the student is reused; the evidence is recomputed (issue 10 §6)
    # a reused stage records what computing it cost, not the time of reading the cache (issue 17)
    assert again.record.timings["distill"] == cert.record.timings["distill"] > 0


def test_a_tampered_cache_changes_no_verdict(tmp_path):
    """Issue 10 §6: a REFUTED run stays REFUTED whatever is written into its cache; a damaged entry is recomputed."""
    from pacverify.pipeline.cache import CACHE_DIR

    settings = dict(TINY, epochs=2, method="kd", complete=False)  # no time-budgeted search: deterministic counts
    first = certify(non_robust_teacher(), out=tmp_path, delta=0.1, seed=1, **settings)
    cache = tmp_path / CACHE_DIR
    names = sorted(p.name.split("-")[0] for p in cache.iterdir())
    assert names == ["distill"]  # no evidence stage is ever stored
    for entry in cache.iterdir():
        entry.write_bytes(entry.read_bytes()[:100])  # truncated zip
    again = certify(non_robust_teacher(), out=tmp_path, delta=0.1, seed=1, **settings)
    assert again.verdict is first.verdict
    assert again.record.verification == first.record.verification


def test_no_cache_retrains(robust_run, tmp_path):
    cert, out = robust_run
    messages = []
    certify(out / "teacher.onnx", out=out, delta=0.05, seed=0, cache=False,
            progress=lambda s, m: messages.append((s, m)), **TINY)
    assert not any("(reused" in m for _, m in messages)


def test_global_check_is_recorded_and_rechecked(tmp_path):
    """``--global-check`` (issue 14): the student's global 3δ-robustness over the domain, recorded beside an unchanged
    verdict, its statement printed, and re-derived by ``check``."""
    from pacverify.pipeline.check import Outcome, check_certificate

    teacher = onnx_teacher(robust_teacher(), tmp_path / "teacher.onnx")
    out = tmp_path / "out"
    cert = certify(teacher, out=out, delta=0.05, seed=0, domain=(-4.0, 4.0), global_check=True, global_timeout=20.0,
                   **TINY)
    g = cert.record.global_check
    assert g is not None and g.verdict in ("verified", "falsified", "unknown")
    assert g.radius == pytest.approx(0.15) and g.kappa == 0.9 and cert.record.settings.global_check
    assert g.statement.startswith({"verified": "The student is proven", "falsified": "The student is not globally",
                                   "unknown": "Global 3δ-robustness"}[g.verdict])
    assert ("global_pair" in cert.arrays) == (g.verdict == "falsified")
    result = check_certificate(out, teacher=teacher)
    assert result.outcome is Outcome.CONFIRMED, result.problems + result.unchecked


def test_global_check_needs_a_domain(tmp_path):
    with pytest.raises(InputError, match="--global-check .* --domain"):
        certify(robust_teacher(), out=tmp_path, delta=0.05, global_check=True, **TINY)
