"""The teacher as its own oracle (mass mode, issue 11): at every sample point x_i, a sound lower bound
``l_i ≤ rob_T(x_i)`` on the teacher's robust radius and an attack upper bound ``u_i ≥ rob_T(x_i)``.

``rob_T(x)`` is the largest r such that the teacher's argmax is constant on the closed ``norm``-ball of radius
r around x (intersected with the input domain box when one is given).

* :func:`teacher_network` — the verifier's :class:`~pacverify.network.Network` for the teacher (its ONNX file,
  or the torch module exported to ONNX), checked to reproduce the teacher's logits; or None and why not.
* :func:`teacher_lower_radii` — ``l_i``: the largest radius (up to ``cap``, to within ``tol``) at which sound
  bounds (IBP, CROWN, α-CROWN) PROVE the ball robust; every l_i is a radius at which point i was proved, so
  ``l_i ≤ rob_N(x_i)`` for the function N the Network computes (in exact arithmetic: the bounds carry their
  own rounding margins). N is the teacher's ONNX graph read in float64; the teacher itself may run in float32,
  which differs from N by rounding (:func:`teacher_network` checks ≤ 1e-4 relative on sample points).
* :func:`attack_radii` — ``u_i``: the distance to the closest CONFIRMED counterexample found by PGD bisected
  on the radius (+inf where none was found up to ``hi``); ``u_i ≥ rob_T(x_i)`` because the teacher's class
  at that point (re-evaluated, in the teacher's own dtype) differs from the label.
* :func:`teacher_oracle` runs both (:class:`OracleResult`); :func:`estimate_cost` times a short probe so that
  a caller can decide whether the teacher fits a time budget.

The search for l_i is :func:`~pacverify.verify.radius.search_radii` (module :mod:`pacverify.verify.radius`).
"""
from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pacverify.attacks import Attackable, attack, margin_loss
from pacverify.errors import InputError
from pacverify.network import LINEAR, Network, Relu
from pacverify.norms import vector_norm
from pacverify.validation import check_norm, check_positive, check_positive_int, check_seed
from pacverify.verify.bounds import check_bound_method
from pacverify.verify.radius import (
    _bound_margin,
    _domain_rows,
    _labels,
    _linear_radius,
    _points,
    search_radii,
)

PARITY_RTOL = 1e-4          # teacher_network: |Network − teacher| ≤ PARITY_RTOL · max(1, max |teacher logit|)
TYPICAL_PASSES = 3          # estimate_cost: bounds per point of a typical search
SEGMENT_STEPS = 40          # attack_radii: at most this many bisection steps on the segment from x_i to a
SEGMENT_RTOL = 1e-5         # counterexample, until the bracket on t is within SEGMENT_RTOL of its upper end


# ------------------------------------------------------------------------------------------ the network
def _one_line(exc: BaseException) -> str:
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _module_dtype(module: torch.nn.Module) -> torch.dtype:
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


def _module_device(module: torch.nn.Module) -> torch.device:
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device("cpu")


