"""The report as a document: sections of text, tables and figures, independent of Markdown or HTML.

:mod:`.document` builds the blocks from a certificate; :mod:`.render` writes them as Markdown or HTML. Every cell is
already a string here, so both outputs show the same numbers.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Union


@dataclass(frozen=True)
class Text:
    """A paragraph. ``kind``: "p" (plain), "statement" (a claim, boxed, with its ``title``), "note" (small, grey)
    or "warning"."""

    text: str
    kind: str = "p"
    title: str | None = None


@dataclass(frozen=True)
class Items:
    """A bulleted (or numbered, ``ordered``) list, with an optional bold ``title`` line above it."""

    items: list[str]
    ordered: bool = False
    title: str | None = None


@dataclass(frozen=True)
class Table:
    """A table with a header row. ``numeric`` lists the columns to right-align (numbers); ``groups`` the rows that
    start a group of rows (set apart by a rule in HTML)."""

    header: tuple[str, ...]
    rows: Sequence[tuple[str, ...]]
    numeric: tuple[int, ...] = ()
    caption: str | None = None
    groups: tuple[int, ...] = ()


@dataclass(frozen=True)
class Figure:
    """A PNG figure: ``name`` is its file name when written beside the Markdown report."""

    name: str
    caption: str
    png: bytes


@dataclass(frozen=True)
class Section:
    """A titled part of the report (``level`` 2 or 3); ``anchor`` is its HTML id."""

    title: str
    anchor: str
    blocks: list[Block] = field(default_factory=list)
    level: int = 2


Block = Union[Text, Items, Table, Figure, Section]  # noqa: UP007 - a runtime alias on Python 3.10


def fmt(value: Any) -> str:
    """A value as the report prints it: floats to 6 significant digits, ±∞ for infinite floats (the JSON's "inf"),
    booleans as yes/no, lists joined with "; ", dicts as "key: value" pairs; ``None`` as the empty string (callers
    leave such rows out)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str) and value in ("inf", "-inf"):
        return "∞" if value == "inf" else "−∞"
    if isinstance(value, float):
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        if math.isnan(value):
            return "n/a"
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {fmt(v)}" for k, v in value.items()) or "(none)"
    if isinstance(value, (list, tuple)):
        return "; ".join(fmt(v) for v in value) or "(none)"
    return str(value)
