"""Render a certificate as Markdown or self-contained HTML: verdict and statements first, then evidence and plots.

Rendering only; every number comes from the certificate (DESIGN.md §5: reports only render).
"""
from __future__ import annotations

import base64
import html
import os
from pathlib import Path

from pacverify.certificate.io import Certificate, status_names
from pacverify.certificate.schema import MassCertificateBody, MassStatements
from pacverify.fileio import atomic_write_bytes, atomic_write_text
from pacverify.report import plots


def _figures(cert: Certificate) -> list[tuple[str, str, bytes]]:
    """(file name, caption, png) for each figure the certificate's data supports."""
    record, arrays = cert.record, cert.arrays
    figs: list[tuple[str, str, bytes]] = []
    if isinstance(record, MassCertificateBody):
        if "lower" in arrays:
            figs.append(("confidence_map.png", "Robustness–confidence plot: lower radius l_i and attack radius u_i "
                         "against the teacher's confidence, with M(κ), δ and κ",
                         plots.confidence_map_plot(arrays["lower"], arrays["upper"], arrays["teacher_confidence"],
                                                   record.confidence_map.steps, record.pac.delta, record.pac.kappa,
                                                   arrays.get("holdout_confidence"), arrays.get("holdout_member"),
                                                   record.holdout.radius)))
        return figs
    required = arrays.get("required")
    if "certified_radius" in arrays and required is not None and required.any():
        figs.append(("radius.png", "Certified radii of the student at the required points, against 3δ",
                     plots.radius_histogram(arrays["certified_radius"][required], 3 * record.pac.delta,
                                            record.settings.radius_search.cap or 6 * record.pac.delta)))  # 6δ: the default cap
    if "rho" in arrays and required is not None and required.any():
        figs.append(("rho.png", "Margin-gradient ratios ρ_i (Prop 4.3)", plots.rho_histogram(arrays["rho"][required])))
    pac = record.pac
    figs.append(("samples.png", "Sample size against ε for this input dimension (Thm 3.8)",
                 plots.sample_size_curve(pac.dim, pac.eta, pac.eps, pac.norm)))
    if "grid_label" in arrays and "points" in arrays and arrays["points"].reshape(len(arrays["points"]), -1).shape[1] == 2:
        figs.append(("regions.png", "Decision regions of the teacher; sample points coloured by verification status",
                     plots.decision_map(arrays["grid_x"], arrays["grid_y"], arrays["grid_label"],
                                        arrays["points"].reshape(-1, 2), status_names(arrays["status"]))))
    return figs


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def _claims(cert: Certificate) -> list[tuple[str, str]]:
    """The printed claims in reading order, each with its title (absent ones left out)."""
    st = cert.record.statements
    if isinstance(st, MassStatements):
        mass = [("Mass statement", st.pac), ("Conditional form", st.conditional), ("Oracle", st.oracle),
                ("Held-out check", st.holdout), ("Scope", st.scope)]
        return [(title, text) for title, text in mass if text]
    claims = [("PAC statement (δ)", st.pac), ("PAC statement (δ_T)", st.pac_delta_T), ("δ_T (not claimed)", st.delta_T_note),
              ("Coverage", st.coverage)]
    g = getattr(cert.record, "global_check", None)
    if g is not None:
        claims.append(("Global robustness of the student", g.statement))
    return [(title, text) for title, text in claims if text]


def _sections(cert: Certificate) -> list[tuple[str, list[tuple[str, str]]]]:
    """The evidence tables, as (title, [(key, value)]) in reading order."""
    body = cert.body  # the JSON form: the tables show every key as written
    order = [("PAC parameters", "pac"), ("Oracle", "oracle"), ("Held-out check", "holdout"),
             ("Settings", "settings"), ("Files", "files"), ("Timings (s)", "timings"),
             ("Environment", "environment")] if cert.mass else [("PAC parameters", "pac"), ("Verification of the student", "verification"),
             ("Relaxed radius δ_T (Prop 4.3)", "relaxation"), ("Teacher cross-check", "teacher_check"),
             ("Guarantee coverage", "coverage"), ("Distillation quality", "distillation"),
             ("Settings", "settings"), ("Files", "files"), ("Timings (s)", "timings"), ("Environment", "environment")]
    out = []
    if cert.mass:
        cmap = body["confidence_map"]
        out.append(("The map M(κ)", [(f"κ = {r['kappa']:g}", f"M = {_fmt(r['radius'])}; {r['confident']} confident; "
                                      f"p̲ = {_fmt(r['p_lower'])}; ε/p̲ = {_fmt(r['conditional_eps'])}")
                                     for r in cmap["table"]] + [("requested κ", f"{cmap['kappa']:g}: M(κ) = "
                                                                                 f"{_fmt(cmap['radius'])}")]))
    for title, key in order:
        section = body.get(key)
        if isinstance(section, dict):
            out.append((title, [(k, _fmt(v)) for k, v in section.items() if k != "statement"]))
    return out


