"""Every setting of a certification run, validated in one place before anything is loaded or sampled.

:meth:`CertifySettings.validated` checks each field (DESIGN.md §2 ranges, the closed sets of names, the
student architecture, every distillation option, the attack and coverage budgets) and returns a
canonical copy; a bad value raises :class:`~pacverify.errors.InputError` naming the parameter, the
allowed values and the bad value. The Python API and the CLI both go through it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pacverify.data import ArraySampler, Sampler
from pacverify.errors import InputError
from pacverify.executor import EXECUTORS
from pacverify.fileio import sha256_file
from pacverify.names import BOUND_METHOD_NAMES, BOUNDS, DEVICES, DISTILL_METHODS, GUARANTEES, ORACLES, OUTPUT_KINDS
from pacverify.validation import (
    check_choice,
    check_delta,
    check_eps,
    check_eta,
    check_kappa,
    check_norm,
    check_positive,
    check_positive_int,
    check_samples,
    check_seed,
    check_tv,
    parse_domain,
)

BALL_ATTACK = (50, 10)  # default PGD steps and restarts per claimed ball (ball mode)
MASS_ATTACK = (20, 1)   # per radius tried (mass mode): the same counterexamples as (50, 10) on the digits benchmarks
                        # at 1/55–1/80 of the time (benchmarks/results/mass.md)


@dataclass(frozen=True)
class CertifySettings:
    """Everything that determines a certification run (all checked by :meth:`validated`).

    Sources: exactly one of ``data`` (array file), ``sampler`` (``module:function``, the user's own
    code) or ``synthetic`` (built-in distribution name) — or a ready :class:`~pacverify.data.Sampler`.
    ``samples``: draw this many points instead of the minimum of Thm 3.8 (never fewer).
    ``student``: the student architecture (``mlp:2x64``, ``cnn:...``); ``method``: the distillation
    loss; ``distill_options``: further :class:`~pacverify.distill.DistillConfig` fields.
    ``complete``: branch and bound on points the bounds leave unknown, ``timeout`` s each.
    ``radius_cap``/``radius_tol``: the certified-radius search (default 6δ and 3δ/64).
    ``attack_steps``/``attack_restarts``: the teacher attack's PGD budget per claimed ball (None: 50 × 10; in mass
    mode 20 × 1 per radius tried, :data:`MASS_ATTACK`), its restarts placed by
    ``attack_starts`` ("spread" over the ball, or "box": uniform in the bounding box, the older behaviour);
    ``attack_random_samples``: uniform draws per claimed ball (None: 2000 for m ≤ 16, else 250; 0: none);
    ``attack_fresh_points``: held-out draws whose δ-balls are attacked too where they lie within 2δ of a
    required point (0: none).
    ``coverage_points``/``coverage_batch``: the Monte Carlo coverage estimate (0 points: skip).
    ``allow_duplicates``: accept a sample with more than 1% exact duplicate rows (:data:`pacverify.data.DUPLICATE_LIMIT`).
    ``guarantee``: "ball" (Thm 4.4 of 004: δ-balls of mass ≥ ε, d = m + 1) or "mass" (the dimension-free
    confidence→robustness map M(κ), d = 2; docs/theory.md). ``bound``: the ε-net sample size, "thm38" (Thm 3.8,
    the default of ball mode) or "tight" (the double-sampling bound, the default of mass mode). Mass mode only:
    ``oracle`` ("teacher": the teacher's own certified radii; "student": the distilled student's, transferred by
    Prop 4.3; "auto": the teacher when the engine reads it and its estimated cost fits ``oracle_budget`` seconds),
    ``holdout`` fresh draws for the held-out check (None: up to 3000 as the source allows; 0: none),
    ``attack_bisection`` radii tried per point by the teacher attack's upper-bound search. In mass mode the radius
    search defaults to cap 2δ and tol δ/32. ``global_check`` (ball mode, needs ``domain``): prove the student
    globally 3δ-robust at its κ-confident points over the whole domain, within ``global_timeout`` seconds.
    ``student``: an architecture ("mlp:2x64", "cnn:...") or "auto": :func:`pacverify.distill.distill_auto` grows it
    (wider, deeper; conv for image inputs) until the held-out agreement and gradient cosine reach their targets
    (``distill_options`` ``target_agreement``/``target_gc``) or ``student_budget`` seconds are spent.
    ``executor``: where the student's verification at 3δ and its certified radii run — "local" (this process) or
    "ray" (Ray tasks over fixed chunks of points, :mod:`pacverify.executor`; the same results); ``ray_address``: with
    "ray", the cluster's head (HOST:PORT or "auto"; None: a local Ray instance). Not recorded in the certificate.
    ``labels``: a file of the true classes of the data's rows (ball mode, with ``data`` or an array sampler): the
    certificate then records verified robust accuracy on the labelled sample points.
    ``outputs``: what the teacher returns — "logits", "probabilities" (softmax inside the model) or "costs" (the
    smallest wins, as ACAS Xu's advisories) — converted once to logits (:func:`pacverify.models.as_logits`).
    """

    delta: float
    eps: float
    eta: float
    kappa: float = 0.9
    norm: str = "2"
    tv: float = 0.0
    data: str | None = None
    sampler: str | Sampler | None = None
    synthetic: str | None = None
    samples: int | None = None
    student: str = "mlp:2x64"
    method: str = "kdiga"
    epochs: int | None = None
    distill_options: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    seed: int = 0
    arch: str | None = None
    trust_pickle: bool = False
    verify_method: str = "crown"
    complete: bool = True
    timeout: float = 2.0
    radius_cap: float | None = None
    radius_tol: float | None = None
    attack_steps: int | None = None
    attack_restarts: int | None = None
    attack_starts: str = "spread"
    attack_random_samples: int | None = None
    attack_fresh_points: int = 1000
    coverage_points: int = 200
    coverage_batch: int | None = None
    domain: tuple[float, float] | None = None
    allow_duplicates: bool = False
    guarantee: str = "ball"
    bound: str | None = None
    oracle: str = "auto"
    oracle_budget: float = 1800.0
    holdout: int | None = None
    attack_bisection: int = 6
    global_check: bool = False
    global_timeout: float = 60.0
    outputs: str = "logits"
    labels: str | None = None
    student_budget: float = 600.0
    executor: str = "local"
    ray_address: str | None = None

    def validated(self) -> CertifySettings:
        """A canonical copy with every field checked; InputError on the first bad one."""
        from pacverify.distill.fit import make_config
        from pacverify.models import check_student_spec

        sources = [s for s in (self.data, self.sampler, self.synthetic) if s is not None]
        if len(sources) != 1:
            raise InputError("give exactly one data source: --data FILE, --sampler MODULE:FUNCTION or --synthetic NAME")
        delta = check_delta(self.delta)
        method = check_choice(self.method, DISTILL_METHODS, "method")
        auto = str(self.student).strip().lower() == "auto"
        student = "auto" if auto else check_student_spec(self.student)
        budget = check_positive(self.student_budget, "student budget")
        norm = check_norm(self.norm)
        seed = check_seed(self.seed)
        epochs = None if self.epochs is None else check_positive_int(self.epochs, "epochs")
        if not isinstance(self.distill_options, dict):
            raise InputError(f"distill_options must be a dict of DistillConfig fields, got {self.distill_options!r}")
        clash = sorted({"method", "student", "seed", "norm", "epochs"} & set(self.distill_options))
        if clash:
            raise InputError(f"distill_options must not set {', '.join(clash)}: pass them as certify settings")
        options: dict[str, Any] = dict(self.distill_options, method=method, student="mlp:2x64" if auto else student,
                                       seed=seed, norm=norm)
        if epochs is not None:
            options["epochs"] = epochs
        make_config(None, **options)  # raises on an unknown or bad option
        if not isinstance(self.trust_pickle, bool):
            raise InputError(f"trust_pickle must be true or false, got {self.trust_pickle!r}")
        if not isinstance(self.complete, bool):
            raise InputError(f"complete must be true or false, got {self.complete!r}")
        if not isinstance(self.global_check, bool):
            raise InputError(f"global_check must be true or false, got {self.global_check!r}")
        if self.global_check and (self.domain is None or self.guarantee == "mass"):
            raise InputError("--global-check proves the student robust over the input domain: give --domain LO,HI "
                             "(ball mode only)")
        if not isinstance(self.allow_duplicates, bool):
            raise InputError(f"allow_duplicates must be true or false, got {self.allow_duplicates!r}")
        guarantee = check_choice(self.guarantee, GUARANTEES, "guarantee")
        mass = guarantee == "mass"
        if self.labels is not None:
            if mass:
                raise InputError("--labels (verified robust accuracy on the labelled sample) applies to ball mode; "
                                 "in mass mode, run pacverify verify --points X --labels Y on the student")
            if self.data is None and not isinstance(self.sampler, ArraySampler):
                raise InputError("--labels gives the true classes of the data file's rows: use it with --data FILE")
            if not Path(str(self.labels)).is_file():
                raise InputError(f"labels file {self.labels} does not exist")
        executor = check_choice(self.executor, EXECUTORS, "executor")
        if self.ray_address is not None and (executor != "ray" or not isinstance(self.ray_address, str)
                                             or not self.ray_address.strip()):
            raise InputError("--ray-address (a HOST:PORT or 'auto') only applies with --executor ray")
        bound = check_choice(self.bound if self.bound is not None else "tight" if mass else "thm38", BOUNDS, "bound")
        cap = self.radius_cap if self.radius_cap is not None else (2 * delta if mass else 6 * delta)
        tol = self.radius_tol if self.radius_tol is not None else (delta / 32 if mass else 3 * delta / 64)
        return replace(
            self, delta=delta, guarantee=guarantee, bound=bound,
            oracle=check_choice(self.oracle, ORACLES, "oracle"),
            outputs=check_choice(self.outputs, OUTPUT_KINDS, "outputs"),
            oracle_budget=check_positive(self.oracle_budget, "oracle budget"),
            holdout=None if self.holdout is None else 0 if self.holdout == 0 else check_positive_int(self.holdout,
                                                                                                      "holdout"),
            attack_bisection=check_positive_int(self.attack_bisection, "attack bisection"),
            global_timeout=check_positive(self.global_timeout, "global timeout"), eps=check_eps(self.eps), eta=check_eta(self.eta), kappa=check_kappa(self.kappa),
            norm=norm, tv=check_tv(self.tv), seed=seed, method=method, student=student, epochs=epochs,
            student_budget=budget,
            device=check_choice(self.device, DEVICES, "device"),
            verify_method=check_choice(self.verify_method, BOUND_METHOD_NAMES, "verify method"),
            samples=None if self.samples is None else check_samples(self.samples),
            timeout=check_positive(self.timeout, "timeout"),
            radius_cap=check_positive(cap, "radius cap"),
            radius_tol=check_positive(tol, "radius tol"),
            attack_steps=check_positive_int(self.attack_steps if self.attack_steps is not None else
                                            MASS_ATTACK[0] if mass else BALL_ATTACK[0], "attack steps"),
            attack_restarts=check_positive_int(self.attack_restarts if self.attack_restarts is not None else
                                               MASS_ATTACK[1] if mass else BALL_ATTACK[1], "attack restarts"),
            attack_starts=check_choice(self.attack_starts, ("spread", "box"), "attack starts"),
            attack_random_samples=None if self.attack_random_samples is None else 0 if self.attack_random_samples == 0
            else check_positive_int(self.attack_random_samples, "attack random samples"),
            attack_fresh_points=0 if self.attack_fresh_points == 0 else check_positive_int(self.attack_fresh_points,
                                                                                           "attack fresh points"),
            coverage_points=0 if self.coverage_points == 0 else check_positive_int(self.coverage_points,
                                                                                    "coverage points"),
            coverage_batch=None if self.coverage_batch is None else check_positive_int(self.coverage_batch,
                                                                                       "coverage batch"),
            domain=parse_domain(self.domain), executor=executor,
            ray_address=None if self.ray_address is None else self.ray_address.strip())

    @property
    def pgd_steps(self) -> int:
        """``attack_steps`` with the mode's default filled in (by :meth:`validated`)."""
        if self.attack_steps is None:
            raise RuntimeError("CertifySettings.validated() fills attack_steps")  # a bug, not bad input
        return self.attack_steps

    @property
    def pgd_restarts(self) -> int:
        """``attack_restarts`` with the mode's default filled in (by :meth:`validated`)."""
        if self.attack_restarts is None:
            raise RuntimeError("CertifySettings.validated() fills attack_restarts")
        return self.attack_restarts

    def source_description(self) -> dict:
        """``{kind, source, sha256}`` of the data source (the sha256 of a data file, None otherwise)."""
        if self.data is not None:
            return {"kind": "data", "source": str(self.data), "sha256": sha256_file(self.data)}
        if self.synthetic is not None:
            return {"kind": "synthetic", "source": str(self.synthetic), "sha256": None}
        name = self.sampler if isinstance(self.sampler, str) else getattr(self.sampler, "description", "sampler")
        return {"kind": "sampler", "source": str(name), "sha256": None}
