"""Render a certificate as Markdown or self-contained HTML.

Reading order (:mod:`.document`): verdict and reasons, statements, figures, (mass mode: the map M(κ)), failing
points, evidence tables, and last settings, files, timings and environment. The HTML page embeds its figures as data
URIs; the Markdown links PNG files written beside it. Rendering only; every number comes from the certificate
(DESIGN.md §5: reports only render).
"""
from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path

from pacverify.certificate.io import Certificate
from pacverify.fileio import atomic_write_bytes, atomic_write_text
from pacverify.report.blocks import Block, Figure, Items, Section, Table, Text
from pacverify.report.document import Document, build

VERDICT_COLOURS = {"CERTIFIED": "#1b7f3b", "NOT_CERTIFIED": "#b36b00", "REFUTED": "#b3261e"}

# --- Markdown ------------------------------------------------------------------------------------------------------


def _slug(title: str) -> str:
    """The anchor GitHub-style Markdown viewers give a heading."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def _md_cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|") or " "


def _md_table(table: Table) -> list[str]:
    align = ["---:" if i in table.numeric else "---" for i in range(len(table.header))]
    lines = ["| " + " | ".join(_md_cell(h) for h in table.header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    lines.append("")
    if table.caption:
        lines += [f"*{table.caption}*", ""]
    return lines


def _md_blocks(blocks: list[Block], assets: Path) -> list[str]:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Section):
            lines += ["#" * block.level + " " + block.title, ""] + _md_blocks(block.blocks, assets)
        elif isinstance(block, Text):
            if block.kind == "statement":
                lines += [f"**{block.title}.** {block.text}" if block.title else block.text, ""]
            elif block.kind == "warning":
                lines += [f"> **Warning:** {block.text}", ""]
            elif block.kind == "note":
                lines += [f"*{block.text}*", ""]
            else:
                lines += [block.text, ""]
        elif isinstance(block, Items):
            if block.title:
                lines += [f"**{block.title}.**", ""]
            lines += [f"{'1.' if block.ordered else '-'} {item}" for item in block.items] + [""]
        elif isinstance(block, Table):
            lines += _md_table(block)
        elif isinstance(block, Figure):
            atomic_write_bytes(assets / block.name, block.png)
            lines += [f"![{block.caption}]({assets.name}/{block.name})", "", f"*{block.caption}*", ""]
    return lines


def render_markdown(cert: Certificate, assets_dir: str | os.PathLike) -> str:
    """Markdown text of the report; figures are written as PNG files into ``assets_dir`` and linked relatively
    (by the directory's name: the Markdown file is meant to sit beside it). Failing-point images left there by an
    earlier rendering are removed first."""
    return _markdown(build(cert), Path(assets_dir))


def _markdown(doc: Document, assets: Path) -> str:
    assets.mkdir(parents=True, exist_ok=True)
    for stale in assets.glob("failing_*.png"):
        stale.unlink()
    lines = [f"# pacverify certificate: **{doc.verdict}**", ""]
    lines += _md_blocks(doc.head, assets)
    lines += ["Contents: " + " · ".join(f"[{s.title}](#{_slug(s.title)})" for s in doc.sections), ""]
    lines += _md_blocks(list(doc.sections), assets)
    return "\n".join(lines).rstrip("\n") + "\n"


# --- HTML ----------------------------------------------------------------------------------------------------------

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:66em;margin:2em auto;padding:0 1em;
 line-height:1.45;color:#1d1d1f}
h1{margin-bottom:.3em}h2{border-bottom:2px solid #e3e7ee;padding-bottom:.2em;margin-top:2em}
h3{margin-top:1.5em;color:#333}
nav{font-size:.9em;margin:1em 0 1.5em}nav a{margin-right:1em;color:#2f5f98;text-decoration:none}
.verdict{padding:.1em .45em;border-radius:.25em;color:#fff}
header ul{margin:.3em 0 .8em}.note{color:#555;font-size:.9em}
.warning{background:#fff6e5;border-left:4px solid #b36b00;padding:.5em .8em;margin:.6em 0}
.stmt{background:#f5f7fa;padding:.7em .9em;border-left:4px solid #4c78a8;margin:.8em 0}
table{border-collapse:collapse;margin:.4em 0 1.2em;font-size:.88em}
th{background:#eef2f7;text-align:left;font-weight:600}
td,th{border:1px solid #d5dbe3;padding:.22em .6em;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}td.num{white-space:nowrap}
td:last-child{color:#444}p.caption{font-size:.85em;color:#555;margin:-.9em 0 1.4em}
tr.group td{border-top:2px solid #9aa7b8}
.figures{display:flex;flex-wrap:wrap;gap:1.2em;margin:.6em 0 1.2em}
figure{margin:0;flex:0 1 calc(50% - .6em);min-width:0}figure:only-child{flex-basis:70%}
figure img{width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
ol li,ul li{margin-bottom:.25em}
"""


def _html_table(table: Table) -> str:
    esc = html.escape

    def cls(i: int, text: str = "") -> str:  # numbers right-aligned; a long text in a numeric column wraps as text
        return " class='num'" if i in table.numeric and len(text) <= 24 else ""

    head = "".join(f"<th{cls(i)}>{esc(h)}</th>" for i, h in enumerate(table.header))
    body = "".join(("<tr class='group'>" if n in table.groups and n else "<tr>")
                   + "".join(f"<td{cls(i, c)}>{esc(c)}</td>" for i, c in enumerate(row)) + "</tr>"
                   for n, row in enumerate(table.rows))
    caption = f"<p class='caption'>{esc(table.caption)}</p>" if table.caption else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{caption}"


def _html_blocks(blocks: list[Block]) -> list[str]:
    esc = html.escape
    parts: list[str] = []
    for n, block in enumerate(blocks):
        if isinstance(block, Figure) and (n == 0 or not isinstance(blocks[n - 1], Figure)):
            parts.append("<div class='figures'>")  # a run of figures: two to a row

        if isinstance(block, Section):
            parts.append(f"<section id='{esc(block.anchor)}'><h{block.level}>{esc(block.title)}</h{block.level}>")
            parts += _html_blocks(block.blocks)
            parts.append("</section>")
        elif isinstance(block, Text):
            if block.kind == "statement":
                title = f"<b>{esc(block.title)}.</b> " if block.title else ""
                parts.append(f"<p class='stmt'>{title}{esc(block.text)}</p>")
            elif block.kind == "warning":
                parts.append(f"<p class='warning'><b>Warning:</b> {esc(block.text)}</p>")
            else:
                parts.append(f"<p class='{'note' if block.kind == 'note' else 'text'}'>{esc(block.text)}</p>")
        elif isinstance(block, Items):
            tag = "ol" if block.ordered else "ul"
            if block.title:
                parts.append(f"<p><b>{esc(block.title)}.</b></p>")
            parts.append(f"<{tag}>" + "".join(f"<li>{esc(item)}</li>" for item in block.items) + f"</{tag}>")
        elif isinstance(block, Table):
            parts.append(_html_table(block))
        elif isinstance(block, Figure):
            data = base64.b64encode(block.png).decode("ascii")
            parts.append(f"<figure><img src='data:image/png;base64,{data}' alt='{esc(block.caption)}'>"
                         f"<figcaption>{esc(block.caption)}</figcaption></figure>")
            if n + 1 == len(blocks) or not isinstance(blocks[n + 1], Figure):
                parts.append("</div>")
    return parts


def render_html(cert: Certificate) -> str:
    """One self-contained HTML page of the report (figures embedded as data URIs, no external resource)."""
    return _html(build(cert))


def _html(doc: Document) -> str:
    esc = html.escape
    colour = VERDICT_COLOURS.get(doc.verdict, "#333")
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<title>pacverify certificate: {esc(doc.verdict)}</title><style>{STYLE}</style></head><body>",
             f"<header id='verdict'><h1>pacverify certificate: <span class='verdict' style='background:{colour}'>"
             f"{esc(doc.verdict)}</span></h1>"]
    parts += _html_blocks(doc.head)
    parts.append("</header><nav>" + "".join(f"<a href='#{esc(s.anchor)}'>{esc(s.title)}</a>" for s in doc.sections)
                 + "</nav>")
    parts += _html_blocks(list(doc.sections))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(cert: Certificate, *, html_path: str | os.PathLike | None = None,
                 markdown_path: str | os.PathLike | None = None) -> list[Path]:
    """Write the HTML and/or Markdown report whole; returns the paths written. The Markdown's figures go into
    ``<stem>_figures/`` beside it."""
    written: list[Path] = []
    if html_path is None and markdown_path is None:
        return written
    doc = build(cert)  # once: the figures are drawn once for both outputs
    if html_path is not None:
        written.append(atomic_write_text(html_path, _html(doc)))
    if markdown_path is not None:
        md = Path(markdown_path)
        written.append(atomic_write_text(md, _markdown(doc, md.parent / f"{md.stem}_figures")))
    return written
