"""``--student auto``: grow the student along a fixed ladder until it reaches the targets or the time budget ends.

:func:`distill_auto` distils the teacher into each student of a ladder in turn (:func:`default_ladder`),
each try with the trainer's stop rules (the plateau rule above all, :class:`~pacverify.distill.fit.DistillConfig`),
and stops at the first student whose markers reach the targets — agreement ≥ ``target_agreement`` and
gradient cosine GC ≥ ``target_gc`` (defaults 0.99 and 0.8), on the held-out points when given (``x_fresh``),
else on the sample — or when the time budget is spent. Every try is recorded (:class:`AutoTry`), every
student left out for lack of time too (:class:`SkippedTry`), and the result says in one line what was
reached or why not (:attr:`AutoResult.explanation`).

Ladders (:data:`MLP_LADDER`, :data:`IMAGE_LADDER`): the default student ``mlp:2x64`` first, then wider, then
deeper. For image inputs (per-point shape (C, H, W), i.e. points of shape (N, C, H, W)) small conv students
follow the MLP. Larger students are slower to train *and to verify*, so the ladders stay short.

Time: the first try always runs (there must be a student); it, like every try, stops after the epoch in
which the budget runs out. Before each later try the time it needs is predicted as
``E × (seconds per epoch of the previous try) × (step time of the new student / step time of the previous
one)``, with E the most epochs any earlier try ran and step times measured on a copy of each student
(:func:`pacverify.distill.fit.step_seconds`, a few steps); a try whose prediction exceeds the time left is
not started (recorded as skipped). With a budget that is not reached the result depends only on the
settings and the seed; a budget that cuts the ladder short makes how far it gets depend on the machine's
speed.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pacverify.data import check_points
from pacverify.distill.fit import DistillConfig, make_config, step_seconds
from pacverify.distill.quality import QualityMarkers
from pacverify.distill.trainer import DistillResult, distill
from pacverify.errors import InputError
from pacverify.models import build_student, check_student_spec, resolve_device, teacher_logits
from pacverify.validation import check_positive

MLP_LADDER = ("mlp:2x64", "mlp:2x128", "mlp:3x128", "mlp:3x256")
"""Students tried for vector inputs: the default first, then width 64 → 128, depth 2 → 3, width 128 → 256."""

IMAGE_LADDER = ("mlp:2x64", "cnn:16-32-fc64", "cnn:32-64-fc128", "cnn:32-32s1-64-fc128")
"""Students tried for image inputs (C, H, W): the default MLP, two 3×3 stride-2 conv layers (16, 32 channels) with a
dense layer of 64, the same twice as wide, then one more (stride-1) conv layer."""

DEFAULT_BUDGET_S = 600.0
"""Default time budget of :func:`distill_auto` in seconds (about what 100 epochs of ``mlp:2x64`` took on real
teachers, issue 17)."""


def default_ladder(input_shape: Sequence[int]) -> tuple[str, ...]:
    """The ladder for points of per-point shape ``input_shape``: :data:`IMAGE_LADDER` for (C, H, W), else
    :data:`MLP_LADDER`."""
    return IMAGE_LADDER if len(tuple(input_shape)) == 3 else MLP_LADDER


@dataclass(frozen=True)
class AutoTry:
    """One student distilled by :func:`distill_auto`, with its markers (after training, best epoch kept).

    ``agreement``, ``gc``, ``gd``: the markers the targets are checked on — held-out (``heldout`` True) when
    :func:`distill_auto` had ``x_fresh``, else the sample's; ``agreement_sample``: agreement on the sample.
    ``seconds``: wall time of the try (training and markers); ``predicted_seconds``: what was predicted
    before starting it (None for the first try); ``reached``: the markers meet the targets.
    ``classes_student``/``classes_teacher``: how many different classes the student and the teacher
    predict on the same points (1 for the student: it is constant there, e.g. flattened by the gradient term).
    ``markers``: every quality marker (:class:`~pacverify.distill.quality.QualityMarkers`).
    """

    student: str
    parameters: int
    agreement: float
    gc: float
    gd: float
    heldout: bool
    agreement_sample: float
    epochs_run: int
    stopped_early: bool
    stop_reason: str
    seconds: float
    predicted_seconds: float | None
    reached: bool
    classes_student: int
    classes_teacher: int
    markers: QualityMarkers

    def as_dict(self) -> dict:
        """JSON-ready: every field, ``markers`` as its dict."""
        out = dataclasses.asdict(self)
        out["markers"] = self.markers.as_dict()
        return out


@dataclass(frozen=True)
class SkippedTry:
    """A student of the ladder not started: its predicted time exceeded the time left of the budget
    (``predicted_seconds`` None: the budget was already spent, nothing was predicted)."""

    student: str
    predicted_seconds: float | None
    seconds_left: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class AutoResult:
    """What :func:`distill_auto` did and the student it chose.

    ``best``: the chosen try's :class:`~pacverify.distill.trainer.DistillResult` (student, history, markers,
    stop reason); ``best_index``: its position in ``tries``. The choice is the first try that reached the
    targets (``reached`` True) or, when none did, the best try by agreement, then GC (the earlier try on a
    tie). ``tries``: every try in order; ``skipped``: ladder students not started for lack of time;
    ``ladder``: the ladder used; ``seconds``: wall time of the whole search; ``explanation``: one line
    for the user saying which targets were reached by which student, or that they were not and what was
    tried.
    """

    best: DistillResult
    best_index: int
    tries: tuple[AutoTry, ...]
    skipped: tuple[SkippedTry, ...]
    ladder: tuple[str, ...]
    target_agreement: float | None
    target_gc: float | None
    budget_s: float
    seconds: float
    reached: bool
    explanation: str

    @property
    def student(self) -> nn.Module:
        """The chosen student (eval mode, CPU)."""
        return self.best.student

    @property
    def chosen(self) -> str:
        """The chosen student's spec, e.g. ``mlp:3x128``."""
        return self.tries[self.best_index].student

    def as_dict(self) -> dict:
        """JSON-ready record of the search (the chosen run itself is ``best.as_dict()``)."""
        return {"chosen": self.chosen, "reached": self.reached,
                "targets": {"agreement": self.target_agreement, "gc": self.target_gc},
                "budget_s": self.budget_s, "seconds": self.seconds, "ladder": list(self.ladder),
                "explanation": self.explanation, "best_index": self.best_index,
                "tries": [t.as_dict() for t in self.tries], "skipped": [s.as_dict() for s in self.skipped]}


