"""Certificate files, integrity digest, JUnit/GitHub gate output and report rendering."""
from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from pacverify.certificate import schema as S
from pacverify.certificate.gate import emit_github, junit_xml, requirements
from pacverify.certificate.io import body_digest, load_certificate, write_certificate
from pacverify.errors import InputError
from pacverify.report.render import write_report


def _body(verdict="CERTIFIED", disagree=0, verified=5, delta_t=0.02):
    """A complete typed certificate body with the given counts (the other sections filled plausibly)."""
    pac = S.PacParameters(delta=0.05, eps=0.5, eta=0.1, kappa=0.9, norm="2", dim=2, vc_dimension=3, bound="thm38",
                          samples=300,
                          samples_required=244, tv=0.0, shifted_eps=0.5, n_classes=2)
    return S.CertificateBody(
        schema=S.SCHEMA, tool=S.Tool("pacverify", "test"), verdict=S.Verdict(verdict), reasons=["because"],
        statements=S.Statements(pac="With probability at least 0.9 ...", pac_delta_T=None, delta_T_note=None,
                                assumptions=["perfect student"], coverage="coverage sentence", scope="scope"),
        pac=pac,
        files=S.Files(teacher=S.FileRef(None, "0" * 64), student_onnx=S.FileRef("student.onnx", "1" * 64),
                      student_pt=S.FileRef("student.pt", "2" * 64),
                      data=S.DataSource("synthetic", "gaussians", None, 0), points=S.FileRef("points.npz", None),
                      labels=None),
        warnings=[],
        settings=S.Settings(seed=0, arch=None, trust_pickle=False, student="mlp:2x64", method="kdiga", epochs=None,
                            distill_options={}, verify_method="crown", complete=True, timeout_per_point=2.0,
                            domain=None, attack=S.AttackSettings(50, 5), coverage=S.CoverageSettings(200, None),
                            radius_search=S.RadiusSearch(0.3, 0.002), device="cpu",
                            allow_duplicates=False, global_check=False, global_timeout=60.0, outputs="logits"),
        distillation=S.Distillation(n=300, agreement=1.0, eq13_fraction=1.0, gd_mean=0.01, gc_mean=0.99,
                                    rho_quantiles={"0.5": 1.0}, rho_inf=0, norm="2", n_fresh=0, agreement_fresh=None,
                                    eq13_fraction_fresh=None, gd_mean_fresh=None, gc_mean_fresh=None,
                                    llm_radius=None, llm_student_mean=None, llm_teacher_mean=None, epochs_run=3,
                                    stopped_early=False, stop_reason="epoch budget: all 3 epochs run", student="mlp:2x64",
                                    student_search=None, notes=[], onnx_parity_max_abs_diff=1e-7),
        verification=S.Verification(radius=0.15, norm="2", method="crown", complete=True, required=5,
                                    verified=verified, falsified=0, unknown=5 - verified, disagree=disagree,
                                    not_confident=295),
        relaxation=S.Relaxation(delta_T=delta_t, rho_quantiles={"0.5": float("inf")}, margin_ratio_quantiles={},
                                gradient_cosine_quantiles={}, certified_radius_quantiles={},
                                teacher_radius_quantiles={}, cap=0.3, tol=0.002, formula="f", premises=["p"]),
        teacher_check=S.TeacherCheck(attack="pgd+random", steps=50, restarts=10, starts="spread", random_samples=2000,
                                     fresh_points=1000, fresh_points_attacked=40, fresh_points_attacked_delta_T=30,
                                     radius_delta=0.15, radius_delta_T=0.06, checked=5, counterexamples_delta=0,
                                     counterexamples_delta_T=0, note="n"),
        coverage=S.Coverage(lower=0.4, confidence=0.99, points=200, batch=200, declared_covered=90,
                            alpha_point=0.01, threshold=0.5, note=None),
        global_check=None,
        accuracy=None,
        timings={"verify": 0.1, "created": "now"},
        environment=S.Environment("3", "linux", "2", "1", "1", "1", "cpu", "local", 1, 2.0),
        integrity=S.Integrity(""))


def _arrays(n=8):
    rng = np.random.default_rng(0)
    g = np.linspace(-1, 1, 5)
    gx, gy = np.meshgrid(g, g)
    return {"points": rng.normal(size=(n, 2)), "required": np.arange(n) < 5, "status": np.array([1] * 5 + [0] * 3),
            "certified_radius": np.full(n, 0.2), "rho": np.full(n, 0.9), "grid_x": gx, "grid_y": gy,
            "grid_label": (gx + gy > 0).astype(int)}


def test_round_trip_and_digest(tmp_path):
    cert = write_certificate(_body(), _arrays(), tmp_path / "out")
    loaded = load_certificate(tmp_path / "out" / "certificate.json")
    assert loaded.body == cert.body
    assert loaded.body["integrity"]["body_sha256"] == body_digest(loaded.body)
    np.testing.assert_array_equal(loaded.arrays["points"], _arrays()["points"])
    assert loaded.verdict.exit_code == 0 and loaded.delta_T == 0.02


