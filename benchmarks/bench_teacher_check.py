"""How often the teacher attack catches a tiny pocket of the other class (issue 10 §2), old budget against new.

The audit case: ``pocket_teacher(a = 3)`` with class-flipping pockets of L1 radius 0.001 at the two class modes
(±1/√2, ±1/√2) of the synthetic gaussians, δ = 0.15, ε = 0.02, η = 0.01, κ = 0.9. The student is certified at
3δ, yet the teacher flips class a few thousandths from certified confident points whose δ-balls have mass ≥ ε:
only the teacher attack can turn the verdict into REFUTED. Per seed the pipeline runs once (sample, labels,
student, ONNX, proofs, radii, δ_T, coverage — exactly the ball-mode stages of ``pacverify.certify``), then the
TEACHER_CHECK stage runs once per attack budget and the certificate body is assembled for each
(:func:`pacverify.pipeline.ball.assemble`, so the verdict is the one ``certify`` would print):

* ``old``: 50 steps × 5 restarts uniform in the bounding box, no random sampling, no fresh points
  (``attack_starts="box", attack_random_samples=0, attack_fresh_points=0``: the attack before issue 10);
* ``new``: the defaults of :class:`~pacverify.pipeline.settings.CertifySettings`.

The catch rate is the fraction of seeds whose verdict is REFUTED; the cost is the stage's wall time.

    OMP_NUM_THREADS=1 python benchmarks/bench_teacher_check.py --seeds 1-20 \\
        --markdown benchmarks/results/teacher_check.md

(One torch thread: on a shared 2-core machine two spinning threads made small layers ~30× slower.)
"""
from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pacverify import pac
from pacverify.data import make_sampler
from pacverify.fileio import sha256_arrays
from pacverify.pipeline.ball import BALL_MODE, assemble
from pacverify.pipeline.cache import StageCache
from pacverify.pipeline.runner import Runner
from pacverify.pipeline.settings import CertifySettings
from pacverify.pipeline.stages import TEACHER_CHECK, Setup
from pacverify.synthetic import pocket_teacher

CASE = dict(synthetic="gaussians", delta=0.15, eps=0.02, eta=0.01, kappa=0.9)
BUDGETS = {"old": dict(attack_steps=50, attack_restarts=5, attack_starts="box", attack_random_samples=0,
                       attack_fresh_points=0),
           "new": {}}
MODE = 1 / np.sqrt(2)


def audit_teacher() -> torch.nn.Module:
    """The audit's teacher: the sigmoid teacher (a = 3) with flip pockets of L1 radius 0.001 at both class modes."""
    return pocket_teacher(3.0, np.array([[MODE, MODE], [-MODE, -MODE]]), 0.001)


def _setup(seed: int, out_dir: Path) -> Setup:
    """What ``pacverify.certify`` builds before running the stages (pipeline/run.py), for the audit case."""
    cfg = CertifySettings(seed=seed, **CASE).validated()
    teacher = audit_teacher().eval()
    sampler = make_sampler(cfg.synthetic, seed=cfg.seed, kind="synthetic")
    s = pac.sample_size(2, cfg.eps, cfg.eta, norm=cfg.norm)
    return Setup(cfg=cfg, teacher=teacher, teacher_path=None,
                 teacher_hash=sha256_arrays(*[t.detach().cpu().numpy() for t in teacher.state_dict().values()]),
                 sampler=sampler, source=cfg.source_description(), input_shape=(2,), dim=2, samples=s,
                 samples_required=s, out_dir=out_dir, device=torch.device("cpu"))


def run_seed(seed: int, work: Path) -> dict:
    out_dir = work / f"seed{seed}"
    out_dir.mkdir(parents=True, exist_ok=True)
    setup = _setup(seed, out_dir)
    runner = Runner(setup, StageCache(out_dir))
    start = time.perf_counter()
    results = runner.run([st for st in BALL_MODE if st.name != "teacher_check"])
    row: dict = {"seed": seed, "pipeline_s": time.perf_counter() - start,
                 "required": int(results["label"].required(setup.cfg.kappa).size),
                 "delta_t": float(results["rho"].delta_t)}
    for name, budget in BUDGETS.items():
        cfg = dataclasses.replace(setup.cfg, **budget).validated()
        budget_setup = dataclasses.replace(setup, cfg=cfg)
        budget_runner = Runner(budget_setup, StageCache(None))
        attacked = budget_runner.run([TEACHER_CHECK], results)
        timings = {**runner.timings, **budget_runner.timings}
        body, _ = assemble(budget_setup, attacked, timings)
        tc = body.teacher_check
        row[name] = {"verdict": body.verdict.value, "time_s": timings["teacher_check"],
                     "cex_delta": tc.counterexamples_delta, "cex_delta_T": tc.counterexamples_delta_T,
                     "budget": f"{tc.steps}×{tc.restarts} {tc.starts}, {tc.random_samples} draws, "
                               f"{tc.fresh_points_attacked}/{tc.fresh_points} fresh"}
    return row


