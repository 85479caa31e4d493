"""Samplers: i.i.d. draws from the user's input distribution D_X (DESIGN.md §1 step 2).

Three sources, one interface (:class:`Sampler`: ``draw(n)`` for the PAC sample, ``fresh(n)``
for a held-out sample that shares no point with it):

* :class:`ArraySampler` — rows of an array file (``.npy``, ``.npz``, ``.csv``, ``.pt``). The rows
  are *assumed* to be i.i.d. draws from D_X (sorted, deduplicated or augmented rows break the PAC
  statement); points are drawn without replacement, the training draw from the front of one
  seeded permutation and the fresh draw from its back, so the two never share a row.
* :class:`CallableSampler` — a user function ``module:function(n, rng) -> array`` returning n
  i.i.d. rows; the training and fresh draws use independent child streams of the seed.
* :class:`TruncatedGaussians` — the two-class synthetic distribution of 004 §5 in any dimension.

Every draw is checked: real numbers (complex values are refused, never truncated), at least one
point, shape ``(n, *input_shape)``, finite, representable in float32; it is returned as float32.
With a box ``domain = (lo, hi)`` a draw holding a point outside the box is refused, naming how many
and the first one: data are never moved into the box, because the PAC statement speaks of D_X as
drawn (the built-in Gaussians have unbounded support, so with a domain a draw is refused as soon as
one point falls outside). The PAC sample (:meth:`Sampler.draw`) is also checked for exact duplicate
rows (:func:`count_duplicates`, :data:`DUPLICATE_LIMIT`; docs/theory.md). Before a draw whose size
is known the memory it needs is estimated and a draw that cannot fit is refused. The same seed
gives the same points.
"""
from __future__ import annotations

import csv
import importlib
import importlib.util
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pacverify.errors import InputError
from pacverify.validation import (
    check_dim,
    check_memory,
    check_positive,
    check_samples,
    check_seed,
    error_line,
    parse_domain,
)

ARRAY_SUFFIXES = (".npy", ".npz", ".csv", ".pt")
SYNTHETIC = ("gaussians",)

_TRAIN_STREAM, _FRESH_STREAM = 0, 1

DUPLICATE_LIMIT = 0.01
"""Largest fraction of exact duplicate rows a PAC sample may hold without ``allow_duplicates`` (docs/theory.md):
more than 1% of the drawn points repeating an earlier one is refused (so any duplicate in fewer than 100 points)."""

