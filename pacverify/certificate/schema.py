"""The certificate's typed schema: one frozen dataclass per section of ``certificate.json``.

``certificate.json`` is the JSON form of :class:`CertificateBody` (schema version :data:`SCHEMA`,
documented key by key in docs/certificate.md). :func:`body_from_dict` reads it strictly: every
section must have exactly its declared keys with values of the declared types — an unknown key, a
missing key or a wrong type is an :class:`~pacverify.errors.InputError` naming the dotted key.
:func:`json_schema` derives a JSON Schema (draft 2020-12) from the same dataclasses, so that other
tools can validate certificates; docs/certificate.schema.json is its output (a test keeps them equal).

Floats that are infinite are written as the strings ``"inf"`` / ``"-inf"`` (JSON has no infinity).
"""
from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Union

from pacverify.errors import InputError
from pacverify.fileio import to_jsonable

SCHEMA = "pacverify.certificate/5"


class Verdict(enum.Enum):
    """Outcome of ``pacverify certify`` / ``check``; ``exit_code`` is the CLI's (DESIGN.md §4)."""

    CERTIFIED = "CERTIFIED"
    NOT_CERTIFIED = "NOT_CERTIFIED"
    REFUTED = "REFUTED"

    @property
    def exit_code(self) -> int:
        return {"CERTIFIED": 0, "NOT_CERTIFIED": 1, "REFUTED": 3}[self.value]


class PointStatus(enum.IntEnum):
    """Per-point status codes stored in ``points.npz["status"]`` (the only table of them)."""

    NOT_CONFIDENT = 0
    VERIFIED = 1
    FALSIFIED = 2
    UNKNOWN = 3
    DISAGREE = 4

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", " ")


# --- sections ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tool:
    name: str
    version: str


@dataclass(frozen=True)
class Statements:
    """The printed claims: each a sentence with its numbers. ``pac_delta_T`` is the δ_T claim, made only on a
    CERTIFIED run with δ_T > 0; otherwise ``delta_T_note`` says what δ_T would need (or is None when δ_T = 0)."""

    pac: str
    pac_delta_T: str | None  # noqa: N815 - the paper's name
    delta_T_note: str | None  # noqa: N815 - why δ_T is not claimed, when it is not
    assumptions: list[str]
    coverage: str
    scope: str


@dataclass(frozen=True)
class PacParameters:
    delta: float
    eps: float
    eta: float
    kappa: float
    norm: str
    dim: int
    vc_dimension: int
    bound: str
    samples: int
    samples_required: int
    tv: float
    shifted_eps: float
    n_classes: int


@dataclass(frozen=True)
class FileRef:
    path: str | None
    sha256: str | None


@dataclass(frozen=True)
class DataSource:
    """Where the sample came from; ``duplicates`` counts sample rows that repeat an earlier one."""

    kind: str
    source: str
    sha256: str | None
    duplicates: int


@dataclass(frozen=True)
class Files:
    teacher: FileRef
    student_onnx: FileRef
    student_pt: FileRef
    data: DataSource
    points: FileRef
    labels: FileRef | None  # ``certify --labels``: the true classes of the data file's rows


@dataclass(frozen=True)
class AttackSettings:
    steps: int
    restarts: int


@dataclass(frozen=True)
class CoverageSettings:
    points: int
    batch: int | None


@dataclass(frozen=True)
class RadiusSearch:
    cap: float
    tol: float


@dataclass(frozen=True)
class Settings:
    seed: int
    arch: str | None
    trust_pickle: bool
    student: str
    method: str
    epochs: int | None
    distill_options: dict[str, Any]
    verify_method: str
    complete: bool
    timeout_per_point: float
    domain: list[float] | None
    attack: AttackSettings
    coverage: CoverageSettings
    radius_search: RadiusSearch
    device: str
    allow_duplicates: bool
    global_check: bool
    global_timeout: float
    outputs: str


