"""CROWN side by side with auto_LiRPA (issue 12, goal 1): points/s and bound agreement, same nets, points, radius,
threads.

auto_LiRPA is not a dependency and does not install from the registry on torch 2: install it by hand into a throwaway
virtual environment outside the repository (its source from github.com/Verified-Intelligence/auto_LiRPA; a venv
with --system-site-packages reuses this torch) and pass that interpreter:

    python benchmarks/bench_vs_auto_lirpa.py --python /tmp/alirpa-venv/bin/python --n 20000

Networks: the 64-64-64-10 student of bench_bounds.py and VNN-COMP's mnist-net_256x2 (784-256-256-10). Specification:
the 9 margins at the network's own class. Each measurement runs in a fresh process with ``--threads`` torch
threads: pacverify's ``crown(upper=False)`` in float64 (sound: rounding margins included), with ``--methods
crown,crown-f32`` also its float32 path (``crown_f32(upper=False)``: float32 products with a-posteriori rounding
charges, float64 on the points near zero; sound), and auto_LiRPA's ``compute_bounds(method="CROWN",
bound_upper=False)`` in float32 and float64, in batches of ``--batch`` points. ``max lower Δ``: the largest of
pacverify's float64 lower bound minus the other's (positive: the other's is looser somewhere); the speed-up
columns: the row's time over pacverify's ``crown`` (and ``crown-f32``) time. ``--allocator fixed`` (the default)
gives both tools' processes the glibc malloc thresholds pacverify's command line sets (pacverify.allocator);
``adaptive`` leaves glibc's defaults.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

AUTO_LIRPA = r'''
import ctypes, json, sys, time
cfg = json.loads(sys.argv[1])
for param, value in cfg["mallopt"]:   # the glibc thresholds of pacverify.allocator.keep_freed_memory, if fixed
    assert ctypes.CDLL("libc.so.6").mallopt(param, value)
import numpy as np
import torch
torch.set_num_threads(cfg["threads"])
from auto_LiRPA import BoundedModule, BoundedTensor, PerturbationLpNorm
data = np.load(cfg["data"])
dtype = getattr(torch, cfg["dtype"])
layers = []
k = 0
while f"W{k}" in data:
    lin = torch.nn.Linear(data[f"W{k}"].shape[1], data[f"W{k}"].shape[0])
    lin.weight.data = torch.tensor(data[f"W{k}"]); lin.bias.data = torch.tensor(data[f"b{k}"])
    layers += [lin, torch.nn.ReLU()]
    k += 1
model = torch.nn.Sequential(*layers[:-1]).to(dtype)
x = torch.tensor(data["x"], dtype=dtype)
C = torch.tensor(data["C"], dtype=dtype)
bm = BoundedModule(model, x[:1], device="cpu", verbose=0)
norm = np.inf if cfg["norm"] == "inf" else 2
def run(lo, hi):
    ptb = PerturbationLpNorm(norm=norm, eps=cfg["radius"])
    lb, _ = bm.compute_bounds(x=(BoundedTensor(x[lo:hi], ptb),), C=C[lo:hi], method="CROWN", bound_upper=False)
    return lb
run(0, 64)
out = []
start = time.perf_counter()
for lo in range(0, x.shape[0], cfg["batch"]):
    out.append(run(lo, lo + cfg["batch"]).detach())
wall = time.perf_counter() - start
np.save(cfg["out"], torch.cat(out).double().numpy())
print(json.dumps({"wall_s": wall}))
'''


def _pacverify(cfg: dict) -> dict:
    import time

    if cfg["allocator"] == "fixed":
        from pacverify.allocator import keep_freed_memory

        assert keep_freed_memory(), "glibc's thresholds could not be set"
    import numpy as np
    import torch

    torch.set_num_threads(cfg["threads"])
    from pacverify.network import Affine, Network, Relu
    from pacverify.verify.bounds import BOUND_METHODS, crown
    from pacverify.verify.sets import perturbation_set

    data = np.load(cfg["data"])
    layers: list = []
    k = 0
    while f"W{k}" in data:
        layers += [Affine(torch.tensor(data[f"W{k}"], dtype=torch.float64),
                          torch.tensor(data[f"b{k}"], dtype=torch.float64)), Relu()]
        k += 1
    net = Network(tuple(layers[:-1]), (data["W0"].shape[1],))
    x, C = torch.tensor(data["x"], dtype=torch.float64), torch.tensor(data["C"], dtype=torch.float64)
    s = perturbation_set(x, cfg["radius"], cfg["norm"])
    routine = BOUND_METHODS[cfg.get("method", "crown")]
    routine(net, s.select(slice(0, 64)), C[:64], upper=False)
    start = time.perf_counter()
    lower = routine(net, s, C, upper=False).lower
    wall = time.perf_counter() - start
    np.save(cfg["out"], lower.numpy())
    if routine is not crown:
        return {"wall_s": wall}
    # the physical limit: matrix-product FLOPs per point (torch's profiler, 256 points) at this CPU's GEMM rate
    from torch.profiler import ProfilerActivity, profile

    k = min(256, x.shape[0])
    torch.set_num_threads(1)   # the profiler sees the calling thread only, and CROWN's chunk workers are others
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        crown(net, s.select(slice(0, k)), C[:k], upper=False)
    torch.set_num_threads(cfg["threads"])
    flops = sum(e.flops for e in prof.key_averages()) / k
    a, b = torch.rand(2048, 256, dtype=torch.float64), torch.rand(256, 256, dtype=torch.float64)
    start = time.perf_counter()
    for _ in range(20):
        a @ b
    rate = 20 * 2 * 2048 * 256 * 256 / (time.perf_counter() - start)
    return {"wall_s": wall, "flops_per_point": flops, "gemm_flops_per_s": rate}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--python", required=True, help="an interpreter that can import auto_LiRPA")
    p.add_argument("--n", type=int, default=20000, help="points on the student")
    p.add_argument("--n-mnist", type=int, default=2000, help="points on mnist-net_256x2")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=10000, help="auto_LiRPA's points per call")
    p.add_argument("--repeat", type=int, default=3, help="runs of each tool, alternating; the median time is shown")
    p.add_argument("--nets", default="student,mnist")
    p.add_argument("--norms", default="2,inf")
    p.add_argument("--methods", default="crown", help="pacverify's bound methods: crown, or crown,crown-f32")
    p.add_argument("--allocator", default="fixed", choices=("fixed", "adaptive"),
                   help="glibc's malloc thresholds in both tools' processes: fixed (what pacverify's command line "
                        "sets, pacverify.allocator) or adaptive (glibc's default)")
    p.add_argument("--pacverify-one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.pacverify_one:
        print(json.dumps(_pacverify(json.loads(args.pacverify_one))))
        return 0
    import numpy as np
    import torch

    sys.path.insert(0, str(REPO / "benchmarks"))
    sys.path.insert(0, str(REPO))
    from bench_bounds import mnist_network, student_network

    from pacverify import allocator
    from pacverify.network import Affine
    from pacverify.verify.output_rows import margin_rows

    mallopt = [[allocator.M_MMAP_THRESHOLD, allocator.MMAP_THRESHOLD],
               [allocator.M_TRIM_THRESHOLD, allocator.TRIM_THRESHOLD]] if args.allocator == "fixed" else []
    radii = {("student", "2"): 1.5, ("student", "inf"): 0.2, ("mnist", "2"): 0.5, ("mnist", "inf"): 0.02}
    print(f"machine: {platform.machine()}; torch {torch.__version__}; {args.threads} thread(s); N = {args.n} "
          f"(student), {args.n_mnist} (mnist); auto_LiRPA batches of {args.batch}; allocator thresholds "
          f"{args.allocator} in both tools")
    methods = args.methods.split(",")
    if methods[0] != "crown":
        p.error("--methods must start with crown (the reference of the bound differences)")
    info: dict = {}
    print("| net | norm | radius | tool | dtype | points/s | verified | max lower Δ vs pacverify | "
          + " | ".join(f"{m}'s speed-up" for m in methods) + " |")
    print("|---|---|---|---|---|---|---|---|" + "---|" * len(methods))
    limits: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.nets.split(","):
            net, sample = student_network() if name == "student" else mnist_network()
            n = args.n if name == "student" else args.n_mnist
            x = sample(n, 7)
            weights = {}
            for k, layer in enumerate(a for a in net.layers if isinstance(a, Affine)):
                weights[f"W{k}"], weights[f"b{k}"] = layer.weight.numpy(), layer.bias.numpy()
            C = margin_rows(net(x).argmax(1), net.out_features)
            data = Path(tmp) / f"{name}.npz"
            np.savez(data, x=x.numpy(), C=C.numpy(), **weights)
            for norm in args.norms.split(","):
                radius = radii[(name, norm)]
                cfg = {"data": str(data), "norm": norm, "radius": radius, "threads": args.threads,
                       "batch": args.batch, "allocator": args.allocator, "mallopt": mallopt}
                walls: dict[tuple[str, str], list[float]] = {}
                results: dict[tuple[str, str], np.ndarray] = {}
                for _ in range(args.repeat):   # alternating, so that a change of the machine's load hits every tool
                    for method in methods:
                        out = str(Path(tmp) / "pacverify.npy")
                        res = subprocess.run([sys.executable, __file__, "--python", args.python, "--pacverify-one",
                                              json.dumps({**cfg, "out": out, "method": method})], capture_output=True,
                                             text=True, check=True)
                        got = json.loads(res.stdout.strip().splitlines()[-1])
                        key = ("pacverify", "float64" if method == "crown" else method)
                        if method == "crown":
                            info = got
                        walls.setdefault(key, []).append(got["wall_s"])
                        results[key] = np.load(out)
                    for dtype in ("float32", "float64"):
                        out = str(Path(tmp) / f"alirpa_{dtype}.npy")
                        res = subprocess.run([args.python, "-c", AUTO_LIRPA, json.dumps({**cfg, "dtype": dtype,
                                                                                          "out": out})],
                                             capture_output=True, text=True, check=True)
                        walls.setdefault(("auto_LiRPA", dtype), []).append(
                            json.loads(res.stdout.strip().splitlines()[-1])["wall_s"])
                        results[("auto_LiRPA", dtype)] = np.load(out)
                limits.append(f"{name} {norm}: {info['flops_per_point'] / 1e6:.2f} MFLOP of matrix products per "
                              f"point at {info['gemm_flops_per_s'] / 1e9:.1f} GFLOP/s (float64 GEMM) = "
                              f"{info['gemm_flops_per_s'] / info['flops_per_point']:,.0f} points/s at most")
                ours = results[("pacverify", "float64")]
                runs = [(tool, dtype, float(np.median(w)), results[(tool, dtype)]) for (tool, dtype), w in walls.items()]
                base = [float(np.median(walls[("pacverify", "float64" if m == "crown" else m)])) for m in methods]
                for tool, dtype, wall, lower in runs:
                    delta = float((ours - lower).max())
                    ups = " | ".join(f"{wall / b:.2f}" for b in base)
                    print(f"| {name} | {norm} | {radius:g} | {tool} | {dtype} | {n / wall:,.0f} | "
                          f"{float((lower > 0).all(axis=1).mean()):.3f} | {delta:.1e} | {ups} |", flush=True)
    print("\nphysical limit of pacverify's float64 CROWN (matrix products only):")
    for line in limits:
        print(f"- {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