DRAW_BYTES_PER_VALUE = 24
"""Memory a draw needs per coordinate: generation in float64 (8), the float32 result (4) and one copy of each."""

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_points(x: Any, *, name: str, input_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Return ``x`` as a float32 array of shape (N, *input_shape) after checking it.

    Raises :class:`InputError` (one sentence) if ``x`` is not an array of real numbers (complex values
    are refused, not truncated to their real part), holds no point or no feature, has fewer than 2
    dimensions (one row per point is required), does not match ``input_shape``, holds NaN or ±inf,
    or holds values beyond the float32 range (the row is named).
    """
    try:
        arr = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
    except (TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{name}: cannot read the points as a numeric array ({first})") from None
    if arr.dtype.kind == "c":
        raise InputError(f"{name}: the points are complex numbers (dtype {arr.dtype}); pacverify needs real "
                         "inputs and does not drop imaginary parts: convert them yourself (e.g. real and "
                         "imaginary parts as separate features)")
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{name}: points must be numbers, got dtype {arr.dtype}")
    if arr.ndim < 2:
        if arr.size == 0:
            raise InputError(f"{name}: holds no points (an empty array of shape {arr.shape})")
        raise InputError(f"{name}: expected one row per point, shape (N, features...), got shape {arr.shape}; "
                         "reshape 1-D inputs to (N, 1)")
    if arr.shape[0] == 0:
        raise InputError(f"{name}: holds no points (0 rows, shape {arr.shape})")
    if arr.size == 0:
        raise InputError(f"{name}: the points have no features (shape {arr.shape})")
    if input_shape is not None and tuple(arr.shape[1:]) != tuple(input_shape):
        raise InputError(f"{name}: each point must have shape {tuple(input_shape)}, got {tuple(arr.shape[1:])}")
    rows = arr.reshape(arr.shape[0], -1)
    bad = ~np.isfinite(rows).all(axis=1)
    if bad.any():
        raise InputError(f"{name}: {int(bad.sum())} point(s) contain NaN or inf (first at row {int(np.argmax(bad))}); "
                         "remove or repair them")
    if arr.dtype.kind == "f" and arr.dtype.itemsize > 4:
        huge = (np.abs(rows) > _FLOAT32_MAX).any(axis=1)
        if huge.any():
            raise InputError(f"{name}: {int(huge.sum())} point(s) hold values beyond the float32 range ±3.4e38 "
                             f"(first at row {int(np.argmax(huge))}); rescale the data")
    return arr.astype(np.float32, copy=False)


def check_in_domain(points: np.ndarray, domain: tuple[float, float] | None, *, name: str) -> np.ndarray:
    """``points`` unchanged if every coordinate lies in the box ``domain = (lo, hi)`` (or there is no domain).

    Otherwise raises :class:`InputError` naming how many points lie outside and the first one: pacverify
    never moves data into the box (clipping would certify a different distribution than D_X).
    """
    if domain is None or len(points) == 0:
        return points
    lo, hi = domain
    rows = points.reshape(len(points), -1)
    outside = ((rows < lo) | (rows > hi)).any(axis=1)
    if outside.any():
        first = int(np.argmax(outside))
        col = int(np.argmax((rows[first] < lo) | (rows[first] > hi)))
        raise InputError(f"{name}: {int(outside.sum())} of the {len(points)} drawn points lie outside the domain box "
                         f"[{lo:g}, {hi:g}] (first: row {first}, coordinate {col} = {float(rows[first, col]):.6g}); "
                         "pacverify never moves data into the box: widen --domain, drop it, or remove those points")
    return points


def count_duplicates(points: np.ndarray) -> int:
    """How many rows of ``points`` (N, ...) repeat an earlier row exactly (N minus the number of distinct rows).

    Rows are compared by value (+0.0 and -0.0 are equal). A sample of N distinct points has 0.

    >>> count_duplicates(np.array([[0.0, 1.0], [0.0, 1.0], [-0.0, 1.0], [2.0, 3.0]], dtype=np.float32))
    2
    """
    arr = np.asarray(points)
    if len(arr) < 2:
        return 0
    rows = np.ascontiguousarray(arr.reshape(len(arr), -1) + arr.dtype.type(0))  # -0.0 + 0.0 = +0.0
    keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    return int(len(arr) - np.unique(keys).size)


def check_duplicates(points: np.ndarray, *, name: str, allow: bool = False) -> int:
    """The number of exact duplicate rows of a PAC sample; :class:`InputError` above :data:`DUPLICATE_LIMIT`
    unless ``allow`` (docs/theory.md: i.i.d. draws from a continuous D_X almost never repeat)."""
    n, dups = len(points), count_duplicates(points)
    if dups > DUPLICATE_LIMIT * n and not allow:
        raise InputError(f"{name}: {dups} of the {n} drawn points ({100 * dups / n:.3g}%) repeat an earlier point "
                         f"exactly, more than the {100 * DUPLICATE_LIMIT:g}% pacverify accepts as i.i.d. draws "
                         "from D_X (repeated rows usually mean an oversampled, padded or augmented file); remove "
                         "them, or pass --allow-duplicates (allow_duplicates=True) if D_X really repeats points")
    return dups


@dataclass(frozen=True)
class Sampler(ABC):
    """Base of all samplers. Subclasses implement :meth:`_draw` for a stream (train or fresh).

    ``domain``: the box every point must lie in (a point outside is refused, never clipped).
    ``allow_duplicates``: accept a PAC sample with more than :data:`DUPLICATE_LIMIT` exact duplicate rows.
    """

    seed: int
    domain: tuple[float, float] | None = None
    allow_duplicates: bool = False

    @property
    @abstractmethod
    def description(self) -> str:
        """One line naming the distribution, for certificates and reports."""

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """The shape of one point, when known before drawing (None for a user's function)."""
        return None

    @property
    def label(self) -> str:
        """The name that messages about this sampler's points start with."""
        return self.description

    @abstractmethod
    def _draw(self, n: int, stream: int) -> np.ndarray:
        """n i.i.d. points from the given stream (train or fresh)."""

    def draw(self, n: int) -> np.ndarray:
        """The PAC sample: n i.i.d. points, float32 array of shape (n, *input_shape).

        Refused (:class:`InputError`) when a point lies outside ``domain`` or more than
        :data:`DUPLICATE_LIMIT` of the rows repeat an earlier one (unless ``allow_duplicates``).
        """
        n = check_samples(n, "n (points to draw)")
        self._check_memory(n, "the sample")
        points = self._checked(self._draw(n, _TRAIN_STREAM))
        check_duplicates(points, name=self.label, allow=self.allow_duplicates)
        return points

    def fresh(self, n: int, *, after: int = 0) -> np.ndarray:
        """n held-out points, independent of (for files: disjoint from) a ``draw(after)``."""
        n = check_samples(n, "n (fresh points)")
        self._check_memory(n, "the fresh sample")
        return self._checked(self._draw_fresh(n, after))

    def preview(self, n: int) -> np.ndarray:
        """Up to n points of the sample's stream, checked like :meth:`draw` except for duplicates: for probing the
        input shape, the teacher and the time a draw takes before the sample itself is drawn."""
        return self._checked(self._draw(check_samples(n, "n (points to preview)"), _TRAIN_STREAM))

    def _checked(self, points: np.ndarray) -> np.ndarray:
        return check_in_domain(points, self.domain, name=self.label)

    def _check_memory(self, n: int, what: str) -> None:
        shape = self.input_shape
        if shape is not None:
            values = n * math.prod(shape)
            check_memory(values * DRAW_BYTES_PER_VALUE, f"drawing {what} of {n} points of shape {tuple(shape)}",
                         "draw fewer points (a larger eps or eta, or a smaller --samples)")

    def _draw_fresh(self, n: int, after: int) -> np.ndarray:
        return self._draw(n, _FRESH_STREAM)


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[stream])


@dataclass(frozen=True)
class ArraySampler(Sampler):
    """Rows of an array, assumed to be i.i.d. draws from D_X, drawn without replacement.

    ``draw(n)`` returns rows ``perm[:n]`` and ``fresh(k, after=n)`` rows ``perm[N-k:]`` of one
    seeded permutation ``perm`` of the N rows, so the two are disjoint whenever n + k ≤ N.
    """

    rows: np.ndarray = field(kw_only=True, repr=False)  # required, by keyword
    source: str = "array"

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", check_points(self.rows, name=self.source))

    @property
    def description(self) -> str:
        return f"{self.source} ({self.rows.shape[0]} rows, assumed i.i.d.)"

    @property
    def label(self) -> str:
        return self.source

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.rows.shape[1:])

    def _check_memory(self, n: int, what: str) -> None:
        return None  # the rows are in memory already; a draw copies at most all of them

    def preview(self, n: int) -> np.ndarray:
        return super().preview(min(check_samples(n, "n (points to preview)"), self.rows.shape[0]))

    def _permutation(self) -> np.ndarray:
        return _rng(self.seed, _TRAIN_STREAM).permutation(self.rows.shape[0])

    def _too_few(self, wanted: int, what: str) -> InputError:
        have = self.rows.shape[0]
        return InputError(
            f"{self.source} has {have} rows but {wanted} are needed ({what}); rows are drawn without "
            "replacement, so give more data, a sampler (--sampler MODULE:FUNCTION or --synthetic), or a "
            f"larger eps or eta (pacverify samples --dim {int(np.prod(self.rows.shape[1:]))} --samples {have} --eta H "
            f"shows the eps {have} rows reach in ball and mass mode)")

    def _draw(self, n: int, stream: int) -> np.ndarray:
        if n > self.rows.shape[0]:
            raise self._too_few(n, "the PAC sample")
        return self.rows[self._permutation()[:n]]

    def _draw_fresh(self, n: int, after: int) -> np.ndarray:
        if n + after > self.rows.shape[0]:
            raise self._too_few(n + after, f"{after} for the sample plus {n} disjoint fresh rows")
        return self.rows[self._permutation()[self.rows.shape[0] - n:]]

    def drawn_rows(self, n: int) -> np.ndarray:
        """The row indices ``draw(n)`` returns, in order (to pair the sample with per-row data such as labels)."""
        return self._permutation()[:n]

    def available_fresh(self, after: int) -> int:
        """How many rows remain for a fresh sample after ``draw(after)``."""
        return max(self.rows.shape[0] - after, 0)


