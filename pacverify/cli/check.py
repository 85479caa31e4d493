"""``pacverify check``: re-derive a certificate from its evidence (exit: the verdict's code when confirmed, 3 when
refuted, 1 when rejected or unchecked)."""
from __future__ import annotations

import argparse

from pacverify.cli.options import add_executor_options, add_threads_option, apply_threads
from pacverify.errors import InputError

HELP = ("re-check a certificate: re-derive every claim from the files (sample, student proofs, δ_T, teacher attack, "
        "coverage) and compare")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help=HELP, description=HELP[0].upper() + HELP[1:] + ".")
    p.add_argument("certificate", help="certificate.json (or the directory holding it)")
    p.add_argument("--teacher", help="the teacher file (needed when it is not in the certificate's directory)")
    p.add_argument("--data", help="the data file the sample was drawn from (when not in the certificate's directory)")
    p.add_argument("--sampler", metavar="MODULE:FUNCTION",
                   help="your sampler, to re-derive a sampler-drawn sample (imports and runs your code)")
    p.add_argument("--labels", help="the labels file of a certify --labels run (when not where the certificate "
                                    "records it)")
    p.add_argument("--timeout", type=float, help="seconds of branch and bound per point (default: twice the recorded)")
    p.add_argument("--arch", help="MODULE:FACTORY building a state-dict teacher's architecture (imports your code; "
                                  "never taken from the certificate)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow unpickling the teacher file (runs code from it; never taken from the certificate)")
    add_threads_option(p)
    add_executor_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pacverify.pipeline.check import Outcome, check_certificate

    apply_threads(args.threads)
    if args.ray_address is not None and args.executor != "ray":
        raise InputError("--ray-address only applies with --executor ray")
    result = check_certificate(args.certificate, teacher=args.teacher, data=args.data, sampler=args.sampler,
                               timeout=args.timeout, arch=args.arch, trust_pickle=args.trust_pickle,
                               labels=args.labels, executor=args.executor, ray_address=args.ray_address)
    said = result.verdict.value
    if result.outcome is Outcome.CONFIRMED:
        print(f"CONFIRMED: {said}")
    elif result.outcome is Outcome.REFUTED:
        print(f"REFUTED (the certificate says {said}; the teacher has a counterexample in a claimed ball)")
    elif result.outcome is Outcome.UNCHECKED:
        print(f"UNCHECKED (the certificate says {said}; some claims could not be re-derived)")
    else:
        print(f"REJECTED (the certificate says {said})")
    for problem in result.problems:
        print(f"  - {problem}")
    for item in result.unchecked:
        print(f"  not re-derived: {item}")
    for note in result.notes:
        print(f"note: {note}")
    return result.exit_code
