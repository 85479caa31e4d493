"""Benchmark: KD vs KDIGA vs IGAM vs IGDM (issue 4), written to ``benchmarks/results/distill.md``.

Problems:

* ``gaussians-2`` / ``gaussians-8``: the truncated Gaussians of 004 §5 (``pacverify.data``) in m = 2 and
  m = 8, teacher = the sigmoid teacher of 004 Eq 11 with slope a = 2 (``pacverify.synthetic``), whose
  exact L2 robust radius at x is |x·1|/√m.
* ``digits``: scikit-learn's bundled 8×8 digits (no download), pixels scaled to [0, 1]; D_X = a uniformly
  chosen training image plus N(0, 0.05²) jitter per pixel, clipped to [0, 1] (a continuous distribution
  around the images). Teacher: a Tanh MLP 64-256-256-10 trained with cross-entropy on the training split.

Student ``mlp:2x64`` for all; the same budget for every method (epochs, batch, lr, seed, no early
stop). Markers from ``pacverify.distill.quality``; robustness by the torch PGD of
``pacverify.distill.attack`` (20 steps, 2 restarts, L2) on the fresh sample — an attack, not a proof.

Run: ``python benchmarks/bench_distill.py [--epochs 60] [--samples 2000] [--out benchmarks/results/distill.md]``.
scikit-learn is needed for the digits only (``pip install scikit-learn``; not a pacverify dependency).
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pacverify.data import CallableSampler, TruncatedGaussians
from pacverify.distill import DistillConfig, distill
from pacverify.distill.attack import pgd_robust
from pacverify.fileio import atomic_write_text
from pacverify.synthetic import sigmoid_radius, sigmoid_teacher

METHODS = ("kd", "kdiga", "igam", "igdm")


def digits_problem(seed: int):
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.data / 16.0).astype(np.float32)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    train, test = order[:1437], order[1437:]
    torch.manual_seed(seed)
    teacher = nn.Sequential(nn.Linear(64, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 10))
    opt = torch.optim.Adam(teacher.parameters(), lr=1e-3)
    x, y = torch.from_numpy(images[train]), torch.from_numpy(digits.target[train])
    for _ in range(60):
        for idx in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(teacher(x[idx]), y[idx]).backward()
            opt.step()
    teacher.eval().requires_grad_(False)
    with torch.no_grad():
        accuracy = float((teacher(torch.from_numpy(images[test])).argmax(1).numpy() == digits.target[test]).mean())
    pool = images[train]

    def jittered(n: int, rng: np.random.Generator) -> np.ndarray:
        base = pool[rng.integers(0, len(pool), size=n)]
        return np.clip(base + rng.normal(0.0, 0.05, size=base.shape), 0.0, 1.0)

    note = f"Tanh MLP 64-256-256-10, test accuracy {accuracy:.3f} on the 360 held-out digits"
    return teacher, CallableSampler(seed=seed, fn=jittered, name="digits+jitter"), note, 0.5


def gaussian_problem(dim: int, seed: int):
    teacher = sigmoid_teacher(2.0, dim).requires_grad_(False)
    return teacher, TruncatedGaussians(seed=seed, dim=dim), "sigmoid teacher of 004 Eq 11, a = 2", 0.3


def exact_teacher_robust(name: str, fresh: np.ndarray, radius: float) -> np.ndarray | None:
    """For the sigmoid teacher the exact L2 robust radius at x is |x·1|/√m (``pacverify.synthetic``)."""
    return sigmoid_radius(fresh) > radius if name.startswith("gaussians") else None


def run_problem(name: str, teacher, sampler, radius: float, args) -> list[dict]:
    x, fresh = sampler.draw(args.samples), sampler.fresh(args.fresh)
    teacher_robust = pgd_robust(teacher, fresh, radius, seed=args.seed)
    exact = exact_teacher_robust(name, fresh, radius)
    rows = []
    for method in METHODS:
        result = distill(teacher, x, student="mlp:2x64", method=method, epochs=args.epochs, lr=args.lr,
                         early_stop=False, seed=args.seed, progress=False, x_fresh=fresh)
        student_robust = pgd_robust(result.student, fresh, radius, seed=args.seed)
        m = result.markers
        rows.append({
            "problem": name, "method": method, "agree": m.agreement, "agree_fresh": m.agreement_fresh,
            "eq13": m.eq13_fraction, "gd": m.gd_mean, "gd_fresh": m.gd_mean_fresh, "gc": m.gc_mean,
            "gc_fresh": m.gc_mean_fresh, "rho": m.rho_quantiles, "rho_inf": m.rho_inf,
            "radius": radius, "teacher_robust": float(teacher_robust.mean()),
            "teacher_exact": None if exact is None else float(exact.mean()),
            "student_only_exact": None if exact is None else int((student_robust & ~exact).sum()),
            "student_robust": float(student_robust.mean()),
            "student_only": int((student_robust & ~teacher_robust).sum()),
            "same_verdict": float((student_robust == teacher_robust).mean()),
            "epoch_seconds": float(np.median([r.seconds for r in result.history])), "epochs": result.epochs_run,
        })
        print(f"{name:12s} {method:6s} agree {m.agreement:.4f}/{m.agreement_fresh:.4f} GD {m.gd_mean:.4g} "
              f"GC {m.gc_mean:.4f} rho50 {m.rho_quantiles['0.5']:.3f} robust S {student_robust.mean():.3f} "
              f"T {teacher_robust.mean():.3f}", flush=True)
    return rows


def interleaved_cost(teacher, sampler, args, repeats: int = 3, epochs: int = 5) -> dict:
    """Median training seconds per epoch of each method, runs interleaved so that load drift hits all alike."""
    x = sampler.draw(args.samples)
    times: dict = {m: [] for m in METHODS}
    for _ in range(repeats):
        for method in METHODS:
            result = distill(teacher, x, student="mlp:2x64", method=method, epochs=epochs, lr=args.lr,
                             early_stop=False, seed=args.seed, progress=False)
            times[method] += [r.seconds for r in result.history]
    return {m: float(np.median(t)) for m, t in times.items()}


def render(rows: list[dict], costs: dict, notes: dict, args, wall: float) -> str:
    d = DistillConfig()
    lines = [
        "# Distillation benchmark: KD vs KDIGA vs IGAM vs IGDM",
        "",
        f"Machine: {platform.machine()} CPU, 2 cores **shared with other jobs** (timings are noisy; compare "
        f"ratios, not absolute seconds); torch {torch.__version__}, {torch.get_num_threads()} torch thread(s). "
        f"Wall time of the whole benchmark: {wall / 60:.1f} min.",
        "",
        f"Command: `python benchmarks/bench_distill.py --epochs {args.epochs} --samples {args.samples} "
        f"--fresh {args.fresh} --lr {args.lr} --seed {args.seed}`",
        "",
        f"Same budget for every method: student `mlp:2x64`, {args.epochs} epochs, batch 64, Adam lr {args.lr}, cosine "
        f"schedule, seed {args.seed}, no early stop; default loss weights (λ_CE = {d.lambda_ce:g}, λ_KL = "
        f"{d.lambda_kl:g}, τ = {d.tau:g}, λ_G = {d.lambda_g:g}; IGAM λ_adv = {d.igam_lambda_adv:g}, λ_diff = "
        f"{d.igam_lambda_diff:g}; IGDM α = {d.igdm_alpha:g} with ramp, {d.igdm_steps}-step PGD). "
        f"{args.samples} training points and {args.fresh} fresh points per problem.",
        "",
        "Teachers: " + "; ".join(f"**{k}**: {v}" for k, v in notes.items()) + ".",
        "The digits distribution is a training image plus N(0, 0.05²) pixel jitter, clipped to [0, 1].",
        "",
        "## Quality markers",
        "",
        "agree = argmax agreement on the training sample / on the fresh sample; Eq 13 = fraction where the student "
        "is at least as confident; GD, GC = mean input-gradient distance and cosine of ∇CE (003 §4.2) on the "
        "training / fresh sample; ρ = ‖∇g_S‖₂/‖∇g_T‖₂ of the teacher's top-2 logit margin (DESIGN.md §2), "
        "quantiles min / 5% / median / 95%.",
        "",
        "| problem | method | agree | agree fresh | Eq 13 | GD | GD fresh | GC | GC fresh | ρ min | ρ 5% | ρ 50% | ρ 95% |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        q = r["rho"]
        lines.append(f"| {r['problem']} | {r['method']} | {r['agree']:.4f} | {r['agree_fresh']:.4f} | {r['eq13']:.3f} | "
                     f"{r['gd']:.4g} | {r['gd_fresh']:.4g} | {r['gc']:.4f} | {r['gc_fresh']:.4f} | {q['0']:.3f} | "
                     f"{q['0.05']:.3f} | {q['0.5']:.3f} | {q['0.95']:.3f} |")
    lines += [
        "",
        "## Empirical robustness (PGD, L2, fresh sample)",
        "",
        "Fraction of fresh points where a 20-step, 2-restart L2 PGD finds no class change within the radius, for the "
        "student and the teacher; *S robust, T not* counts points where the student resists but the teacher "
        "is broken (the direction that would make a transferred guarantee wrong); *same* = fraction where "
        "both agree on robust / not robust. PGD can miss attacks, so these are upper estimates. For the sigmoid "
        "teacher the exact robust fraction is known (radius |x·1|/√m > r); the last column counts student-robust "
        "points where the teacher is exactly not robust.",
        "",
        "| problem | radius | method | student robust | teacher robust (PGD) | teacher robust (exact) | S robust, T not "
        "(PGD) | same | S robust, T not (exact) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        exact = "—" if r["teacher_exact"] is None else f"{r['teacher_exact']:.3f}"
        only = "—" if r["student_only_exact"] is None else str(r["student_only_exact"])
        lines.append(f"| {r['problem']} | {r['radius']:g} | {r['method']} | {r['student_robust']:.3f} | "
                     f"{r['teacher_robust']:.3f} | {exact} | {r['student_only']} | {r['same_verdict']:.3f} | {only} |")
    lines += ["", "## Cost", "",
              "Training seconds per epoch (the steps only, not the per-epoch agreement/GD evaluation): median over "
              "3 interleaved repetitions × 5 epochs of each method on the same sample, and the ratio to KD. The "
              "ratio is the number to read; absolute seconds depend on the load of the shared machine.", "",
              "| problem | method | s/epoch | × KD |", "|---|---|---|---|"]
    for problem, cost in costs.items():
        for method, seconds in cost.items():
            lines.append(f"| {problem} | {method} | {seconds:.3f} | {seconds / cost['kd']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--fresh", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", help="comma list of problems to run (gaussians-2, gaussians-8, digits)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "distill.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warm = gaussian_problem(2, args.seed)  # one-time imports (torch.optim loads dynamo) stay out of the timings
    distill(warm[0], warm[1].draw(64), student="mlp:2x8", epochs=1, progress=False)
    started = time.perf_counter()
    problems = {"gaussians-2": lambda: gaussian_problem(2, args.seed), "gaussians-8": lambda: gaussian_problem(8, args.seed),
                "digits": lambda: digits_problem(args.seed)}
    wanted = args.only.split(",") if args.only else list(problems)
    rows, notes, costs = [], {}, {}
    for name in wanted:
        teacher, sampler, note, radius = problems[name]()
        notes[name] = note
        rows += run_problem(name, teacher, sampler, radius, args)
        costs[name] = interleaved_cost(teacher, sampler, args)
        print(name, {m: round(v, 4) for m, v in costs[name].items()}, flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, render(rows, costs, notes, args, time.perf_counter() - started))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
