"""004 §5, Figure 1 (issue 15, item 1): the sigmoid teacher on two truncated Gaussians in R², swept over the teacher's
slope a and the confidence threshold κ; the teacher's robustness in closed form against the distilled student's
verified robustness, coloured by Eq 13.

Set-up (the paper gives no numbers beyond Eq 11 and Eq 13; these are ours):

* D_X: :class:`pacverify.data.TruncatedGaussians` in R² (means ±1·1/√2, σ = 0.5, a gap of 0.5 around x·1 = 0).
* Teacher: f_T(x, a) = (σ(a·x·1), 1 − σ(a·x·1)) as a ReLU network (:func:`pacverify.synthetic.sigmoid_teacher`), a in
  ``--slopes``. Its exact L2 robust radius at x is |x·1|/√2; it is κ-confident where |x·1| ≥ logit(κ)/a.
* Sample S: s i.i.d. points (``--samples``; full run: 3,720, Thm 3.8 at ε = 0.05, η = 0.01), one draw per seed.
* Student: ``mlp:2x64`` distilled with KDIGA, and in the full run also plain KD (pacverify's defaults: λ_CE = λ_KL = 0.5, τ = 1, λ_G = 1, Adam, cosine
  schedule, early stop) on S, once per (a, seed); the κ sweep reuses it (Eq 13 does not depend on κ).
* Robustness at radius 3δ (δ = ``--delta``, 0.1): the teacher is robust when |x·1|/√2 > 3δ at every κ-confident sample
  point (closed form, no verifier); the student is robust when pacverify's verifier (CROWN, then branch and bound,
  ``--timeout`` s per open point; a point left open counts as not verified) proves the 3δ-ball at every κ-confident sample point with the teacher's class. Two readings of
  "κ-confident": the teacher's confidence (pacverify's rule, DESIGN.md §2: the points to verify are fixed by the
  teacher) and the student's own (Def 3.3 applied to the student, as in the paper's Algorithm 1, line 5).
* Eq 13 (distillation success): max softmax f_S(x) ≥ max softmax f_T(x) at every point of S and of 2,000 fresh draws.
* Teacher cross-check: pacverify's PGD attack (50 steps × 5 restarts, margin loss) on the teacher in the 3δ-balls of
  the points the student was verified at; a counterexample flags the setting.

    python benchmarks/repro_fig1.py [--quick]

writes ``benchmarks/results/repro_fig1.md`` and ``repro_fig1.png``.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy and torch load their thread pools
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import repro_common as C  # noqa: E402
import torch  # noqa: E402

from pacverify.attacks import attack  # noqa: E402
from pacverify.data import TruncatedGaussians  # noqa: E402
from pacverify.distill import distill  # noqa: E402
from pacverify.distill.quality import agreement_and_eq13  # noqa: E402
from pacverify.onnx_io import load_network  # noqa: E402
from pacverify.onnx_io.export import export_onnx  # noqa: E402
from pacverify.synthetic import sigmoid_radius, sigmoid_teacher  # noqa: E402
from pacverify.verify.api import verify_points  # noqa: E402

KAPPAS = (0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
SLOPES = (1.0, 2.0, 4.0, 8.0, 16.0)
RULES = ("teacher", "student")
CATEGORY = {(True, True): "both robust", (False, False): "both not robust",
            (True, False): "student robust, teacher not (×)", (False, True): "teacher robust, student not"}


def softmax_conf(model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        z = model(torch.from_numpy(x))
    p = torch.softmax(z.double(), 1)
    return p.amax(1).numpy(), p.argmax(1).numpy()


def run_setting(a: float, seed: int, args, method: str = "kdiga") -> list[dict]:
    """One distillation (a, seed) and its κ sweep: a row per (κ, rule)."""
    sampler = TruncatedGaussians(seed=seed, dim=2)
    x = sampler.draw(args.samples)
    fresh = sampler.fresh(2000)
    teacher = sigmoid_teacher(a, dim=2)
    started = time.perf_counter()
    result = distill(teacher, x, student="mlp:2x64", method=method, seed=seed, progress=False, device="cpu",
                     **({"epochs": args.epochs} if args.epochs else {}))
    distill_s = time.perf_counter() - started
    student = result.student
    agree_s, eq13_s = agreement_and_eq13(teacher, student, x)
    agree_f, eq13_f = agreement_and_eq13(teacher, student, fresh)
    eq13_all = bool(eq13_s.all() and eq13_f.all())
    eq13_frac = float(np.concatenate([eq13_s, eq13_f]).mean())
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(student, Path(tmp) / "student.onnx", (2,), sample=x)
        net = load_network(Path(tmp) / "student.onnx")
    conf_t, label_t = softmax_conf(teacher, x)
    conf_s, _ = softmax_conf(student, x)
    radius_t = sigmoid_radius(x)
    reach = 3 * args.delta
    # every point any (κ, rule) needs, decided once: CROWN + attack first, branch and bound later only where a
    # setting needs an open point (a falsified point settles the setting without it)
    pool = np.nonzero(np.maximum(conf_t, conf_s) >= min(KAPPAS))[0]
    status = np.full(len(x), "none", dtype=object)
    pgd_found = np.zeros(len(x), bool)
    if pool.size:
        res = verify_points(net, x[pool], reach, "2", labels=label_t[pool], complete=False, seed=seed)
        status[pool] = [v.name.lower() for v in res.verdicts]
        found = attack(teacher, torch.from_numpy(x[pool]), torch.from_numpy(label_t[pool]), reach, norm="2",
                       steps=50, restarts=5, seed=seed)
        pgd_found[pool] = found.found.numpy()
    rows = []
    for kappa in KAPPAS:
        for rule in RULES:
            idx = np.nonzero((conf_t if rule == "teacher" else conf_s) >= kappa)[0]
            row = {"a": a, "seed": seed, "kappa": kappa, "rule": rule, "method": method, "points": int(idx.size),
                   "eq13": eq13_all, "eq13_frac": eq13_frac, "agree": float(agree_s.mean()),
                   "agree_fresh": float(agree_f.mean()), "distill_s": distill_s}
            if idx.size == 0:  # nothing to verify: robust by Def 3.3 (vacuously), for both
                row.update(teacher_robust=True, student_robust=True, teacher_min=math.inf, verified=0,
                           falsified=0, flagged_pgd=False)
                rows.append(row)
                continue
            row["teacher_min"] = float(radius_t[idx].min())
            row["teacher_robust"] = bool((radius_t[idx] > reach).all())
            if not (status[idx] == "falsified").any():
                open_idx = idx[status[idx] == "unknown"]
                if open_idx.size:   # the teacher's class: a disagreement is a failure of the student
                    res = verify_points(net, x[open_idx], reach, "2", labels=label_t[open_idx], complete=True,
                                        timeout=args.timeout, seed=seed)
                    status[open_idx] = [v.name.lower() for v in res.verdicts]
            row["verified"] = int((status[idx] == "verified").sum())
            row["falsified"] = int((status[idx] == "falsified").sum())
            row["student_robust"] = bool((status[idx] == "verified").all())
            row["flagged_pgd"] = bool(pgd_found[idx].any())
            rows.append(row)
    return rows


def summarise(rows: list[dict], rule: str, method: str) -> dict:
    sel = [r for r in rows if r["rule"] == rule and r["method"] == method]
    cats = {c: 0 for c in CATEGORY.values()}
    for r in sel:
        cats[CATEGORY[(r["student_robust"], r["teacher_robust"])]] += 1
    cross = [r for r in sel if r["student_robust"] and not r["teacher_robust"]]
    return {"n": len(sel), "cats": cats, "cross": len(cross),
            "cross_eq13": sum(not r["eq13"] for r in cross), "cross_pgd": sum(r["flagged_pgd"] for r in cross),
            "cross_either": sum((not r["eq13"]) or r["flagged_pgd"] for r in cross),
            "cross_neither": [r for r in cross if r["eq13"] and not r["flagged_pgd"]],
            "disagree": sum(r["student_robust"] != r["teacher_robust"] for r in sel),
            "student_less": sum((not r["student_robust"]) and r["teacher_robust"] for r in sel),
            "ok": sum(r["eq13"] for r in sel),
            "ok_disagree": sum(r["eq13"] and r["student_robust"] != r["teacher_robust"] for r in sel),
            "ok_cross": sum(r["eq13"] and r["student_robust"] and not r["teacher_robust"] for r in sel)}


def plot(rows: list[dict], seeds: list[int], slopes, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = {"both robust": "o", "both not robust": "s", "student robust, teacher not (×)": "x",
               "teacher robust, student not": "^"}
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, grid = plt.subplots(len(methods), 2, figsize=(11, 4.2 * len(methods)), sharey=True, squeeze=False)
    axes = [ax for line in grid for ax in line]
    offsets = np.linspace(-0.18, 0.18, len(seeds)) if len(seeds) > 1 else [0.0]
    seen: set = set()
    for ax, (method, rule) in zip(axes, [(m, r) for m in methods for r in RULES], strict=True):
        for r in (r for r in rows if r["rule"] == rule and r["method"] == method):
            cat = CATEGORY[(r["student_robust"], r["teacher_robust"])]
            colour = "tab:green" if r["eq13"] else "tab:red"
            xpos = math.log2(r["a"]) + offsets[seeds.index(r["seed"])]
            label = None
            if (cat, colour) not in seen:
                seen.add((cat, colour))
                label = f"{cat}; Eq 13 {'holds' if r['eq13'] else 'fails'}"
            ax.scatter(xpos, KAPPAS.index(r["kappa"]), marker=markers[cat], c=colour, s=46, label=label,
                       linewidths=1.6 if markers[cat] == "x" else 0.6,
                       edgecolors=None if markers[cat] == "x" else "k")
        ax.set_xticks([math.log2(a) for a in slopes], [f"{a:g}" for a in slopes])
        ax.set_yticks(range(len(KAPPAS)), [f"{k:g}" for k in KAPPAS])
        ax.set_xlabel("teacher slope a (Eq 11)")
        ax.set_title(f"{method.upper()} student; κ-confident by the "
                     f"{'teacher (pacverify)' if rule == 'teacher' else 'student (Def 3.3 on f_S)'}", fontsize=9)
        ax.grid(True, alpha=0.3)
    handles = [h for ax in axes for h in ax.get_legend_handles_labels()[0]]
    labels = [lab for ax in axes for lab in ax.get_legend_handles_labels()[1]]
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8,
               bbox_to_anchor=(0.5, -0.08 / len(methods)))
    for line in grid:
        line[0].set_ylabel("confidence threshold κ")
    fig.suptitle("Sigmoid teacher vs distilled student at 3δ; shape: robustness agreement, colour: Eq 13 "
                 "(seeds side by side)", fontsize=10)
    C.save_figure(fig, path)
    plt.close(fig)


def write(rows: list[dict], args, seeds: list[int], started: float) -> Path:
    path = C.RESULTS / "repro_fig1.md"
    plot(rows, seeds, args.slopes, C.RESULTS / "repro_fig1.png")
    reach = 3 * args.delta
    lines = C.header("004 §5, Figure 1: sigmoid teacher, distilled student, Eq 13 (issue 15, item 1)", started)
    lines += [f"Sweep: a ∈ {{{', '.join(f'{a:g}' for a in args.slopes)}}}, κ ∈ {{{', '.join(map(str, KAPPAS))}}}, "
              f"seeds {seeds}; s = {args.samples:,} sample points per (a, seed), δ = {args.delta} (balls of radius "
              f"3δ = {reach:g}); student `mlp:2x64`, "
              f"{' and '.join(m.upper() for m in dict.fromkeys(r['method'] for r in rows))}"
              f"{f', {args.epochs} epochs' if args.epochs else ' (default 100 epochs, early stop)'}. "
              "The teacher's robustness is the closed form |x·1|/√2 > 3δ at every κ-confident sample point; the "
              "student's is proved by pacverify's verifier (CROWN + branch and bound). Eq 13 holds when the student is "
              "at least as confident as the teacher at every point of S and of 2,000 fresh draws. Full set-up in the "
              "script's docstring.", "", "![Figure 1](repro_fig1.png)", "", "## The paper's two claims, counted", ""]
    head = ["student", "κ-confident by", "settings", "both robust", "both not", "teacher robust, student not",
            "student robust, teacher not (×)", "× flagged by Eq 13", "× flagged by the teacher PGD check",
            "× flagged by either", "× not flagged"]
    body = []
    sums = {}
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for method, rule in [(m, r) for m in methods for r in RULES]:
        s = summarise(rows, rule, method)
        sums[(method, rule)] = s
        body.append([method.upper(), rule, s["n"], s["cats"]["both robust"], s["cats"]["both not robust"],
                     s["cats"]["teacher robust, student not"], s["cross"], s["cross_eq13"], s["cross_pgd"],
                     s["cross_either"], len(s["cross_neither"])])
    lines += C.table(head, body) + [""]
    for (method, rule), s in sums.items():
        who = "the teacher" if rule == "teacher" else "the student"
        claim1 = "holds" if s["cross"] == 0 else "does NOT hold"
        claim1_ok = "holds" if s["ok_cross"] == 0 else "does NOT hold"
        claim2 = "holds" if not s["cross_neither"] else "does NOT hold"
        claim2_eq13 = "holds" if s["cross_eq13"] == s["cross"] else "does NOT hold"
        lines += [f"* {method.upper()} students, points κ-confident by {who}: of {s['n']} settings, {s['disagree']} disagree on robustness; in "
                  f"{s['student_less']} of them the student is the less robust one and in {s['cross']} the student "
                  f"is robust where the teacher is not. Claim 1 (\"when they disagree, the student is the less "
                  f"robust one\") {claim1} over all settings; restricted to the {s['ok']} settings where Eq 13 holds "
                  f"(the paper's conclusion: \"after successful distillation\"), {s['ok_disagree']} disagree and "
                  f"{s['ok_cross']} of those have the student more robust, so it {claim1_ok} there. Claim 2 (\"every × is flagged by Eq 13\") {claim2_eq13} with Eq 13 "
                  f"alone ({s['cross_eq13']} of {s['cross']}), and {claim2} with Eq 13 or the teacher cross-check "
                  f"({s['cross_either']} of {s['cross']})."]
    lines += [""]
    eq = {}
    for r in rows:
        eq.setdefault((r["method"], r["a"], r["seed"]), r)
    lines += ["## Distillation per (a, seed)", "",
              "Eq 13 fraction: share of S ∪ fresh points where the student is at least as confident as the teacher "
              "(Eq 13 as the paper states it needs 1.000).", ""]
    head = ["student", "a", "seed", "agreement S", "agreement fresh", "Eq 13 fraction", "Eq 13 holds", "distill s"]
    body = [[m.upper(), f"{a:g}", sd, f"{r['agree']:.4f}", f"{r['agree_fresh']:.4f}", f"{r['eq13_frac']:.4f}",
             "yes" if r["eq13"] else "no", f"{r['distill_s']:.1f}"] for (m, a, sd), r in eq.items()]
    lines += C.table(head, body) + [""]
    lines += ["## Every setting", "",
              "teacher min radius: min |x·1|/√2 over the κ-confident points (teacher's rule) or over the student's "
              "κ-confident points (student's rule); verified: points proved at 3δ of those required; PGD: the "
              "teacher attack found a counterexample in one of the 3δ-balls.", ""]
    head = ["student", "rule", "a", "κ", "seed", "points", "teacher min radius", "teacher robust", "verified", "student robust",
            "Eq 13", "PGD flags"]
    body = [[r["method"].upper(), r["rule"], f"{r['a']:g}", r["kappa"], r["seed"], r["points"], C.fmt(r["teacher_min"], 3),
             "yes" if r["teacher_robust"] else "no", r["verified"], "yes" if r["student_robust"] else "no",
             "holds" if r["eq13"] else "fails", "yes" if r["flagged_pgd"] else "no"]
            for r in sorted(rows, key=lambda r: (r["method"], r["rule"], r["a"], r["kappa"], r["seed"]))]
    lines += C.table(head, body) + [""]
    return C.write_text(path, "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="800 points, 2 seeds, 40 epochs (about 1.5 min)")
    parser.add_argument("--samples", type=int, default=None, help="sample size s (default 3720; quick 800)")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 5; quick 2)")
    parser.add_argument("--epochs", type=int, default=None, help="distillation epochs (default: pacverify's, early stop)")
    parser.add_argument("--delta", type=float, default=0.1)
    parser.add_argument("--methods", default=None, help="distillation losses, comma-separated (default kdiga,kd; "
                        "quick kdiga)")
    parser.add_argument("--timeout", type=float, default=None, help="branch and bound seconds per open point "
                        "(default 2; quick 0.5); a point left open counts as not verified")
    parser.add_argument("--slopes", type=lambda s: tuple(float(v) for v in s.split(",")), default=SLOPES)
    args = parser.parse_args()
    args.samples = args.samples or (800 if args.quick else 3720)
    n_seeds = args.seeds or (2 if args.quick else 5)
    if args.quick and args.epochs is None:
        args.epochs = 40
    args.timeout = args.timeout or (0.5 if args.quick else 2.0)
    started = time.perf_counter()
    seeds = list(range(n_seeds))
    rows = []
    for method in (args.methods or ("kdiga" if args.quick else "kdiga,kd")).split(","):
        for a in args.slopes:
            for seed in seeds:
                rows += run_setting(a, seed, args, method)
                print(f"{method}, a = {a:g}, seed {seed}: done ({time.perf_counter() - started:.0f} s)", flush=True)
    path = write(rows, args, seeds, started)
    print(f"wrote {path} and {path.with_suffix('.png')}")


if __name__ == "__main__":
    main()
