"""CROWN throughput with competing load (issue 12, goal 4): does a busy machine collapse the bound engine?

The 64-64-64-10 student of bench_bounds.py, N points, L2 radius 1.5, CROWN lower bounds (the margins), float64.
Each configuration runs in a fresh subprocess with its torch thread count. First on the machine as it is, then with
``--load`` competing processes started by this script (each a matrix-product loop: single-threaded numpy, or
torch with its default threads, ``--burner``) and stopped at the end. The machine's share for one thread is cores / (competing threads + 1) of a core, at most one.

    python benchmarks/bench_load.py --n 10000 --load 2 --burner torch
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BURNERS = {  # a competing job: single-threaded numpy, or torch with one thread per core (its default)
    "numpy": ("import os\nos.environ['OMP_NUM_THREADS'] = '1'\nimport numpy as np\n"
              "a = np.random.rand(300, 300)\nwhile True:\n    a = (a @ a) / 300.0\n"),
    "torch": ("import torch\na = torch.rand(300, 300, dtype=torch.float64)\n"
              "while True:\n    a = (a @ a) / 300.0\n"),
}


def run_one(n: int, threads: int, allocator: str = "fixed") -> dict:
    if allocator == "fixed":
        from pacverify.allocator import keep_freed_memory

        assert keep_freed_memory(), "glibc's thresholds could not be set"
    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, str(REPO / "benchmarks"))
    sys.path.insert(0, str(REPO))
    from bench_bounds import student_network

    from pacverify.verify.bounds import crown
    from pacverify.verify.output_rows import margin_rows
    from pacverify.verify.sets import perturbation_set

    net, sample = student_network()
    x = sample(n, 7)
    C = margin_rows(net(x).argmax(1), 10)
    s = perturbation_set(x, 1.5, "2")
    crown(net, s.select(slice(0, 64)), C[:64], upper=False)
    start, cpu = time.perf_counter(), time.process_time()
    crown(net, s, C, upper=False)
    wall = time.perf_counter() - start
    return {"threads": threads, "points_per_s": n / wall, "wall_s": wall, "cpu_s": time.process_time() - cpu}


def measure(n: int, threads: int, allocator: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, __file__, "--one", json.dumps({"n": n, "threads": threads,
                                                                         "allocator": allocator})],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--load", type=int, default=2, help="competing busy processes")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--burner", default="numpy", choices=sorted(BURNERS), help="what each competing process runs")
    p.add_argument("--allocator", default="fixed", choices=("fixed", "adaptive"),
                   help="glibc's malloc thresholds: fixed, as the command line sets them (pacverify.allocator), or "
                        "adaptive (glibc's default)")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        cfg = json.loads(args.one)
        print(json.dumps(run_one(cfg["n"], cfg["threads"], cfg["allocator"])))
        return 0
    cores = os.cpu_count() or 1
    threads = [int(t) for t in args.threads.split(",")]
    print(f"machine: {platform.machine()}, {cores} cores; N = {args.n}, CROWN margins, L2 radius 1.5, float64; "
          f"competing processes: {args.burner}; allocator thresholds {args.allocator}")
    print("| load | torch threads | points/s | CPU s / wall s | vs 1 thread without load |")
    print("|---|---|---|---|---|")
    base = None
    rows = []
    for load in (0, args.load):
        burners = [subprocess.Popen([sys.executable, "-c", BURNERS[args.burner]]) for _ in range(load)]
        try:
            time.sleep(1.0 if load else 0.0)
            for t in threads:
                r = measure(args.n, t, args.allocator)
                if load == 0 and t == 1:
                    base = r["points_per_s"]
                rows.append((load, r))
                ratio = r["points_per_s"] / base if base else float("nan")
                print(f"| {load} | {t} | {r['points_per_s']:,.0f} | {r['cpu_s'] / r['wall_s']:.2f} | "
                      f"{ratio:.2f} |", flush=True)
        finally:
            for b in burners:
                b.kill()
                b.wait()
    competing = args.load * (1 if args.burner == "numpy" else (os.cpu_count() or 1))   # torch: a thread per core
    share = min(1.0, cores / (competing + 1))
    print(f"\nmachine's share for one thread beside {competing} busy competing threads: {share:.2f} of a core")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
