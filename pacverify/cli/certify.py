"""``pacverify certify``: Algorithm 1 of 004 end to end, with a CI gate (exit 0 / 1 / 3; 2 for bad input)."""
from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from pacverify.certificate.gate import emit_github, requirements, write_junit
from pacverify.cli.options import add_domain_option, add_executor_options, add_threads_option, apply_threads
from pacverify.fileio import atomic_write_json
from pacverify.names import (
    BOUND_METHOD_NAMES,
    BOUNDS,
    DEVICES,
    DISTILL_METHODS,
    GUARANTEES,
    NORMS,
    ORACLES,
    OUTPUT_KINDS,
)
from pacverify.validation import parse_domain

if TYPE_CHECKING:
    from pacverify.certificate.io import Certificate

HELP = "certify a teacher: sample, distill, verify the student, attack the teacher, write the certificate"


def add_certify_arguments(p: argparse.ArgumentParser, *, teacher: bool = True) -> None:
    """The options of ``certify`` (``demo`` reuses the tuning ones)."""
    if teacher:
        p.add_argument("teacher", help="teacher file: TorchScript, torch.export (.pt2), ONNX, or a state dict with --arch")
        p.add_argument("--delta", required=True, help="robustness radius δ > 0")
        p.add_argument("--eps", required=True, help="ball mass ε, 0 < ε <= 0.5")
        p.add_argument("--eta", required=True, help="failure probability η, 0 < η <= 0.5")
        source = p.add_mutually_exclusive_group(required=True)
        source.add_argument("--data", help="array file of i.i.d. rows from D_X (.npy, .npz, .csv, .pt)")
        source.add_argument("--sampler", help="MODULE:FUNCTION with signature f(n, rng) -> array of n i.i.d. rows")
        source.add_argument("--synthetic", help="built-in distribution: gaussians or gaussians:M")
        p.add_argument("--labels", help="with --data: the true class of each data row (.npy/.npz/.csv/.pt); the "
                                        "certificate then records verified robust accuracy on the labelled sample")
        p.add_argument("--arch", help="MODULE:FACTORY building the teacher's architecture (state-dict teachers)")
        p.add_argument("--trust-pickle", action="store_true",
                       help="allow a fully pickled teacher module (runs code from the file: only for files you trust)")
        p.add_argument("--outputs", default="logits", choices=OUTPUT_KINDS,
                       help="what the teacher returns: logits (default), probabilities (softmax inside the model) or "
                            "costs (the smallest wins, e.g. ACAS Xu); converted once to logits and recorded")
        p.add_argument("--guarantee", default="ball", choices=GUARANTEES,
                       help="ball: δ-balls of mass >= ε (Thm 4.4, s grows with the dimension; default); mass: the "
                            "dimension-free map M(κ) — the κ-confident inputs that are not M(κ)-robust have mass < ε")
        p.add_argument("--bound", choices=BOUNDS,
                       help="ε-net sample size: thm38 (Thm 3.8, default of ball mode) or tight (default of mass mode)")
        p.add_argument("--oracle", default="auto", choices=ORACLES,
                       help="mass mode: lower radii from the teacher itself (sound), from the student (transfer "
                            "assumptions), or auto (the teacher when the engine reads it within the budget)")
        p.add_argument("--holdout", type=int,
                       help="mass mode: fresh draws for the held-out check (default up to 3000 as the data allows)")
        p.add_argument("--allow-duplicates", action="store_true",
                       help="accept a sample in which more than 1%% of the points repeat an earlier one exactly "
                            "(refused by default: i.i.d. draws from a continuous D_X almost never repeat)")
    p.add_argument("--kappa", default=0.9, help="confidence threshold κ, 0.5 <= κ < 1 (default 0.9)")
    p.add_argument("--norm", default="2", choices=NORMS, help="perturbation norm: 2 or inf (default 2)")
    p.add_argument("--tv", default=0.0, help="total-variation distance Λ to a shifted distribution (Obs 4.5)")
    p.add_argument("--samples", help="draw this many points (at least the Thm 3.8 minimum)")
    p.add_argument("--student", default="mlp:2x64",
                   help="student architecture, e.g. mlp:2x64 or cnn:..., or auto: grow it (wider, deeper; conv for "
                        "images) until held-out agreement and gradient cosine reach their targets (default mlp:2x64)")
    p.add_argument("--student-budget", type=float, default=600.0,
                   help="seconds --student auto may spend on its tries (default 600)")
    p.add_argument("--method", default="kdiga", choices=DISTILL_METHODS, help="distillation loss (default kdiga)")
    p.add_argument("--epochs", type=int, help="distillation epochs (default: the trainer's, with early stopping)")
    p.add_argument("--device", default="auto", choices=DEVICES, help="device to train and bound on (default auto)")
    p.add_argument("--seed", default=0, help="seed fixing every random draw (default 0)")
    p.add_argument("--verify-method", default="crown", choices=BOUND_METHOD_NAMES,
                   help="bound method of the verifier (default crown)")
    p.add_argument("--incomplete", action="store_true", help="skip branch and bound on points the bounds leave unknown")
    p.add_argument("--timeout", default=2.0, help="seconds of branch and bound per point (default 2)")
    p.add_argument("--attack-steps", type=int,
                   help="PGD steps per start of the teacher attack (default 50; mass mode 20)")
    p.add_argument("--attack-restarts", type=int,
                   help="PGD starts per point of the teacher attack (default 10; mass mode 1)")
    p.add_argument("--attack-bisection", type=int, default=6,
                   help="mass mode: radii tried per point by the attack's search for upper radii (default 6)")
    p.add_argument("--global-check", action="store_true",
                   help="ball mode: also prove the student globally 3δ-robust at its κ-confident points over the whole "
                        "--domain (branch and bound; recorded, the verdict unchanged)")
    p.add_argument("--global-timeout", type=float, default=60.0,
                   help="seconds for --global-check (default 60)")
    add_domain_option(p, "input domain box every perturbed input stays in, e.g. 0,1")
    p.add_argument("--json", metavar="FILE", help="also write the certificate JSON to FILE")
    p.add_argument("--junit", metavar="FILE", help="write a JUnit XML file with one test case per requirement")
    p.add_argument("--min-delta-t", type=float, help="CI gate: fail (exit 1) when δ_T is below this")
    p.add_argument("--min-coverage", type=float, default=0.0, help="CI gate: fail when the coverage bound is below this")
    p.add_argument("--quiet", action="store_true",
                   help="print only the verdict line (no progress, no statements; the certificate has them all)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("certify", help=HELP, description=HELP[0].upper() + HELP[1:] + ".")
    add_certify_arguments(p)
    p.add_argument("--out", default="pacverify-out",
                   help="output directory (default ./pacverify-out); a rerun reuses its trained student")
    p.add_argument("--no-cache", action="store_true", help="retrain the student instead of reusing the cached one")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (sample size, memory, each stage's estimated time from short timed probes) "
                        "and stop; nothing is written")
    add_threads_option(p)
    add_executor_options(p)
    p.set_defaults(func=run)


def settings_from(args: argparse.Namespace) -> dict:
    return dict(kappa=args.kappa, norm=args.norm, tv=args.tv, samples=args.samples, student=args.student,
                student_budget=args.student_budget,
                method=args.method, epochs=args.epochs, device=args.device, seed=args.seed,
                verify_method=args.verify_method, complete=not args.incomplete, timeout=args.timeout,
                domain=parse_domain(args.domain), allow_duplicates=getattr(args, "allow_duplicates", False),
                attack_steps=args.attack_steps, attack_restarts=args.attack_restarts,
                attack_bisection=args.attack_bisection, global_check=args.global_check,
                global_timeout=args.global_timeout, executor=getattr(args, "executor", "local"),
                ray_address=getattr(args, "ray_address", None),
                **{k: getattr(args, k) for k in ("guarantee", "bound", "oracle", "holdout", "outputs", "labels")
                   if hasattr(args, k)})


def progress_printer(quiet: bool):
    def say(stage: str, message: str) -> None:
        if not quiet:
            print(f"[{stage}] {message}", file=sys.stderr, flush=True)
    return say


def summarise(cert: Certificate, out_dir) -> str:
    """The verdict, its reasons, the claims with their assumptions, and the counts, as printed text."""
    from pacverify.certificate.schema import MassCertificateBody

    record = cert.record
    if isinstance(record, MassCertificateBody):
        return summarise_mass(record, out_dir)
    ver, st = record.verification, record.statements
    lines = [f"verdict: {record.verdict.value}"] + [f"  {r}" for r in record.reasons]
    lines += ["", st.pac]
    if st.pac_delta_T:
        lines += ["", f"δ_T = {cert.delta_T:.6g}: " + st.pac_delta_T]
    elif st.delta_T_note:
        lines += ["", st.delta_T_note]
    else:
        lines += ["", "δ_T = 0: no relaxed radius can be claimed."]
    lines += ["", "Assumptions:"] + [f"  - {a}" for a in st.assumptions]
    lines += ["", st.coverage]
    if record.global_check is not None:
        lines += ["", record.global_check.statement]
    if record.accuracy is not None:
        lines += ["", record.accuracy.statement]
    lines += [f"warning: {w}" for w in record.warnings]
    lines += ["", f"points: {record.pac.samples} drawn, {ver.required} κ-confident: {ver.verified} verified, "
                  f"{ver.falsified} falsified, {ver.unknown} unknown, {ver.disagree} disagree (student ≠ teacher)",
              teacher_attack_line(cert),
              f"certificate: {os.path.join(out_dir, 'certificate.json')}   report: {os.path.join(out_dir, 'report.html')}"]
    return "\n".join(lines)


def teacher_attack_line(cert: Certificate) -> str:
    """How many κ-confident sample points the teacher attack refuted within 3δ (and 3·δ_T), and how many of those
    the student was proven 3δ-robust at: there the transfer from student to teacher visibly fails."""
    import numpy as np

    from pacverify.certificate.schema import PointStatus

    tc = cert.record.teacher_check  # type: ignore[union-attr]  # ball mode only
    text = f"teacher attack: counterexamples within 3δ at {tc.counterexamples_delta} of {tc.checked} points"
    index = cert.arrays.get("teacher_cex_delta_index")
    status = cert.arrays.get("status")
    if index is not None and status is not None and len(index):
        proven = int(np.sum(np.asarray(status)[np.asarray(index, dtype=np.int64)] == PointStatus.VERIFIED))
        text += f" ({proven} of them proven 3δ-robust for the student: the transfer fails there)"
    if tc.radius_delta_T > 0:
        text += f", within 3·δ_T at {tc.counterexamples_delta_T}"
    return text


def summarise_mass(record, out_dir) -> str:
    """:func:`summarise` for a mass-mode certificate: the statements, the M(κ) table, the oracle and the held-out
    check."""
    st, o, cmap = record.statements, record.oracle, record.confidence_map
    lines = [f"verdict: {record.verdict.value}"] + [f"  {r}" for r in record.reasons]
    lines += ["", st.pac] + (["", st.conditional] if st.conditional else [])
    lines += ["", "Assumptions:"] + [f"  - {a}" for a in st.assumptions]
    lines += ["", st.oracle, "", "  κ      M(κ)        confident  p̲(κ)    ε/p̲(κ)"]
    lines += [f"  {row.kappa:<6g} {row.radius:<11.5g} {row.confident:<10d} {row.p_lower:<8.4f} "
              f"{row.conditional_eps:.4g}" for row in cmap.table]
    lines += ["", st.holdout] + [f"warning: {w}" for w in record.warnings]
    lines += ["", f"points: {record.pac.samples} drawn ({record.pac.bound} bound, VC dimension "
                  f"{record.pac.vc_dimension}); lower radius proven > 0 at {o.proven}; attack found counterexamples "
                  f"at {o.attacked_found}; u_i < l_i at {o.inconsistent}",
              f"certificate: {os.path.join(out_dir, 'certificate.json')}   report: {os.path.join(out_dir, 'report.html')}"]
    return "\n".join(lines)


def stage_seconds(timings: dict) -> float:
    """The run's total: the stages' seconds (not the points/s figure or the creation time recorded beside them)."""
    return float(sum(v for k, v in timings.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                     and k not in ("verify_points_per_second", "created")))


def finish(cert, args: argparse.Namespace, out_dir) -> int:
    """Print, write the gate files, and return the exit code (the verdict's, or 1 when a gate fails)."""
    reqs = requirements(cert, min_delta_t=args.min_delta_t, min_coverage=args.min_coverage)
    if args.json:
        atomic_write_json(args.json, cert.body)
    if args.junit:
        write_junit(args.junit, reqs, time_s=stage_seconds(cert.record.timings))
    annotations = emit_github(cert, reqs)
    if annotations:
        print(annotations)
    text = summarise(cert, out_dir)
    print(text.splitlines()[0] if args.quiet else text)
    code = cert.exit_code
    if code == 0 and not all(r.passed for r in reqs):
        failed = ", ".join(r.name for r in reqs if not r.passed)
        print(f"gate failed: {failed}", file=sys.stderr)
        return 1
    return code


def run(args: argparse.Namespace) -> int:
    from pacverify.pipeline.run import certify, plan  # torch and the whole pipeline: only once the arguments parsed

    apply_threads(args.threads)
    if args.dry_run:
        the_plan = plan(args.teacher, delta=args.delta, eps=args.eps, eta=args.eta, data=args.data,
                        sampler=args.sampler, synthetic=args.synthetic, arch=args.arch, trust_pickle=args.trust_pickle,
                        **settings_from(args))
        print("\n".join(the_plan.lines()))
        print("dry run: nothing was written")
        return 0

    cert = certify(args.teacher, out=args.out, progress=progress_printer(args.quiet), show_bars=not args.quiet,
                   cache=not args.no_cache,
                   delta=args.delta, eps=args.eps, eta=args.eta, data=args.data, sampler=args.sampler,
                   synthetic=args.synthetic, arch=args.arch, trust_pickle=args.trust_pickle, **settings_from(args))
    return finish(cert, args, args.out)
