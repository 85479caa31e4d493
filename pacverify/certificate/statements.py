"""The certificate's sentences: what is claimed, on which assumptions, and what weakens the evidence.

Pure functions of numbers computed elsewhere (the pipeline assembles them into the typed sections of
:mod:`pacverify.certificate.schema`). The PAC
sentences come from :func:`pacverify.pac.pac_statement` (DESIGN.md §2) and are never printed
without the assumptions they rest on.
"""
from __future__ import annotations

import platform
import sys

import numpy as np

QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


def assumptions(*, tv: float, source_kind: str) -> list[str]:
    """The assumptions of the PAC statements, as the proofs of Prop 4.2, Thm 4.4 and Obs 4.5 of 004 use them."""
    out = [
        "Perfect student (Eq 7 and Prop 4.2 of 004): at every κ-confident sample point x_i the student's outputs "
        "equal the teacher's, f_S(x_i) = f_T(x_i), and so do their input gradients, so that robustness proven for "
        "the student transfers to the teacher. This is not proven; the distillation markers and δ_T measure how far "
        "it holds, and the teacher attack looks for contradictions.",
        "Local linearity (Prop 4.2 of 004): teacher and student are each a single affine piece on the whole 3δ-ball "
        "around every κ-confident sample point (not merely piecewise linear, which every ReLU network is). A thin "
        "region where the teacher's class flips inside such a ball breaks it, and only the teacher attack can find "
        "one.",
        "i.i.d. sampling (Thm 3.8 of 004): the sample points are independent draws from the input distribution D_X"
        + (" — the rows of the data file are assumed to be such draws (not sorted, deduplicated or augmented)."
           if source_kind == "data" else "."),
        "Fixed confident set: κ is chosen before sampling, so the confident set C_κ = {x : conf_T(x) ≥ κ} does not "
        "depend on the sample (the ranges of the ε-net are B ∩ C_κ for δ-balls B).",
    ]
    if tv > 0:
        out.append(f"Distribution shift (Obs 4.5 of 004): the deployment distribution D' is within total-variation "
                   f"distance Λ = {tv:g} of D_X; this bound is the user's, not checked.")
    return out


DELTA_T_PREMISES = (
    "equal outputs: f_S(x_i) = f_T(x_i) at every required point (measured: the margin ratios g_T/g_S, 1 when equal)",
    "both models a single affine piece on the ball of radius r_i around every required point x_i",
    "parallel margin gradients for every runner-up class j (measured: the gradient cosines, 1 when parallel)",
    "the student agrees with the teacher's class at every required point",
)


def delta_t_note(delta_t: float, certified: bool) -> str | None:
    """Why no δ_T claim is printed, when δ_T > 0 but the run is not CERTIFIED (None otherwise)."""
    if delta_t <= 0 or certified:
        return None
    return (f"δ_T = {delta_t:g} is only the radius the evidence would support if every κ-confident sample point were "
            "proven robust for the student, the student agreed with the teacher there, and no teacher "
            "counterexample lay in a claimed ball; that is not the case here, so no δ_T claim is made.")


def quantiles(values: np.ndarray) -> dict[str, float]:
    """Order statistics of ``values`` at :data:`QUANTILES` ("0" = min, "1" = max; inf values sort last)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {}
    levels = np.quantile(values, QUANTILES, method="lower")  # an element of values: no interpolation across inf
    return {f"{q:g}": float(v) for q, v in zip(QUANTILES, levels, strict=True)}


def environment(device: str) -> dict:
    import onnx
    import onnxruntime
    import torch

    return {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
            "numpy": np.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "device": device}


def coverage_sentence(coverage: dict, delta: float, eps: float, kappa: float, tv: float = 0.0) -> str:
    """What part of the distribution the PAC statement speaks about, as the coverage estimate measured it."""
    if not coverage.get("points"):
        return f"Coverage was not estimated ({coverage.get('note') or 'no fresh points'})."
    where = (f"of D_X lies in its own δ-ball (δ = {delta:g}) whose κ-confident part (κ = {kappa:g}) has D_X-mass "
             f"≥ ε = {eps:g}" if tv == 0 else
             f"of any D' with TV(D_X, D') ≤ Λ = {tv:g} lies in its own δ-ball (δ = {delta:g}) whose κ-confident part "
             f"(κ = {kappa:g}) has D'-mass ≥ ε + Λ = {eps + tv:g} (measured on D_X at ε + 2Λ, minus Λ)")
    return (f"With confidence {coverage['confidence']:g}, at least {coverage['lower']:.1%} {where} — the kind of "
            f"ball the PAC statement is about (Monte Carlo: {coverage['points']} points × {coverage['batch']} "
            "reference draws, the teacher's confidence at each, exact binomial bounds).")


def weak_evidence_flags(markers: dict, coverage: dict) -> list[str]:
    """Plain-language flags for weak or missing evidence: they change no verdict, they say what to distrust."""
    out = []
    fresh = markers.get("agreement_fresh")
    agreement = fresh if fresh is not None else markers.get("agreement")
    if agreement is not None and agreement < 0.99:
        where = "a fresh sample" if fresh is not None else "the training sample"
        out.append(f"the student agrees with the teacher on only {agreement:.1%} of {where}: the perfect-student "
                   "assumption is far from true")
    if fresh is None:
        out.append("no fresh points were left for held-out markers: agreement, Eq 13, GD and GC were measured only on "
                   "the sample the student was trained on")
    eq13 = markers.get("eq13_fraction")
    if eq13 is not None and eq13 < 0.9:
        out.append(f"Eq 13 of 004 holds at only {eq13:.1%} of the sample points: the student is less confident than "
                   "the teacher there, so its robustness may overstate the teacher's (004 §5)")
    gc = markers.get("gc_mean")
    if gc is not None and gc < 0.9:
        out.append(f"mean gradient cosine GC = {gc:.3f} < 0.9: input gradients are poorly aligned")
    if not coverage.get("points"):
        out.append(f"the coverage of the statement was {coverage.get('note') or 'not estimated'}: nothing says how "
                   "much of the distribution the PAC statement is about")
    elif coverage.get("lower", 0.0) == 0.0:
        out.append("no part of the distribution could be shown to lie in δ-balls whose κ-confident part has mass ≥ ε: "
                   "the PAC statement may be about no point at all; a larger δ or a smaller ε (more samples) makes it "
                   "say more")
    return out
