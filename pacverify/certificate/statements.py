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


def environment(device: str, executor=None) -> dict:
    """The versions, the device and the executor (with its cluster's size) of a run, for the certificate."""
    import onnx
    import onnxruntime
    import torch

    from pacverify.executor import LocalExecutor

    info = (executor or LocalExecutor()).info()
    return {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
            "numpy": np.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "device": device, "executor": info.executor, "cluster_nodes": int(info.nodes),
            "cluster_cpus": float(info.cpus)}


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


# --- mass mode (docs/theory.md, "Mass mode") ---------------------------------------------------------------------

def _norm_name(norm: str) -> str:
    return "L2" if norm == "2" else "L∞"


def mass_statement(*, delta: float, eps: float, eta: float, kappa: float, radius: float, samples: int, norm: str,
                   bound: str, oracle: str, tv: float = 0.0) -> str:
    """The mass guarantee with its numbers: for every κ at once the κ-confident inputs that are not M(κ)-robust
    have mass < ε (with prob ≥ 1 − η over the sample), and its reading at the requested (δ, κ)."""
    where = "D_X" if tv == 0 else f"any D' with TV(D_X, D') ≤ Λ = {tv:g}"
    mass = f"ε = {eps:g}" if tv == 0 else f"ε + Λ = {eps + tv:g}"
    premise = ("the lower radii come from sound bound propagation on the teacher itself" if oracle == "teacher" else
               "given the transfer premises listed (the lower radii are the student's certified radii carried to "
               "the teacher by Prop 4.3 of 004)")
    at = (f"At the requested κ = {kappa:g}: M(κ) = {radius:.6g}"
          + (f" ≥ δ = {delta:g}, so the inputs where the teacher is κ-confident and not δ-robust have {where}-mass "
             f"below {mass}." if radius >= delta else
             f" < δ = {delta:g}: the sample does not support the claim at δ."))
    return (f"With probability at least {1 - eta:g} (η = {eta:g}) over the draw of the {samples} i.i.d. sample points "
            f"(ε-net of the ranges {{x : conf_T(x) ≥ κ, rob_T(x) < ρ}}, VC dimension 2, {bound} bound), for every "
            f"κ at once, the inputs where the teacher's top softmax probability is at least κ and the teacher is not "
            f"M(κ)-robust ({_norm_name(norm)}: its class changes within distance M(κ)) have {where}-mass below "
            f"{mass}, where M(κ) is the smallest lower radius proven at a κ-confident sample point; {premise}, and "
            f"under i.i.d. sampling. {at}")


def mass_conditional_statement(*, eta: float, kappa: float, radius: float, p_lower: float, cond_eps: float,
                               margin: float, samples: int) -> str | None:
    """The conditional form (union bound of the ε-net event and the one-sided DKW event, η each); None when
    p̲(κ) = 0 (the bound says nothing)."""
    if p_lower <= 0:
        return None
    return (f"With probability at least {max(1 - 2 * eta, 0):g} (the ε-net event, η = {eta:g}, and the one-sided "
            f"DKW bound on the confidence distribution from the same {samples} points, η = {eta:g}, by the union "
            f"bound): Pr[conf_T(x) ≥ κ] ≥ p̲(κ) = {p_lower:.4g} (the sample fraction minus {margin:.4g}) for every κ, "
            f"so at κ = {kappa:g}, among the κ-confident inputs the fraction where the teacher is not "
            f"M(κ)-robust (M(κ) = {radius:.6g}) is below ε/p̲(κ) = {cond_eps:.4g}.")


