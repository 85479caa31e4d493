"""``pacverify demo``: the whole pipeline on the paper's synthetic teacher (22 s wall on an idle 2-core CPU)."""
from __future__ import annotations

import argparse
import os

from pacverify.cli.certify import progress_printer, summarise
from pacverify.cli.options import add_threads_option, apply_threads

HELP = "certify the paper's synthetic sigmoid teacher (004 §5) end to end and write the report"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help=HELP, description=HELP[0].upper() + HELP[1:] + ".")
    p.add_argument("--out", default="pacverify-demo", help="output directory (default ./pacverify-demo)")
    p.add_argument("--seed", default=0, help="seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    add_threads_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pacverify.pipeline.demo import DEMO, TEACHER_SLOPE, run_demo

    apply_threads(args.threads)

    say = progress_printer(args.quiet)
    say("demo", f"teacher: sigmoid teacher of Eq 11 (a = {TEACHER_SLOPE}) as a ReLU network; D_X: two truncated "
                f"Gaussians in R²; δ = {DEMO['delta']}, ε = {DEMO['eps']}, η = {DEMO['eta']}, κ = {DEMO['kappa']}")
    cert = run_demo(args.out, seed=args.seed, progress=say, show_bars=not args.quiet)
    print(summarise(cert, args.out))
    print(f"\nLook at {os.path.join(args.out, 'report.html')} (the report), "
          f"{os.path.join(args.out, 'certificate.json')} (the certificate; re-check it with "
          f"`pacverify check {os.path.join(args.out, 'certificate.json')}`).")
    return cert.exit_code
