"""The ``pacverify`` command line (DESIGN.md §4): parse, call the library, print.

Each sub-command lives in its own module with a ``register(subparsers)`` function that
adds its parser and sets ``func`` (a callable taking the parsed namespace, returning an
exit code). Before the command runs, every place it will write (``--out``, ``--json``,
``--junit``, ``--html``, ``--markdown``, ``--cex``, ``--checkpoint-dir``: :data:`OUTPUTS`) is checked
without creating anything. Errors the user can fix (:class:`pacverify.errors.InputError`, and
running out of memory) become exit code 2 and a single line on stderr; any other exception is an
internal error: exit code 4 (never 1, which CI reads as NOT_CERTIFIED) and one line pointing to
``--debug``, which prints the traceback. Python warnings of the libraries underneath (torch, onnx)
are not shown unless ``--debug``: pacverify's own warnings are lines of its output.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
import warnings
from typing import NoReturn, Sequence

from pacverify._version import __version__
from pacverify.allocator import keep_freed_memory
from pacverify.errors import InputError

# Sub-command modules, in the order --help lists them.
COMMANDS = ("samples", "certify", "check", "report", "demo", "verify", "distill", "export")

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 4

# Where each command writes: (namespace attribute, "file" or "dir", option name), checked before any work.
OUTPUTS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "certify": (("out", "dir", "--out"), ("json", "file", "--json"), ("junit", "file", "--junit")),
    "demo": (("out", "dir", "--out"),),
    "distill": (("out", "dir", "--out"), ("checkpoint_dir", "dir", "--checkpoint-dir")),
    "export": (("out", "file", "--out"),),
    "verify": (("json", "file", "--json"), ("cex", "file", "--cex")),
    "report": (("html", "file", "--html"), ("markdown", "file", "--markdown")),
}

_QUIET_LOGGERS = ("torch", "onnx", "onnxruntime", "onnxscript")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line and exit code 2."""

    def error(self, message: str) -> NoReturn:  # noqa: D102 - argparse API
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or with ``only`` the parser with that one sub-command (imports only its module)."""
    parser = _Parser(
        prog="pacverify",
        description="PAC robustness guarantees for large classifiers through verified, gradient-aligned students.",
    )
    parser.add_argument("--version", action="version", version=f"pacverify {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="on an internal error print the traceback; show the warnings of torch and onnx "
                             "(accepted anywhere on the command line)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS if only is None else (only,):
        importlib.import_module(f"pacverify.cli.{name}").register(sub)
    return parser


def one_line(message: str) -> str:
    """``message`` as one line: its lines joined by spaces (a message is one sentence, never a block)."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


def fail(message: str) -> int:
    """Print one line to stderr and return the bad-input exit code."""
    print(f"pacverify: error: {one_line(message)}", file=sys.stderr)
    return EXIT_BAD_INPUT


def check_outputs(args: argparse.Namespace) -> None:
    """Check every output location of the command (:data:`OUTPUTS`) before it does any work; InputError if one
    cannot be written (a missing or unwritable directory, a directory where a file is expected, or the reverse)."""
    from pacverify.fileio import check_output_dir, check_output_file

    for attr, kind, option in OUTPUTS.get(args.command, ()):
        value = getattr(args, attr, None)
        if value is None or value is False or value is True:
            continue
        if kind == "dir":
            check_output_dir(value, option)
        else:
            check_output_file(value, option)


def _split_debug(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` without ``--debug`` (accepted before or after the command, not after ``--``) and whether it was given."""
    end = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:end]
    return [a for a in argv[:end] if a != "--debug"] + argv[end:], debug


def _internal_error(exc: BaseException, debug: bool) -> int:
    if debug:
        traceback.print_exception(exc)
    text = one_line(str(exc)) or "(no message)"
    where = "the traceback is above" if debug else "rerun with --debug for the traceback"
    print(f"pacverify: internal error: {type(exc).__name__}: {text}; {where}", file=sys.stderr)
    return EXIT_INTERNAL


def main(argv: Sequence[str] | None = None) -> int:
    argv, debug = _split_debug(list(sys.argv[1:] if argv is None else argv))
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(first if first in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    levels = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
    with warnings.catch_warnings():
        if not debug:
            warnings.simplefilter("ignore")  # torch / onnx warnings are several lines of text about their internals
            for name in _QUIET_LOGGERS:
                logging.getLogger(name).setLevel(logging.ERROR)
        try:
            check_outputs(args)
            keep_freed_memory()   # fixed allocator thresholds: no page-fault storms between chunks (pacverify.allocator)
            return int(args.func(args))
        except InputError as exc:
            return fail(str(exc))
        except KeyboardInterrupt:
            print("pacverify: interrupted", file=sys.stderr)
            return 130
        except MemoryError as exc:
            return fail(f"not enough memory ({one_line(str(exc)) or 'an allocation failed'}); use fewer points "
                        "(a larger --eps or --eta, or a smaller --samples) or a machine with more memory")
        except OSError as exc:
            if exc.filename is None:
                return _internal_error(exc, debug)
            return fail(f"cannot access {exc.filename}: {exc.strerror or exc}")
        except Exception as exc:  # a bug, not a bad input: its own exit code
            return _internal_error(exc, debug)
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
