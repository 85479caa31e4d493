"""CROWN points/s and page faults with glibc's adaptive allocator thresholds and with them fixed
(:func:`pacverify.allocator.keep_freed_memory`, what the command line does at start).

Each measurement is a fresh process (the adaptive thresholds depend on the process's history), the two settings
alternating, ``--repeat`` times; in each, the bound routine runs ``--passes`` times over the same points after a
warm-up and the process reports its points/s per pass, the minor page faults during the passes
(``getrusage``) and its peak RSS; the lower bounds of the two settings are compared bit for bit.

    OMP_NUM_THREADS=1 python benchmarks/bench_malloc.py --nets student,mnist --methods crown,crown-f32 --repeat 4
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RADIUS = {("student", "2"): 1.5, ("student", "inf"): 0.2, ("mnist", "2"): 0.5, ("mnist", "inf"): 0.02}


def _one(cfg: dict) -> dict:
    """One measurement, in this (fresh) process."""
    import resource
    import time

    if cfg["setting"] == "fixed":
        from pacverify.allocator import keep_freed_memory

        assert keep_freed_memory(), "glibc's thresholds could not be set"
    import torch

    torch.set_num_threads(cfg["threads"])
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_bounds import mnist_network, student_network

    from pacverify.verify.bounds import BOUND_METHODS
    from pacverify.verify.output_rows import margin_rows
    from pacverify.verify.sets import perturbation_set

    net, sample = student_network() if cfg["net"] == "student" else mnist_network()
    x = sample(cfg["n"], 7)
    C = margin_rows(net(x).argmax(1), net.out_features)
    s = perturbation_set(x, RADIUS[(cfg["net"], cfg["norm"])], cfg["norm"])
    routine = BOUND_METHODS[cfg["method"]]
    routine(net, s.select(slice(0, 64)), C[:64], upper=False)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    rates = []
    for _ in range(cfg["passes"]):
        start = time.perf_counter()
        lower = routine(net, s, C, upper=False).lower
        rates.append(cfg["n"] / (time.perf_counter() - start))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"rates": rates, "faults": (usage.ru_minflt - faults) / cfg["passes"], "peak_mib": usage.ru_maxrss / 1024,
            "digest": hashlib.sha256(lower.numpy().tobytes()).hexdigest()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nets", default="student,mnist")
    p.add_argument("--norms", default="2")
    p.add_argument("--methods", default="crown,crown-f32")
    p.add_argument("--n", type=int, default=20000, help="points on the student")
    p.add_argument("--n-mnist", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--repeat", type=int, default=4)
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(_one(json.loads(args.one))))
        return 0
    import torch

    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}; torch {torch.__version__}; "
          f"{args.threads} thread(s); glibc {platform.libc_ver()[1]}; fresh process per measurement, "
          f"{args.passes} passes each, {args.repeat} measurements per setting, alternating")
    print("| net | norm | method | allocator | points/s median (min–max of passes) | minor faults per pass, median "
          "(min–max) | peak RSS MiB | bounds equal |")
    print("|---|---|---|---|---|---|---|---|")
    for net in args.nets.split(","):
        for norm in args.norms.split(","):
            for method in args.methods.split(","):
                runs: dict[str, list[dict]] = {"adaptive": [], "fixed": []}
                for _ in range(args.repeat):
                    for setting in runs:
                        cfg = {"net": net, "norm": norm, "method": method, "setting": setting,
                               "n": args.n if net == "student" else args.n_mnist, "threads": args.threads,
                               "passes": args.passes}
                        out = subprocess.run([sys.executable, __file__, "--one", json.dumps(cfg)], check=True,
                                             capture_output=True, text=True, cwd=REPO).stdout
                        runs[setting].append(json.loads(out.strip().splitlines()[-1]))
                digests = {r["digest"] for v in runs.values() for r in v}
                for setting, v in runs.items():
                    rates = [x for r in v for x in r["rates"]]
                    faults = [r["faults"] for r in v]
                    print(f"| {net} | {norm} | {method} | {setting} | {statistics.median(rates):,.0f} "
                          f"({min(rates):,.0f}–{max(rates):,.0f}) | {statistics.median(faults):,.0f} "
                          f"({min(faults):,.0f}–{max(faults):,.0f}) | {max(r['peak_mib'] for r in v):,.0f} | "
                          f"{'yes' if len(digests) == 1 else 'NO'} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
