"""The certificate report (issue 17): reading order, readable tables, the failing points, images for image inputs, and
a screenshot of the HTML page in a headless browser showing that its figures load.

Every certificate here comes from a real ``certify`` run on tiny settings; the tests check rendering only.
"""
from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_certify import TINY, non_robust_teacher, onnx_teacher, robust_teacher

from pacverify.certificate.io import load_certificate, status_names
from pacverify.data import CallableSampler
from pacverify.pipeline.run import certify
from pacverify.report.blocks import fmt
from pacverify.report.render import render_html, render_markdown, write_report

FAST = dict(TINY, epochs=2, method="kd", complete=False)  # seconds, and every kind of failure on the pocket teacher
HTML_ORDER = ("verdict", "statements", "figures", "failing-points", "evidence", "settings", "files", "timings",
              "environment")
MD_ORDER = ("# pacverify certificate", "## Statements", "## Figures", "## Failing points", "## Evidence",
            "## Settings", "## Files", "## Timings", "## Environment")

# --- an image-input run: (s, 1, 8, 8) points, a linear teacher whose weights form a pattern on the 8×8 grid --------

_YY, _XX = np.mgrid[0:8, 0:8]
PATTERN = (np.exp(-((_XX - 4.5) ** 2 + (_YY - 2.5) ** 2) / 6.0)
           - 0.5 * np.exp(-((_XX - 2.0) ** 2 + (_YY - 5.5) ** 2) / 3.0)).reshape(-1)
PATTERN /= np.linalg.norm(PATTERN)


def _images(n: int, rng: np.random.Generator) -> np.ndarray:
    """Two classes on either side of PATTERN·x = 0, with noise orthogonal to PATTERN; (n, 1, 8, 8)."""
    side = np.where(rng.integers(0, 2, n) == 0, 1.0, -1.0)
    t = 0.15 + np.abs(rng.normal(0.6, 0.3, n))
    z = rng.normal(0.0, 0.4, (n, 64))
    z -= np.outer(z @ PATTERN, PATTERN)
    return (side[:, None] * t[:, None] * PATTERN + z).reshape(n, 1, 8, 8).astype(np.float32)


def _image_teacher(a: float = 20.0) -> torch.nn.Module:
    """Logits ±(a/2)·PATTERN·x: robust radius |PATTERN·x|, below 3δ = 0.3 at many κ-confident points."""
    linear = torch.nn.Linear(64, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(np.stack([a / 2 * PATTERN, -a / 2 * PATTERN]), dtype=torch.float32))
        linear.bias.zero_()
    return torch.nn.Sequential(torch.nn.Flatten(), linear).eval()


@pytest.fixture(scope="module")
def tabular_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tabular")
    return certify(non_robust_teacher(), out=out, delta=0.1, seed=1, **FAST), out


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("image")
    settings = {k: v for k, v in FAST.items() if k != "synthetic"}
    settings.update(student="linear", bound="tight", eta=0.5, coverage_points=0, attack_fresh_points=0,
                    attack_random_samples=0, attack_steps=10, attack_restarts=1, radius_tol=0.02)
    cert = certify(_image_teacher(), out=out, delta=0.1, seed=1,
                   sampler=CallableSampler(seed=1, fn=_images, name="images 8x8"), **settings)
    return cert, out


# --- reading the rendered page -----------------------------------------------------------------------------------