@dataclass(frozen=True)
class Distillation:
    """The quality markers of :class:`pacverify.distill.quality.QualityMarkers` plus the run's facts."""

    n: int
    agreement: float
    eq13_fraction: float
    gd_mean: float
    gc_mean: float
    rho_quantiles: dict[str, float]
    rho_inf: int
    norm: str
    n_fresh: int
    agreement_fresh: float | None
    eq13_fraction_fresh: float | None
    gd_mean_fresh: float | None
    gc_mean_fresh: float | None
    llm_radius: float | None
    llm_student_mean: float | None
    llm_teacher_mean: float | None
    epochs_run: int | None
    stopped_early: bool | None
    stop_reason: str | None  # why the training stopped (plateau, targets, agreement 1.0, epoch or time budget)
    student: str             # the student architecture trained (the one chosen by ``--student auto``)
    student_search: dict[str, Any] | None  # ``--student auto``: targets, budget, every try and its markers, why
    notes: list[str]
    onnx_parity_max_abs_diff: float


@dataclass(frozen=True)
class Verification:
    radius: float
    norm: str
    method: str
    complete: bool
    required: int
    verified: int
    falsified: int
    unknown: int
    disagree: int
    not_confident: int


@dataclass(frozen=True)
class Relaxation:
    """δ_T of Prop 4.3 with its premises and the measured quantities they are about (at the binding runner-up)."""

    delta_T: float  # noqa: N815 - the paper's name
    rho_quantiles: dict[str, float]
    margin_ratio_quantiles: dict[str, float]
    gradient_cosine_quantiles: dict[str, float]
    certified_radius_quantiles: dict[str, float]
    teacher_radius_quantiles: dict[str, float]
    cap: float
    tol: float
    formula: str
    premises: list[str]


@dataclass(frozen=True)
class TeacherCheck:
    """The attack on the teacher in the claimed balls and its budget per ball: ``attack`` names the searches
    ("pgd", "pgd+random"); PGD ``steps`` × ``restarts`` placed by ``starts`` ("spread" over the ball, or "box":
    uniform in its bounding box); ``random_samples`` uniform draws; and the δ-balls (δ_T-balls) of
    ``fresh_points_attacked`` (``fresh_points_attacked_delta_T``) of ``fresh_points`` held-out draws — those
    κ-confident within 2δ (2δ_T) of a required point, so inside its claimed ball. ``counterexamples_*`` count the
    claimed balls holding a confirmed counterexample."""

    attack: str
    steps: int
    restarts: int
    starts: str
    random_samples: int
    fresh_points: int
    fresh_points_attacked: int
    fresh_points_attacked_delta_T: int  # noqa: N815
    radius_delta: float
    radius_delta_T: float  # noqa: N815
    checked: int
    counterexamples_delta: int
    counterexamples_delta_T: int  # noqa: N815
    note: str


@dataclass(frozen=True)
class Coverage:
    """A :class:`pacverify.certificate.guarantee.CoverageBound`, or ``points = 0`` and a ``note`` when skipped."""

    lower: float
    confidence: float | None
    points: int
    batch: int
    declared_covered: int | None
    alpha_point: float | None
    threshold: float
    note: str | None


@dataclass(frozen=True)
class GlobalCheck:
    """``certify --global-check``: the student's global robustness on the domain (docs/theory.md, "Global robustness
    of the student"): for every x in the domain where the student is κ-confident, every x′ within ``radius`` (3δ) in
    the domain keeps its class. ``verdict`` "verified" (branch and bound closed the whole domain), "falsified" (a pair
    checked by a forward pass, in ``points.npz`` as ``global_pair``) or "unknown" (``proven_fraction`` of the domain's
    volume proven within the budget of ``timeout`` seconds); ``statement`` says what it adds to the certificate."""

    verdict: str
    radius: float
    kappa: float
    norm: str
    timeout: float
    proven_fraction: float
    boxes_done: int
    boxes_open: int
    statement: str