@dataclass(frozen=True)
class CallableSampler(Sampler):
    """A user function ``fn(n, rng) -> array (n, *shape)`` of i.i.d. draws, ``rng`` a numpy Generator."""

    fn: Callable[[int, np.random.Generator], Any] = field(kw_only=True, repr=False)  # required, by keyword
    name: str = "callable"

    @property
    def description(self) -> str:
        return f"sampler {self.name}"

    def _draw(self, n: int, stream: int) -> np.ndarray:
        try:
            raw = self.fn(n, _rng(self.seed, stream))
        except MemoryError:
            raise InputError(f"sampler {self.name} ran out of memory drawing {n} points; draw fewer points "
                             "(a larger eps or eta, or a smaller --samples)") from None
        except Exception as exc:  # the user's code: any error is theirs to fix, reported in one line
            raise InputError(f"sampler {self.name} failed when asked for {n} points: {error_line(exc)}") from None
        out = check_points(raw, name=f"sampler {self.name}")
        if out.shape[0] != n:
            raise InputError(f"sampler {self.name} returned {out.shape[0]} rows when asked for {n}")
        return out


@dataclass(frozen=True)
class TruncatedGaussians(Sampler):
    """Two truncated Gaussians in R^m separated by the hyperplane x·1 = 0 (004 §5).

    The paper names the distribution but gives no parameters; pacverify uses: u = 1/√m (the unit
    normal of the hyperplane), class c ∈ {+1, −1} with probability 1/2 each, and
    x = c·t·u + z⊥ where z⊥ is an N(0, σ²I) draw with its component along u removed and t is
    N(μ, σ²) truncated to t ≥ gap/2. So each class is N(c·μ·u, σ²I) conditioned on lying at
    distance ≥ gap/2 from the hyperplane on its own side: the classes are split by x·1 = 0 with a
    margin of ``gap`` between them. Defaults μ = 1, σ = 0.5, gap = 0.5. Sampling is exact (no
    rejection loop). The support is unbounded: with a ``domain`` a draw with a point outside the box
    is refused (the distribution is not redefined as its restriction to the box).
    """

    dim: int = 2
    mu: float = 1.0
    sigma: float = 0.5
    gap: float = 0.5

    def __post_init__(self) -> None:
        check_dim(self.dim)
        check_positive(self.mu, "mu")
        check_positive(self.sigma, "sigma")
        check_positive(self.gap, "gap")

    @property
    def description(self) -> str:
        return (f"two truncated Gaussians in R^{self.dim} (means ±{self.mu:g}·1/√m, σ = {self.sigma:g}, "
                f"gap {self.gap:g} around x·1 = 0)")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.dim,)

    @property
    def label(self) -> str:
        return f"synthetic gaussians:{self.dim}"

    def draw_labeled(self, n: int, stream: int = _TRAIN_STREAM) -> tuple[np.ndarray, np.ndarray]:
        """n points and their side of the hyperplane (label 0: x·1 > 0, label 1: x·1 < 0)."""
        from scipy import stats  # slow to import (seconds): only when the Gaussians are drawn

        rng = _rng(self.seed, stream)
        side = rng.integers(0, 2, size=n)
        lo = (self.gap / 2 - self.mu) / self.sigma
        t = stats.truncnorm.rvs(lo, np.inf, loc=self.mu, scale=self.sigma, size=n, random_state=rng)
        u = np.full(self.dim, 1.0 / math.sqrt(self.dim))
        z = rng.normal(0.0, self.sigma, size=(n, self.dim))
        z -= np.outer(z @ u, u)
        x = np.where(side[:, None] == 0, 1.0, -1.0) * t[:, None] * u + z
        return self._checked(x.astype(np.float32)), side.astype(np.int64)

    def _draw(self, n: int, stream: int) -> np.ndarray:
        return self.draw_labeled(n, stream)[0]