def _seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(t) for t in text.split(",")]


def markdown(rows: list[dict], command: str) -> str:
    n = len(rows)
    lines = ["# Teacher attack: catch rate on the audit's pocket teacher (issue 10 §2)", "",
             "Case: `pocket_teacher(3.0, [[m, m], [-m, -m]], 0.001)` with m = 1/√2 (flip pockets of L1 radius 0.001 "
             "at both class modes), `synthetic=\"gaussians\"`, δ = 0.15, ε = 0.02, η = 0.01, κ = 0.9 (s = 10 400 "
             "points). Per seed the ball-mode pipeline runs once and the TEACHER_CHECK stage once per budget; "
             "the verdict is the one `assemble` (hence `pacverify.certify`) gives with that stage's output.", "",
             f"Command: `{command}`", "",
             f"Machine: 2-core CPU, shared with other jobs (load average 2–6 during the run), "
             f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, "
             f"torch {torch.__version__}, one torch thread. Times are wall seconds of the stage on that machine.", "",
             "Budgets: **old** = PGD 50 steps × 5 restarts (first at the centre, others uniform in the bounding box), "
             "nothing else — the attack before this change; **new** = the `CertifySettings` defaults "
             f"({rows[0]['new']['budget'] if rows else ''}): PGD 50 × 10 with the restarts spread over the ball, "
             "2000 uniform draws per claimed ball, the δ-balls of the fresh κ-confident draws within 2δ of a "
             "required point, and every confirmed counterexample checked against every claimed ball.", "",
             "| seed | required points | δ_T | old verdict | old cex 3δ / 3δ_T | old time (s) | new verdict | "
             "new cex 3δ / 3δ_T | new time (s) |",
             "|---:|---:|---:|---|---:|---:|---|---:|---:|"]
    for r in rows:
        o, w = r["old"], r["new"]
        lines.append(f"| {r['seed']} | {r['required']} | {r['delta_t']:.4f} | {o['verdict']} | "
                     f"{o['cex_delta']} / {o['cex_delta_T']} | {o['time_s']:.1f} | {w['verdict']} | "
                     f"{w['cex_delta']} / {w['cex_delta_T']} | {w['time_s']:.1f} |")
    if n:
        caught = {k: sum(r[k]["verdict"] == "REFUTED" for r in rows) for k in BUDGETS}
        times = {k: [r[k]["time_s"] for r in rows] for k in BUDGETS}
        ratio = statistics.median(t_new / t_old for t_new, t_old in zip(times["new"], times["old"], strict=True))
        lines += ["", "| budget | catch rate (REFUTED) | median stage time (s) | mean stage time (s) |",
                  "|---|---:|---:|---:|"]
        for k in BUDGETS:
            lines.append(f"| {k} | {caught[k]}/{n} = {caught[k] / n:.0%} | {statistics.median(times[k]):.1f} | "
                         f"{statistics.mean(times[k]):.1f} |")
        lines += ["", f"Cost: the new attack takes a median {ratio:.1f}× the old budget's stage time per seed "
                      "(same seed, same machine, run back to back)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="1-20", help="a range LO-HI or a comma list (default 1-20)")
    parser.add_argument("--work", default=None, help="directory for the per-seed runs (default: a temporary one)")
    parser.add_argument("--markdown", default=None, help="write the results table here")
    args = parser.parse_args(argv)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-teacher-check-"))
    rows = []
    for seed in _seeds(args.seeds):
        row = run_seed(seed, work)
        rows.append(row)
        print(f"seed {seed}: N={row['required']} δ_T={row['delta_t']:.4f} pipeline {row['pipeline_s']:.0f}s | "
              f"old {row['old']['verdict']} {row['old']['cex_delta']}/{row['old']['cex_delta_T']} "
              f"{row['old']['time_s']:.1f}s | new {row['new']['verdict']} {row['new']['cex_delta']}/"
              f"{row['new']['cex_delta_T']} {row['new']['time_s']:.1f}s", flush=True)
        if args.markdown:
            Path(args.markdown).write_text(markdown(rows, "OMP_NUM_THREADS=1 python " + " ".join(sys.argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
