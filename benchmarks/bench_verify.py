"""verify_points end to end: time in the bounds, in the attack and in total, the attack's budget against the bounds
and the order before issue 12 (goal 5).

The 64-64-64-10 student of bench_bounds.py, N points, L2 radius R (default 1.5: CROWN proves about 44%). Strategies,
same points, same seed:

* ``budget B`` — :func:`pacverify.verify.api.verify_points` as it is, ``attack_budget=B`` (default 1: the attack's
  modelled work at most the bounds'; ``none``: no budget): bounds first, then on the points they leave open one PGD
  start at the centre, then the closest near misses 5 restarts × 25 steps and the bound minimisers;
* ``old`` — the order before issue 12: PGD 5 restarts × 50 steps on every point, bounds on the rest, then the bound
  minimisers (rebuilt here from the same library functions).

Each row gives the attack's work over the bounds' (the model of pacverify.verify.work) beside its seconds over the
bounds' seconds: the budget is kept in work; the time ratio shows how well the model tracks this machine.

    OMP_NUM_THREADS=1 python benchmarks/bench_verify.py --n 5000 --radius 1.5,2.0,3.0 --budget 1,none --no-old
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def _old(net, x, radius, norm, seed):
    """verified, falsified, unknown counts and (bounds, attack) seconds of the pre-issue-12 order."""
    import torch

    from pacverify.verify.attacks import attack_set, bound_guided_attack
    from pacverify.verify.bounds import crown
    from pacverify.verify.property import robustness_property
    from pacverify.verify.sets import perturbation_set

    with torch.no_grad():
        y = net(x).argmax(1)
    prop = robustness_property(y, net.out_features)
    s = perturbation_set(x, radius, norm)
    start = time.perf_counter()
    found = attack_set(net, s, prop, seed=seed)
    attack_s = time.perf_counter() - start
    todo = torch.nonzero(~found.found).reshape(-1)
    start = time.perf_counter()
    lower = crown(net, s.select(todo), prop.C[todo], upper=False).lower
    proven = prop.select(todo).proven(lower)
    bounds_s = time.perf_counter() - start
    todo = todo[~proven]
    start = time.perf_counter()
    guided = bound_guided_attack(net, s.select(todo), prop.select(todo), seed=seed)
    attack_s += time.perf_counter() - start
    falsified = int(found.found.sum()) + int(guided.found.sum())
    verified = int(proven.sum())
    return verified, falsified, x.shape[0] - verified - falsified, bounds_s, attack_s


def main(argv=None) -> int:
    import torch
    from bench_bounds import student_network

    from pacverify.verify.api import verify_points

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--radius", default="1.5", help="comma-separated radii")
    p.add_argument("--budget", default="1", help="comma-separated attack budgets; 'none' for no budget")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--near-miss", type=float, default=None, help="override pacverify.verify.api.NEAR_MISS")
    p.add_argument("--quick-steps", type=int, default=None, help="override pacverify.verify.api.QUICK_STEPS")
    p.add_argument("--no-old", action="store_true", help="skip the pre-issue-12 order")
    args = p.parse_args(argv)
    import pacverify.verify.api as api

    if args.near_miss is not None:
        api.NEAR_MISS = args.near_miss
    if args.quick_steps is not None:
        api.QUICK_STEPS = args.quick_steps
    torch.set_num_threads(args.threads)
    net, sample = student_network()
    x = sample(args.n, 7)
    print(f"machine: {platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), float64; student "
          f"64-64-64-10, N = {args.n}, L2")
    print("| radius | strategy | verified | falsified | unknown | quick steps | strongly attacked / near misses | "
          "bounds s | attack s | attack / bounds (s) | attack / bounds (work) | total s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for radius in (float(r) for r in args.radius.split(",")):
        for text in args.budget.split(","):
            budget = None if text.strip().lower() == "none" else float(text)
            start = time.perf_counter()
            result = verify_points(net, x.numpy(), radius, "2", seed=0, attack_budget=budget)
            total = time.perf_counter() - start
            st = result.stats
            s = result.summary()
            print(f"| {radius:g} | budget {text} | {s['verified']} | {s['falsified']} | {s['unknown']} | "
                  f"{st.get('quick_steps', 0)} | {st.get('attacked_strongly', 0)} / {st.get('near_misses', 0)} | "
                  f"{st['bounds_s']:.2f} | {st['attack_s']:.2f} | {st['attack_s'] / st['bounds_s']:.2f} | "
                  f"{st.get('attack_work', 0) / st.get('bounds_work', 1):.2f} | {total:.2f} |", flush=True)
        if not args.no_old:
            start = time.perf_counter()
            v, f, u, b, a = _old(net, x, radius, "2", 0)
            print(f"| {radius:g} | old | {v} | {f} | {u} | | | {b:.2f} | {a:.2f} | {a / b:.2f} | | "
                  f"{time.perf_counter() - start:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
