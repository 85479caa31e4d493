"""What the report says, in reading order, as :mod:`.blocks` (the same for Markdown and HTML).

Order (issue 17): the verdict and its reasons; the statements (PAC statements, assumptions, coverage, scope); the
figures; in mass mode the map M(κ); the failing points; the evidence tables; and last the settings, files, timings
and environment. Rendering only: every number is the certificate's (DESIGN.md §5: reports only render).
"""
from __future__ import annotations

from dataclasses import dataclass

from pacverify.certificate.io import Certificate, status_names
from pacverify.certificate.schema import MassCertificateBody, MassStatements
from pacverify.report import plots
from pacverify.report.blocks import Block, Figure, Items, Section, Table, Text, fmt
from pacverify.report.failing import failing_section
from pacverify.report.tables import (
    environment_table,
    files_table,
    norm_name,
    quantile_table,
    section_blocks,
    settings_table,
    student_search_blocks,
    timings_table,
)


@dataclass(frozen=True)
class Document:
    """The report: the ``verdict``, the lines under it (``head``: reasons, warnings, the run in one line) and the
    ``sections`` in reading order."""

    verdict: str
    head: list[Block]
    sections: list[Section]


def figures(cert: Certificate) -> list[Figure]:
    """Each figure the certificate's data supports, with its file name and caption."""
    record, arrays = cert.record, cert.arrays
    figs: list[Figure] = []
    if isinstance(record, MassCertificateBody):
        if "lower" in arrays:
            figs.append(Figure("confidence_map.png", "Robustness–confidence plot: lower radius l_i and attack radius "
                               "u_i against the teacher's confidence, with M(κ), δ and κ",
                               plots.confidence_map_plot(arrays["lower"], arrays["upper"],
                                                         arrays["teacher_confidence"], record.confidence_map.steps,
                                                         record.pac.delta, record.pac.kappa,
                                                         arrays.get("holdout_confidence"),
                                                         arrays.get("holdout_member"), record.holdout.radius)))
        return figs
    required = arrays.get("required")
    if "certified_radius" in arrays and required is not None and required.any():
        figs.append(Figure("radius.png", "Certified radii of the student at the required points, against 3δ",
                           plots.radius_histogram(arrays["certified_radius"][required], 3 * record.pac.delta,
                                                  record.settings.radius_search.cap or 6 * record.pac.delta)))
    if "rho" in arrays and required is not None and required.any():
        figs.append(Figure("rho.png", "Margin-gradient ratios ρ_i (Prop 4.3)",
                           plots.rho_histogram(arrays["rho"][required])))
    pac = record.pac
    bound = "Thm 3.8" if pac.bound == "thm38" else f"the {pac.bound} ε-net bound"
    figs.append(Figure("samples.png", f"Sample size against ε for this input dimension ({bound}, as for this sample)",
                       plots.sample_size_curve(pac.dim, pac.eta, pac.eps, pac.norm, pac.bound)))
    points = arrays.get("points")
    if "grid_label" in arrays and points is not None and points.reshape(len(points), -1).shape[1] == 2:
        figs.append(Figure("regions.png", "Decision regions of the teacher; sample points coloured by verification "
                           "status", plots.decision_map(arrays["grid_x"], arrays["grid_y"], arrays["grid_label"],
                                                        points.reshape(-1, 2), status_names(arrays["status"]))))
    return figs


def _head(cert: Certificate) -> list[Block]:
    record, pac = cert.record, cert.record.pac
    blocks: list[Block] = [Items(list(record.reasons))] if record.reasons else []
    blocks += [Text(w, kind="warning") for w in record.warnings]
    created = record.timings.get("created")
    mode = "mass mode" if cert.mass else "ball mode"
    blocks.append(Text(f"{mode.capitalize()}: s = {pac.samples} sample points in m = {pac.dim} dimensions; "
                       f"δ = {fmt(pac.delta)}, ε = {fmt(pac.eps)}, η = {fmt(pac.eta)}, κ = {fmt(pac.kappa)}, "
                       f"{norm_name(pac.norm)} norm. Written by {record.tool.name} {record.tool.version}"
                       + (f" on {created}." if created else "."), kind="note"))
    return blocks


def _statements(cert: Certificate) -> Section:
    st = cert.record.statements
    if isinstance(st, MassStatements):
        claims = [("Mass statement", st.pac), ("Conditional form", st.conditional), ("Oracle", st.oracle),
                  ("Held-out check", st.holdout)]
    else:
        claims = [("PAC statement (δ)", st.pac), ("PAC statement (δ_T)", st.pac_delta_T),
                  ("δ_T (not claimed)", st.delta_T_note), ("Coverage", st.coverage)]
        for attribute, title in (("global_check", "Global robustness of the student"),
                                 ("accuracy", "Accuracy on the labelled points")):
            section = getattr(cert.record, attribute, None)
            if section is not None:
                claims.append((title, section.statement))
    blocks: list[Block] = [Text(text, kind="statement", title=title) for title, text in claims if text]
    if st.assumptions:
        blocks.append(Items(list(st.assumptions), ordered=True, title="Assumptions (the statements rest on them)"))
    if st.scope:
        blocks.append(Text(st.scope, kind="statement", title="Scope"))
    return Section("Statements", "statements", blocks)


