"""Global robustness over a domain box (issue 14): proven volume fraction and time against input dimension and
student size, at a fixed budget per run, on CPU.

Students: ReLU MLPs m → w → w → 2 (w = 16, 32, 64, 128, i.e. 32 to 256 ReLUs) fitted in a few seconds to the logits of
the sigmoid teacher of 004 §5 (``pacverify.synthetic.sigmoid_teacher(a)``, logits ±a·Σx/2) by mean squared error
on draws from the synthetic Gaussians of 004 §5 (``pacverify.data.TruncatedGaussians``) plus uniform points of the
domain. A student that fits well is close to the teacher, whose answer is analytic: globally δ-robust on the domain
at confidence κ iff δ < t/(a·‖1‖_*) with t = ln(κ/(1 − κ)) (L∞: ‖1‖_1 = m; L2: √m). Each student is asked at
δ = 0.5× and 1.5× that radius (``--factors``); the teacher itself (2·m hidden ReLUs) is asked at 0.8× and 1.2× as the
known-answer rows. Domain [-2, 2]^m, κ = 0.9, a = 4, L∞, x′ inside the domain, CROWN, one torch thread. Runs below
the radius use the whole budget (the proven fraction is the measure); runs above it stop at the first checked
counterexample pair (the time is the time to falsify).

    python benchmarks/bench_global.py                                   # dims 2 4 8 16, widths 16 32 64 128, 25 s
    python benchmarks/bench_global.py --dims 2 4 --widths 16 --timeout 5
    python benchmarks/bench_global.py --markdown benchmarks/results/global.md
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pacverify.data import TruncatedGaussians  # noqa: E402
from pacverify.synthetic import sigmoid_teacher  # noqa: E402
from pacverify.verify.global_robustness import verify_global  # noqa: E402

A, KAPPA, LO, HI = 4.0, 0.9, -2.0, 2.0


def analytic_radius(m: int, norm: str) -> float:
    """The sigmoid teacher's global radius on the domain: t/(a·‖1‖_*)."""
    return math.log(KAPPA / (1 - KAPPA)) / (A * (m if norm == "inf" else math.sqrt(m)))


def fit_student(m: int, width: int, seed: int, steps: int = 1500) -> tuple[torch.nn.Sequential, float, float]:
    """An MLP m → width → width → 2 fitted to the teacher's logits; (student, fit time, max |Δ margin| on fresh
    Gaussian draws inside the domain)."""
    torch.manual_seed(seed)
    teacher = sigmoid_teacher(A, dim=m, width=2).double()
    student = torch.nn.Sequential(torch.nn.Linear(m, width), torch.nn.ReLU(), torch.nn.Linear(width, width),
                                  torch.nn.ReLU(), torch.nn.Linear(width, 2)).double()
    gauss = TruncatedGaussians(dim=m, seed=seed)
    x_train = np.concatenate([gauss.draw(4000), np.random.default_rng(seed).uniform(LO, HI, (4000, m))])
    x = torch.tensor(np.clip(x_train, LO, HI), dtype=torch.float64)
    with torch.no_grad():
        target = teacher(x)
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    start = time.perf_counter()
    for step in range(steps):
        batch = torch.randint(0, x.shape[0], (512,))
        loss = ((student(x[batch]) - target[batch]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == steps // 2:
            for group in opt.param_groups:
                group["lr"] = 1e-3
    fit_s = time.perf_counter() - start
    test = torch.tensor(np.clip(gauss.fresh(2000), LO, HI), dtype=torch.float64)
    with torch.no_grad():
        err = ((student(test)[:, 0] - student(test)[:, 1]) - (teacher(test)[:, 0] - teacher(test)[:, 1])).abs().max()
    return student.eval(), fit_s, float(err)


def run(model, m: int, radius: float, timeout: float, max_boxes: int, seed: int, *, stop: bool) -> dict:
    result = verify_global(model, (np.full(m, LO), np.full(m, HI)), radius, KAPPA, norm="inf", timeout=timeout,
                           max_boxes=max_boxes, seed=seed, stop_at_counterexample=stop)
    return {"verdict": result.verdict, "fraction": result.proven_fraction, "done": result.boxes_done,
            "open": result.boxes_open, "items": result.stats["items_bounded"], "time": result.time_s,
            "stopped": result.stats["stopped_by"] or "done"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--factors", type=float, nargs="+", default=[0.5, 1.5])
    parser.add_argument("--timeout", type=float, default=25.0, help="seconds per verification run")
    parser.add_argument("--max-boxes", type=int, default=2_000_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", help="write the table here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    header = (f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
              f"{load:.2f} at start; torch {torch.__version__}, {args.threads} thread(s); budget {args.timeout:g} s or "
              f"{args.max_boxes} items per run")
    print(header)
    rows = []
    total = time.perf_counter()
    for m in args.dims:
        r_star = analytic_radius(m, "inf")
        teacher = sigmoid_teacher(A, dim=m, width=2 * m)
        for factor in (0.8, 1.2):
            out = run(teacher, m, factor * r_star, args.timeout, args.max_boxes, args.seed, stop=factor > 1)
            expected = "verified" if factor < 1 else "falsified"
            rows.append((m, f"teacher ({2 * m} ReLUs)", "—", "—", factor, factor * r_star, expected, out))
            print(rows[-1])
        for width in args.widths:
            student, fit_s, err = fit_student(m, width, args.seed)
            for factor in args.factors:
                out = run(student, m, factor * r_star, args.timeout, args.max_boxes, args.seed, stop=factor > 1)
                rows.append((m, f"2×{width} ({2 * width} ReLUs)", f"{fit_s:.1f}", f"{err:.3f}", factor,
                             factor * r_star, "—", out))
                print(rows[-1])
    elapsed = time.perf_counter() - total
    lines = [header + f"; whole run {elapsed:.0f} s", "",
             "| m | network | fit s | max \\|Δ margin\\| | δ / r* | δ | analytic | verdict | proven fraction | "
             "x-boxes done | x-boxes open | items bounded | time s | stopped by |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m, name, fit_s, err, factor, radius, expected, out in rows:
        lines.append(f"| {m} | {name} | {fit_s} | {err} | {factor:g} | {radius:.4g} | {expected} | {out['verdict']} | "
                     f"{out['fraction']:.4f} | {out['done']} | {out['open']} | {out['items']} | {out['time']:.1f} | "
                     f"{out['stopped']} |")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