def teacher_network(teacher: torch.nn.Module, teacher_path: Path | str | None, input_shape: tuple[int, ...], *,
                    sample: np.ndarray | None = None, n_check: int = 8, seed: int = 0
                    ) -> tuple[Network | None, str]:
    """The verifier's Network for the teacher and a one-line reason, or ``(None, why not)``.

    An ONNX teacher file (``teacher_format(teacher_path) == "onnx"``) is read as it is (:func:`load_network`);
    any other teacher is exported from the torch module to ONNX in a temporary directory (:func:`export_onnx`,
    which checks onnxruntime's parity with torch) and read back. A graph with an op the reader (or the export)
    does not support, or any failure on the way, gives ``(None, "the engine cannot read the teacher: ...")``.
    The Network must then reproduce the teacher's logits on ``n_check`` points — the first rows of ``sample``
    (N, *input_shape) when given, standard normal otherwise — to within :data:`PARITY_RTOL` relative
    (``|Δ| ≤ 1e-4 · max(1, max |logit|)``), else ``(None, the mismatch)``.
    """
    from pacverify.models import LogitsOf, output_kind, teacher_format
    from pacverify.onnx_io import load_network
    from pacverify.onnx_io.export import export_onnx

    input_shape = tuple(int(s) for s in input_shape)
    kind = output_kind(teacher)
    if kind == "probabilities":
        return None, ("the engine cannot read the teacher: its outputs are probabilities, and the engine bounds "
                      "logits (not the logarithm of a softmax)")
    inner = teacher.inner if isinstance(teacher, LogitsOf) else teacher
    try:
        if teacher_path is not None and teacher_format(teacher_path) == "onnx":
            net = load_network(teacher_path)
            source = "the teacher's ONNX graph"
        else:
            with tempfile.TemporaryDirectory(prefix="pacverify-teacher-") as tmp:
                path = Path(tmp) / "teacher.onnx"
                export_onnx(inner, path, input_shape, sample=sample, seed=seed)
                net = load_network(path)
            source = "the teacher, exported to ONNX,"
        if kind == "costs":   # logits = −costs: the last affine layer negated
            last = net.layers[-1]
            if not isinstance(last, LINEAR):
                return None, "the engine cannot read the teacher: its cost outputs do not end in an affine layer"
            net = Network(net.layers[:-1] + (last.negated(),), net.input_shape)
            source += " with its costs negated into logits"
    except Exception as exc:  # the exporter and the reader raise many types for graphs they cannot handle
        return None, f"the engine cannot read the teacher: {_one_line(exc)}"
    if tuple(net.input_shape) != input_shape and net.in_features != int(np.prod(input_shape)):
        return None, (f"the engine cannot read the teacher: its graph takes inputs of shape {net.input_shape}, "
                      f"the data has {input_shape}")
    rng = np.random.default_rng(check_seed(seed))
    if sample is not None and len(sample):
        x = np.asarray(sample, dtype=np.float32).reshape((-1, *input_shape))[:n_check]
    else:
        x = rng.standard_normal((n_check, *input_shape)).astype(np.float32)
    try:
        with torch.no_grad():
            module = teacher.eval() if hasattr(teacher, "eval") else teacher
            xt = torch.from_numpy(x).to(_module_device(module), _module_dtype(module))
            # one point at a time: a graph with a fixed batch of 1 is a valid teacher
            expected = torch.cat([module(xt[i:i + 1]).reshape(1, -1).double().cpu() for i in range(len(xt))])
            got = net.to("cpu", torch.float64)(torch.from_numpy(x.astype(np.float64)).reshape(len(x), -1))
    except Exception as exc:  # a teacher that fails on the check points
        return None, f"the engine cannot check the teacher: {_one_line(exc)}"
    if got.shape != expected.shape:
        return None, f"the engine's network returns {tuple(got.shape)} logits, the teacher {tuple(expected.shape)}"
    worst = float((got - expected).abs().max())
    allowed = PARITY_RTOL * max(1.0, float(expected.abs().max()))
    if not worst <= allowed:
        return None, (f"the engine's network differs from the teacher by {worst:.3g} on {len(x)} points "
                      f"(allowed {allowed:.3g})")
    layers = sum(isinstance(layer, LINEAR) for layer in net.layers)
    relus = sum(isinstance(layer, Relu) for layer in net.layers)
    return net, (f"{source} is read by the engine ({layers} affine layers, {relus} ReLU layers; logits agree "
                 f"to {worst:.2g} on {len(x)} points)")


# ------------------------------------------------------------------------------------------ lower radii

