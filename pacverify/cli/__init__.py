"""The ``pacverify`` command line (DESIGN.md §4): parse, call the library, print.

Each sub-command lives in its own module with a ``register(subparsers)`` function that
adds its parser and sets ``func`` (a callable taking the parsed namespace, returning an
exit code). Errors the user can fix (:class:`pacverify.errors.InputError`) become exit
code 2 and a single line on stderr.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn, Sequence

from pacverify._version import __version__
from pacverify.errors import InputError

# Sub-command modules, in the order --help lists them.
COMMANDS = ("samples", "certify", "check", "report", "demo", "verify", "distill", "export")

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line and exit code 2."""

    def error(self, message: str) -> NoReturn:  # noqa: D102 - argparse API
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or with ``only`` the parser with that one sub-command (imports only its module)."""
    parser = _Parser(
        prog="pacverify",
        description="PAC robustness guarantees for large classifiers through verified, gradient-aligned students.",
    )
    parser.add_argument("--version", action="version", version=f"pacverify {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS if only is None else (only,):
        importlib.import_module(f"pacverify.cli.{name}").register(sub)
    return parser


def fail(message: str) -> int:
    """Print one line to stderr and return the bad-input exit code."""
    print(f"pacverify: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(first if first in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        return int(args.func(args))
    except InputError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        print("pacverify: interrupted", file=sys.stderr)
        return 130
