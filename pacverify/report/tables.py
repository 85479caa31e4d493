"""The report's tables: each certificate section as rows of (quantity, value, meaning), and the quantile dicts as one
table (rows = quantity, columns = quantile levels).

Rendering only: every value is the certificate's, formatted by :func:`~pacverify.report.blocks.fmt`; rows whose value
is ``None`` are left out. A key this module has no meaning for is still shown, under its own name.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pacverify.report.blocks import Block, Items, Table, Text, fmt

RADIUS = "radius"  # placeholder unit: replaced by "input units, L2 norm" (or L∞) for the certificate's norm

# section -> key -> (label, meaning, unit). The unit RADIUS becomes the input units of the certificate's norm.
MEANINGS: dict[str, dict[str, tuple[str, str, str]]] = {
    "pac": {
        "guarantee": ("guarantee", "ball (δ-balls of mass ≥ ε, Thm 4.4) or mass (the map M(κ))", ""),
        "delta": ("δ", "radius of the balls the PAC statement is about", RADIUS),
        "eps": ("ε", "mass bound of the statement", "probability mass"),
        "eta": ("η", "probability that the sample is unrepresentative (the statement holds with probability ≥ 1 − η)",
                ""),
        "kappa": ("κ", "confidence threshold on the teacher's top softmax probability", ""),
        "norm": ("norm", "how distances are measured", ""),
        "dim": ("m", "input dimension", ""),
        "vc_dimension": ("d", "VC dimension of the ranges the ε-net bound covers", ""),
        "bound": ("bound", "ε-net sample-size bound: thm38 (Thm 3.8 of 004) or tight (double sampling)", ""),
        "samples": ("s", "sample points drawn", ""),
        "samples_required": ("s required", "sample size the bound needs for (m, ε, η)", ""),
        "tv": ("Λ", "total-variation distance to the deployment distribution assumed by the user (0: no shift)", ""),
        "shifted_eps": ("ε + Λ", "mass bound under the assumed shift", "probability mass"),
        "n_classes": ("classes", "number of teacher outputs", ""),
    },
    "verification": {
        "radius": ("3δ", "radius at which every required point was bounded", RADIUS),
        "norm": ("norm", "how distances are measured", ""),
        "method": ("bound method", "bound propagation used on the student (ibp, crown-ibp, crown-f32, crown, alpha-crown)", ""),
        "complete": ("branch and bound", "points the bounds left open were split further", ""),
        "required": ("required", "κ-confident sample points (teacher's top probability ≥ κ): each must be proven", ""),
        "verified": ("verified", "required points proven: the student keeps its class on the whole 3δ-ball", ""),
        "falsified": ("falsified", "required points with a student counterexample within 3δ", ""),
        "unknown": ("unknown", "required points neither proven nor falsified within the time budget", ""),
        "disagree": ("disagree", "required points where the student's class differs from the teacher's", ""),
        "not_confident": ("not confident", "sample points below κ: nothing is claimed there", ""),
    },
    "relaxation": {
        "delta_T": ("δ_T", "relaxed radius carried to the teacher (Prop 4.3); claimed only on a CERTIFIED run", RADIUS),
        "cap": ("radius cap", "largest radius the certified-radius search tries (radii reaching it are lower bounds)",
                RADIUS),
        "tol": ("radius tolerance", "bisection tolerance of the certified-radius search", RADIUS),
        "formula": ("formula", "how δ_T is computed", ""),
    },
    "teacher_check": {
        "attack": ("attack", "searches run on the teacher: pgd, or pgd+random (PGD plus uniform draws)", ""),
        "steps": ("PGD steps", "gradient steps per restart", ""),
        "restarts": ("PGD restarts", "restarts per claimed ball", ""),
        "starts": ("start placement", "spread: over the ball; box: uniform in its bounding box", ""),
        "random_samples": ("random draws", "uniform draws per claimed ball", ""),
        "fresh_points": ("fresh points", "held-out draws considered", ""),
        "fresh_points_attacked": ("fresh balls attacked (δ)",
                                  "held-out draws κ-confident within 2δ of a required point, whose balls were attacked", ""),
        "fresh_points_attacked_delta_T": ("fresh balls attacked (δ_T)", "the same within 2δ_T", ""),
        "radius_delta": ("attack radius (δ)", "radius of the claimed balls attacked (3δ)", RADIUS),
        "radius_delta_T": ("attack radius (δ_T)", "3δ_T", RADIUS),
        "checked": ("balls checked", "claimed balls attacked (one per required point)", ""),
        "counterexamples_delta": ("counterexamples (δ)",
                                  "claimed balls holding a confirmed teacher counterexample: each refutes the δ claim", ""),
        "counterexamples_delta_T": ("counterexamples (δ_T)", "the same for the δ_T balls", ""),
        "note": ("note", "how to read the attack", ""),
    },
    "coverage": {
        "lower": ("coverage", "lower bound on the fraction of D_X lying in its own δ-ball whose κ-confident part has "
                  "mass ≥ threshold", "fraction"),
        "confidence": ("confidence", "confidence of that lower bound", ""),
        "points": ("points", "Monte Carlo points tested", ""),
        "batch": ("reference draws", "draws per point to estimate the mass of its ball", ""),
        "declared_covered": ("covered points", "points whose ball was shown to hold mass ≥ threshold", ""),
        "alpha_point": ("α per point", "error probability of each point's binomial test", ""),
        "threshold": ("threshold", "mass the ball must hold (ε; ε + 2Λ under a shift)", "probability mass"),
        "note": ("note", "why the estimate was not made", ""),
    },
    "distillation": {
        "n": ("training points", "points the student was distilled on", ""),
        "agreement": ("agreement", "fraction of training points where the student's class equals the teacher's",
                      "fraction"),
        "eq13_fraction": ("Eq 13", "fraction where the student is at least as confident as the teacher (Eq 13 of 004)",
                          "fraction"),
        "gd_mean": ("GD", "mean ‖∇CE_S − ∇CE_T‖₂, distance of the input gradients (003 §4.2)", "per input unit"),
        "gc_mean": ("GC", "mean cosine of the two input gradients (1: parallel)", ""),
        "rho_inf": ("ρ = ∞", "points where the teacher's margin gradient is zero", ""),
        "norm": ("norm", "norm of the gradient markers", ""),
        "n_fresh": ("fresh points", "held-out points the markers were also measured on", ""),
        "agreement_fresh": ("agreement (fresh)", "agreement on the fresh points", "fraction"),
        "eq13_fraction_fresh": ("Eq 13 (fresh)", "Eq 13 fraction on the fresh points", "fraction"),
        "gd_mean_fresh": ("GD (fresh)", "GD on the fresh points", "per input unit"),
        "gc_mean_fresh": ("GC (fresh)", "GC on the fresh points", ""),
        "llm_radius": ("local-linearity radius", "radius of the local-linearity measure (001 Def 2)", RADIUS),
        "llm_student_mean": ("local linearity (student)", "mean local-linearity measure of the student", ""),
        "llm_teacher_mean": ("local linearity (teacher)", "mean local-linearity measure of the teacher", ""),
        "epochs_run": ("epochs", "training epochs run", ""),
        "stopped_early": ("stopped early", "training stopped before the epoch budget", ""),
        "stop_reason": ("stop reason", "why the training stopped", ""),
        "student": ("student", "the student architecture trained", ""),
        "notes": ("notes", "remarks of the trainer", ""),
        "onnx_parity_max_abs_diff": ("ONNX parity", "largest |difference| between the PyTorch student and its ONNX "
                                     "export", "logit units"),
    },
    "global_check": {
        "verdict": ("verdict", "verified, falsified or unknown", ""),
        "radius": ("radius", "3δ: the radius the student must keep its class within", RADIUS),
        "kappa": ("κ", "the student's confidence threshold", ""),
        "norm": ("norm", "how distances are measured", ""),
        "timeout": ("time budget", "branch-and-bound budget", "s"),
        "proven_fraction": ("proven", "fraction of the domain's volume proven", "fraction"),
        "boxes_done": ("boxes closed", "branch-and-bound boxes closed", ""),
        "boxes_open": ("boxes open", "boxes left open when the budget ran out", ""),
    },
    "accuracy": {
        "points": ("labelled points", "sample points with a true class (certify --labels)", ""),
        "teacher_clean": ("teacher accuracy", "fraction of them where the teacher's class is the true one",
                          "fraction"),
        "student_clean": ("student accuracy", "fraction where the student's class is the true one", "fraction"),
        "verified_robust_3delta": ("verified robust (3δ)", "fraction where the student is proven to keep the true class "
                                   "on the whole 3δ-ball", "fraction"),
        "verified_robust_delta": ("verified robust (δ)", "the same on the δ-ball (certified radius ≥ δ)", "fraction"),
    },
    "oracle": {
        "requested": ("requested", "oracle asked for (auto, teacher, student)", ""),
        "used": ("used", "oracle that gave the lower radii l_i", ""),
        "reason": ("reason", "why this oracle ran", ""),
        "method": ("bound method", "bound propagation used for l_i", ""),
        "cap": ("radius cap", "largest radius the lower-radius search tries", RADIUS),
        "tol": ("radius tolerance", "bisection tolerance of the lower-radius search", RADIUS),
        "proven": ("proven", "sample points with l_i > 0", ""),
        "attacked_found": ("attack found", "points with a teacher counterexample within the cap (u_i finite)", ""),
        "inconsistent": ("inconsistent", "points with u_i < l_i: the oracle is wrong there (REFUTED)", ""),
        "student_disagrees": ("student disagrees", "points where the student's class differs (l_i = 0 there)", ""),
    },
    "holdout": {
        "points": ("fresh draws", "held-out draws, disjoint from the sample", ""),
        "confident": ("κ-confident", "fresh draws where the teacher is κ-confident", ""),
        "attacked": ("attacked", "fresh draws attacked at radius M(κ)", ""),
        "members": ("members", "fresh draws with a teacher counterexample within M(κ)", ""),
        "radius": ("M(κ)", "radius attacked at", RADIUS),
        "rate": ("rate", "members / fresh draws, against ε", "fraction"),
        "interval": ("95% interval", "Clopper–Pearson interval of the rate", "fraction"),
        "p_value": ("p-value", "Pr[Bin(fresh draws, ε) ≥ members]", ""),
        "significant": ("significant", "p-value below η: the guarantee failed on held-out data", ""),
        "note": ("note", "why the check did not run in full", ""),
    },
    "confidence_map": {
        "kappa": ("κ", "requested confidence threshold", ""),
        "radius": ("M(κ)", "smallest lower radius at a κ-confident sample point", RADIUS),
        "dkw_margin": ("DKW margin", "one-sided DKW deviation subtracted to get p̲(κ)", "fraction"),
    },
    "mass_relaxation": {
        "delta_T": ("δ_T = M(κ)", "the radius the mass statement is about at the requested κ", RADIUS),
        "formula": ("formula", "how it is computed", ""),
    },
}

# quantile dicts: (section, key) -> (quantity, meaning, unit), in the order the table lists them
QUANTILE_ROWS: tuple[tuple[str, str, str, str, str], ...] = (
    ("relaxation", "certified_radius_quantiles", "certified radius r_i",
     "the student's proven radius at the required points (largest radius the search proved, up to the cap)", RADIUS),
    ("relaxation", "teacher_radius_quantiles", "teacher radius",
     "r_i carried to the teacher, min_j min((g_T/g_S)_j·ρ_j, 1)·r_i (Prop 4.3); δ_T is its minimum / 3", RADIUS),
    ("relaxation", "rho_quantiles", "ρ_i",
     "margin-gradient ratio ‖∇g_S‖/‖∇g_T‖ at the runner-up class that binds δ_T", "ratio; 1 when equal"),
    ("relaxation", "margin_ratio_quantiles", "margin ratio g_T/g_S",
     "teacher margin over student margin at the binding runner-up", "ratio; 1 when the outputs are equal"),
    ("relaxation", "gradient_cosine_quantiles", "gradient cosine",
     "cosine of the teacher's and the student's margin gradients at the binding runner-up", "−1…1; 1 when parallel"),
    ("distillation", "rho_quantiles", "ρ_i (distillation)",
     "margin-gradient ratio over the training sample (distillation quality marker)", "ratio; 1 when equal"),
    ("oracle", "lower_quantiles", "lower radius l_i",
     "l_i ≤ rob_T(x_i) proven by the oracle at every sample point", RADIUS),
    ("oracle", "upper_quantiles", "attack radius u_i",
     "u_i ≥ rob_T(x_i): distance of the closest teacher counterexample found (∞: none within the cap)", RADIUS),
)

SETTINGS_MEANINGS: dict[str, tuple[str, str]] = {
    "seed": ("random seed of every draw, initialisation and attack", ""),
    "arch": ("the teacher's architecture (for a state dict)", ""),
    "trust_pickle": ("pickled teacher files were allowed to run code", ""),
    "student": ("the student architecture", ""),
    "method": ("the distillation loss", ""),
    "epochs": ("training epochs requested", ""),
    "distill_options": ("further distillation options", ""),
    "verify_method": ("bound propagation on the student", ""),
    "complete": ("branch and bound on points the bounds leave open", ""),
    "timeout_per_point": ("branch-and-bound budget per point", "s"),
    "domain": ("input domain [lo, hi] of every feature", "input units"),
    "attack.steps": ("PGD steps per restart", ""),
    "attack.restarts": ("PGD restarts", ""),
    "attack.bisection": ("radii tried per point by the attack's upper-radius search", ""),
    "coverage.points": ("Monte Carlo points of the coverage estimate", ""),
    "coverage.batch": ("reference draws per point", ""),
    "radius_search.cap": ("largest radius the radius search tries", RADIUS),
    "radius_search.tol": ("bisection tolerance of the radius search", RADIUS),
    "device": ("where the networks ran", ""),
    "allow_duplicates": ("a sample with repeated rows was accepted", ""),
    "global_check": ("the student's global robustness was checked", ""),
    "global_timeout": ("time budget of the global check", "s"),
    "outputs": ("what the teacher returns (logits, probabilities, costs), converted once to logits", ""),
    "oracle": ("oracle requested", ""),
    "holdout": ("fresh draws requested for the held-out check", ""),
}

TIMING_MEANINGS: dict[str, str] = {
    "sample": "drawing the sample", "label": "the teacher's labels and confidences", "fresh": "fresh held-out draws",
    "distill": "distilling the student", "export": "ONNX export and parity check",
    "verify": "verifying the student at 3δ", "radius": "certified-radius search", "rho": "ρ, margins and δ_T",
    "teacher_check": "attacking the teacher in the claimed balls", "coverage": "coverage estimate",
    "grid": "decision map (2-D inputs)", "global": "global check of the student",
    "accuracy": "accuracy on the labelled points",
    "lower": "lower radii l_i (oracle)", "upper": "attack radii u_i", "holdout": "held-out check",
    "created": "when the certificate was written (UTC)", "verify_points_per_second": "verification throughput",
}

ENVIRONMENT_MEANINGS: dict[str, str] = {
    "python": "Python version", "platform": "operating system", "torch": "PyTorch version",
    "numpy": "NumPy version", "onnx": "ONNX version", "onnxruntime": "onnxruntime version",
    "device": "device the run used",
}


def norm_name(norm: str) -> str:
    """"L2" or "L∞" for the certificate's ``norm`` ("2" or "inf")."""
    return "L2" if str(norm) == "2" else "L∞" if str(norm) == "inf" else f"L{norm}"


