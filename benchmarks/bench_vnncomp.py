"""VNN-COMP 2022 mnistfc and ACAS Xu with pacverify's verifier, checked against reference.csv.

Runs every instance of ``../shared/vnncomp/<bench>/instances.csv`` (or a subset) through
:func:`pacverify.verify.verify_vnnlib` with the benchmark's timeout (or a scaled / fixed one),
appends one row per instance to a CSV (resumable: instances already in the CSV with the same
timeout are skipped), validates every ``sat`` counterexample with onnxruntime, and compares with
the conservative label of reference.csv: an ``unsat`` answer on a ``sat`` instance (or the
reverse) is a WRONG answer.

    python benchmarks/bench_vnncomp.py --bench acasxu --props 1,2,3,4 --nets 1_ --timeout 30
    python benchmarks/bench_vnncomp.py --bench mnistfc --nets 256x2 --timeout 60
    python benchmarks/bench_vnncomp.py --bench acasxu --retry-unknown   # the CSV's unknowns, benchmark timeouts
    python benchmarks/bench_vnncomp.py --summary          # the Markdown table of what the CSV holds

Published 2022 counts of alpha-beta-CROWN (the competition's winner, on AWS GPU machines):
mnistfc 18 sat / 66 unsat / 6 timeouts; acasxu 46 sat / 139 unsat / 1 timeout.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "vnncomp"
DEFAULT_CSV = REPO / "benchmarks" / "results" / "vnncomp.csv"
ABCROWN_2022 = {"mnistfc": (18, 66, 6), "acasxu": (46, 139, 1)}
FIELDS = ["bench", "onnx", "vnnlib", "timeout_s", "result", "time_s", "reference", "verdict_check", "cex_valid",
          "abcrown_result", "abcrown_time_s", "detail"]


def _instances(bench: str) -> list[dict]:
    with open(SHARED / bench / "reference.csv", newline="") as handle:
        return [dict(row, bench=bench) for row in csv.DictReader(handle)]


def _selected(rows: list[dict], nets: list[str] | None, props: list[str] | None) -> list[dict]:
    def prop_id(vnnlib: str) -> str:
        return Path(vnnlib).stem.split("_")[1]

    return [r for r in rows if (not nets or any(n in Path(r["onnx"]).stem for n in nets))
            and (not props or prop_id(r["vnnlib"]) in props)]


def _done(path: Path) -> set[tuple[str, str, str, str]]:
    if not path.exists():
        return set()
    with open(path, newline="") as handle:
        return {(r["bench"], r["onnx"], r["vnnlib"], r["timeout_s"]) for r in csv.DictReader(handle)}


def _unknown(path: Path) -> set[tuple[str, str, str]]:
    """Instances the CSV holds only as ``unknown`` (no sat/unsat answer at any timeout)."""
    if not path.exists():
        return set()
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    answered = {(r["bench"], r["onnx"], r["vnnlib"]) for r in rows if r["result"] in ("sat", "unsat")}
    return {(r["bench"], r["onnx"], r["vnnlib"]) for r in rows if r["result"] == "unknown"} - answered


def _check(result: str, reference: str) -> str:
    if result in ("sat", "unsat") and reference in ("sat", "unsat"):
        return "ok" if result == reference else "WRONG"
    return "-"


def run(args: argparse.Namespace) -> None:
    from pacverify.verify import verify_vnnlib
    from pacverify.verify.vnnlib import check_counterexample, read_vnnlib

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.allocator == "fixed":
        from pacverify.allocator import keep_freed_memory

        keep_freed_memory()
    out = Path(args.csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = _done(out)
    retry = _unknown(out) if args.retry_unknown else None
    new_file = not out.exists()
    with open(out, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        if new_file:
            writer.writeheader()
        for bench in args.bench.split(","):
            nets, props = args.nets and args.nets.split(","), args.props and args.props.split(",")
            rows = _selected(_instances(bench), nets, props)
            if retry is not None:
                rows = [r for r in rows if (bench, r["onnx"], r["vnnlib"]) in retry]
            for row in rows[: args.limit or None]:
                timeout = float(args.timeout) if args.timeout else float(row["timeout_s"]) * args.timeout_scale
                key = (bench, row["onnx"], row["vnnlib"], f"{timeout:g}")
                if key in done:
                    continue
                onnx_path, vnnlib_path = SHARED / bench / row["onnx"], SHARED / bench / row["vnnlib"]
                start = time.perf_counter()
                result = verify_vnnlib(onnx_path, vnnlib_path, timeout, seed=args.seed)
                elapsed = time.perf_counter() - start
                status = result.status.value
                cex = "-"
                if status == "sat":
                    cex = "yes" if check_counterexample(onnx_path, read_vnnlib(vnnlib_path), result.counterexample) \
                        else "NO"
                record = {"bench": bench, "onnx": row["onnx"], "vnnlib": row["vnnlib"], "timeout_s": f"{timeout:g}",
                          "result": status, "time_s": f"{elapsed:.2f}", "reference": row["conservative_label"],
                          "verdict_check": _check(status, row["conservative_label"]), "cex_valid": cex,
                          "abcrown_result": row["abcrown_result"], "abcrown_time_s": row["abcrown_runtime_s"],
                          "detail": result.detail[:120]}
                writer.writerow(record)
                handle.flush()
                print(f"{bench} {Path(row['onnx']).stem} {Path(row['vnnlib']).stem}: {status} in {elapsed:.1f} s "
                      f"(reference {row['conservative_label']}, {record['verdict_check']})", flush=True)


def summary(path: Path) -> str:
    """A Markdown table of the CSV: per benchmark and timeout, counts, time and wrong answers."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["bench"], r["timeout_s"]), []).append(r)
    lines = ["| benchmark | timeout (s) | instances run | sat | unsat | unknown | wrong | sat cex validated | "
             "total time (s) | a-b-CROWN 2022 on all (sat/unsat/timeout) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for bench in sorted({b for b, _ in groups}):
        timeouts = sorted({t for b, t in groups if b == bench}, key=float)
        for timeout in timeouts:
            lines.append(_summary_row(bench, timeout, groups[bench, timeout], groups[bench, timeout]))
        if len(timeouts) > 1:  # each instance once: its sat/unsat answer if any run gave one; time of all its runs
            runs = [r for t in timeouts for r in groups[bench, t]]
            best: dict[tuple[str, str], dict] = {}
            for r in runs:
                key = (r["onnx"], r["vnnlib"])
                if key not in best or best[key]["result"] == "unknown":
                    best[key] = r
            lines.append(_summary_row(bench, " then ".join(timeouts) + " on the unknowns", list(best.values()), runs))
    return "\n".join(lines)


def _summary_row(bench: str, timeout: str, answers: list[dict], runs: list[dict]) -> str:
    count = {s: sum(r["result"] == s for r in answers) for s in ("sat", "unsat", "unknown")}
    wrong = sum(r["verdict_check"] == "WRONG" for r in runs)
    valid = sum(r["cex_valid"] == "yes" for r in answers)
    total = sum(float(r["time_s"]) for r in runs)
    ref = "/".join(map(str, ABCROWN_2022.get(bench, ("?",) * 3)))
    return (f"| {bench} | {timeout} | {len(answers)} | {count['sat']} | {count['unsat']} | {count['unknown']} | "
            f"{wrong} | {valid}/{count['sat']} | {total:.0f} | {ref} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", default="acasxu,mnistfc", help="comma list of benchmarks (acasxu, mnistfc)")
    parser.add_argument("--nets", help="comma list of substrings of network names to keep (e.g. 1_,2_1 or 256x2)")
    parser.add_argument("--props", help="comma list of property numbers to keep (e.g. 1,2,3,4)")
    parser.add_argument("--timeout", help="fixed timeout in seconds (default: the benchmark's, times --timeout-scale)")
    parser.add_argument("--timeout-scale", type=float, default=1.0, help="factor on the benchmark's timeouts")
    parser.add_argument("--retry-unknown", action="store_true",
                        help="run only the instances the CSV holds as unknown (with the benchmark's timeouts by default)")
    parser.add_argument("--limit", type=int, default=0, help="at most this many instances per benchmark")
    parser.add_argument("--csv", default=str(DEFAULT_CSV), help="results CSV (appended; done instances skipped)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--allocator", default="fixed", choices=("fixed", "adaptive"),
                        help="glibc's malloc thresholds: fixed, as pacverify's command line sets them "
                             "(pacverify.allocator), or adaptive (glibc's default)")
    parser.add_argument("--summary", action="store_true", help="print the Markdown summary of the CSV and exit")
    args = parser.parse_args(argv)
    if args.summary:
        print(summary(Path(args.csv)))
        return 0
    if not SHARED.is_dir():
        print(f"no VNN-COMP data at {SHARED}", file=sys.stderr)
        return 2
    run(args)
    print(summary(Path(args.csv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
