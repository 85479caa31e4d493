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

Every draw is checked: numeric, shape ``(n, *input_shape)``, finite; it is returned as float32,
optionally clipped to a box ``domain = (lo, hi)``. The same seed gives the same points.
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
from scipy import stats

from pacverify.errors import InputError
from pacverify.validation import (
    check_dim,
    check_positive,
    check_samples,
    check_seed,
    parse_domain,
)

ARRAY_SUFFIXES = (".npy", ".npz", ".csv", ".pt")
SYNTHETIC = ("gaussians",)

_TRAIN_STREAM, _FRESH_STREAM = 0, 1


def check_points(x: Any, *, name: str, input_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Return ``x`` as a float32 array of shape (N, *input_shape) after checking it.

    Raises :class:`InputError` if ``x`` is not numeric, has fewer than 2 dimensions (one row per
    point is required), does not match ``input_shape``, or holds NaN or ±inf (the row is named).
    """
    try:
        arr = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: cannot read the points as a numeric array ({exc})") from None
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{name}: points must be numbers, got dtype {arr.dtype}")
    if arr.ndim < 2:
        raise InputError(f"{name}: expected one row per point, shape (N, features...), got shape {arr.shape}; "
                         "reshape 1-D inputs to (N, 1)")
    if input_shape is not None and tuple(arr.shape[1:]) != tuple(input_shape):
        raise InputError(f"{name}: each point must have shape {tuple(input_shape)}, got {tuple(arr.shape[1:])}")
    arr = arr.astype(np.float32, copy=False)
    bad = ~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)
    if bad.any():
        raise InputError(f"{name}: {int(bad.sum())} point(s) contain NaN or inf (first at row {int(np.argmax(bad))}); "
                         "remove or repair them")
    return arr


def _clip(arr: np.ndarray, domain: tuple[float, float] | None) -> np.ndarray:
    return arr if domain is None else np.clip(arr, domain[0], domain[1]).astype(np.float32, copy=False)


@dataclass(frozen=True)
class Sampler(ABC):
    """Base of all samplers. Subclasses implement :meth:`_draw` for a stream (train or fresh)."""

    seed: int
    domain: tuple[float, float] | None = None

    @property
    @abstractmethod
    def description(self) -> str:
        """One line naming the distribution, for certificates and reports."""

    @abstractmethod
    def _draw(self, n: int, stream: int) -> np.ndarray:
        """n i.i.d. points from the given stream (train or fresh)."""

    def draw(self, n: int) -> np.ndarray:
        """The PAC sample: n i.i.d. points, float32 array of shape (n, *input_shape)."""
        return _clip(self._draw(check_samples(n, "n (points to draw)"), _TRAIN_STREAM), self.domain)

    def fresh(self, n: int, *, after: int = 0) -> np.ndarray:
        """n held-out points, independent of (for files: disjoint from) a ``draw(after)``."""
        return _clip(self._draw_fresh(check_samples(n, "n (fresh points)"), after), self.domain)

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

    rows: np.ndarray = field(default=None, repr=False)
    source: str = "array"

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", check_points(self.rows, name=self.source))

    @property
    def description(self) -> str:
        return f"{self.source} ({self.rows.shape[0]} rows, assumed i.i.d.)"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.rows.shape[1:])

    def _permutation(self) -> np.ndarray:
        return _rng(self.seed, _TRAIN_STREAM).permutation(self.rows.shape[0])

    def _too_few(self, wanted: int, what: str) -> InputError:
        have = self.rows.shape[0]
        return InputError(
            f"{self.source} has {have} rows but {wanted} are needed ({what}); rows are drawn without "
            "replacement, so give more data, a sampler (--sampler MODULE:FUNCTION or --synthetic), or a "
            f"larger eps or eta (pacverify samples --samples {have} --eta H shows the eps {have} rows reach)")

    def _draw(self, n: int, stream: int) -> np.ndarray:
        if n > self.rows.shape[0]:
            raise self._too_few(n, "the PAC sample")
        return self.rows[self._permutation()[:n]]

    def _draw_fresh(self, n: int, after: int) -> np.ndarray:
        if n + after > self.rows.shape[0]:
            raise self._too_few(n + after, f"{after} for the sample plus {n} disjoint fresh rows")
        return self.rows[self._permutation()[self.rows.shape[0] - n:]]

    def available_fresh(self, after: int) -> int:
        """How many rows remain for a fresh sample after ``draw(after)``."""
        return max(self.rows.shape[0] - after, 0)


@dataclass(frozen=True)
class CallableSampler(Sampler):
    """A user function ``fn(n, rng) -> array (n, *shape)`` of i.i.d. draws, ``rng`` a numpy Generator."""

    fn: Callable[[int, np.random.Generator], Any] = field(default=None, repr=False)
    name: str = "callable"

    @property
    def description(self) -> str:
        return f"sampler {self.name}"

    def _draw(self, n: int, stream: int) -> np.ndarray:
        out = check_points(self.fn(n, _rng(self.seed, stream)), name=f"sampler {self.name}")
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
    rejection loop).
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

    def draw_labeled(self, n: int, stream: int = _TRAIN_STREAM) -> tuple[np.ndarray, np.ndarray]:
        """n points and their side of the hyperplane (label 0: x·1 > 0, label 1: x·1 < 0)."""
        rng = _rng(self.seed, stream)
        side = rng.integers(0, 2, size=n)
        lo = (self.gap / 2 - self.mu) / self.sigma
        t = stats.truncnorm.rvs(lo, np.inf, loc=self.mu, scale=self.sigma, size=n, random_state=rng)
        u = np.full(self.dim, 1.0 / math.sqrt(self.dim))
        z = rng.normal(0.0, self.sigma, size=(n, self.dim))
        z -= np.outer(z @ u, u)
        x = np.where(side[:, None] == 0, 1.0, -1.0) * t[:, None] * u + z
        return _clip(x.astype(np.float32), self.domain), side.astype(np.int64)

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


def _pick(arrays: dict, path: Path) -> Any:
    for key in ("x", "X", "points", "data"):
        if key in arrays:
            return arrays[key]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
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
        raise InputError(f"cannot import {module_name!r} for {spec!r}: {exc}") from None
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise InputError(f"{module_name!r} has no function {func_name!r}")
    return fn


def _import_file(path: Path):
    if not path.is_file():
        raise ImportError(f"file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"pacverify_user_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic(name: str, *, seed: int, domain: tuple[float, float] | None = None) -> Sampler:
    """A built-in distribution by name: ``gaussians`` (m = 2) or ``gaussians:M`` (m = M)."""
    base, _, arg = name.partition(":")
    if base.strip().lower() != "gaussians":
        raise InputError(f"unknown synthetic distribution {name!r}; built in: gaussians[:M]")
    dim = check_dim(arg, "gaussians dimension M") if arg else 2
    return TruncatedGaussians(seed=seed, domain=domain, dim=dim)


def make_sampler(source: str, *, seed: int, domain: Any = None, kind: str | None = None) -> Sampler:
    """Build a sampler from a source string; ``kind`` is ``data``, ``sampler`` or ``synthetic``; ``domain``
    (clipping box: None, "LO,HI" or a pair) is read by :func:`~pacverify.validation.parse_domain`.

    Without ``kind`` the source is read as: ``synthetic:NAME`` → built-in distribution; a path with
    an array suffix → :class:`ArraySampler`; ``MODULE:FUNCTION`` → :class:`CallableSampler`.
    """
    seed, domain = check_seed(seed), parse_domain(domain)
    if kind is None:
        if source.startswith("synthetic:"):
            kind, source = "synthetic", source[len("synthetic:"):]
        elif Path(source).suffix.lower() in ARRAY_SUFFIXES:
            kind = "data"
        else:
            kind = "sampler"
    if kind == "synthetic":
        return synthetic(source, seed=seed, domain=domain)
    if kind == "data":
        return ArraySampler(seed=seed, domain=domain, rows=load_array(source), source=str(source))
    if kind == "sampler":
        return CallableSampler(seed=seed, domain=domain, fn=load_callable(source), name=source)
    raise InputError(f"unknown sampler kind {kind!r}; use data, sampler or synthetic")
