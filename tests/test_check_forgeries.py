"""Issue 10 §4: every forgery the audit made `check` confirm is now rejected, refuted or left unchecked.

Each forgery is re-digested (the digest is not a secret) and the side file's recorded sha256 is updated, as an
attacker would do; `check` must still not say CONFIRMED.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers_certify import TINY, onnx_teacher, robust_teacher

from pacverify.certificate.io import body_digest
from pacverify.fileio import sha256_file
from pacverify.pipeline.check import Outcome, check_certificate
from pacverify.pipeline.run import certify


@pytest.fixture(scope="module")
def genuine(tmp_path_factory):
    out = tmp_path_factory.mktemp("genuine")
    cert = certify(onnx_teacher(robust_teacher(), out / "teacher.onnx"), out=out, delta=0.05, seed=0, **TINY)
    assert check_certificate(out).outcome is Outcome.CONFIRMED
    return cert, out


def _forge(src, tmp_path, edit_body=None, edit_arrays=None):
    target = tmp_path / "forged"
    shutil.copytree(src, target)
    body = json.loads((target / "certificate.json").read_text())
    if edit_arrays is not None:
        with np.load(target / "points.npz") as data:
            arrays = {k: data[k] for k in data.files}
        edit_arrays(arrays)
        np.savez_compressed(target / "points.npz", **arrays)
        body["files"]["points"]["sha256"] = sha256_file(target / "points.npz")
    if edit_body is not None:
        edit_body(body)
    body["integrity"]["body_sha256"] = body_digest(body)
    (target / "certificate.json").write_text(json.dumps(body))
    return target


def _not_confirmed(target, **kwargs):
    result = check_certificate(target, **kwargs)
    assert result.outcome is not Outcome.CONFIRMED, result
    assert result.exit_code != 0
    return result


@pytest.mark.parametrize("edit, words", [
    (lambda b: b["coverage"].update(lower=0.9), "coverage.lower"),
    (lambda b: b["statements"]["assumptions"].pop(1), "assumptions"),
    (lambda b: b["distillation"].update(gc_mean=1.0), "distillation.gc_mean"),
    (lambda b: b["verification"].update(not_confident=0), "verification.not_confident"),
    (lambda b: b["pac"].update(vc_dimension=1), "pac.vc_dimension"),
    (lambda b: b["tool"].update(version="9.9.9"), "tool.version"),
    (lambda b: b["relaxation"].update(delta_T=b["relaxation"]["delta_T"] * 2), "relaxation.delta_T"),
    (lambda b: b["statements"].update(pac=b["statements"]["pac"].replace("0.9", "0.99")), "statements.pac"),
])
def test_edited_claims_are_rejected(genuine, tmp_path, edit, words):
    result = _not_confirmed(_forge(genuine[1], tmp_path, edit_body=edit))
    assert result.outcome is Outcome.REJECTED
    assert any(words in p for p in result.problems), result.problems


def test_points_replaced_by_near_copies_are_rejected(genuine, tmp_path):
    def near_copies(arrays):
        base = arrays["points"][0]
        arrays["points"] = (base + 1e-3 * np.arange(len(arrays["points"]))[:, None]).astype(np.float32)

    result = _not_confirmed(_forge(genuine[1], tmp_path, edit_arrays=near_copies))
    assert any("not the sample" in p for p in result.problems), result.problems


def test_swapped_student_pt_is_rejected(genuine, tmp_path):
    from pacverify.models import build_student, save_student

    target = _forge(genuine[1], tmp_path)
    save_student(build_student("mlp:2x64", (2,), 2, seed=123), target / "student.pt")
    body = json.loads((target / "certificate.json").read_text())
    body["files"]["student_pt"]["sha256"] = sha256_file(target / "student.pt")
    body["integrity"]["body_sha256"] = body_digest(body)
    (target / "certificate.json").write_text(json.dumps(body))
    result = _not_confirmed(target)
    assert any("different networks" in p for p in result.problems), result.problems


def test_teacher_pointing_nowhere_is_unchecked(genuine, tmp_path):
    target = _forge(genuine[1], tmp_path, edit_body=lambda b: b["files"]["teacher"].update(path="gone.onnx"))
    result = _not_confirmed(target)
    assert result.outcome is Outcome.UNCHECKED and result.exit_code == 1
    assert any("teacher" in u for u in result.unchecked)


def test_paths_outside_the_directory_are_refused(genuine, tmp_path):
    outside = tmp_path / "elsewhere.onnx"
    shutil.copy(genuine[1] / "student.onnx", outside)
    target = _forge(genuine[1], tmp_path, edit_body=lambda b: b["files"]["student_onnx"].update(path="../elsewhere.onnx"))
    result = _not_confirmed(target)
    assert result.outcome is Outcome.REJECTED
    assert any("leaves the certificate's directory" in p for p in result.problems)


def test_deleted_teacher_counterexamples_are_found_again(tmp_path):
    """REFUTED → CERTIFIED with the counterexamples deleted: check attacks the teacher again."""
    from helpers_certify import non_robust_teacher

    out = tmp_path / "run"
    out.mkdir()
    cert = certify(onnx_teacher(non_robust_teacher(), out / "teacher.onnx"), out=out, delta=0.1, seed=0, **TINY)
    if cert.record.teacher_check.counterexamples_delta == 0:
        pytest.skip("this seed found no teacher counterexample at 3δ")

    def certified(b):
        b["verdict"] = "CERTIFIED"
        b["teacher_check"].update(counterexamples_delta=0, counterexamples_delta_T=0)

    def no_cex(arrays):
        for key in ("teacher_cex_delta", "teacher_cex_delta_t"):
            arrays[key] = arrays[key][:0]
            arrays[f"{key}_index"] = arrays[f"{key}_index"][:0]

    result = _not_confirmed(_forge(out, tmp_path, edit_body=certified, edit_arrays=no_cex))
    assert any("REFUTED" in p or "counterexample" in p for p in result.problems), result.problems


def test_check_never_takes_code_or_trust_from_the_certificate(genuine, tmp_path):
    """§5: a certificate naming an architecture module and trust_pickle gets neither imported nor trusted."""
    marker = tmp_path / "ran.txt"
    (tmp_path / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\ndef factory():\n    return None\n")

    def evil(b):
        b["settings"].update(arch=f"{tmp_path / 'evil.py'}:factory", trust_pickle=True)

    result = _not_confirmed(_forge(genuine[1], tmp_path, edit_body=evil))
    assert not marker.exists()
    assert any("settings.arch" in p or "settings.trust_pickle" in p for p in result.problems), result.problems