@dataclass(frozen=True)
class Environment:
    """Where the run ran. ``executor`` ("local" or "ray", :mod:`pacverify.executor`) and the size of what it ran on:
    ``cluster_nodes`` and ``cluster_cpus`` (this machine for local). Not a claim: ``check`` does not compare it."""

    python: str
    platform: str
    torch: str
    numpy: str
    onnx: str
    onnxruntime: str
    device: str
    executor: str
    cluster_nodes: int
    cluster_cpus: float


@dataclass(frozen=True)
class Integrity:
    body_sha256: str


@dataclass(frozen=True)
class Accuracy:
    """``certify --labels``: per-point facts about the student on the labelled sample points, proven by the bounds
    (no probability). ``verified_robust_3delta``: the fraction of the ``points`` sample points at which the student
    is proven to keep the true class on the whole 3δ-ball (status verified and the teacher's class is the true one);
    ``verified_robust_delta``: the same on the δ-ball (certified radius ≥ δ). Only κ-confident points were bounded:
    the others count as not verified. ``statement`` says so in words."""

    points: int
    teacher_clean: float
    student_clean: float
    verified_robust_3delta: float
    verified_robust_delta: float
    statement: str


@dataclass(frozen=True)
class CertificateBody:
    """Everything in ``certificate.json``. ``timings`` maps stage names to seconds, plus ``created`` (ISO time)
    and ``verify_points_per_second``; it is excluded when two runs are compared for reproducibility."""

    schema: str
    tool: Tool
    verdict: Verdict
    reasons: list[str]
    statements: Statements
    pac: PacParameters
    files: Files
    warnings: list[str]
    settings: Settings
    distillation: Distillation
    verification: Verification
    relaxation: Relaxation
    teacher_check: TeacherCheck
    coverage: Coverage
    global_check: GlobalCheck | None
    accuracy: Accuracy | None
    timings: dict[str, float | str | None]
    environment: Environment
    integrity: Integrity

    def to_dict(self) -> dict:
        """The JSON-ready dict (infinite floats as strings), in field order."""
        return to_jsonable(_to_plain(self))


# --- mass mode (``--guarantee mass``, docs/theory.md "Mass mode") ------------------------------------------------

MASS_SCHEMA = "pacverify.certificate.mass/2"


@dataclass(frozen=True)
class MassStatements:
    """The printed claims of mass mode: ``pac`` (the mass bound for every κ, and the verdict's reading at the
    requested (δ, κ)), ``conditional`` (the bound on Pr[not M(κ)-robust | κ-confident], None when p̲(κ) = 0),
    the assumptions as the proof uses them, the oracle that gave the lower radii and why, and the scope."""

    pac: str
    conditional: str | None
    assumptions: list[str]
    oracle: str
    holdout: str
    scope: str


@dataclass(frozen=True)
class MassParameters:
    guarantee: str
    delta: float
    eps: float
    eta: float
    kappa: float
    norm: str
    dim: int
    vc_dimension: int
    bound: str
    samples: int
    samples_required: int
    tv: float
    shifted_eps: float
    n_classes: int


@dataclass(frozen=True)
class MassFiles:
    """``student_onnx`` / ``student_pt`` are None when the teacher oracle ran (no student is trained)."""

    teacher: FileRef
    student_onnx: FileRef | None
    student_pt: FileRef | None
    data: DataSource
    points: FileRef


@dataclass(frozen=True)
class MassAttackSettings:
    steps: int
    restarts: int
    bisection: int


@dataclass(frozen=True)
class MassSettings:
    seed: int
    arch: str | None
    trust_pickle: bool
    oracle: str
    verify_method: str
    radius_search: RadiusSearch
    attack: MassAttackSettings
    holdout: int
    domain: list[float] | None
    device: str
    allow_duplicates: bool
    student: str
    method: str
    epochs: int | None
    distill_options: dict[str, Any]
    outputs: str


@dataclass(frozen=True)
class Oracle:
    """Where the lower radii l_i ≤ rob_T(x_i) came from (``used``: "teacher" or "student"; ``reason``: why) and
    the attack upper radii u_i ≥ rob_T(x_i); ``inconsistent`` counts points with u_i < l_i (then REFUTED).
    ``student_disagrees`` (student oracle only) counts points where the student's class differs (l_i = 0 there)."""

    requested: str
    used: str
    reason: str
    method: str
    cap: float
    tol: float
    proven: int
    lower_quantiles: dict[str, float]
    upper_quantiles: dict[str, float]
    attacked_found: int
    inconsistent: int
    student_disagrees: int | None
    premises: list[str]