def distill_auto(teacher: nn.Module, x_train: np.ndarray | torch.Tensor, *,
                 x_fresh: np.ndarray | torch.Tensor | None = None, ladder: Sequence[str] | None = None,
                 budget_s: float = DEFAULT_BUDGET_S, config: DistillConfig | None = None,
                 device: str | torch.device = "auto", progress: bool | Callable[[int, int], None] = True,
                 on_try: Callable[[AutoTry], None] | None = None, **settings) -> AutoResult:
    """Distil ``teacher`` into the students of ``ladder`` in turn until one reaches the targets or ``budget_s`` ends.

    ``x_train``: the sample (N, *input_shape); ``x_fresh``: held-out points on which the targets are checked
    (and which the trainer's stop rules watch); without them the sample's markers are used, which favours
    larger students. ``ladder``: student specs in the order to try (default :func:`default_ladder` of the
    points' shape). ``settings``: :class:`~pacverify.distill.fit.DistillConfig` fields for every try —
    ``seed``, ``method``, ``norm``, ``epochs``, ``target_agreement`` (default 0.99), ``target_gc``
    (default 0.8), ``stop_at_targets`` (default False: each try trains until the plateau rule stops it,
    so the chosen student is trained as far as a plain run would) … but not ``student``.
    ``on_try`` is called with each :class:`AutoTry` as it finishes (for progress lines).

    Guarantees: at least one try runs; no try starts when its predicted time exceeds the time left, and
    every try stops after the epoch in which the budget runs out (so the search ends at most about one
    epoch and one marker evaluation after ``budget_s``); every try uses the same seed, so with a budget
    that is not reached the same seed gives the same tries, choice and student weights.
    Bad settings, a bad ladder, no target or a non-positive budget raise :class:`InputError`.
    """
    started = time.perf_counter()
    if "student" in settings:
        raise InputError("distill_auto chooses the student itself; give the students to try as ladder=[...]")
    cfg = make_config(config, **settings)
    if cfg.target_agreement is None and cfg.target_gc is None:
        raise InputError("distill_auto needs a target: target_agreement and target_gc are both None")
    budget_s = check_positive(budget_s, "budget_s")
    x = check_points(x_train, name="x_train")
    input_shape = tuple(x.shape[1:])
    if x_fresh is not None:
        x_fresh = check_points(x_fresh, name="x_fresh", input_shape=input_shape)
    specs = _check_ladder(default_ladder(input_shape) if ladder is None else ladder, input_shape)
    target = resolve_device(device)
    x_tensor = torch.as_tensor(x)
    watched = x if x_fresh is None else x_fresh  # the points the targets are checked on
    classes_teacher = _classes(teacher, watched)

    tries: list[AutoTry] = []
    results: list[DistillResult] = []
    skipped: list[SkippedTry] = []
    probes: dict[str, float] = {}
    for spec in specs:
        left = budget_s - (time.perf_counter() - started)
        predicted = None
        if tries:
            if left <= 0:
                skipped.append(SkippedTry(spec, None, 0.0))
                continue
            predicted = _predict_seconds(teacher, x_tensor, spec, tries, probes, cfg, target)
            left = budget_s - (time.perf_counter() - started)  # measuring step times took some of it
            if predicted > left:
                skipped.append(SkippedTry(spec, predicted, left))
                continue
        try_started = time.perf_counter()
        result = distill(teacher, x, student=spec, config=cfg, device=target, progress=progress, x_fresh=x_fresh,
                         time_limit_s=max(left, 0.0))
        record = _record(spec, result, cfg, time.perf_counter() - try_started, predicted,
                         _classes(result.student, watched), classes_teacher)
        tries.append(record)
        results.append(result)
        if on_try is not None:
            on_try(record)
        if record.reached:
            break
    reached = tries[-1].reached
    best_index = len(tries) - 1 if reached else _best_index(tries)
    seconds = time.perf_counter() - started
    explanation = _explain(cfg, tries, skipped, best_index, reached, budget_s, seconds, specs)
    return AutoResult(results[best_index], best_index, tuple(tries), tuple(skipped), specs, cfg.target_agreement,
                      cfg.target_gc, budget_s, seconds, reached, explanation)


