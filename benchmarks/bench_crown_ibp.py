"""CROWN-IBP against IBP and CROWN on the real-teacher shapes of bench_real_teachers.py: points/s, tightness, soundness.

Each case (random weights, BatchNorm statistics drawn, exported and read as in bench_real_teachers.py) is bounded at
``--points`` random points, L∞ radius 1/255 in [0, 1], lower bounds of the 9 margins at the network's class, one
torch thread, one call per method after a one-point warm-up; CROWN is skipped where ``--no-crown`` names the case
(ResNet20: more than 53 minutes a point). ``sampled inside``: 64 sampled points of every box (corners and uniform),
evaluated by the network, lie above the method's lower bounds.

    OMP_NUM_THREADS=1 python benchmarks/bench_crown_ibp.py --cases resnet8-small,convbig-small,convbig,resnet20 \
        --points 4 --no-crown resnet20
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def boxes_and_samples(net, points: int, radius: float = 1 / 255):
    """The benchmark's problem on ``net``: ``points`` random points (seeded), their L∞ boxes of ``radius`` in
    [0, 1], the margin rows C at the network's class, and C·f at 64 points sampled in every box (16 corners, 48
    uniform), (64, points, 9)."""
    from pacverify.verify.output_rows import margin_rows
    from pacverify.verify.sets import perturbation_set

    gen = torch.Generator().manual_seed(1)
    x = torch.rand(points, net.in_features, generator=gen, dtype=torch.float64)
    C = margin_rows(net(x).argmax(1), net.out_features)
    s = perturbation_set(x, radius, "inf", domain=(0.0, 1.0))
    lo, hi = s.interval()
    u = torch.rand((64,) + tuple(lo.shape), generator=gen, dtype=torch.float64)
    u[:16] = u[:16].round()
    with torch.no_grad():
        outs = net((lo + u * (hi - lo)).reshape(-1, net.in_features)).reshape(64, points, -1)
    return s, C, torch.einsum("bko,pbo->pbk", C, outs)


def run(case: str, points: int, methods: list[str]) -> list[dict]:
    from bench_real_teachers import CASES, _export

    from pacverify.onnx_io import load_network
    from pacverify.verify.bounds import BOUND_METHODS

    name, build = CASES[case]
    model, shape = build()
    net = load_network(_export(model, shape))
    s, C, values = boxes_and_samples(net, points)
    rows = []
    for method in methods:
        routine = BOUND_METHODS[method]
        kwargs = {} if method == "ibp" else {"upper": False}
        routine(net, s.select(torch.arange(1)), C[:1], **kwargs)           # warm-up
        start = time.perf_counter()
        lower = routine(net, s, C, **kwargs).lower
        seconds = time.perf_counter() - start
        rows.append({"case": name, "method": method, "points/s": points / seconds,
                     "verified": float((lower > 0).all(1).float().mean()), "median lower": float(lower.median()),
                     "inside": bool((values >= lower - 1e-9 * (1 + values.abs())).all())})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="resnet8-small,convbig-small,convbig,resnet20")
    parser.add_argument("--points", type=int, default=4)
    parser.add_argument("--no-crown", default="resnet20", help="comma list of cases bounded without CROWN")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("| network | method | points/s | verified | median lower bound | sampled inside |")
    print("|---|---|---|---|---|---|")
    for case in args.cases.split(","):
        methods = ["ibp", "crown-ibp"] + ([] if case in args.no_crown.split(",") else ["crown"])
        for row in run(case, args.points, methods):
            print(f"| {row['case']} | {row['method']} | {row['points/s']:.3g} | {row['verified']:.2f} "
                  f"| {row['median lower']:.3g} | {row['inside']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
