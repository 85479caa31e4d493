"""Scaling of the per-point stages over Ray (issue 16): points/s of verify_points and certified_radius with the local
executor, Ray with 1 worker and Ray with 2 workers, the overhead of one Ray task, and a projection to N machines.

A 64-64-64-10 ReLU MLP with He-scaled random weights, N Gaussian points, the network's own class, CROWN; chunks of
:data:`pacverify.executor.CHUNK_POINTS` points. Each Ray configuration is a fresh local instance (``num_cpus`` = the
workers); its start and the workers' first imports are timed apart (a warm-up call) and left out of the rates.
Every Ray result is checked equal to the local one.

    OMP_NUM_THREADS=1 python benchmarks/bench_scale.py                 # N = 20000, writes benchmarks/results/scale.md
    OMP_NUM_THREADS=1 python benchmarks/bench_scale.py --n 2000 --out -
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

EMPTY_TASKS = 200


def network(seed: int = 0):
    """The 64-64-64-10 random ReLU MLP (float64)."""
    import torch

    from pacverify.network import Affine, Network, Relu

    gen = torch.Generator().manual_seed(seed)
    widths, layers = [64, 64, 64, 10], []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        weight = torch.randn(n_out, n_in, generator=gen, dtype=torch.float64) * (2.0 / n_in) ** 0.5
        layers.append(Affine(weight, torch.randn(n_out, generator=gen, dtype=torch.float64) * 0.3))
        if i < len(widths) - 2:
            layers.append(Relu())
    return Network(tuple(layers), (64,))


def _noop(payload, chunk):
    """An empty task: returns its chunk."""
    return chunk


def _same(a, b) -> bool:
    import numpy as np

    return (a.verdicts == b.verdicts and np.array_equal(a.radius, b.radius)
            and np.array_equal(a.lower_bounds, b.lower_bounds) and a.counterexamples.keys() == b.counterexamples.keys()
            and (a.radius_upper is None or np.array_equal(a.radius_upper, b.radius_upper)))


def main(argv=None) -> int:
    import numpy as np
    import ray
    import torch

    from pacverify.executor import CHUNK_POINTS, RayExecutor
    from pacverify.verify.api import certified_radius, verify_points

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--radius", type=float, default=0.05, help="L∞ radius of verify_points")
    p.add_argument("--cap", type=float, default=0.5, help="cap of certified_radius (L∞; tol = cap/128)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "scale.md"), help="'-': stdout only")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    net = network()
    x = np.random.default_rng(1).normal(size=(args.n, 64))
    runs = {
        "verify_points": lambda **kw: verify_points(net, x, args.radius, "inf", **kw),
        "certified_radius": lambda **kw: certified_radius(net, x, "inf", cap=args.cap, tol=args.cap / 128, **kw),
    }
    rates: dict[tuple[str, str], float] = {}
    reference = {}
    for name, run in runs.items():
        start = time.perf_counter()
        reference[name] = run()
        rates[(name, "local")] = args.n / (time.perf_counter() - start)
        print(name, "local", f"{rates[(name, 'local')]:.1f} points/s", flush=True)
    startup, overhead, identical = {}, {}, True
    for workers in (1, 2):
        start = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        executor = RayExecutor()
        executor.map_chunks(_noop, None, list(range(2 * workers)))   # start the workers (their imports)
        verify_points(net, x[:64 * 4 * workers], args.radius, "inf", executor=executor,
                      chunk_points=64)  # and torch / pacverify in every worker
        startup[workers] = time.perf_counter() - start
        start = time.perf_counter()
        executor.map_chunks(_noop, None, list(range(EMPTY_TASKS)))
        overhead[workers] = (time.perf_counter() - start) / EMPTY_TASKS
        for name, run in runs.items():
            start = time.perf_counter()
            result = run(executor=executor)
            rates[(name, f"ray {workers}")] = args.n / (time.perf_counter() - start)
            identical = identical and _same(reference[name], result)
            print(name, f"ray {workers}", f"{rates[(name, f'ray {workers}')]:.1f} points/s", flush=True)
        ray.shutdown()
    chunks = -(-args.n // CHUNK_POINTS)
    lines = [
        "# Scaling over Ray (issue 16)",
        "",
        f"Machine: {platform.machine()} {_cpu_name()}, {os.cpu_count()} cores; Python {platform.python_version()}, "
        f"torch {torch.__version__}, ray {ray.__version__}; torch threads 1 in the driver and in every worker; "
        f"load average (1 min) {load_before:.2f} before the run, {os.getloadavg()[0]:.2f} after it.",
        "",
        f"`python benchmarks/bench_scale.py --n {args.n}`: a 64-64-64-10 random ReLU MLP (float64), {args.n} Gaussian "
        f"points, CROWN, the network's own class; verify_points at L∞ radius {args.radius:g} (with its attack on the "
        f"points left open), certified_radius L∞ with cap {args.cap:g}, tol {args.cap / 128:g} (\"itp\" search, "
        f"attack for the upper radius). {chunks} chunks of {CHUNK_POINTS} points.",
        "",
        "| stage | local | Ray, 1 worker | Ray, 2 workers | 2 workers / local |",
        "|---|---|---|---|---|",
    ]
    for name in runs:
        local, one, two = (rates[(name, k)] for k in ("local", "ray 1", "ray 2"))
        lines.append(f"| {name} (points/s) | {local:.0f} | {one:.0f} | {two:.0f} | {two / local:.2f}× |")
    lines += [
        "",
        f"Results of every Ray run identical to the local executor's: **{'yes' if identical else 'NO'}**.",
        "",
        f"Per-task overhead (an empty task, {EMPTY_TASKS} of them, measured at the driver): "
        f"{overhead[1] * 1e3:.2f} ms with 1 worker, {overhead[2] * 1e3:.2f} ms with 2. "
        f"Start of a local instance with its workers warm (not in the rates): {startup[1]:.1f} s (1 worker), "
        f"{startup[2]:.1f} s (2 workers).",
        "",
        "## Projection to N machines",
        "",
        "One chunk of c points costs c/r + o on one worker (r: the 1-worker Ray rate, which includes the transfer of "
        "the chunk's results; o: the per-task overhead), and the driver hands out at most 1/o tasks per second. With "
        "W = N·k workers (k cores per machine) the rate is about min(W · c / (c/r + o), c / o) points/s, plus a fixed "
        "start (the instance and the workers' imports, seconds; the payload is put into the object store once and "
        "each node fetches it once). Chunks are whole: a run of fewer than W chunks uses fewer workers, so the "
        f"useful W is at most ⌈N_points / {CHUNK_POINTS}⌉ ({chunks} here).",
        "",
        "| stage | machines (k = 16 cores) | workers | projected points/s |",
        "|---|---|---|---|",
    ]
    o = overhead[2]
    for name in runs:
        r = rates[(name, "ray 1")]
        per_worker = CHUNK_POINTS / (CHUNK_POINTS / r + o)
        for machines in (1, 4, 16, 64):
            w = machines * 16
            lines.append(f"| {name} | {machines} | {w} | {min(w * per_worker, CHUNK_POINTS / o):.3g} |")
    eff = {name: rates[(name, "ray 2")] / (2 * rates[(name, "ray 1")]) for name in runs}
    lines += [
        "",
        "Measured parallel efficiency from 1 to 2 workers on this 2-core machine (the driver shares the cores): "
        + ", ".join(f"{name} {e:.0%}" for name, e in eff.items())
        + ". The projection assumes that efficiency per added machine is 100% (no shared cores, a network fast "
        "enough for one payload per node); it is an upper estimate, not a measurement.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out != "-":
        Path(args.out).write_text(text)
    return 0 if identical else 1


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


if __name__ == "__main__":
    raise SystemExit(main())
