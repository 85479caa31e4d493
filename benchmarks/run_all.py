"""Regenerate every reproduction table and figure of issue 15 (``benchmarks/repro_*.py``), one script after another.

    python benchmarks/run_all.py [--quick] [--only NAME[,NAME...]]

Each script writes ``benchmarks/results/repro_<name>.md`` (and ``.png``); this prints where they are and how long
each took. ``--quick`` passes ``--quick`` to every script (all four in about 10 minutes on a shared 2-core CPU);
without it the full runs take about an hour. ``docs/results.md`` presents the results.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# in the order of the priorities: the sample-size table first
SCRIPTS = ("sample_size", "fig1", "kd_robustness", "pagr_holdout")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the quick version of every script")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {', '.join(SCRIPTS)}")
    args = parser.parse_args()
    names = SCRIPTS if args.only is None else tuple(n.strip() for n in args.only.split(","))
    unknown = [n for n in names if n not in SCRIPTS]
    if unknown:
        parser.error(f"unknown script(s) {', '.join(unknown)}; choose from {', '.join(SCRIPTS)}")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    failed, started = [], time.perf_counter()
    for name in names:
        cmd = [sys.executable, str(HERE / f"repro_{name}.py")] + (["--quick"] if args.quick else [])
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        code = subprocess.call(cmd, env=env, cwd=HERE.parent)
        print(f"== {name}: exit {code} after {time.perf_counter() - t0:.0f} s", flush=True)
        if code != 0:
            failed.append(name)
    print(f"\nall done in {time.perf_counter() - started:.0f} s; results:")
    for name in names:
        for suffix in (".md", ".png"):
            path = HERE / "results" / f"repro_{name}{suffix}"
            if path.exists():
                print(f"  {path.relative_to(HERE.parent)}")
    print("  docs/results.md presents them")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
