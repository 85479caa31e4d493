"""CROWN points/s against the CPU chunk size and the thread count (the choice of ``CPU_CACHE_BUDGET``).

One process; for each chunk budget (MiB of row tensors per chunk) and 1 and 2 torch threads, CROWN lower bounds of
the 9 margins at the net's own class, ``--repeat`` times in alternation; the median and best points/s are printed.

    python benchmarks/bench_chunks.py --net student --norm 2 --n 20000 --budgets 1,2,4,8,16
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--net", default="student", choices=("student", "mnist"))
    p.add_argument("--norm", default="2", choices=("2", "inf"))
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--budgets", default="2,4,8,16", help="MiB per chunk, comma-separated")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    import torch

    sys.path.insert(0, str(REPO / "benchmarks"))
    sys.path.insert(0, str(REPO))
    from bench_bounds import mnist_network, student_network

    import pacverify.verify.bounds.common as common
    from pacverify.verify.bounds import crown
    from pacverify.verify.output_rows import margin_rows
    from pacverify.verify.sets import perturbation_set

    net, sample = student_network() if args.net == "student" else mnist_network()
    x = sample(args.n, 7)
    C = margin_rows(net(x).argmax(1), net.out_features)
    radius = {("student", "2"): 1.5, ("student", "inf"): 0.2, ("mnist", "2"): 0.5, ("mnist", "inf"): 0.02}[
        (args.net, args.norm)]
    s = perturbation_set(x, radius, args.norm)
    crown(net, s.select(slice(0, 64)), C[:64], upper=False)
    rates: dict[tuple[int, int], list[float]] = {}
    for _ in range(args.repeat):
        for budget in (int(b) for b in args.budgets.split(",")):
            for threads in (1, 2):
                common.CPU_CACHE_BUDGET = budget * 2**20
                torch.set_num_threads(threads)
                start = time.perf_counter()
                crown(net, s, C, upper=False)
                rates.setdefault((budget, threads), []).append(args.n / (time.perf_counter() - start))
    print(f"machine: {platform.machine()}; torch {torch.__version__}; {args.net}, L{args.norm} radius {radius}, "
          f"N = {args.n}, CROWN margins, float64")
    print("| chunk MiB | threads | median points/s | best |")
    print("|---|---|---|---|")
    for (budget, threads), v in sorted(rates.items()):
        print(f"| {budget} | {threads} | {statistics.median(v):,.0f} | {max(v):,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
