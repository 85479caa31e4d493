"""Certified radii: CROWN passes per point and radii of the "lines", "itp" and "bisect" searches (issue 12, goal 2).

Same networks and points as bench_bounds.py (the 64-64-64-10 student, VNN-COMP's mnist-net_256x2 with its [0, 1]
domain), the network's own class, cap and tol per row. For each search: point-bounds per point (the cost: one
CROWN bound of one point), wall time, the mean radius, and against bisection at the same tol the fraction of points
whose radius is at least bisection's minus tol/100 and the largest shortfall.

    python benchmarks/bench_radius.py                          # both nets, both norms, N = 2000
    python benchmarks/bench_radius.py --nets student --n 500
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

# cap and tol per (net, norm): the cap about 3× the bench_bounds radius at which half to nine tenths verify
# and tol = cap/128, as the ball pipeline's defaults (cap 6δ, tol 3δ/64)
SETTINGS = {("student", "2"): (4.0, 4.0 / 128), ("student", "inf"): (0.6, 0.6 / 128),
            ("mnist", "2"): (1.5, 1.5 / 128), ("mnist", "inf"): (0.06, 0.06 / 128)}
SEARCHES = ("lines", "itp", "bisect")


def main(argv=None) -> int:
    import numpy as np
    import torch
    from bench_bounds import mnist_network, student_network

    from pacverify.verify.radius import search_radii

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--nets", default="student,mnist")
    p.add_argument("--norms", default="2,inf")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}; torch {torch.__version__}, "
          f"{args.threads} thread(s), float64; N = {args.n}")
    print("| net | norm | cap | tol | search | bounds/point | s | mean radius | ≥ bisection − tol/100 | "
          "max shortfall |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for net_name in args.nets.split(","):
        net, sample = student_network() if net_name == "student" else mnist_network()
        x = sample(args.n, 7)
        with torch.no_grad():
            y = net(x).argmax(1).numpy()
        domain = (0.0, 1.0) if net_name == "mnist" else None
        for norm in args.norms.split(","):
            cap, tol = SETTINGS[(net_name, norm)]
            results = {}
            for search in SEARCHES:
                start = time.perf_counter()
                results[search] = search_radii(net, x.numpy(), y, norm, cap=cap, tol=tol, method="crown",
                                               domain=domain, search=search)
                results[search].stats["wall"] = time.perf_counter() - start
            ref = results["bisect"].proven
            for search, res in results.items():
                short = ref - res.proven
                print(f"| {net_name} | {norm} | {cap:g} | {tol:.3g} | {search} | "
                      f"{res.stats['bounded'] / args.n:.2f} | {res.stats['wall']:.1f} | {res.proven.mean():.4f} | "
                      f"{float(np.mean(short <= tol / 100)):.3f} | {max(0.0, float(short.max())):.2g} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