def _check_ladder(ladder: Sequence[str], input_shape: tuple[int, ...]) -> tuple[str, ...]:
    """Canonical specs, each one buildable for ``input_shape`` (InputError naming the first that is not)."""
    if isinstance(ladder, str):
        ladder = [ladder]
    specs = tuple(check_student_spec(spec) for spec in ladder)
    if not specs:
        raise InputError("the ladder of students to try is empty; give at least one student spec")
    for spec in specs:
        build_student(spec, input_shape, 2)  # raises InputError (e.g. a cnn student for non-image points)
    return specs


def _parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _classes(model: nn.Module, points: np.ndarray) -> int:
    """How many different classes ``model`` predicts on ``points``."""
    return int(teacher_logits(model, points).argmax(dim=1).unique().numel())


def _record(spec: str, result: DistillResult, cfg: DistillConfig, seconds: float, predicted: float | None,
            classes_student: int, classes_teacher: int) -> AutoTry:
    m = result.markers
    heldout = m.agreement_fresh is not None
    agreement = m.agreement_fresh if m.agreement_fresh is not None else m.agreement
    gc = m.gc_mean_fresh if m.gc_mean_fresh is not None else m.gc_mean
    gd = m.gd_mean_fresh if m.gd_mean_fresh is not None else m.gd_mean
    return AutoTry(spec, _parameters(result.student), float(agreement), float(gc), float(gd), heldout,
                   float(m.agreement), result.epochs_run, result.stopped_early, result.stop_reason, seconds,
                   predicted, cfg.reaches_targets(agreement, gc), classes_student, classes_teacher, m)


