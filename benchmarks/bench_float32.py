"""The float32 CROWN path against float64 CROWN (issue 12, goal 3): points/s, decisions, bounds.

For each network, norm and radius: CROWN's lower bounds of the 9 margins at the network's own class in float64
(:func:`pacverify.verify.bounds.crown`, ``upper=False``), by the charged float32 pass alone
(:func:`pacverify.verify.bounds.float32.crown_lower_f32`) and by the mixed routine the verifier uses
(:func:`~pacverify.verify.bounds.float32.crown_mixed`: float32, then float64 for the points left undecided near
zero). Each routine runs ``--repeat`` times in alternation with the others, in one process; the median time is
shown. Networks: the 64-64-64-10 student of bench_bounds.py and VNN-COMP's mnist-net_256x2 (its points: jittered
mnistfc images), no domain box.

    OMP_NUM_THREADS=1 python benchmarks/bench_float32.py --n 20000 --n-mnist 1000 --repeat 3
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

CASES = {"student": (("2", 1.5), ("inf", 0.2), ("2", 0.5)),
         "mnist": (("2", 0.5), ("inf", 0.02), ("2", 0.3), ("inf", 0.01))}


def main(argv=None) -> int:
    import torch
    from bench_bounds import mnist_network, student_network

    from pacverify.verify.bounds import crown
    from pacverify.verify.bounds.float32 import crown_lower_f32, crown_mixed
    from pacverify.verify.property import robustness_property
    from pacverify.verify.sets import perturbation_set

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20000, help="student points")
    p.add_argument("--n-mnist", type=int, default=1000, help="mnist-net_256x2 points")
    p.add_argument("--nets", default="student,mnist")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.machine()}, torch {torch.__version__}, {args.threads} thread(s); median of "
          f"{args.repeat} alternating runs")
    print("| net | norm | radius | N | float64 points/s | float32 alone | mixed | mixed / float64 | recomputed in "
          "float64 | verified float64 / mixed | decisions that differ | float64 − mixed bound, median / max |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.nets.split(","):
        net, sample = student_network() if name == "student" else mnist_network()
        n = args.n if name == "student" else args.n_mnist
        x = sample(n, 7)
        with torch.no_grad():
            C = robustness_property(net(x).argmax(1), net.out_features).C
        for norm, radius in CASES[name]:
            s = perturbation_set(x, radius, norm)
            warm = s.select(slice(0, 64))
            crown(net, warm, C[:64], upper=False)
            crown_mixed(net, warm, C[:64])
            times: dict[str, list[float]] = {"f64": [], "f32": [], "mixed": []}
            runs = {"f64": lambda: crown(net, s, C, upper=False).lower, "f32": lambda: crown_lower_f32(net, s, C),
                    "mixed": lambda: crown_mixed(net, s, C)}
            out = {}
            for _ in range(args.repeat):
                for key, run in runs.items():
                    start = time.perf_counter()
                    out[key] = run()
                    times[key].append(time.perf_counter() - start)
            f64, fast, mixed = out["f64"], out["f32"], out["mixed"]
            med = {k: statistics.median(v) for k, v in times.items()}
            recomputed = int((mixed != fast.lower).any(dim=1).sum())
            v64, vm = (f64 > 0).all(dim=1), (mixed > 0).all(dim=1)
            gap = f64 - mixed
            print(f"| {name} | {norm} | {radius:g} | {n} | {n / med['f64']:,.0f} | {n / med['f32']:,.0f} | "
                  f"{n / med['mixed']:,.0f} | {med['f64'] / med['mixed']:.2f} | {recomputed} | "
                  f"{float(v64.float().mean()):.4f} / {float(vm.float().mean()):.4f} | {int((v64 != vm).sum())} | "
                  f"{float(gap.median()):.1e} / {float(gap.max()):.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
