"""Mass mode end to end (issue 11): the whole ``pacverify.certify(..., guarantee="mass")`` run, timed on CPU.

What is timed: one call of :func:`pacverify.certify` per configuration, from the teacher file and a ``.npy`` of rows
to the written certificate (loading, the probe, the oracle choice, every stage, ``certificate.json``, ``points.npz``
and the reports). Recorded per run: the total wall time, the process CPU time, each stage's wall time
(``cert.record.timings``), the verdict, the oracle used and why, M(κ) at the requested κ and the table at the fixed κ
values, the quantiles of l_i and u_i, points with u_i < l_i (REFUTED), the held-out check, and the load average
of the machine sampled every 2 s during the run.

Runs (``--runs``, comma-separated):

* ``linf`` / ``l2`` — teacher oracle (``oracle="auto"``), a 784-50-10 ReLU MLP on scikit-learn's digits upsampled to
  28×28 (``benchmarks/bench_mass_oracle.py``'s ``digits_28`` and ``train_teacher``), written with
  :func:`pacverify.onnx_io.export.export_onnx`; δ = 0.01 (L∞) / 0.1 (L2), ε = 0.05, η = 0.01, κ = 0.9, domain
  [0, 1]; s = ``sample_size(784, ε, η, guarantee="mass", bound="tight")`` = 1,116 and ``--holdout`` fresh rows.
* ``linf-big`` / ``l2-big`` — the same at ``samples=--big-samples`` (31,634: the size PAGR uses).
* ``attack-scaling`` — not a certify run: :func:`pacverify.verify.oracle.attack_radii` (the ``upper`` stage's
  search, no bisection) on the s = 1,116 MLP points at the budgets ``--scaling-budgets`` (steps×restarts), to show
  how its time grows with the PGD steps and with the restarts.
* ``student`` — a digits CNN (8×8 input) with MaxPool2d, which the engine refuses (checked with
  :func:`pacverify.verify.oracle.teacher_network`, on the module and on the ONNX file), written with
  ``torch.onnx.export(..., dynamo=False)`` (certify loads it without running code); certified on the 1,797 digits
  (s = 1,116, the other 681 rows held out) with ``oracle="auto"`` (falls back to the student) and with
  ``oracle="student"`` for every ``--students`` spec.

Rows for the MLP runs: the 1,797 upsampled digits repeated up to s + holdout rows, each copy with a uniform jitter of
±``--jitter`` per pixel, clipped to [0, 1] (``bench_mass_oracle.sample_points``). They are near-copies of 1,797
images, not i.i.d. draws from a distribution: these runs measure throughput; their certificates certify nothing
about digits.

    python benchmarks/bench_mass.py --threads 1                         # every run (L2 at 31,634 points: ~10 min)
    python benchmarks/bench_mass.py --threads 1 --runs linf,l2 --json out.json
    python benchmarks/bench_mass.py --threads 1 --runs student --epochs 30 --students mlp:2x64,cnn:8-16-fc32
    python benchmarks/bench_mass.py --report a.json b.json --markdown benchmarks/results/mass.md

benchmarks/results/mass.md ("Whole certify runs") lists the commands behind its figures.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "examples"))

from bench_mass_oracle import digits_28, sample_points, train_teacher  # noqa: E402
from digits_teacher import digits, train  # noqa: E402

import pacverify  # noqa: E402

PAGR_GPU_S = 499.0  # PAGR's reported wall time per run (GPU CROWN, 31,634 points)
EPS, ETA, KAPPA = 0.05, 0.01, 0.9
DELTA = {"inf": 0.01, "2": 0.1}


# --- machine load -----------------------------------------------------------------------------------------------

class LoadSampler:
    """The 1-minute load average, sampled every ``every`` seconds in a background thread."""

    def __init__(self, every: float = 2.0) -> None:
        self.every, self.values = every, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.values.append(os.getloadavg()[0])
            if self._stop.wait(self.every):
                return

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        v = self.values or [float("nan")]
        return {"min": round(min(v), 2), "mean": round(float(np.mean(v)), 2), "max": round(max(v), 2)}


# --- teachers and data ------------------------------------------------------------------------------------------

def mlp_teacher(work: Path, epochs: int, seed: int) -> tuple[Path, np.ndarray, dict]:
    """The 784-50-10 MLP on the upsampled digits, written by pacverify's exporter; its path, the images, facts."""
    from pacverify.onnx_io.export import export_onnx

    t = time.perf_counter()
    images, targets = digits_28()
    model = train_teacher(images, targets, epochs=epochs, seed=seed)
    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(images)).argmax(1).numpy() == targets).mean())
    path = work / "mlp_teacher.onnx"
    export_onnx(model, path, (1, 28, 28), sample=images)
    return path, images, {"teacher": "784-50-10 ReLU MLP (Flatten, Linear, ReLU, Linear) on 1×28×28",
                          "epochs": epochs, "training_accuracy": round(accuracy, 4),
                          "train_and_export_s": round(time.perf_counter() - t, 1)}