def load_array(path: str | Path) -> np.ndarray:
    """Read the points stored in a ``.npy``, ``.npz``, ``.csv`` or ``.pt`` file (one row per point).

    ``.npz``: the array named ``x`` (or ``X``, ``points``, ``data``), or the only array. ``.pt``:
    a tensor, or a dict of tensors chosen the same way; read with ``weights_only=True`` (no code
    runs). ``.csv``: comma-separated numbers, one optional header line; every column is a feature.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"data file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in ARRAY_SUFFIXES:
        raise InputError(f"data file {path}: unknown format {suffix!r}; use one of {', '.join(ARRAY_SUFFIXES)}")
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return _pick(dict(archive), path)
        if suffix == ".pt":
            import torch

            obj = torch.load(path, map_location="cpu", weights_only=True)
            return _pick(obj, path) if isinstance(obj, dict) else obj
        return _read_csv(path)
    except InputError:
        raise
    except Exception as exc:  # numpy / torch raise many types for unreadable files
        raise InputError(f"data file {path} could not be read as {suffix}: {exc}") from None


def check_labels(labels: Any, *, name: str, rows: int | None = None) -> np.ndarray:
    """True classes as a 1-D int64 array: integers (a float array of whole numbers is accepted), one per row when
    ``rows`` is given; InputError naming ``name`` otherwise."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "biuf":
        raise InputError(f"{name}: labels must be integer class indices, got dtype {labels.dtype}")
    if labels.dtype.kind == "f" and not (np.isfinite(labels).all() and (labels == np.round(labels)).all()):
        raise InputError(f"{name}: labels must be integer class indices, got non-integral values")
    labels = labels.reshape(-1) if labels.ndim == 2 and 1 in labels.shape else labels
    if labels.ndim != 1:
        raise InputError(f"{name}: labels must be one class per row (a 1-D array), got shape {labels.shape}")
    if rows is not None and labels.shape[0] != rows:
        raise InputError(f"{name} has {labels.shape[0]} labels but the data has {rows} rows: give one label per row")
    if labels.size and labels.min() < 0:
        raise InputError(f"{name}: labels must be class indices >= 0, got {int(labels.min())}")
    return labels.astype(np.int64)