class _Tables(HTMLParser):
    """Every table of an HTML page as (section id, header cells, body rows), and every <img> with its section."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.tables: list[tuple[str, list[str], list[list[str]]]] = []
        self.images: list[tuple[str, str, str]] = []
        self._cell: list[str] | None = None
        self._row: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("section", "header") and attrs.get("id"):
            self.sections.append(attrs["id"])
        elif tag == "table":
            self.tables.append((self._where(), [], []))
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append((self._where(), attrs.get("src", ""), attrs.get("alt", "")))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            _, header, rows = self.tables[-1]
            if header:
                rows.append(self._row)
            else:
                header.extend(self._row)  # the first row is the header
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def _where(self) -> str:
        return self.sections[-1] if self.sections else ""


def _parse(page: str) -> _Tables:
    parser = _Tables()
    parser.feed(page)
    return parser


def _in_order(text: str, marks: tuple[str, ...]) -> list[int]:
    positions = [text.find(mark) for mark in marks]
    assert -1 not in positions, [m for m, p in zip(marks, positions, strict=True) if p == -1]
    return positions


def _md_cells(md: str) -> list[str]:
    return [cell.strip() for line in md.splitlines() if line.startswith("|") for cell in line.strip("|").split(" | ")]


# --- tests -------------------------------------------------------------------------------------------------------

def test_sections_in_reading_order_with_readable_tables_and_failing_points(tabular_run):
    cert, out = tabular_run
    page, md = (out / "report.html").read_text(), (out / "report.md").read_text()
    positions = _in_order(page, tuple(f"id='{anchor}'" for anchor in HTML_ORDER))
    assert positions == sorted(positions)
    positions = _in_order(md, MD_ORDER)
    assert positions == sorted(positions)
    assert md.startswith(f"# pacverify certificate: **{cert.verdict.value}**")

    parsed = _parse(page)
    cells = [c for _, header, rows in parsed.tables for c in header + [c for row in rows for c in row]]
    assert cells and not any("None" in c for c in cells)
    assert not any("None" in c for c in _md_cells(md))
    # every evidence table explains its rows: a meaning for each (most with a unit)
    evidence = [(where, header, rows) for where, header, rows in parsed.tables if header == ["quantity", "value",
                                                                                              "meaning"]]
    assert len(evidence) >= 6
    assert not [row for _, _, rows in evidence for row in rows if not row[2]], "rows without a meaning"
    verification = next(rows for where, _, rows in evidence if where == "verification")
    assert ["3δ", "0.3", "radius at which every required point was bounded (input units, L2 norm)"] in verification

    # one quantile table: rows = quantities, columns = the levels; the numbers are the certificate's
    (quantiles,) = [(h, rows) for where, h, rows in parsed.tables if where == "quantiles"]
    header, rows = quantiles
    assert header[:2] == ["quantity", "min"] and "median" in header and header[-2:] == ["max", "meaning (unit)"]
    recorded = cert.record.relaxation.certified_radius_quantiles
    row = next(r for r in rows if r[0] == "certified radius r_i")
    assert [c for c in row[1:-1] if c != "–"] == [fmt(v) for v in recorded.values()]
    assert "input units, L2 norm" in row[-1]
    assert "| quantity | min |" in md

    # the failing points: counts per kind as the certificate records them, and the examples
    v, t = cert.record.verification, cert.record.teacher_check
    counts = {r[0]: int(r[1]) for where, h, rows in parsed.tables if where == "failing-points" and h[0] == "kind"
              for r in rows}
    assert counts["falsified"] == v.falsified > 0 and counts["unknown"] == v.unknown
    assert counts["disagree"] == v.disagree > 0 and counts["teacher counterexample (δ)"] == t.counterexamples_delta > 0
    examples = next(rows for where, h, rows in parsed.tables if where == "failing-points" and h[0] == "point")
    assert len(examples) == 12 and {r[1] for r in examples} >= {"falsified", "disagree", "teacher counterexample (δ)"}
    names = status_names(cert.arrays["status"])
    for r in examples:
        i = int(r[0])
        assert r[1] in (names[i], "teacher counterexample (δ)")
        assert r[2] == fmt(cert.arrays["teacher_label"][i].item())
    # tabular inputs: the features that moved most, value at the point and at the counterexample
    header, features = next((h, rows) for where, h, rows in parsed.tables if where == "failing-points"
                            and "feature" in h)
    first = features[0]
    i, j = int(first[0]), int(first[3])
    assert first[4] == fmt(float(cert.arrays["points"][i, j]))
    assert not [img for img in parsed.images if img[0] == "failing-points"]  # no images for 2-D points
    assert "## Failing points" in md and "| feature |" in md
    for name in ("radius.png", "rho.png", "samples.png", "regions.png"):
        assert f"(report_figures/{name})" in md and (out / "report_figures" / name).stat().st_size > 1000


def test_image_inputs_show_point_counterexample_and_change_side_by_side(image_run, tmp_path):
    from matplotlib.image import imread

    cert, out = image_run
    arrays = cert.arrays
    assert arrays["points"].shape[1:] == (1, 8, 8)
    assert len(arrays["teacher_cex_delta_index"]) > 0 and len(arrays["student_cex_index"]) > 0
    loaded = load_certificate(out)  # rendered from what is on disk
    html_path, md_path = write_report(loaded, html_path=tmp_path / "report.html", markdown_path=tmp_path / "report.md")
    parsed = _parse(html_path.read_text())
    shown = [(src, alt) for where, src, alt in parsed.images if where == "failing-points"]
    assert 0 < len(shown) <= 12
    assert any("the teacher counterexample x′" in alt for _, alt in shown)
    assert any("the student counterexample x′" in alt for _, alt in shown)
    assert all(src.startswith("data:image/png;base64,") for src, _ in shown)
    assert not any("feature" in h for where, h, _ in parsed.tables if where == "failing-points")
    md = md_path.read_text()
    pngs = sorted((tmp_path / "report_figures").glob("failing_*.png"))
    assert len(pngs) == len(shown) and all(f"(report_figures/{p.name})" in md for p in pngs)
    for png in pngs[:3]:
        image = imread(io.BytesIO(png.read_bytes()), format="png")[..., :3]
        height, width = image.shape[:2]
        assert width > 2.5 * height  # three panels side by side
        spread = image.max(axis=2) - image.min(axis=2)
        grey, change = spread[:, : int(0.54 * width)], spread[:, int(0.64 * width): int(0.89 * width)]
        assert grey.max() < 0.05  # the point and its counterexample: grey levels
        assert (change > 0.2).sum() > 1000  # the change: on a red–blue scale


def test_mass_report_keeps_the_order_and_says_nothing_fails(tmp_path):
    teacher = onnx_teacher(robust_teacher(), tmp_path / "teacher.onnx")
    out = tmp_path / "mass"
    cert = certify(teacher, out=out, guarantee="mass", synthetic="gaussians", delta=0.05, eps=0.5, eta=0.1,
                   kappa=0.9, attack_steps=10, attack_restarts=1, attack_bisection=4, holdout=50)
    assert cert.mass and cert.record.oracle.inconsistent == 0
    page, md = (out / "report.html").read_text(), (out / "report.md").read_text()
    order = ("verdict", "statements", "figures", "map", "failing-points", "evidence", "settings", "environment")
    positions = _in_order(page, tuple(f"id='{anchor}'" for anchor in order))
    assert positions == sorted(positions)
    positions = _in_order(md, ("## Statements", "## Figures", "## The map M(κ)", "## Failing points", "## Evidence",
                               "## Settings", "## Environment"))
    assert positions == sorted(positions)
    assert "Nothing fails: no sample point has a teacher counterexample closer than its proven lower radius" in md
    parsed = _parse(page)
    cells = [c for _, header, rows in parsed.tables for c in header + [c for row in rows for c in row]]
    assert not any("None" in c for c in cells)
    table = next(rows for where, h, rows in parsed.tables if where == "map")
    assert [r[0] for r in table] == [fmt(r.kappa) for r in cert.record.confidence_map.table]
    assert any(where == "quantiles" for where, _, _ in parsed.tables)
    assert page.count("data:image/png;base64,") == 1
    assert render_html(cert).count("data:image/png;base64,") == 1
    again = render_markdown(cert, tmp_path / "again_figures")
    assert "(again_figures/confidence_map.png)" in again and (tmp_path / "again_figures/confidence_map.png").exists()


def _screenshot(chromium: str, page: Path, png: Path, profile: Path) -> np.ndarray:
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", "--hide-scrollbars", "--window-size=1200,6000", f"--screenshot={png}",
               page.resolve().as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert png.exists(), done.stderr[-2000:]
    from matplotlib.image import imread

    return imread(str(png))[..., :3]


def test_screenshot_shows_the_figures(image_run, tmp_path):
    """The page as a browser draws it: with its data-URI images it has far more coloured pixels (plots, changes)
    than the same page whose images are blanked (an image that does not load leaves only the page's own colours)."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed: no headless browser to take the screenshot")
    _, out = image_run
    written = out / "report.html"  # as certify wrote it
    page = written.read_text()
    blanked = tmp_path / "blanked.html"
    blanked.write_text(re.sub(r"src='data:image/png;base64,[^']*'", "src='data:image/png;base64,'", page))
    assert blanked.read_text().count("data:image/png;base64,'") == page.count("data:image/png;base64,") > 5
    shots = {}
    for name, html_file in (("report", written), ("blanked", blanked)):
        image = _screenshot(chromium, html_file, tmp_path / f"{name}.png", tmp_path / f"profile-{name}")
        spread = image.max(axis=2) - image.min(axis=2)
        # coloured: clearly saturated (the page's own pale backgrounds are not); inked: clearly not white
        shots[name] = (int((spread > 0.15).sum()), int((image.min(axis=2) < 0.9).sum()))
    keep = os.environ.get("PACVERIFY_SCREENSHOTS")  # a folder to keep the screenshots in, to look at them
    if keep:
        for name in ("report", "blanked"):
            shutil.copy(tmp_path / f"{name}.png", Path(keep) / f"{name}.png")
    coloured, inked = shots["report"]
    coloured_blank, inked_blank = shots["blanked"]
    assert coloured > 4 * coloured_blank and coloured > coloured_blank + 60_000, shots
    assert inked > inked_blank + 150_000, shots
