"""Throughput of the bound engine: points/s of IBP, CROWN and α-CROWN, peak memory, agreement with a reference.

Networks: a 64-64-64-10 ReLU student (trained here for a few seconds on a 10-class Gaussian mixture
in R^64, seeded) and VNN-COMP's mnist-net_256x2 (points: the 15 mnistfc images, taken as the
midpoints of the eps = 0.03 boxes, jittered). Specification: the 9 margins z_y − z_j at the
network's own class y. Each configuration runs in a fresh subprocess so that its peak RSS is its own.

    python benchmarks/bench_bounds.py                       # the full table (several minutes)
    python benchmarks/bench_bounds.py --n 1000 --methods crown --nets student
    python benchmarks/bench_bounds.py --markdown benchmarks/results/verify.md   # rewrite the Throughput section
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
# radii at which CROWN verifies roughly half to nine tenths of the points
RADII = {("student", "2"): 1.5, ("student", "inf"): 0.2, ("mnist", "2"): 0.5, ("mnist", "inf"): 0.02}
# the slow configurations stop at these N by default (--no-caps runs everything): CPU time on a shared machine
MAX_N = {("student", "alpha-crown"): 10000, ("mnist", "alpha-crown"): 1000, ("mnist", "crown"): 10000,
         ("mnist", "crown-lower"): 10000}


def student_network(seed: int = 0):
    """A 64-64-64-10 ReLU MLP trained on a 10-class Gaussian mixture; returns (network, sampler)."""
    import torch

    from pacverify.network import Affine, Network, Relu

    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(10, 64, generator=gen) * 0.6

    def sample(n: int, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(s)
        y = torch.randint(0, 10, (n,), generator=g)
        return means[y] + torch.randn(n, 64, generator=g) * 0.5, y

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = sample(20000, seed + 1)
    for _ in range(8):
        for i in range(0, 20000, 200):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i:i + 200]), y[i:i + 200]).backward()
            opt.step()
    layers = []
    for m in model:
        layers.append(Affine(m.weight.detach().double(), m.bias.detach().double()) if isinstance(m, torch.nn.Linear)
                      else Relu())
    return Network(tuple(layers), (64,)), lambda n, s: sample(n, s)[0].double()


def mnist_network():
    """mnist-net_256x2 and a sampler of jittered mnistfc images (box midpoints of the eps = 0.03 properties)."""
    import numpy as np
    import torch

    from pacverify.onnx_io import load_network

    net = load_network(SHARED / "vnncomp/mnistfc/onnx/mnist-net_256x2.onnx")
    images = []
    for i in range(15):
        text = (SHARED / f"vnncomp/mnistfc/vnnlib/prop_{i}_0.03.vnnlib").read_text()
        lo = {int(k): float(v) for k, v in re.findall(r"\(>= X_(\d+) ([-\d.e]+)\)", text)}
        hi = {int(k): float(v) for k, v in re.findall(r"\(<= X_(\d+) ([-\d.e]+)\)", text)}
        images.append([(lo[k] + hi[k]) / 2 for k in range(784)])
    base = torch.tensor(np.array(images))

    def sample(n: int, s: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(s)
        x = base[torch.arange(n) % 15] + torch.randn(n, 784, generator=g, dtype=torch.float64) * 0.01
        return x.clamp(0, 1)
    return net, sample


def run_one(config: dict) -> dict:
    """One measurement (in this process): points/s, verified fraction, reference agreement, peak RSS."""
    import torch

    torch.set_num_threads(config["threads"])
    sys.path.insert(0, str(REPO / "tests"))
    from helpers_nets import crown_reference

    from pacverify.verify.bounds import alpha_crown, crown, ibp
    from pacverify.verify.output_rows import margin_rows
    from pacverify.verify.sets import perturbation_set

    net, sample = student_network() if config["net"] == "student" else mnist_network()
    dtype = getattr(torch, config["dtype"])
    net = net.to(dtype=dtype)
    x = sample(config["n"], 7)
    domain = (0.0, 1.0) if config["net"] == "mnist" else None
    s = perturbation_set(x, config["radius"], config["norm"], domain=domain)
    C = margin_rows(net.to(dtype=torch.float64)(x).argmax(1), net.out_features)
    method = {"ibp": ibp, "crown": crown, "crown-lower": partial(crown, upper=False),
              "alpha-crown": alpha_crown}[config["method"]]
    kwargs = {} if config["max_batch"] is None else {"max_batch": config["max_batch"]}
    method(net, s.select(slice(0, 64)), C[:64], **kwargs)  # warm-up (imports, allocator)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start, cpu = time.perf_counter(), time.process_time()
    bounds = method(net, s, C, **kwargs)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    out = {**config, "points_per_s": config["n"] / wall, "cpu_s": cpu, "wall_s": wall,
           "verified": float((bounds.lower > 0).all(dim=1).double().mean()),
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "rss_before_mib": rss_before / 1024}
    if config["method"].startswith("crown") and config["check"]:
        k = min(config["check"], config["n"])
        ref_lower, _ = crown_reference(net.to(dtype=torch.float64), s.select(slice(0, k)).to(dtype=torch.float64),
                                       C[:k])
        out["max_diff_vs_reference"] = float((bounds.lower[:k].double() - torch.as_tensor(ref_lower)).abs().max())
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", default="1000,10000,100000", help="comma list of point counts")
    p.add_argument("--methods", default="ibp,crown,crown-lower,alpha-crown",
                   help="crown-lower: CROWN with upper=False (lower bounds only)")
    p.add_argument("--nets", default="student,mnist")
    p.add_argument("--norms", default="2,inf")
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared: 1 by default)")
    p.add_argument("--max-batch", type=int, default=None)
    p.add_argument("--no-caps", action="store_true", help="run every N for every method (default: MAX_N caps)")
    p.add_argument("--check", type=int, default=200, help="points compared with the unbatched reference CROWN")
    p.add_argument("--markdown", help="rewrite the '## Throughput' section of this Markdown file")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return 0
    rows = []
    for net in args.nets.split(","):
        for norm in args.norms.split(","):
            for method in args.methods.split(","):
                for n in (int(v) for v in args.n.split(",")):
                    if not args.no_caps and n > MAX_N.get((net, method), n):
                        continue
                    config = {"net": net, "norm": norm, "method": method, "n": n, "radius": RADII[(net, norm)],
                              "dtype": args.dtype, "threads": args.threads, "max_batch": args.max_batch,
                              "check": args.check}
                    done = subprocess.run([sys.executable, __file__, "--one", json.dumps(config)], capture_output=True,
                                          text=True, cwd=REPO)
                    if done.returncode:
                        print(done.stderr, file=sys.stderr)
                        return 1
                    row = json.loads(done.stdout.strip().splitlines()[-1])
                    rows.append(row)
                    print(_line(row), flush=True)
    if args.markdown:
        _write_markdown(Path(args.markdown), rows, args, argv)
    return 0


def _line(r: dict) -> str:
    ref = f"{r['max_diff_vs_reference']:.1e}" if "max_diff_vs_reference" in r else ""
    return (f"| {r['net']} | {r['norm']} | {r['radius']:g} | {r['method']} | {r['n']} | {r['points_per_s']:,.0f} | "
            f"{r['verified']:.3f} | {r['peak_rss_mib'] - r['rss_before_mib']:.0f} | {r['peak_rss_mib']:.0f} | {ref} |")


def _write_markdown(path: Path, rows: list[dict], args, argv) -> None:
    command = "python benchmarks/bench_bounds.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = ["## Throughput", "",
             f"Machine: {platform.machine()} CPU, {os.cpu_count()} cores, shared with other engineers' jobs while "
             f"measured (figures vary by ±30% between runs); torch {__import__('torch').__version__}, "
             f"{args.threads} torch thread(s), dtype {args.dtype}. Command: `{command.strip()}`.", "",
             "Specification: the 9 margins at the network's own class. `verified`: fraction of points whose 9 lower "
             "bounds are all > 0. `Δ peak MiB`: how far the bound call raised the process's peak RSS above its level "
             "after the inputs were built (the engine's working memory plus its (N, 9) outputs); `peak RSS`: the whole "
             "measuring process (Python, torch, the network, the N input points and specifications). "
             "`|Δ| vs reference`: max difference of CROWN's lower bounds from the unbatched float64 reference "
             f"CROWN (tests/helpers_nets.py) on the first {args.check} points.", "",
             "| net | norm | radius | method | N | points/s | verified | Δ peak MiB | peak RSS MiB | "
             "\\|Δ\\| vs reference |",
             "|---|---|---|---|---|---|---|---|---|---|"] + [_line(r) for r in rows] + [""]
    text = path.read_text() if path.exists() else "# Verification benchmarks\n\n"
    section = "\n".join(lines)
    if "## Throughput" in text:
        text = re.sub(r"## Throughput\n.*?(?=\n## |\Z)", lambda _: section.rstrip("\n") + "\n", text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