def render_markdown(cert: Certificate, assets_dir: str | os.PathLike) -> str:
    """Markdown text; figures are written as PNG files into ``assets_dir`` and linked relatively."""
    assets = Path(assets_dir)
    assets.mkdir(parents=True, exist_ok=True)
    record = cert.record
    lines = [f"# pacverify certificate: **{record.verdict.value}**", ""]
    lines += [f"- {reason}" for reason in record.reasons] + [""]
    lines += [f"> **Warning:** {w}" for w in record.warnings] + ([""] if record.warnings else [])
    for title, text in _claims(cert):
        lines += [f"**{title}.** {text}", ""]
    if record.statements.assumptions:
        lines += ["**Assumptions.**", ""] + [f"1. {a}" for a in record.statements.assumptions] + [""]
    for title, rows in _sections(cert):
        lines += [f"## {title}", "", "| key | value |", "|---|---|"]
        lines += [f"| {k} | {v.replace('|', '/')} |" for k, v in rows] + [""]
    lines += ["## Figures", ""]
    for name, caption, png in _figures(cert):
        atomic_write_bytes(assets / name, png)
        lines += [f"![{caption}]({assets.name}/{name})", "", f"*{caption}*", ""]
    return "\n".join(lines)


def render_html(cert: Certificate) -> str:
    """One self-contained HTML page (figures embedded as data URIs)."""
    record = cert.record
    esc = html.escape
    verdict = record.verdict.value
    colour = {"CERTIFIED": "#1b7f3b", "NOT_CERTIFIED": "#b36b00", "REFUTED": "#b3261e"}.get(verdict, "#333")
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>pacverify certificate</title>",
             "<style>body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;line-height:1.45}"
             "table{border-collapse:collapse;margin-bottom:1.5em}td{border:1px solid #ccc;padding:.2em .6em;"
             "vertical-align:top;font-size:.9em}.stmt{background:#f5f7fa;padding:.8em;border-left:4px solid #4c78a8}"
             "figure{display:inline-block;margin:0 1em 1em 0}figcaption{font-size:.85em;color:#555}</style>",
             "</head><body>", f"<h1>pacverify certificate: <span style='color:{colour}'>{esc(verdict)}</span></h1>",
             "<ul>" + "".join(f"<li>{esc(r)}</li>" for r in record.reasons) + "</ul>"]
    parts += [f"<p style='color:#b36b00'><b>Warning:</b> {esc(w)}</p>" for w in record.warnings]
    for title, text in _claims(cert):
        parts.append(f"<p class='stmt'><b>{title}.</b> {esc(text)}</p>")
    if record.statements.assumptions:
        parts.append("<p><b>Assumptions.</b></p><ol>" +
                     "".join(f"<li>{esc(a)}</li>" for a in record.statements.assumptions) + "</ol>")
    for title, rows in _sections(cert):
        parts.append(f"<h2>{esc(title)}</h2><table>" +
                     "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in rows) + "</table>")
    parts.append("<h2>Figures</h2>")
    for _, caption, png in _figures(cert):
        data = base64.b64encode(png).decode("ascii")
        parts.append(f"<figure><img src='data:image/png;base64,{data}' alt='{esc(caption)}'>"
                     f"<figcaption>{esc(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(cert: Certificate, *, html_path: str | os.PathLike | None = None,
                 markdown_path: str | os.PathLike | None = None) -> list[Path]:
    """Write the HTML and/or Markdown report whole; returns the paths written."""
    written = []
    if html_path is not None:
        written.append(atomic_write_text(html_path, render_html(cert)))
    if markdown_path is not None:
        md = Path(markdown_path)
        text = render_markdown(cert, md.parent / f"{md.stem}_figures")
        written.append(atomic_write_text(md, text))
    return written
