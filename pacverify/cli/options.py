"""Option declarations that several sub-commands share (not a sub-command itself).

``--domain LO,HI`` takes values that start with '-' (``--domain -3,3``). argparse reads an argument
that starts with '-' as an option unless it looks like a negative number (``-3``, ``-0.5``), so
``--domain -3,3`` would fail with "expected one argument". :func:`add_domain_option` widens that
test, for the parser it declares the option on, to ``-NUMBER,...``: no option name contains a comma,
so nothing else changes. (``--domain=-3,3`` works in any case.) The value is read by
:func:`pacverify.validation.parse_domain` when the command runs.
"""
from __future__ import annotations

import argparse
import re

# argparse's own negative-number test, plus '-' followed by a number and a comma (a negative LO of LO,HI).
_NEGATIVE_VALUE = re.compile(r"^-\d+$|^-\d*\.\d+$|^-\.?\d[^\s,]*,")


def add_domain_option(p: argparse.ArgumentParser, help: str) -> None:
    """Declare ``--domain LO,HI`` on the parser ``p`` such that negative bounds parse (module docstring)."""
    p.add_argument("--domain", metavar="LO,HI", help=f"{help}; negative bounds as in --domain -3,3")
    p._negative_number_matcher = _NEGATIVE_VALUE
