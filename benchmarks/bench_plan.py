"""How close ``certify --dry-run``'s estimates come to the run: estimated against measured seconds per stage.

    python benchmarks/bench_plan.py [--out benchmarks/results/plan.md]

For each case, :func:`pacverify.pipeline.run.plan` (the timed probes of ``--dry-run``) and then
:func:`pacverify.pipeline.run.certify` with the same settings, in one process with one torch thread; the table gives
both per stage and their ratio. Distillation is estimated at its epoch budget: early stopping makes the run shorter.
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from pacverify.pipeline.demo import DEMO, write_demo_teacher  # noqa: E402
from pacverify.pipeline.run import certify, plan  # noqa: E402


def digits_case(tmp: Path) -> tuple[Path, dict]:
    """A 64-32-10 MLP teacher trained briefly on scikit-learn's digits, as ONNX, with the digits as data."""
    from sklearn.datasets import load_digits

    from pacverify.onnx_io.export import export_onnx

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    np.save(tmp / "digits.npy", x)
    export_onnx(model.eval(), tmp / "digits.onnx", (64,))
    return tmp / "digits.onnx", dict(data=str(tmp / "digits.npy"), guarantee="mass", delta=0.05, eps=0.1, eta=0.05,
                                     norm="inf", domain=(0.0, 1.0), oracle="student", epochs=30)


def run_case(name: str, teacher: Path, settings: dict, out: Path) -> list[tuple[str, float, float | None]]:
    the_plan = plan(teacher, **settings)
    cert = certify(teacher, out=out, cache=False, **settings)
    timings = cert.record.timings
    rows = []
    for estimate in the_plan.stages:
        actual = timings.get(estimate.stage)
        rows.append((estimate.stage, estimate.seconds, float(actual) if isinstance(actual, (int, float)) else None))
    print(name, "done", file=sys.stderr)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "plan.md"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    lines = ["# `certify --dry-run`: estimated against measured seconds per stage", "",
             f"Machine: {platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} torch thread; "
             f"torch {torch.__version__}. Command: `python benchmarks/bench_plan.py`. "
             f"Written {time.strftime('%Y-%m-%d')}.", "",
             "The estimate of distillation is for its whole epoch budget (early stopping ends it sooner); the other "
             "stages are scaled from timed probes of the teacher and of one bound pass of a briefly trained student. "
             "On a shared machine both columns move with the other jobs' load.", ""]
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        cases = [("demo (ball mode, sigmoid teacher, m = 2)", write_demo_teacher(tmp / "demo.onnx"),
                  dict(DEMO)),
                 ("digits MLP (mass mode, student oracle, m = 64)", *digits_case(tmp))]
        for i, (name, teacher, settings) in enumerate(cases):
            rows = run_case(name, teacher, settings, tmp / f"out{i}")
            lines += [f"## {name}", "", "| stage | estimated s | measured s | estimated / measured |", "|---|---|---|---|"]
            for stage, est, act in rows:
                ratio = f"{est / act:.2g}" if act else "—"
                lines.append(f"| {stage} | {est:.3g} | {'—' if act is None else f'{act:.3g}'} | {ratio} |")
            total_est = sum(r[1] for r in rows)
            total_act = sum(r[2] for r in rows if r[2] is not None)
            lines += [f"| total | {total_est:.3g} | {total_act:.3g} | {total_est / max(total_act, 1e-9):.2g} |", ""]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
