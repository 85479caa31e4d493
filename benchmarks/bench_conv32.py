"""Float32 pulls through convolutions (method "crown-f32" on convolutional networks, pacverify.verify.bounds.conv32)
against float64 CROWN on the real-teacher shapes of bench_real_teachers.py: points/s, how far the bounds move, the
decisions, soundness on sampled points.

Each case (random weights, BatchNorm statistics drawn, exported as in bench_real_teachers.py, read with every
convolution native: ``native_conv_entries=0``) is bounded at
``--points`` random points, L∞ radius ``--radius`` (1/255) in [0, 1], lower bounds of the 9 margins at the network's class, one torch
thread, glibc's allocator thresholds fixed (as the command line does), a one-point warm-up per method, then
``--repeat`` rounds alternating the two methods (the median round is reported). ``sampled inside``: 64 sampled points
of every box (corners and uniform), evaluated by the network, lie above crown-f32's lower bounds.

    OMP_NUM_THREADS=1 python benchmarks/bench_conv32.py --cases convbig-small,resnet8-small,convbig --points 4
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def run(case: str, points: int, repeat: int, radius: float) -> dict:
    from bench_crown_ibp import boxes_and_samples
    from bench_real_teachers import CASES, _export

    from pacverify.network import Conv, maps_of
    from pacverify.onnx_io import load_network
    from pacverify.verify.bounds import conv32, crown, crown_f32

    name, build = CASES[case]
    model, shape = build()
    net = load_network(_export(model, shape), native_conv_entries=0)   # every convolution native
    def convolutions(network) -> list[Conv]:
        return [op for layer in network.layers for op in maps_of(layer) if isinstance(op, Conv)]

    marked = sum(op.float32_products for op in convolutions(conv32.mark(net)))
    convs = len(convolutions(net))
    s, C, values = boxes_and_samples(net, points, radius)
    routines = {"crown": crown, "crown-f32": crown_f32}
    for routine in routines.values():
        routine(net, s.select(torch.arange(1)), C[:1], upper=False)        # warm-up
    seconds: dict[str, list[float]] = {m: [] for m in routines}
    lower: dict[str, torch.Tensor] = {}
    for _ in range(repeat):
        for method, routine in routines.items():
            start = time.perf_counter()
            lower[method] = routine(net, s, C, upper=False).lower
            seconds[method].append(time.perf_counter() - start)
    rate = {m: points / statistics.median(t) for m, t in seconds.items()}
    gap = lower["crown"] - lower["crown-f32"]
    proved = {m: (v > 0).all(1) for m, v in lower.items()}
    return {"case": name, "convs": f"{marked} of {convs}", "crown": rate["crown"], "f32": rate["crown-f32"],
            "ratio": rate["crown-f32"] / rate["crown"], "gap_median": float(gap.median()), "gap_max": float(gap.max()),
            "verified": f"{float(proved['crown'].float().mean()):.2f} / {float(proved['crown-f32'].float().mean()):.2f}",
            "differ": int((proved["crown"] != proved["crown-f32"]).sum()),
            "inside": bool((values >= lower["crown-f32"] - 1e-9 * (1 + values.abs())).all())}


def main(argv: list[str] | None = None) -> int:
    from pacverify.allocator import keep_freed_memory

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="convbig-small,resnet8-small,convbig")
    parser.add_argument("--points", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--radius", type=float, default=1 / 255, help="L∞ radius in [0, 1] (default 1/255)")
    args = parser.parse_args(argv)
    keep_freed_memory()
    torch.set_num_threads(1)
    print(f"machine: {platform.machine()}, torch {torch.__version__}, 1 thread, {args.points} points, L∞ radius "
          f"{args.radius:.4g}, {args.repeat} alternating rounds (median)")
    print("| network | convolutions pulled in float32 | float64 CROWN points/s | crown-f32 points/s | ratio "
          "| float64 − f32 lower bound, median / max | verified float64 / f32 | decisions that differ "
          "| sampled inside |")
    print("|---|---|---|---|---|---|---|---|---|")
    for case in args.cases.split(","):
        r = run(case, args.points, args.repeat, args.radius)
        print(f"| {r['case']} | {r['convs']} | {r['crown']:.3g} | {r['f32']:.3g} | {r['ratio']:.2f} "
              f"| {r['gap_median']:.1e} / {r['gap_max']:.1e} | {r['verified']} | {r['differ']} | {r['inside']} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
