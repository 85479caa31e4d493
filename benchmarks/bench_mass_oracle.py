"""Mass mode's teacher oracle at scale (issue 11): sound lower radii l_i and attack upper radii u_i of a teacher
at every sample point, timed on CPU.

Teacher: a 784-50-10 ReLU MLP (Flatten → Linear → ReLU → Linear on 1×28×28 inputs), trained here for a few epochs
with torch on scikit-learn's digits (1797 images, 8×8, values 0..16), upsampled to 28×28 (bilinear,
``torch.nn.functional.interpolate``) and scaled to [0, 1]. Points: the 1797 upsampled images repeated up to
``--points`` (default 31,634), each copy with a uniform jitter in ±``--jitter`` (default 0.005) per pixel, clipped
to [0, 1]; labels: the teacher's own class. The engine reads the teacher through
:func:`pacverify.verify.oracle.teacher_network` (export to ONNX, read back in float64).

For each norm (L∞: cap 0.05; L2: cap 0.5; tol = cap/32; domain [0, 1]) the script times
:func:`teacher_lower_radii` over all points (whole wall time), its number of passes (bound calls) and
point-bounds, the quantiles of l_i, the prediction of :func:`estimate_cost`, the bisection search on a subset for
comparison, and :func:`attack_radii` (PGD bisected on the radius in [l_i, cap]).

    python benchmarks/bench_mass_oracle.py                           # 31,634 points, both norms
    python benchmarks/bench_mass_oracle.py --points 4000 --threads 1
    python benchmarks/bench_mass_oracle.py --markdown benchmarks/results/mass.md
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pacverify.pipeline.teacher_check import TeacherModel  # noqa: E402
from pacverify.verify.oracle import (  # noqa: E402
    attack_radii,
    estimate_cost,
    teacher_lower_radii,
    teacher_network,
)

SHAPE = (1, 28, 28)


def digits_28() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits upsampled to 28×28 (bilinear) in [0, 1]: (1797, 1, 28, 28) float32 and labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.from_numpy(data.images.astype(np.float32) / 16.0)[:, None]
    x = torch.nn.functional.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False).clamp(0, 1)
    return x.numpy(), data.target.astype(np.int64)


def train_teacher(x: np.ndarray, y: np.ndarray, *, epochs: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 50), torch.nn.ReLU(), torch.nn.Linear(50, 10))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 64):
            idx = order[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()


def sample_points(x: np.ndarray, n: int, jitter: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = np.resize(np.arange(len(x)), n)
    pts = x[rows].reshape(n, -1).astype(np.float64) + rng.uniform(-jitter, jitter, (n, 784))
    return np.clip(pts, 0.0, 1.0)


def quantiles(v: np.ndarray) -> str:
    q = np.quantile(v, [0.0, 0.1, 0.5, 0.9, 1.0])
    return " / ".join(f"{t:.4g}" for t in q)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=31634)
    ap.add_argument("--jitter", type=float, default=0.005)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--cap-inf", type=float, default=0.05)
    ap.add_argument("--cap-2", type=float, default=0.5)
    ap.add_argument("--norms", default="inf,2")
    ap.add_argument("--method", default="crown")
    ap.add_argument("--bisect-points", type=int, default=2000, help="subset timed with search='bisect' (0: skip)")
    ap.add_argument("--attack", type=int, default=-1, help="points attacked (default: all; 0: skip)")
    ap.add_argument("--attack-steps", type=int, default=20)
    ap.add_argument("--attack-bisection", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--markdown", type=Path, default=None, help="append the table to this file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    say(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__},"
        f" {torch.get_num_threads()} torch threads, load average at start {load:.2f}")
    t = time.perf_counter()
    images, targets = digits_28()
    teacher = train_teacher(images, targets, epochs=args.epochs, seed=args.seed)
    with torch.no_grad():
        accuracy = float((teacher(torch.from_numpy(images)).argmax(1).numpy() == targets).mean())
    say(f"teacher: 784-50-10 ReLU MLP, {args.epochs} epochs on the 1797 digits (28×28), training accuracy "
        f"{accuracy:.3f} ({time.perf_counter() - t:.1f} s)")
    points = sample_points(images, args.points, args.jitter, args.seed)
    with torch.no_grad():
        labels = teacher(torch.from_numpy(points.astype(np.float32)).reshape(-1, *SHAPE)).argmax(1).numpy()
    t = time.perf_counter()
    net, reason = teacher_network(teacher, None, SHAPE, sample=points[:64].reshape(-1, *SHAPE))
    if net is None:
        say(reason)
        return 1
    say(f"network: {reason} ({time.perf_counter() - t:.1f} s)")
    say(f"points: {args.points} = the 1797 upsampled digits repeated, jitter ±{args.jitter} per pixel, clipped to "
        "[0, 1]; labels: the teacher's class")
    model = TeacherModel(teacher, SHAPE)
    domain = (0.0, 1.0)
    caps = {"inf": args.cap_inf, "2": args.cap_2}
    for norm in args.norms.split(","):
        cap = caps[norm]
        tol = cap / 32
        say()
        say(f"## L{'∞' if norm == 'inf' else '2'}: cap {cap}, tol {tol:.4g}, domain [0, 1], method {args.method}")
        predicted = estimate_cost(net, args.points, points=points, norm=norm, cap=cap, tol=tol, method=args.method,
                                  domain=domain)
        stats: dict = {}
        t = time.perf_counter()
        lower = teacher_lower_radii(net, points, labels, norm, cap=cap, tol=tol, method=args.method, domain=domain,
                                    stats=stats)
        wall = time.perf_counter() - t
        say(f"teacher_lower_radii (itp): {wall:.1f} s wall for {args.points} points = {args.points / wall:.0f} "
            f"points/s; {stats['passes']} passes, {stats['bounded'] / args.points:.2f} bounds per point; "
            f"estimate_cost predicted {predicted:.1f} s")
        say(f"  l_i quantiles (0/10/50/90/100 %): {quantiles(lower)}; l_i = 0 at {np.mean(lower == 0):.1%}, "
            f"proved at the cap at {np.mean(lower >= cap):.1%}")
        if args.bisect_points:
            k = min(args.bisect_points, args.points)
            bstats: dict = {}
            t = time.perf_counter()
            bis = teacher_lower_radii(net, points[:k], labels[:k], norm, cap=cap, tol=tol, method=args.method,
                                      domain=domain, search="bisect", stats=bstats)
            bwall = time.perf_counter() - t
            t = time.perf_counter()
            itp = teacher_lower_radii(net, points[:k], labels[:k], norm, cap=cap, tol=tol, method=args.method,
                                      domain=domain)
            iwall = time.perf_counter() - t
            say(f"  on the first {k} points: bisection (certified_radius) {bwall:.1f} s, {bstats['passes']} passes; "
                f"itp {iwall:.1f} s; itp − bisect: mean {np.mean(itp - bis):+.2g}, min {np.min(itp - bis):+.2g}, "
                f"max {np.max(itp - bis):+.2g}")
        n_attack = args.points if args.attack < 0 else min(args.attack, args.points)
        if n_attack:
            t = time.perf_counter()
            upper, _ = attack_radii(model, points[:n_attack], labels[:n_attack], norm, hi=cap, lo=lower[:n_attack],
                                    steps=args.attack_steps, bisection=args.attack_bisection, domain=domain,
                                    seed=args.seed)
            awall = time.perf_counter() - t
            found = np.isfinite(upper)
            ratio = upper[found & (lower[:n_attack] > 0)] / lower[:n_attack][found & (lower[:n_attack] > 0)]
            say(f"attack_radii on {n_attack} points ({args.attack_steps} PGD steps, 1 restart, "
                f"{args.attack_bisection} bisection rounds in [l_i, cap]): {awall:.1f} s wall = "
                f"{n_attack / awall:.0f} points/s; counterexample within the cap at {found.mean():.1%}")
            if found.any():
                say(f"  u_i quantiles where found: {quantiles(upper[found])}; u_i / l_i where both: "
                    f"{quantiles(ratio) if len(ratio) else '-'}")
            assert np.all(lower[:n_attack] <= upper)
    if args.markdown:
        with open(args.markdown, "a") as fh:
            fh.write("\n```\n" + "\n".join(lines) + "\n```\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