@dataclass(frozen=True)
class MapRow:
    """One row of the M(κ) table: ``confident`` sample points, p̲(κ) and ε/p̲(κ) (inf when p̲ = 0)."""

    kappa: float
    radius: float
    confident: int
    p_lower: float
    conditional_eps: float


@dataclass(frozen=True)
class ConfidenceMap:
    """M(κ) = min{l_i : conf_i ≥ κ}: ``radius`` at the requested ``kappa``; ``steps`` the whole step function as
    [κ_k, M_k] pairs (M(κ) = M_k for κ_{k−1} < κ ≤ κ_k; +inf above the last κ_k); ``table`` at fixed κ values;
    ``dkw_margin`` the one-sided DKW deviation subtracted to get p̲."""

    kappa: float
    radius: float
    steps: list[list[float]]
    table: list[MapRow]
    dkw_margin: float


@dataclass(frozen=True)
class MassRelaxation:
    """``delta_T`` is M(κ) at the requested κ: the radius the mass statement is about (DESIGN.md §4 keeps the key)."""

    delta_T: float  # noqa: N815 - the key scripts rely on
    formula: str


@dataclass(frozen=True)
class Holdout:
    """The held-out check (docs/theory.md): of ``points`` fresh draws disjoint from the sample, ``confident`` are
    κ-confident, ``attacked`` were attacked at radius M(κ), ``members`` hold a teacher counterexample within M(κ)
    (members of R(M(κ), κ)); ``rate`` with a 95% Clopper–Pearson ``interval``; ``p_value`` = Pr[Bin(points, ε) ≥
    members]; ``significant`` when it is below η."""

    points: int
    confident: int
    attacked: int
    members: int
    radius: float
    rate: float | None
    interval: list[float] | None
    p_value: float | None
    significant: bool
    note: str | None


@dataclass(frozen=True)
class MassCertificateBody:
    """Everything in a mass-mode ``certificate.json`` (schema :data:`MASS_SCHEMA`)."""

    schema: str
    tool: Tool
    verdict: Verdict
    reasons: list[str]
    statements: MassStatements
    pac: MassParameters
    files: MassFiles
    warnings: list[str]
    settings: MassSettings
    oracle: Oracle
    confidence_map: ConfidenceMap
    relaxation: MassRelaxation
    holdout: Holdout
    timings: dict[str, float | str | None]
    environment: Environment
    integrity: Integrity

    def to_dict(self) -> dict:
        """The JSON-ready dict (infinite floats as strings), in field order."""
        return to_jsonable(_to_plain(self))


AnyBody = Union[CertificateBody, MassCertificateBody]  # noqa: UP007 - used at run time
BODIES: dict[str, type] = {SCHEMA: CertificateBody, MASS_SCHEMA: MassCertificateBody}


# --- strict reading ----------------------------------------------------------------------------------------------


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_plain(v) for k, v in value.items()}
    return value


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _union_args(tp: Any) -> tuple | None:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return typing.get_args(tp)
    return None


