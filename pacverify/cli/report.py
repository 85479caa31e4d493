"""``pacverify report``: render a certificate as HTML and/or Markdown."""
from __future__ import annotations

import argparse

from pacverify.certificate.io import load_certificate
from pacverify.errors import InputError
from pacverify.report.render import write_report

HELP = "render a certificate as a self-contained HTML page and/or Markdown with figures"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help=HELP, description=HELP[0].upper() + HELP[1:] + ".")
    p.add_argument("certificate", help="certificate.json (or the directory holding it)")
    p.add_argument("--html", help="write the HTML report here")
    p.add_argument("--markdown", "--md", dest="markdown", help="write the Markdown report here (figures beside it)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.html and not args.markdown:
        raise InputError("give --html FILE and/or --markdown FILE")
    for path in write_report(load_certificate(args.certificate), html_path=args.html, markdown_path=args.markdown):
        print(f"wrote {path}")
    return 0