def test_load_refuses_bad_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_certificate(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="JSON"):
        load_certificate(tmp_path / "bad.json")
    write_certificate(_body(), _arrays(), tmp_path / "c")
    body = json.loads((tmp_path / "c" / "certificate.json").read_text())
    del body["relaxation"]
    (tmp_path / "c" / "certificate.json").write_text(json.dumps(body))
    with pytest.raises(InputError, match="lacks key.*relaxation"):
        load_certificate(tmp_path / "c")
    write_certificate(_body(), _arrays(), tmp_path / "d")
    (tmp_path / "d" / "points.npz").unlink()
    with pytest.raises(InputError, match="side file"):
        load_certificate(tmp_path / "d")


def test_junit_one_case_per_requirement(tmp_path):
    cert = write_certificate(_body(verified=4, disagree=1, verdict="NOT_CERTIFIED"), _arrays(), tmp_path)
    reqs = requirements(cert, min_delta_t=0.05)
    root = ET.fromstring(junit_xml(reqs))
    cases = {c.get("name"): c.find("failure") is not None for c in root.iter("testcase")}
    assert cases == {"distillation agreement": True, "verification": True, "teacher cross-check": False,
                     "coverage": False, "minimum delta_T": True}
    assert root.find("testsuite").get("failures") == "3"


def test_teacher_counterexamples_fail_the_cross_check_even_without_a_claim(tmp_path):
    """Issue 17: a NOT_CERTIFIED run whose teacher attack found counterexamples fails the cross-check case."""
    body = _body(verified=4, verdict="NOT_CERTIFIED")
    body = dataclasses.replace(body, teacher_check=dataclasses.replace(body.teacher_check, counterexamples_delta=9))
    cert = write_certificate(body, _arrays(), tmp_path)
    passed = {r.name: r.passed for r in requirements(cert)}
    assert passed["teacher cross-check"] is False


def test_junit_time_is_the_stages_seconds():
    from pacverify.cli.certify import stage_seconds

    assert stage_seconds({"sample": 1.5, "verify": 2.0, "verify_points_per_second": 400.0,
                          "created": "2026-12-01T00:00:00+00:00"}) == 3.5


def test_github_output_only_under_actions(tmp_path):
    cert = write_certificate(_body(), _arrays(), tmp_path)
    reqs = requirements(cert)
    assert emit_github(cert, reqs, environ={}) is None
    summary = tmp_path / "summary.md"
    text = emit_github(cert, reqs, environ={"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)})
    assert "::notice title=pacverify verification::" in text
    assert "| verification | pass |" in summary.read_text()


def test_reports_render(tmp_path):
    cert = write_certificate(_body(), _arrays(), tmp_path)
    html_path, md_path = write_report(cert, html_path=tmp_path / "r.html", markdown_path=tmp_path / "r.md")
    page = html_path.read_text()
    assert "CERTIFIED" in page and page.count("data:image/png;base64,") == 4
    md = md_path.read_text()
    assert md.startswith("# pacverify certificate: **CERTIFIED**")
    assert (tmp_path / "r_figures" / "regions.png").stat().st_size > 1000


def test_written_files_get_ordinary_permissions(tmp_path):
    import os
    import stat

    from pacverify.fileio import atomic_write_text

    path = atomic_write_text(tmp_path / "f.txt", "x")
    mode = stat.S_IMODE(os.stat(path).st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_radii_at_the_search_cap_are_one_bar_and_rho_ticks_are_few():
    """The radius histogram keeps radii that reached the cap apart ("≥ cap"); the ρ axis labels only a few ticks."""
    import io

    from matplotlib.image import imread

    from pacverify.report import plots

    radii = np.array([0.1, 0.2, 0.25, 0.6, 0.6, 0.6, np.nan])
    below, at_cap = plots.split_at_cap(radii, 0.6)
    assert at_cap == 3 and np.array_equal(below, [0.1, 0.2, 0.25])
    assert plots.split_at_cap(radii, None)[1] == 0 and plots.split_at_cap(radii, None)[0].size == 6
    for png in (plots.radius_histogram(radii, 0.3, 0.6), plots.radius_histogram(radii[:3], 0.3, 0.6),
                plots.radius_histogram(radii[3:6], 0.3, 0.6), plots.rho_histogram(np.linspace(0.8, 1.3, 50)),
                plots.rho_histogram(np.logspace(-3, 2, 50))):
        image = imread(io.BytesIO(png), format="png")
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    for rho in (np.linspace(0.8, 1.3, 50), np.logspace(-3, 2, 50), np.linspace(0.95, 1.05, 20)):
        fig = plots.rho_figure(rho)
        fig.canvas.draw()
        ax = fig.axes[0]
        lo, hi = ax.get_xlim()
        shown = [t for t, label in zip(ax.get_xticks(), ax.get_xticklabels(), strict=True)
                 if lo <= t <= hi and label.get_text()]
        assert 1 <= len(shown) <= 8, (rho.min(), rho.max(), [label.get_text() for label in ax.get_xticklabels()])
        assert not any(label.get_text() for label in ax.get_xticklabels(minor=True))