def _float(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise InputError(f"{where} must be a number, got {value!r}")
    if isinstance(value, (int, float)):
        if math.isnan(value):
            raise InputError(f"{where} must not be NaN")
        return float(value)
    if value in ("inf", "-inf"):
        return float(value)
    raise InputError(f"{where} must be a number, got {value!r}")


def _read(tp: Any, value: Any, where: str) -> Any:
    args = _union_args(tp)
    if args is not None:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for candidate in inner:
            try:
                return _read(candidate, value, where)
            except InputError as exc:
                errors.append(str(exc))
        raise InputError(errors[0] if len(inner) == 1 else f"{where} has an unexpected value {value!r}")
    if tp is Any:
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise InputError(f"{where} must be an object, got {type(value).__name__}")
        names = [f.name for f in dataclasses.fields(tp)]
        unknown = sorted(set(value) - set(names))
        missing = [n for n in names if n not in value]
        if unknown:
            raise InputError(f"{where} has unknown key(s) {', '.join(unknown)}")
        if missing:
            raise InputError(f"{where} lacks key(s) {', '.join(missing)}")
        hints = _hints(tp)
        return tp(**{n: _read(hints[n], value[n], f"{where}.{n}" if where else n) for n in names})
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            allowed = ", ".join(str(m.value) for m in tp)
            raise InputError(f"{where} must be one of {allowed}, got {value!r}") from None
    if tp is float:
        return _float(value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise InputError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise InputError(f"{where} must be a string, got {value!r}")
        return value
    origin = typing.get_origin(tp)
    if origin is list:
        if not isinstance(value, list):
            raise InputError(f"{where} must be a list, got {type(value).__name__}")
        (item,) = typing.get_args(tp)
        return [_read(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise InputError(f"{where} must be an object, got {type(value).__name__}")
        _, item = typing.get_args(tp)
        return {k: _read(item, v, f"{where}.{k}") for k, v in value.items()}
    raise TypeError(f"schema type {tp!r} at {where} is not supported")  # a bug in this module, not bad input


def body_from_dict(data: Any) -> CertificateBody | MassCertificateBody:
    """The typed body of a parsed ``certificate.json`` (ball or mass mode, by its ``schema``); InputError naming
    the first bad key otherwise."""
    if not isinstance(data, dict):
        raise InputError("a certificate must be a JSON object")
    body = BODIES.get(data.get("schema"))  # type: ignore[arg-type]
    if body is None:
        raise InputError(f"not a pacverify certificate of schema {SCHEMA} or {MASS_SCHEMA} "
                         f"(schema: {data.get('schema')!r})")
    return _read(body, data, "")


# --- JSON Schema -------------------------------------------------------------------------------------------------


def _schema_of(tp: Any, defs: dict[str, Any]) -> dict:
    args = _union_args(tp)
    if args is not None:
        return {"anyOf": [_schema_of(a, defs) for a in args]}
    if tp is type(None):
        return {"type": "null"}
    if tp is Any:
        return {}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        name = tp.__name__
        if name not in defs:
            defs[name] = {}  # placeholder against recursion
            hints = _hints(tp)
            names = [f.name for f in dataclasses.fields(tp)]
            defs[name] = {"type": "object", "additionalProperties": False, "required": names,
                          "properties": {n: _schema_of(hints[n], defs) for n in names}}
            if tp.__doc__ and not tp.__doc__.startswith(f"{name}("):
                defs[name]["description"] = " ".join(tp.__doc__.split())
        return {"$ref": f"#/$defs/{name}"}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": [m.value for m in tp]}
    if tp is float:
        return {"anyOf": [{"type": "number"}, {"enum": ["inf", "-inf"]}]}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is str:
        return {"type": "string"}
    origin = typing.get_origin(tp)
    if origin is list:
        return {"type": "array", "items": _schema_of(typing.get_args(tp)[0], defs)}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema_of(typing.get_args(tp)[1], defs)}
    raise TypeError(f"schema type {tp!r} is not supported")


def json_schema() -> dict:
    """A JSON Schema (draft 2020-12) of ``certificate.json``: one of :class:`CertificateBody` (ball mode) or
    :class:`MassCertificateBody` (mass mode), told apart by their ``schema`` constant."""
    defs: dict[str, Any] = {}
    for version, body in BODIES.items():
        _schema_of(body, defs)
        defs[body.__name__]["properties"]["schema"] = {"const": version}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA,
            "title": "pacverify certificate",
            "oneOf": [{"$ref": f"#/$defs/{body.__name__}"} for body in BODIES.values()], "$defs": defs}


if __name__ == "__main__":  # regenerate docs/certificate.schema.json
    import json
    import sys

    json.dump(json_schema(), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