def unit_text(unit: str, norm: str) -> str:
    """The printed unit: ``RADIUS`` becomes "input units, L2 norm" (or L∞)."""
    return f"input units, {norm_name(norm)} norm" if unit == RADIUS else unit


def meaning_text(meaning: str, unit: str, norm: str) -> str:
    """"meaning (unit)", or the meaning alone when no unit applies."""
    unit = unit_text(unit, norm)
    return f"{meaning} ({unit})" if unit and meaning else meaning or unit


LONG_TEXT = 48  # a text value longer than this is shown as a line under the table, not in a cell


def section_blocks(section: str, values: Mapping[str, Any], norm: str, *,
                   skip: tuple[str, ...] = ()) -> list[Block]:
    """One certificate section (its JSON dict) as a (quantity, value, meaning) table, followed by its long text
    values (a formula, a reason, a note) as a list. Rows with a ``None`` value, dict values (quantiles:
    :func:`quantile_table`), list values other than an interval (the caller lists them) and ``skip`` keys are left
    out; an empty list when nothing is left."""
    meanings = MEANINGS.get(section, {})
    rows, lines = [], []
    for key, value in values.items():
        if key in skip or value is None or isinstance(value, dict) or (isinstance(value, list) and key != "interval"):
            continue
        label, meaning, unit = meanings.get(key, (key, "", ""))
        shown = f"[{', '.join(fmt(v) for v in value)}]" if isinstance(value, list) else \
            norm_name(value) if key == "norm" else fmt(value)
        if isinstance(value, str) and len(shown) > LONG_TEXT:
            lines.append(f"{label} ({meaning}): {shown}" if meaning else f"{label}: {shown}")
        else:
            rows.append((label, shown, meaning_text(meaning, unit, norm)))
    blocks: list[Block] = [Table(("quantity", "value", "meaning"), rows, numeric=(1,))] if rows else []
    return blocks + ([Items(lines)] if lines else [])