def _evidence_ball(cert: Certificate) -> Section:
    body, norm = cert.body, cert.record.pac.norm
    subsections: list[Section] = []

    def add(title: str, anchor: str, key: str, extra: list[Block] | None = None, skip: tuple[str, ...] = ()) -> None:
        values = body.get(key)
        if not isinstance(values, dict):
            return
        blocks = section_blocks(key, values, norm, skip=skip) + (extra or [])
        if blocks:
            subsections.append(Section(title, anchor, blocks, level=3))

    add("PAC parameters", "pac", "pac")
    add("Verification of the student", "verification", "verification")
    quantiles = quantile_table(body, norm)
    if quantiles is not None:
        subsections.append(Section("Per-point quantities", "quantiles", [quantiles], level=3))
    relaxation = body.get("relaxation") or {}
    add("Relaxed radius δ_T (Prop 4.3)", "relaxation", "relaxation",
        [Items(list(relaxation.get("premises") or []), title="Premises of Prop 4.3")] if relaxation.get("premises")
        else [])
    add("Teacher cross-check", "teacher-check", "teacher_check")
    add("Guarantee coverage", "coverage", "coverage")
    notes = (body.get("distillation") or {}).get("notes") or []
    add("Distillation quality", "distillation", "distillation", [Items(list(notes), title="Notes")] if notes else [])
    search = (body.get("distillation") or {}).get("student_search")
    if isinstance(search, dict) and search:
        subsections.append(Section("Student search (--student auto)", "student-search",
                                   student_search_blocks(search), level=3))
    add("Global robustness of the student", "global-check", "global_check", skip=("statement",))
    add("Accuracy on the labelled points", "accuracy", "accuracy", skip=("statement",))
    return Section("Evidence", "evidence", list(subsections))


def _map_section(cert: Certificate) -> Section:
    cmap = cert.body["confidence_map"]
    rows = [(fmt(r["kappa"]), fmt(r["radius"]), str(r["confident"]), fmt(r["p_lower"]), fmt(r["conditional_eps"]))
            for r in cmap["table"]]
    unit = f"input units, {norm_name(cert.record.pac.norm)} norm"
    return Section("The map M(κ)", "map", [
        Text(f"At the requested κ = {fmt(cmap['kappa'])}: M(κ) = {fmt(cmap['radius'])} ({unit}).", kind="p"),
        Table(("κ", "M(κ)", "confident points", "p̲(κ)", "ε/p̲(κ)"), rows, numeric=(0, 1, 2, 3, 4),
              caption=f"M(κ): smallest lower radius l_i at a κ-confident sample point ({unit}); confident points: "
                      "sample points with conf_T ≥ κ; p̲(κ): lower bound on Pr[conf_T(x) ≥ κ] (the sample fraction "
                      f"minus the DKW margin {fmt(cmap['dkw_margin'])}); ε/p̲(κ): the conditional bound "
                      "(∞ when p̲ = 0).")])


def _evidence_mass(cert: Certificate) -> Section:
    body, norm = cert.body, cert.record.pac.norm
    subsections: list[Section] = []
    for title, anchor, key, skip in (("PAC parameters", "pac", "pac", ()), ("Oracle", "oracle", "oracle", ()),
                                     ("Held-out check", "holdout", "holdout", ()),
                                     ("Confidence map", "confidence-map", "confidence_map", ("table", "steps"))):
        values = body.get(key)
        if not isinstance(values, dict):
            continue
        blocks = section_blocks(key, values, norm, skip=skip)
        if values.get("premises"):
            blocks.append(Items(list(values["premises"]), title="Transfer premises"))
        if blocks:
            subsections.append(Section(title, anchor, blocks, level=3))
        quantiles = quantile_table(body, norm) if key == "oracle" else None
        if quantiles is not None:
            subsections.append(Section("Per-point quantities", "quantiles", [quantiles], level=3))
    relaxation = section_blocks("mass_relaxation", body.get("relaxation") or {}, norm)
    if relaxation:
        subsections.append(Section("Radius of the statement", "relaxation", relaxation, level=3))
    return Section("Evidence", "evidence", list(subsections))


def _run_sections(cert: Certificate) -> list[Section]:
    body, norm = cert.body, cert.record.pac.norm
    return [Section("Settings", "settings", [settings_table(body.get("settings") or {}, norm)]),
            Section("Files", "files", [files_table(body.get("files") or {})]),
            Section("Timings", "timings", [timings_table(body.get("timings") or {})]),
            Section("Environment", "environment", [environment_table(body.get("environment") or {})])]


def build(cert: Certificate) -> Document:
    """The report of ``cert`` in reading order."""
    figs: list[Block] = list(figures(cert))
    sections = [_statements(cert), Section("Figures", "figures", figs or [Text("No figure applies.")])]
    if cert.mass:
        sections += [_map_section(cert), failing_section(cert), _evidence_mass(cert)]
    else:
        sections += [failing_section(cert), _evidence_ball(cert)]
    return Document(cert.record.verdict.value, _head(cert), sections + _run_sections(cert))