def teacher_lower_radii(network: Network, points: np.ndarray, labels: np.ndarray, norm, *, cap: float, tol: float,
                        method: str = "crown", domain=None, seed: int = 0, search: str = "auto",
                        stats: dict | None = None, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """``l`` (N,): at each point the largest radius in [0, cap] at which ``method``'s sound bounds PROVE that
    ``network``'s class stays ``labels[i]`` on the whole ``norm``-ball (∩ ``domain``), found to within ``tol``
    (:func:`~pacverify.verify.radius.search_radii`, whose ``search`` this takes).

    Guarantee: ``l_i`` is 0 or a radius at which point i was proved robust, so ``l_i ≤ rob_N(x_i)`` (the
    network's true robust radius) by soundness of the bounds; 0 where the network's class at x_i is not
    ``labels[i]`` (or ties). All points of a pass go to the bound routine in one batched call, on the network's
    device and dtype (use float64 on CPU: the default of :func:`~pacverify.onnx_io.load_network`). When ``stats``
    is a dict it receives ``passes`` (bound calls), ``bounded`` (point-bounds computed), ``proved_at_cap``,
    ``search`` and ``seconds``. ``progress(done, N)`` as points get their radius.
    """
    result = search_radii(network, points, labels, norm, cap=cap, tol=tol, method=method, domain=domain, seed=seed,
                          search=search, progress=progress)
    if stats is not None:
        stats.update(result.stats, search=result.search)
    return result.proven



def _confirm(model: Attackable, candidates: torch.Tensor, x: torch.Tensor, y: torch.Tensor, norm: str, domain,
             dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(found (B,), points (B, m), distances (B,))``: each candidate rounded to the model's own ``dtype``
    (None: kept), checked in float64 to lie in ``domain`` and classified by one forward pass of ``model`` on
    exactly that point; found where some logit exceeds the label's (a tie is no change). Distances
    ``‖point − x‖`` in ``norm``, float64."""
    c = candidates.detach().to(torch.float64)
    if dtype is not None and dtype != torch.float64:
        c = c.to(dtype).to(torch.float64)
    ok = torch.isfinite(c).all(dim=1)
    c = torch.where(ok[:, None], c, x)
    if domain is not None:
        ok &= ((c >= torch.as_tensor(domain[0], dtype=torch.float64))
               & (c <= torch.as_tensor(domain[1], dtype=torch.float64))).all(dim=1)
    with torch.no_grad():
        z = model(c)
    ok &= margin_loss(z.to(torch.float64), y.to(z.device)).amin(dim=1).cpu() < 0
    return ok, c, vector_norm(c - x, norm, axis=1)


def _refine_on_segments(model: Attackable, x: torch.Tensor, y: torch.Tensor, cex: torch.Tensor, norm: str, domain,
                        dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bisection on t ∈ [0, 1] along ``x + t (cex − x)`` (in the domain box when both ends are) for a closer
    confirmed counterexample, until the bracket on t is within :data:`SEGMENT_RTOL` of its upper end (at most
    :data:`SEGMENT_STEPS` forward passes): ``(found, points, distances)`` of the closest confirmed point per row."""
    n = x.shape[0]
    t_lo = torch.zeros(n, dtype=torch.float64)
    t_hi = torch.ones(n, dtype=torch.float64)
    found = torch.zeros(n, dtype=torch.bool)
    best = cex.clone()
    dist = torch.full((n,), torch.inf, dtype=torch.float64)
    rows = torch.arange(n)
    for _ in range(SEGMENT_STEPS):
        rows = rows[(t_hi[rows] - t_lo[rows]) > SEGMENT_RTOL * t_hi[rows]]
        if rows.numel() == 0:
            break
        t = (t_lo[rows] + t_hi[rows]) / 2
        ok, point, d = _confirm(model, x[rows] + t[:, None] * (cex[rows] - x[rows]), x[rows], y[rows], norm, domain,
                                dtype)
        closer = ok & (d < dist[rows])
        best[rows[closer]], dist[rows[closer]] = point[closer], d[closer]
        found[rows[closer]] = True
        t_hi[rows] = torch.where(ok, t, t_hi[rows])
        t_lo[rows] = torch.where(ok, t_lo[rows], t)
    return found, best, dist


def attack_radii(model: Attackable, points: np.ndarray, labels: np.ndarray, norm, *, hi: float,
                 lo: np.ndarray | None = None, steps: int = 20, restarts: int = 1, bisection: int = 6, domain=None,
                 seed: int = 0, batch: int = 4096,
                 progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(u (N,), counterexamples (N, m))``: per point the distance to the closest confirmed counterexample found
    (+inf where none was found within ``hi``) and that counterexample (NaN rows where none).

    ``model`` maps flat float64 points (B, m) to logits (a :class:`~pacverify.network.Network`, or a torch
    teacher wrapped by :class:`~pacverify.pipeline.teacher_check.TeacherModel`; its ``module_dtype``, when it
    has one, is the precision counterexamples are rounded to before they are confirmed). Search: PGD
    (:func:`pacverify.attacks.attack`, margin loss, ``steps`` × ``restarts``) in the ``norm``-ball of radius
    ``hi`` (∩ ``domain``) around every point, then ``bisection`` rounds of PGD at the middle of
    ``[lo_i, u_i]`` on the points with a counterexample (``lo`` defaults to 0: a known lower bound such as
    :func:`teacher_lower_radii`'s, under which no counterexample exists; points with ``lo_i ≥ hi`` are not
    attacked). Each counterexample found is moved closer by bisection on the segment back to x_i (forward passes
    only). A point counts only when confirmed: rounded to the model's dtype, inside the domain (float64), and
    classified by the model on exactly that point with a logit above the label's. ``u_i`` is its float64
    distance to x_i, so ``u_i ≥ rob(x_i)``. A point whose own class differs from its label gets ``u_i = 0``
    (the point is its counterexample). Deterministic for a given ``seed``; ``batch`` points per PGD call.
    ``progress(done, bisection + 1)`` after each round.
    """
    norm = check_norm(norm)
    hi = check_positive(hi, "hi")
    steps, restarts = check_positive_int(steps, "steps"), check_positive_int(restarts, "restarts")
    bisection = int(bisection)
    if bisection < 0:
        raise InputError(f"bisection must be >= 0, got {bisection}")
    batch, seed = check_positive_int(batch, "batch"), check_seed(seed)
    x = torch.as_tensor(np.asarray(points, dtype=np.float64))
    x = x.reshape(x.shape[0], -1)
    n, m = x.shape
    y = _labels(labels, n, None)
    a = torch.zeros(n, dtype=torch.float64) if lo is None else torch.as_tensor(
        np.maximum(np.asarray(lo, dtype=np.float64).reshape(n), 0.0))
    dtype = getattr(model, "module_dtype", None)
    upper = torch.full((n,), torch.inf, dtype=torch.float64)
    cex = torch.full((n, m), torch.nan, dtype=torch.float64)
    if n == 0:
        return upper.numpy(), cex.numpy()
    mis, own, own_dist = _confirm(model, x, x, y, norm, domain, dtype)   # the point itself (as the model sees it)
    upper[mis], cex[mis] = own_dist[mis], own[mis]

    def run(index: torch.Tensor, radius: torch.Tensor, round_no: int) -> None:
        for start in range(0, index.numel(), batch):
            rows = index[start:start + batch]
            found = attack(model, x[rows], y[rows], radius[start:start + batch], norm=norm, loss="margin",
                           domain=domain, steps=steps, restarts=restarts,
                           seed=seed + 1_000_003 * round_no + start)
            ok, point, dist = _confirm(model, found.inputs, x[rows], y[rows], norm, domain, dtype)
            if bool(ok.any()):
                sub = rows[ok]
                f2, p2, d2 = _refine_on_segments(model, x[sub], y[sub], point[ok], norm, domain, dtype)
                point[ok] = torch.where(f2[:, None], p2, point[ok])
                dist[ok] = torch.where(f2, d2, dist[ok])
            closer = ok & (dist < upper[rows])
            upper[rows[closer]], cex[rows[closer]] = dist[closer], point[closer]
            a[rows[~ok]] = torch.maximum(a[rows[~ok]], radius[start:start + batch][~ok])

    todo = torch.nonzero(~mis & (a < hi)).reshape(-1)
    run(todo, torch.full((todo.numel(),), hi, dtype=torch.float64), 0)
    for k in range(1, bisection + 1):
        if progress is not None:
            progress(k, bisection + 1)
        todo = torch.nonzero(torch.isfinite(upper) & (upper > 0) & (upper - a > 1e-3 * upper)).reshape(-1)
        if todo.numel() == 0:
            break
        run(todo, (a[todo] + upper[todo]) / 2, k)
    if progress is not None:
        progress(bisection + 1, bisection + 1)
    return upper.numpy(), cex.numpy()


# ------------------------------------------------------------------------------------------ both
@dataclass(frozen=True)
class OracleResult:
    """The teacher's radii at N points: ``lower`` (N,) sound lower bounds (:func:`teacher_lower_radii`: every
    l_i was proved, so l_i ≤ rob_T(x_i) up to the teacher's float rounding), ``upper`` (N,) attack upper bounds
    (:func:`attack_radii`: a confirmed counterexample lies at distance u_i, so u_i ≥ rob_T(x_i); +inf where none
    was found), ``counterexamples`` (N, m) (NaN rows where none); the bound ``method``, ``cap`` and ``tol`` of
    the search, and the wall time of each half. ``stats``: the lower search's pass counts."""

    lower: np.ndarray
    upper: np.ndarray
    counterexamples: np.ndarray
    method: str
    cap: float
    tol: float
    time_lower_s: float
    time_upper_s: float
    stats: dict = field(default_factory=dict)


def teacher_oracle(network: Network, model: Attackable, points: np.ndarray, labels: np.ndarray, norm, *,
                   cap: float, tol: float, method: str = "crown", domain=None, seed: int = 0,
                   attack_steps: int = 20, attack_restarts: int = 1, attack_bisection: int = 6,
                   search: str = "itp") -> OracleResult:
    """Both bounds on the teacher's robust radius at every point: ``l_i ≤ rob_T(x_i) ≤ u_i``.

    ``network`` is the verifier's Network of the teacher (:func:`teacher_network`), ``model`` the teacher on
    flat float64 points (e.g. a :class:`~pacverify.pipeline.teacher_check.TeacherModel`). The lower bounds come
    from :func:`teacher_lower_radii`; the attack then searches ``[l_i, cap]`` (:func:`attack_radii` with
    ``lo = l``, ``hi = cap``): no counterexample can lie closer than a proved radius, and points proved at the
    cap are not attacked.
    """
    stats: dict = {}
    start = time.perf_counter()
    lower = teacher_lower_radii(network, points, labels, norm, cap=cap, tol=tol, method=method, domain=domain,
                                seed=seed, search=search, stats=stats)
    mid = time.perf_counter()
    upper, cex = attack_radii(model, points, labels, norm, hi=cap, lo=lower, steps=attack_steps,
                              restarts=attack_restarts, bisection=attack_bisection, domain=domain, seed=seed)
    end = time.perf_counter()
    return OracleResult(lower, upper, cex, method, float(cap), float(tol), mid - start, end - mid, stats)


def estimate_cost(network: Network, n_points: int, *, points: np.ndarray | None = None, norm="inf",
                  cap: float = 0.05, tol: float | None = None, method: str = "crown", domain=None, probe: int = 256,
                  passes: float | None = None, seed: int = 0) -> float:
    """Estimated seconds of :func:`teacher_lower_radii` on ``n_points`` points, from a timing probe.

    On ``probe`` points (the first rows of ``points``, or standard-normal points without ``domain``) the first
    guess of the search and one bound pass at half the cap are timed after a warm-up call, scaled linearly to
    ``n_points`` (the bound engine works in chunks: its cost is linear in the number of points), the pass
    multiplied by ``passes`` bounds per point. By default :data:`TYPICAL_PASSES` (3): measured 1.3 to 1.8 on the
    digits teacher of benchmarks/results/mass.md (most points proved at the cap in one pass) and 2.4 to 3.1 on
    random networks. The search never needs more than ``2 + ceil(log2(cap/tol))`` (7 at ``tol`` = cap/32, the
    default): pass that for a worst-case estimate. Give the run's ``points``, ``norm``, ``cap`` and ``domain``
    (a pass costs more where more neurons are unstable); the estimate holds for the threads and device of the
    probe, and on a machine shared with other jobs it varies as their load does.
    """
    n_points = check_positive_int(n_points, "n_points")
    norm, method = check_norm(norm), check_bound_method(method)
    cap = check_positive(cap, "cap")
    tol = cap / 32 if tol is None else check_positive(tol, "tol")
    if passes is None:
        passes = TYPICAL_PASSES
    passes = min(check_positive(passes, "passes"), 2 + max(0, math.ceil(math.log2(cap / tol))))
    probe = check_positive_int(probe, "probe")
    if points is not None:
        x = _points(points, network.in_features)[:probe]
        dom = _domain_rows(domain, np.arange(x.shape[0]))
    else:
        gen = torch.Generator().manual_seed(check_seed(seed))
        x, dom = torch.randn((probe, network.in_features), generator=gen, dtype=torch.float64), None
    with torch.no_grad():
        y = network.to("cpu", torch.float64)(x).argmax(dim=1)
    radii = torch.full((x.shape[0],), cap / 2, dtype=torch.float64)
    index = np.arange(x.shape[0])
    dev = network.device
    _bound_margin(network, x[:8].to(dev), y[:8].to(dev), radii[:8].to(dev), norm, _domain_rows(dom, index[:8]),
                  method, index[:8])
    start = time.perf_counter()
    _linear_radius(network, x, y, norm, dom, cap)
    guess = time.perf_counter() - start
    start = time.perf_counter()
    _bound_margin(network, x.to(dev), y.to(dev), radii.to(dev), norm, dom, method, index)
    one_pass = time.perf_counter() - start
    return (guess + one_pass * passes) * n_points / x.shape[0]