def mass_assumptions(*, oracle: str, source_kind: str, tv: float, premises: tuple[str, ...] = ()) -> list[str]:
    """The assumptions of the mass statement, as its proof uses them (docs/theory.md)."""
    out = [
        "i.i.d. sampling (the ε-net theorem): the sample points are independent draws from the input distribution "
        "D_X" + (" — the rows of the data file are assumed to be such draws (not sorted, deduplicated or augmented)."
                 if source_kind == "data" else "."),
        "Fixed ranges: the ranges {x : conf_T(x) ≥ κ, rob_T(x) < ρ} are defined by the teacher alone, before "
        "sampling; M(κ) may depend on the sample because the ε-net event covers every range at once.",
    ]
    if oracle == "teacher":
        out.append("Exact arithmetic (teacher oracle): the lower radii are proven for the function the teacher's graph "
                   "computes exactly (bounds in float64 with outward rounding margins); the teacher as it runs "
                   "(float32) agrees with it up to its rounding error (the oracle line gives the measured logit "
                   "agreement), so within that error of a decision boundary the float32 teacher can change class "
                   "inside a proven radius.")
    if oracle == "student":
        out.append("Transfer (Prop 4.3 of 004): at every sample point the student's certified radius, scaled by "
                   "min_j min((g_T/g_S)_j·ρ_j, 1), is at most the teacher's robust radius: " + "; ".join(premises)
                   + ". This is not proven; the teacher attack looks for contradictions (u_i < l_i).")
    if tv > 0:
        out.append(f"Distribution shift (Obs 4.5 of 004): the deployment distribution D' is within total-variation "
                   f"distance Λ = {tv:g} of D_X; this bound is the user's, not checked.")
    return out


def holdout_sentence(h: dict, eps: float, eta: float, kappa: float) -> str:
    """What the held-out check found (``h``: the certificate's holdout section as a dict)."""
    if not h["points"]:
        return f"No held-out check ({h['note'] or 'no fresh points'})."
    lo, hi = h["interval"]
    text = (f"Held-out check: of {h['points']} fresh draws, {h['confident']} are κ-confident (κ = {kappa:g}) and "
            f"{h['members']} of them have a teacher counterexample within M(κ) = {h['radius']:.6g}: a rate of "
            f"{h['rate']:.4g} (95% Clopper–Pearson [{lo:.4g}, {hi:.4g}]) against ε = {eps:g}; binomial p-value "
            f"{h['p_value']:.3g}.")
    if h["significant"]:
        text += (f" The rate is significantly above ε (p < η = {eta:g}): the guarantee failed here — an unlucky "
                 "sample, non-i.i.d. data, or a broken transfer assumption.")
    return text


def global_sentence(verdict: str, proven_fraction: float, radius: float, kappa: float, norm: str,
                    domain: tuple[float, ...], timeout: float) -> str:
    """What ``--global-check`` established about the student (docs/theory.md, "Global robustness of the student")."""
    where = f"the domain [{domain[0]:g}, {domain[1]:g}]^m"
    if verdict == "verified":
        return (f"The student is proven (branch and bound over the whole of {where}) to keep its class within "
                f"{radius:g} (3δ, {_norm_name(norm)}) of every point of the domain where it is κ-confident (κ = "
                f"{kappa:g}): the student-side premise therefore holds at every teacher-κ-confident sample point where "
                "the student is also κ-confident and agrees, whichever points were sampled. The transfer assumptions "
                "remain.")
    if verdict == "falsified":
        return (f"The student is not globally 3δ-robust on {where}: a point where it is κ-confident and a point within "
                f"{radius:g} of it with another class were found and checked (points.npz: global_pair). The proofs "
                "at the sample points are unaffected.")
    return (f"Global 3δ-robustness of the student on {where} was proven on {proven_fraction:.1%} of its volume within "
            f"{timeout:g} s: not established.")


def accuracy_sentence(section: dict, delta: float, norm: str) -> str:
    """What ``certify --labels`` established: per-point facts about the student on the labelled sample, proven by
    the bounds (no probability, no assumption)."""
    n = section["points"]
    return (f"On the {n} labelled sample points the teacher's clean accuracy is {section['teacher_clean']:.4f} and the "
            f"student's {section['student_clean']:.4f}. The student is proven to keep the true class on the whole "
            f"{_norm_name(norm)} ball of radius 3δ = {3 * delta:g} at a fraction {section['verified_robust_3delta']:.4f} "
            f"of them, and of radius δ = {delta:g} at {section['verified_robust_delta']:.4f} (verified robust "
            "accuracy). Only the κ-confident points were bounded; the others count as not verified. These are facts "
            "about the student at these points, not probabilities.")


def search_warning(search: dict | None) -> list[str]:
    """``--student auto`` that did not reach its targets: the explanation (targets, best try, what was tried)."""
    if not search or search.get("reached"):
        return []
    return [f"student auto: {search.get('explanation', 'the targets were not reached')}"]