def _level_name(level: str) -> str:
    q = float(level)
    return {0.0: "min", 0.5: "median", 1.0: "max"}.get(q, f"{q * 100:g}%")


def quantile_table(body: Mapping[str, Any], norm: str) -> Table | None:
    """One table of every quantile dict the certificate holds: rows = quantity (with its meaning and unit), columns
    = the quantile levels (the union over rows, in increasing order; "–" where a row has no such level). Empty dicts
    are left out; None when there is none."""
    found = []
    for section, key, quantity, meaning, unit in QUANTILE_ROWS:
        values = (body.get(section) or {}).get(key)
        if isinstance(values, dict) and values:
            found.append((quantity, meaning_text(meaning, unit, norm), values))
    if not found:
        return None
    levels = sorted({level for *_, values in found for level in values}, key=float)
    rows = [(quantity, *(fmt(values[lv]) if lv in values else "–" for lv in levels), meaning)
            for quantity, meaning, values in found]
    return Table(("quantity", *map(_level_name, levels), "meaning (unit)"), rows,
                 numeric=tuple(range(1, len(levels) + 1)),
                 caption="Order statistics over the points each quantity is measured at (min = 0, max = 1).")


def flatten(values: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts as dotted keys ("attack.steps"), in order."""
    out: list[tuple[str, Any]] = []
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and key != "distill_options":
            out += flatten(value, f"{name}.")
        else:
            out.append((name, value))
    return out


def settings_table(settings: Mapping[str, Any], norm: str) -> Table:
    """The settings, one row per (flattened) key; ``None`` values left out."""
    rows = []
    for key, value in flatten(settings):
        if value is None:
            continue
        meaning, unit = SETTINGS_MEANINGS.get(key, ("", ""))
        rows.append((key, fmt(value), meaning_text(meaning, unit, norm)))
    return Table(("setting", "value", "meaning"), rows)


def files_table(files: Mapping[str, Any]) -> Table:
    """One row per recorded file: its path (or where it came from) and sha256; absent files left out."""
    rows = []
    for name, ref in files.items():
        if not isinstance(ref, dict):
            continue
        if name == "data":
            where = f"{ref.get('kind')}: {ref.get('source')}"
            if ref.get("duplicates"):
                where += f" ({ref['duplicates']} duplicate rows)"
        else:
            where = ref.get("path") or "not a file (given in memory)"
        rows.append((name.replace("_", " "), where, ref.get("sha256") or "not recorded"))
    return Table(("file", "path or source", "sha256"), rows)


def timings_table(timings: Mapping[str, Any]) -> Table:
    """Seconds per stage, then the creation time and the throughput; ``None`` values left out."""
    rows = []
    for key, value in timings.items():
        if value is None:
            continue
        meaning = TIMING_MEANINGS.get(key, "")
        unit = "" if key == "created" else "points/s" if key.endswith("per_second") else "s"
        rows.append((key, fmt(value), meaning_text(meaning, unit, "2")))
    return Table(("stage", "value", "meaning"), rows, numeric=(1,))


def environment_table(environment: Mapping[str, Any]) -> Table:
    """The software versions and the device; ``None`` values left out."""
    return Table(("component", "value", "meaning"),
                 [(key, fmt(value), ENVIRONMENT_MEANINGS.get(key, "")) for key, value in environment.items()
                  if value is not None])


def student_search_blocks(search: Mapping[str, Any]) -> list[Block]:
    """``--student auto``: the one-line explanation and a table of every student tried (the chosen one marked), then
    the students skipped for lack of time."""
    blocks: list[Block] = [Text(str(search["explanation"]))] if search.get("explanation") else []
    rows = []
    for n, t in enumerate(search.get("tries") or []):
        rows.append((str(t.get("student", "")), fmt(t.get("parameters")), fmt(t.get("agreement")), fmt(t.get("gc")),
                     fmt(t.get("gd")), fmt(t.get("epochs_run")), fmt(t.get("stop_reason")), fmt(t.get("seconds")),
                     fmt(t.get("reached")), "yes" if n == search.get("best_index") else ""))
    if rows:
        held = any(t.get("heldout") for t in search.get("tries") or [])
        blocks.append(Table(("student", "parameters", "agreement", "GC", "GD", "epochs", "stop reason", "seconds",
                             "targets reached", "chosen"), rows, numeric=(1, 2, 3, 4, 5, 7),
                            caption=f"Every student tried, in order; agreement, GC and GD measured "
                                    f"{'on held-out points' if held else 'on the training sample'}; targets: "
                                    f"{fmt(search.get('targets') or {})}; time budget {fmt(search.get('budget_s'))} s."))
    skipped = [f"{s.get('student')} (predicted {fmt(s.get('predicted_seconds')) or 'no prediction'} s, "
               f"{fmt(s.get('seconds_left'))} s left)" for s in search.get("skipped") or []]
    if skipped:
        blocks.append(Items(skipped, title="Not tried for lack of time"))
    return blocks