def load_labels(path: str | Path, *, rows: int | None = None) -> np.ndarray:
    """The true classes stored in an array file (formats of :func:`load_array`), checked by :func:`check_labels`."""
    try:
        raw = load_array(path)
    except InputError as exc:
        raise InputError(str(exc).replace("data file", "labels file", 1)) from None
    return check_labels(raw, name=f"labels file {path}", rows=rows)


def _pick(arrays: dict, path: Path) -> Any:
    for key in ("x", "X", "points", "data"):
        if key in arrays:
            return arrays[key]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    if not arrays:
        raise InputError(f"data file {path} holds no arrays")
    raise InputError(f"data file {path} holds several arrays ({', '.join(map(str, arrays))}); "
                     "name the one with the points 'x'")


def _read_csv(path: Path) -> np.ndarray:
    with path.open(newline="") as handle:
        rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    if rows:
        try:
            [float(cell) for cell in rows[0]]
        except ValueError:
            rows = rows[1:]  # a header line
    try:
        return np.array([[float(cell) for cell in row] for row in rows], dtype=np.float64)
    except ValueError as exc:
        raise InputError(f"data file {path}: every cell after the header must be a number ({exc})") from None


def load_callable(spec: str) -> Callable:
    """Import ``module:function`` (an importable module) or ``path/to/file.py:function`` and return it."""
    module_name, sep, func_name = spec.rpartition(":")
    if not sep or not module_name or not func_name:
        raise InputError(f"expected MODULE:FUNCTION, got {spec!r}")
    try:
        if module_name.endswith(".py"):
            module = _import_file(Path(module_name))
        else:
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"cannot import {module_name!r} for {spec!r}: {error_line(exc)}") from None
    except Exception as exc:  # the user's module failed while it was imported: theirs to fix, in one line
        raise InputError(f"importing {module_name!r} for {spec!r} failed: {error_line(exc)}") from None
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise InputError(f"{module_name!r} has no function {func_name!r}")
    return fn