def _probe(teacher: nn.Module, x: torch.Tensor, spec: str, probes: dict[str, float], cfg: DistillConfig,
           device: torch.device) -> float:
    """Step time of ``spec`` (cached per spec): :func:`~pacverify.distill.fit.step_seconds` on a fresh student."""
    if spec not in probes:
        n_classes = int(_n_classes(teacher, x))
        student = build_student(spec, tuple(x.shape[1:]), n_classes, dropout=cfg.dropout, seed=cfg.seed).to(device)
        probes[spec] = max(step_seconds(teacher, student, x, cfg), 1e-9)
    return probes[spec]


def _n_classes(teacher: nn.Module, x: torch.Tensor) -> int:
    return int(teacher_logits(teacher, x[:2]).shape[1])


def _predict_seconds(teacher: nn.Module, x: torch.Tensor, spec: str, tries: list[AutoTry], probes: dict[str, float],
                     cfg: DistillConfig, device: torch.device) -> float:
    """Predicted wall time of a try of ``spec``: E × (s/epoch of the last try) × (step time ratio), module doc."""
    last = tries[-1]
    epochs = max(t.epochs_run for t in tries)
    per_epoch = last.seconds / max(last.epochs_run, 1)
    ratio = _probe(teacher, x, spec, probes, cfg, device) / _probe(teacher, x, last.student, probes, cfg, device)
    return float(epochs * per_epoch * ratio)


def _best_index(tries: list[AutoTry]) -> int:
    """Highest agreement, then highest GC; the earliest try on a tie."""
    return max(range(len(tries)), key=lambda i: (tries[i].agreement, tries[i].gc, -i))


def _secs(value: float) -> str:
    """Seconds as the explanation prints them: 420, 12, 0.71, 0.042."""
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"


def _explain(cfg: DistillConfig, tries: list[AutoTry], skipped: list[SkippedTry], best_index: int, reached: bool,
             budget_s: float, seconds: float, specs: tuple[str, ...]) -> str:
    """The one-line account of the search (see :attr:`AutoResult.explanation`)."""
    where = "held-out" if tries[0].heldout else "sample"
    best = tries[best_index]
    targets = f"targets {cfg.targets_text} ({where})"
    tried = ", ".join(f"{t.student} ({t.agreement:.3f}, {t.gc:.3f})" for t in tries)
    if reached:
        others = [t for t in tries if t is not best]
        text = (f"{targets} reached by {best.student} (try {best_index + 1} of {len(specs)}, "
                f"{_secs(seconds)} s of {budget_s:g} s): agreement {best.agreement:.3f}, GC {best.gc:.3f}")
        if others:
            text += "; tried before: " + ", ".join(f"{t.student} ({t.agreement:.3f}, {t.gc:.3f})" for t in others)
        return text
    if skipped or len(tries) < len(specs):
        why = f"not reached within {budget_s:g} s"
    else:
        why = f"not reached by any of the {len(specs)} students ({_secs(seconds)} s of {budget_s:g} s)"
    text = (f"{targets} {why}; best {best.student}: agreement {best.agreement:.3f}, GC {best.gc:.3f}; "
            f"tried (agreement, GC) {tried}")
    constant = [t.student for t in tries if t.classes_student == 1 < t.classes_teacher]
    if constant:
        text += (f"; {', '.join(constant)} predict{'s' if len(constant) == 1 else ''} one class at every "
                 f"{where} point while the teacher predicts {tries[0].classes_teacher}: the gradient term may have "
                 "flattened the student (try a smaller lambda_g, grad_warmup, or method kd)")
    if skipped:
        text += "; not tried for lack of time " + ", ".join(
            f"{s.student}" + (" (budget spent)" if s.predicted_seconds is None else
                              f" (predicted {_secs(s.predicted_seconds)} s > {_secs(s.seconds_left)} s left)")
            for s in skipped)
    return text
