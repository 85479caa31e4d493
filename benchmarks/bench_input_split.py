"""Input splitting's branching rules on ACAS Xu instances: each rule alone and portfolios, boxes and seconds.

For each instance (network ``a_b`` and property p of ``../shared/vnncomp/acasxu``), every region of the VNN-LIB file is
searched by :func:`pacverify.verify.bab._input_bab` with the given rule sets (one search per clause and rule, as
``branch_and_bound`` runs them), each with the same timeout; no attack first, so the table shows the search alone.
One row per instance, rule set and count of α-CROWN steps on the boxes CROWN leaves open (``--box-alpha``): the
verdict (the first region not VERIFIED decides), the boxes bounded, the seconds and boxes per second.

    python benchmarks/bench_input_split.py --instances 3_9:1,4_9:1,3_3:2,1_1:5 --rules widest lookahead bound \
        lookahead,bound --box-alpha 0 5 --timeout 60 --threads 1
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "vnncomp" / "acasxu"


def run_instance(net_id: str, prop_id: str, rules: tuple[str, ...], timeout: float, batch: int, box_alpha: int) -> dict:
    from pacverify.verify import bab
    from pacverify.verify.api import load
    from pacverify.verify.result import PointVerdict
    from pacverify.verify.sets import Box
    from pacverify.verify.vnnlib import read_vnnlib

    net = load(SHARED / "onnx" / f"ACASXU_run2a_{net_id}_batch_2000.onnx")
    vnnlib = read_vnnlib(SHARED / "vnnlib" / f"prop_{prop_id}.vnnlib")
    config = bab.BabConfig(input_branching=rules, batch=batch, box_alpha_iterations=box_alpha)
    start = time.perf_counter()
    deadline = time.monotonic() + timeout
    verdict, boxes = PointVerdict.VERIFIED, 0
    for region in vnnlib.regions:
        box = Box(torch.from_numpy(region.lower)[None], torch.from_numpy(region.upper)[None])
        prop = region.prop.with_implied_rows()
        clauses = [prop.clause_property(k) for k in range(prop.n_clauses)] if prop.n_clauses > 1 else [prop]
        decision = bab._input_bab(net, box, clauses, config, deadline)
        boxes += decision.domains
        if decision.verdict is not PointVerdict.VERIFIED:
            verdict = decision.verdict
            break
    seconds = time.perf_counter() - start
    return {"instance": f"{net_id} prop_{prop_id}", "rules": "+".join(rules), "α steps": box_alpha,
            "verdict": verdict.value,
            "boxes": boxes, "seconds": seconds, "boxes/s": boxes / seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", default="3_9:1,4_9:1,3_3:2,1_1:5",
                        help="comma list of network:property, e.g. 3_9:1,4_2:2")
    parser.add_argument("--rules", nargs="+", default=["widest", "lookahead", "bound", "lookahead,bound"],
                        help="rule sets, each a comma list (a portfolio)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per instance and rule set")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--box-alpha", type=int, nargs="+", default=[5],
                        help="α-CROWN steps on each box CROWN leaves open (BabConfig.box_alpha_iterations; 0: none)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if not SHARED.is_dir():
        print(f"no ACAS Xu data at {SHARED}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    print("| instance | rules | α steps | verdict | boxes | s | boxes/s |")
    print("|---|---|---|---|---|---|---|")
    for item in args.instances.split(","):
        net_id, prop_id = item.split(":")
        for rules in args.rules:
            for steps in args.box_alpha:
                row = run_instance(net_id, prop_id, tuple(rules.split(",")), args.timeout, args.batch, steps)
                print(f"| {row['instance']} | {row['rules']} | {steps} | {row['verdict']} | {row['boxes']:,} "
                      f"| {row['seconds']:.1f} | {row['boxes/s']:,.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
