"""``pacverify check``: re-verify a certificate; exit with its verdict's code when confirmed, 1 when rejected."""
from __future__ import annotations

import argparse

from pacverify.check import check_certificate

HELP = "re-check a certificate: hashes, sample size, a fresh verification of the student, δ_T and the verdict"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help=HELP, description=HELP[0].upper() + HELP[1:] + ".")
    p.add_argument("certificate", help="certificate.json (or the directory holding it)")
    p.add_argument("--teacher", help="the teacher file, when it has moved since certification")
    p.add_argument("--timeout", type=float, help="seconds of branch and bound per point (default: twice the recorded)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = check_certificate(args.certificate, teacher=args.teacher, timeout=args.timeout)
    if result.confirmed:
        print(f"CONFIRMED: {result.verdict.value}")
    else:
        print(f"REJECTED (the certificate says {result.verdict.value})")
        for problem in result.problems:
            print(f"  - {problem}")
    for note in result.notes:
        print(f"note: {note}")
    return result.exit_code