def mlp_rows(images: np.ndarray, n: int, jitter: float, seed: int, work: Path) -> Path:
    """``n`` jittered copies of the upsampled digits as float32 (n, 1, 28, 28) in a .npy file."""
    path = work / f"digits28_jitter_{n}.npy"
    if not path.exists():
        rows = sample_points(images, n, jitter, seed).astype(np.float32).reshape(n, 1, 28, 28)
        np.save(path, np.clip(rows, 0.0, 1.0))
    return path


def maxpool_cnn() -> nn.Module:
    """Conv(1→16, 3×3) → ReLU → MaxPool(2) → Conv(16→32, 3×3) → ReLU → MaxPool(2) → Linear(128 → 10) on 1×8×8."""
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 2 * 2, 10))


def cnn_teacher(work: Path, epochs: int, seed: int) -> tuple[Path, Path, dict]:
    """The MaxPool CNN on the 1,797 digits (8×8 in [0, 1], shuffled), as plain ONNX, and the rows as .npy."""
    from pacverify.verify.oracle import teacher_network

    t = time.perf_counter()
    x, y = digits(seed)
    model = train(x, y, epochs=epochs, seed=seed, model=maxpool_cnn)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        accuracy = float((model(xt).argmax(1).numpy() == y).mean())
    path, data_path = work / "cnn_maxpool_teacher.onnx", work / "digits8.npy"
    torch.onnx.export(model, torch.zeros(1, 1, 8, 8), str(path), dynamo=False, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    np.save(data_path, x)
    net_module, why_module = teacher_network(model, None, (1, 8, 8))
    net_file, why_file = teacher_network(model, path, (1, 8, 8), sample=x[:8])
    return path, data_path, {
        "teacher": "CNN Conv16-ReLU-MaxPool-Conv32-ReLU-MaxPool-Linear on 1×8×8", "epochs": epochs,
        "training_accuracy": round(accuracy, 4), "train_and_export_s": round(time.perf_counter() - t, 1),
        "engine_reads_module": net_module is not None, "engine_module_reason": why_module,
        "engine_reads_onnx": net_file is not None, "engine_onnx_reason": why_file}


# --- one certify run --------------------------------------------------------------------------------------------

def certify_run(name: str, teacher: Path, data: Path, out: Path, **settings) -> dict:
    """One whole certify call, timed; the figures of its certificate."""
    messages: list[tuple[float, str, str]] = []
    start = time.perf_counter()

    def progress(stage: str, message: str) -> None:
        messages.append((round(time.perf_counter() - start, 2), stage, message))

    cpu0 = time.process_time()
    with LoadSampler() as load:
        start = time.perf_counter()
        cert = pacverify.certify(str(teacher), out=out, progress=progress, cache=False, guarantee="mass",
                                 data=str(data), domain=(0.0, 1.0), eps=EPS, eta=ETA, kappa=KAPPA, **settings)
        wall = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    rec = cert.record
    stages = {k: v for k, v in rec.timings.items() if isinstance(v, (int, float))}
    cmap = rec.confidence_map
    lower, upper = cert.arrays["lower"], cert.arrays["upper"]
    conf = cert.arrays["teacher_confidence"]
    both = np.isfinite(upper) & (lower > 0)
    result = {
        "name": name, "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()},
        "samples": rec.pac.samples, "samples_required": rec.pac.samples_required,
        "holdout_points": rec.holdout.points, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
        "stages_s": stages, "outside_stages_s": round(wall - sum(stages.values()), 1), "load": load.summary(),
        "torch_threads": torch.get_num_threads(), "verdict": rec.verdict.value, "reasons": rec.reasons,
        "oracle": rec.oracle.used, "oracle_reason": rec.oracle.reason,
        "M_kappa": cmap.radius, "kappa": cmap.kappa, "delta": rec.pac.delta, "norm": rec.pac.norm,
        "table": [[r.kappa, r.radius, r.confident, r.p_lower, r.conditional_eps] for r in cmap.table],
        "cap": rec.oracle.cap, "tol": rec.oracle.tol,
        "lower_quantiles": rec.oracle.lower_quantiles, "upper_quantiles": rec.oracle.upper_quantiles,
        "l_positive": float(np.mean(lower > 0)), "l_at_cap": float(np.mean(lower >= rec.oracle.cap)),
        "confident": float(np.mean(conf >= KAPPA)),
        "attacked_found": rec.oracle.attacked_found, "inconsistent": rec.oracle.inconsistent,
        "min_u_over_l": float(np.min(upper[both] / lower[both])) if both.any() else None,
        "student_disagrees": rec.oracle.student_disagrees,
        "holdout": {"points": rec.holdout.points, "confident": rec.holdout.confident,
                    "attacked": rec.holdout.attacked, "members": rec.holdout.members, "rate": rec.holdout.rate,
                    "p_value": rec.holdout.p_value, "significant": rec.holdout.significant,
                    "note": rec.holdout.note},
        "warnings": rec.warnings, "messages": messages,
    }
    if rec.oracle.used == "student":
        result["student"] = student_agreement(cert, teacher, data, rec)
    return result


def student_agreement(cert, teacher: Path, data: Path, rec) -> dict:
    """The student's agreement with the teacher on the sample (from the certificate) and on the held-out rows."""
    from pacverify.data import make_sampler
    from pacverify.models import load_student, load_teacher

    s = rec.pac.samples
    student = load_student(cert.directory / "student.pt")
    model = student.module if hasattr(student, "module") else student
    teacher_model = load_teacher(teacher)
    sampler = make_sampler(str(data), seed=rec.settings.seed, domain=(0.0, 1.0), kind="data")
    n = sampler.available_fresh(s)
    held = torch.from_numpy(sampler.fresh(n, after=s).astype(np.float32))
    with torch.no_grad():
        agree_held = float((model(held).argmax(1) == teacher_model(held).argmax(1)).float().mean()) if n else None
    l_pos = cert.arrays["lower"] > 0
    return {"sample_agreement": 1 - rec.oracle.student_disagrees / s, "holdout_agreement": agree_held,
            "holdout_rows": n, "l_positive": float(l_pos.mean()),
            "student_radius_quantiles": [float(q) for q in np.quantile(cert.arrays["student_radius"],
                                                                        [0, 0.1, 0.5, 0.9, 1])],
            "factor_quantiles": [float(q) for q in np.quantile(cert.arrays["teacher_radius_factor"],
                                                                [0, 0.1, 0.5, 0.9, 1])]}


# --- report -----------------------------------------------------------------------------------------------------

def fmt(v: float) -> str:
    return "∞" if v == math.inf else f"{v:.4g}"


def attack_scaling(images: np.ndarray, teacher_path: Path, budgets: list[tuple[int, int]], seed: int,
                   jitter: float) -> list[dict]:
    """Wall time of ``attack_radii`` (bisection 0) on the s MLP points per norm and budget (steps, restarts)."""
    from pacverify.models import load_teacher
    from pacverify.pipeline.teacher_check import TeacherModel
    from pacverify.verify.oracle import attack_radii

    s = pacverify.sample_size(784, EPS, ETA, guarantee="mass", bound="tight")
    teacher = load_teacher(teacher_path, device="cpu")
    points = sample_points(images, s, jitter, seed)
    with torch.no_grad():
        labels = teacher(torch.from_numpy(points.astype(np.float32)).reshape(-1, 1, 28, 28)).argmax(1).numpy()
    model = TeacherModel(teacher, (1, 28, 28))
    rows = []
    for norm in ("inf", "2"):
        for steps, restarts in budgets:
            t = time.perf_counter()
            upper, _ = attack_radii(model, points, labels, norm, hi=2 * DELTA[norm], steps=steps, restarts=restarts,
                                    bisection=0, domain=(0.0, 1.0), seed=seed)
            wall = time.perf_counter() - t
            rows.append({"norm": norm, "points": s, "hi": 2 * DELTA[norm], "steps": steps, "restarts": restarts,
                         "wall_s": round(wall, 2), "ms_per_step_restart": round(1e3 * wall / (steps * restarts), 1),
                         "found": int(np.isfinite(upper).sum()), "load": round(os.getloadavg()[0], 2)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def label(r: dict) -> str:
    """The run's name and its attack budget (PGD steps × restarts, bisection rounds)."""
    a = r["settings"]
    return f"{r['name']} (attack {a['attack_steps']}×{a['attack_restarts']}, {a['attack_bisection']} bis.)"


def markdown(results: list[dict], header: list[str]) -> str:
    lines = list(header) + [""]
    scaling = [row for r in results if r.get("name") == "attack-scaling" for row in r["rows"]]
    results = [r for r in results if r.get("name") != "attack-scaling"]
    if scaling:
        lines += ["`attack_radii` on the MLP points (no bisection): wall time per budget", "",
                  "| norm | points | hi | steps × restarts | wall | per step × restart | found | load |",
                  "|---|---:|---:|---|---:|---:|---:|---:|"]
        lines += [f"| L{'∞' if x['norm'] == 'inf' else '2'} | {x['points']} | {x['hi']:g} | {x['steps']} × "
                  f"{x['restarts']} | {x['wall_s']:.1f} s | {x['ms_per_step_restart']:.0f} ms | {x['found']} | "
                  f"{x['load']} |" for x in scaling]
        lines.append("")
    if not results:
        return "\n".join(lines) + "\n"
    lines.append("| run | s / holdout | oracle | total wall (CPU) | stages (s) | load avg | verdict | M(κ=0.9) vs δ "
                 "| l_i > 0 / at cap | u_i found / u<l |")
    lines.append("|---|---|---|---:|---|---|---|---|---|---|")
    for r in results:
        st = ", ".join(f"{k} {v:.1f}" for k, v in r["stages_s"].items())
        lines.append(
            f"| {label(r)} | {r['samples']:,} / {r['holdout_points']:,} | {r['oracle']} | **{r['wall_s']:.1f} s** "
            f"({r['cpu_s']:.0f} s) | {st}; outside stages {r['outside_stages_s']:.1f} | "
            f"{r['load']['min']}–{r['load']['max']} | {r['verdict']} | {fmt(r['M_kappa'])} vs {r['delta']:g} | "
            f"{r['l_positive']:.1%} / {r['l_at_cap']:.1%} | {r['attacked_found']} / {r['inconsistent']} |")
    for r in results:
        lines += ["", f"**{label(r)}** — settings: " + ", ".join(f"{k}={v}" for k, v in r["settings"].items())
                  + f"; cap {r['cap']:g}, tol {r['tol']:.4g}; κ-confident sample points {r['confident']:.1%}",
                  f"oracle: {r['oracle_reason']}",
                  "l_i quantiles " + " / ".join(f"{k} {fmt(float(v))}" for k, v in r["lower_quantiles"].items())
                  + "; u_i quantiles " + " / ".join(f"{k} {fmt(float(v))}" for k, v in r["upper_quantiles"].items()),
                  "held out: " + json.dumps(r["holdout"], ensure_ascii=False)
                  + f"; min u_i/l_i where both finite: {r.get('min_u_over_l', '-')}"]
        if r["samples"] >= 31634:
            lines.append(f"total wall {r['wall_s']:.0f} s = {r['wall_s'] / PAGR_GPU_S:.2f} × PAGR's {PAGR_GPU_S:.0f} s "
                         f"per run (GPU); lower radii (the oracle) {r['stages_s'].get('lower', 0):.1f} s vs the goal "
                         "of 60 s")
        if "student" in r:
            lines.append("student: " + json.dumps(r["student"]))
        if r["warnings"]:
            lines.append("warnings: " + " | ".join(r["warnings"]))
        lines += ["", "| κ | M(κ) | confident | p̲(κ) | ε/p̲(κ) |", "|---:|---:|---:|---:|---:|"]
        lines += [f"| {k:g} | {fmt(m)} | {c} | {p:.3f} | {fmt(e)} |" for k, m, c, p, e in r["table"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="linf,l2,linf-big,l2-big,student")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--holdout", type=int, default=1000, help="held-out rows of the MLP runs")
    ap.add_argument("--big-samples", type=int, default=31634)
    ap.add_argument("--jitter", type=float, default=0.005)
    ap.add_argument("--teacher-epochs", type=int, default=8)
    ap.add_argument("--attack-steps", type=int, default=50, help="certify's attack_steps for the s = 1,116 runs")
    ap.add_argument("--attack-restarts", type=int, default=10)
    ap.add_argument("--attack-bisection", type=int, default=6)
    ap.add_argument("--big-attack-steps", type=int, default=20, help="attack_steps for the --big-samples runs")
    ap.add_argument("--big-attack-restarts", type=int, default=1)
    ap.add_argument("--big-attack-bisection", type=int, default=6)
    ap.add_argument("--scaling-budgets", default="20x1,200x1,20x10", help="steps×restarts of attack-scaling")
    ap.add_argument("--students", default="mlp:2x64", help="student specs for the student runs (the first: auto)")
    ap.add_argument("--epochs", type=int, default=30, help="distillation epochs of the student runs")
    ap.add_argument("--cnn-epochs", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None, help="where teachers, rows and certificates go (tmp)")
    ap.add_argument("--json", type=Path, default=None, help="write every figure here")
    ap.add_argument("--markdown", type=Path, default=None, help="append the tables to this file")
    ap.add_argument("--report", type=Path, nargs="+", default=None,
                    help="run nothing: print (and with --markdown append) the tables of these --json files")
    args = ap.parse_args(argv)
    if args.report:
        results, header, facts = [], [], {}
        for path in args.report:
            saved = json.loads(path.read_text())
            header += [h for h in saved["header"] if h not in header]
            facts.update(saved["facts"])
            results += saved["runs"]
        text = markdown(results, header + ["", "```", json.dumps(facts, indent=1, ensure_ascii=False), "```"])
        print(text)
        if args.markdown:
            with open(args.markdown, "a") as fh:
                fh.write("\n" + text)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-mass-"))
    work.mkdir(parents=True, exist_ok=True)
    runs = args.runs.split(",")
    header = [f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, Python "
              f"{platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} torch thread(s), "
              f"load average at start {os.getloadavg()[0]:.2f}; pacverify {pacverify.__version__}"]
    print(header[0], flush=True)
    results: list[dict] = []
    facts: dict = {}

    def record(r: dict) -> None:
        results.append(r)
        print(json.dumps({k: v for k, v in r.items() if k not in ("messages", "table")}, default=str), flush=True)
        if args.json:
            args.json.write_text(json.dumps({"header": header, "facts": facts, "runs": results}, indent=1,
                                            default=str))

    mlp = [r for r in runs if r in ("linf", "l2", "linf-big", "l2-big", "attack-scaling")]
    if mlp:
        teacher, images, facts["mlp"] = mlp_teacher(work, args.teacher_epochs, args.seed)
        print(json.dumps(facts["mlp"]), flush=True)
        s = pacverify.sample_size(784, EPS, ETA, guarantee="mass", bound="tight")
        for run in mlp:
            if run == "attack-scaling":
                budgets = [tuple(int(v) for v in b.split("x")) for b in args.scaling_budgets.split(",")]
                record({"name": run, "rows": attack_scaling(images, teacher, budgets, args.seed, args.jitter)})
                continue
            big = run.endswith("-big")
            norm = "inf" if run.startswith("linf") else "2"
            n = (args.big_samples if big else s) + args.holdout
            data = mlp_rows(images, n, args.jitter, args.seed, work)
            settings = dict(norm=norm, delta=DELTA[norm], holdout=args.holdout, oracle="auto", seed=args.seed,
                            attack_steps=args.big_attack_steps if big else args.attack_steps,
                            attack_restarts=args.big_attack_restarts if big else args.attack_restarts,
                            attack_bisection=args.big_attack_bisection if big else args.attack_bisection)
            if big:
                settings["samples"] = args.big_samples
            budget = f"a{settings['attack_steps']}x{settings['attack_restarts']}b{settings['attack_bisection']}"
            record(certify_run(f"MLP {run}", teacher, data, work / f"cert-{run}-{budget}", **settings))
    if "student" in runs:
        teacher, data, facts["cnn"] = cnn_teacher(work, args.cnn_epochs, args.seed)
        print(json.dumps(facts["cnn"]), flush=True)
        if facts["cnn"]["engine_reads_onnx"] or facts["cnn"]["engine_reads_module"]:
            print("the engine reads the CNN teacher: the student runs would not test the fallback", flush=True)
            return 1
        specs = args.students.split(",")
        for oracle, spec in [("auto", specs[0])] + [("student", sp) for sp in specs]:
            settings = dict(norm="inf", delta=DELTA["inf"], oracle=oracle, student=spec, epochs=args.epochs,
                            seed=args.seed, attack_steps=args.attack_steps, attack_restarts=args.attack_restarts,
                            attack_bisection=args.attack_bisection)
            record(certify_run(f"CNN-maxpool {oracle} {spec}", teacher, data,
                               work / f"cert-student-{oracle}-{spec.replace(':', '_')}-a{args.attack_steps}x"
                               f"{args.attack_restarts}b{args.attack_bisection}", **settings))
    text = markdown(results, header + ["", "```", json.dumps(facts, indent=1, ensure_ascii=False), "```"])
    print(text, flush=True)
    if args.markdown:
        with open(args.markdown, "a") as fh:
            fh.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