def _import_file(path: Path):
    if not path.is_file():
        raise ImportError(f"file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"pacverify_user_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"file {path} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic(name: str, *, seed: int, domain: tuple[float, float] | None = None,
              allow_duplicates: bool = False) -> Sampler:
    """A built-in distribution by name: ``gaussians`` (m = 2) or ``gaussians:M`` (m = M)."""
    base, _, arg = name.partition(":")
    if base.strip().lower() != "gaussians":
        raise InputError(f"unknown synthetic distribution {name!r}; built in: gaussians[:M]")
    dim = check_dim(arg, "gaussians dimension M") if arg else 2
    return TruncatedGaussians(seed=seed, domain=domain, allow_duplicates=allow_duplicates, dim=dim)


def make_sampler(source: str, *, seed: int, domain: Any = None, kind: str | None = None,
                 allow_duplicates: bool = False) -> Sampler:
    """Build a sampler from a source string; ``kind`` is ``data``, ``sampler`` or ``synthetic``; ``domain``
    (the box every point must lie in: None, "LO,HI" or a pair) is read by
    :func:`~pacverify.validation.parse_domain`; ``allow_duplicates`` lifts the duplicate-row limit.

    Without ``kind`` the source is read as: ``synthetic:NAME`` → built-in distribution; a path with
    an array suffix → :class:`ArraySampler`; ``MODULE:FUNCTION`` → :class:`CallableSampler`.
    """
    seed, domain = check_seed(seed), parse_domain(domain)
    if not isinstance(allow_duplicates, bool):
        raise InputError(f"allow_duplicates must be true or false, got {allow_duplicates!r}")
    if kind is None:
        if source.startswith("synthetic:"):
            kind, source = "synthetic", source[len("synthetic:"):]
        elif Path(source).suffix.lower() in ARRAY_SUFFIXES:
            kind = "data"
        else:
            kind = "sampler"
    if kind == "synthetic":
        return synthetic(source, seed=seed, domain=domain, allow_duplicates=allow_duplicates)
    if kind == "data":
        return ArraySampler(seed=seed, domain=domain, allow_duplicates=allow_duplicates, rows=load_array(source),
                            source=str(source))
    if kind == "sampler":
        return CallableSampler(seed=seed, domain=domain, allow_duplicates=allow_duplicates,
                               fn=load_callable(source), name=source)
    raise InputError(f"unknown sampler kind {kind!r}; use data, sampler or synthetic")
