"""Public entry points of the verifier: local robustness of many points, certified radii, VNN-LIB.

Each entry point takes a :class:`~pacverify.network.Network` or an ONNX path, checks its
arguments (bad input is an :class:`~pacverify.errors.InputError`), and runs the same pipeline:

1. **bounds** — one batched pass of the chosen bound method (IBP, CROWN or α-CROWN, named in
   :data:`~pacverify.verify.bounds.BOUND_METHODS`) through the backend; points whose margins' lower
   bounds are all > 0 are VERIFIED (DESIGN.md §2);
2. **attack** — PGD (:mod:`.attacks`) on the points the bounds leave open, within a budget of work counted
   against the bounds' (:func:`_attack`); confirmed counterexamples are FALSIFIED;
3. **complete search** (``complete=True``, or a backend that is always complete such as Marabou) —
   branch and bound (:mod:`.bab`) or the backend's solver on the points left, ``timeout`` seconds
   each; the rest stay UNKNOWN.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Callable

import numpy as np
import torch

from pacverify.errors import InputError
from pacverify.executor import (
    CHUNK_POINTS,
    ClusterInfo,
    Executor,
    LocalExecutor,
    chunk_ranges,
    chunk_seed,
    get_executor,
)
from pacverify.network import Network
from pacverify.validation import (
    check_choice,
    check_norm,
    check_positive,
    check_positive_int,
    check_radius,
    check_seed,
)
from pacverify.verify.attacks import attack_set, bound_guided_attack
from pacverify.verify.backends import Backend, get_backend
from pacverify.verify.bounds import check_bound_method
from pacverify.verify.property import OutputProperty, robustness_property
from pacverify.verify.radius import SEARCHES, choose_search, search_radii
from pacverify.verify.result import (
    Decision,
    PointVerdict,
    VerificationResult,
    VnnlibResult,
    VnnlibStatus,
)
from pacverify.verify.sets import Box, InputSet, L2Ball, perturbation_set
from pacverify.verify.vnnlib import read_vnnlib
from pacverify.verify.work import PASS_OVERHEAD, attack_macs, attack_step_macs, bound_macs, crown_macs

LOW_DIM = 10                    # inputs up to which a VNN-LIB box gets many PGD restarts (ACAS Xu has 5)
VNNLIB_RESTARTS_LOW_DIM = 1000  # cheap in few dimensions, and needed: ACAS Xu counterexamples are small regions
VNNLIB_RESTARTS = 20
PROGRESS_BLOCK = 4096           # verify_points with a progress callback bounds this many points per call
ATTACK_BUDGET = 1.0             # verify_points' attack may do this multiple of the bounds' modelled work (work.py):
QUICK_STEPS = 20                # on the points the bounds leave open, one start at the centre, this many steps,
MIN_QUICK_STEPS = 5             # or fewer if the budget cannot pay them, but never fewer than this;
NEAR_MISS = 0.1                 # then, where it took the margin below this fraction of the centre's, closest first,
STRONG_STEPS, STRONG_RESTARTS = 25, 5   # this many steps × restarts,
GUIDED_STEPS = 20               # then the bound minimisers with this many PGD steps from them,
GUIDED_ROWS = 2                 # of this many rows per point (those whose bounds are lowest);
STRONG_ROUNDS = 2               # a second round on the next closest near misses with the work the first saved
ATTACK_CHUNK = 2048             # problems per batched PGD run (attack_set's chunk)


def load(net_or_path: Network | str | os.PathLike, *, device: str = "cpu") -> Network:
    """The network itself (moved to ``device``) or the ONNX file at the path, read in float64."""
    from pacverify.onnx_io import load_network

    if isinstance(net_or_path, Network):
        return net_or_path.to(device=device)
    if isinstance(net_or_path, (str, os.PathLike)):
        return load_network(net_or_path, device=device)
    raise InputError(f"expected a Network or the path of an ONNX file, got {type(net_or_path).__name__}")


def verify_points(net_or_path: Network | str | os.PathLike, points, radius, norm, *, labels=None,
                  method: str = "crown", complete: bool = False, timeout: float | None = None, domain=None,
                  attack: bool = True, seed: int = 0, device: str = "cpu", backend: str = "native",
                  progress: Callable[[str, int, int], None] | None = None, executor: str | Executor = "local",
                  ray_address: str | None = None, chunk_points: int = CHUNK_POINTS,
                  attack_budget: float | None = ATTACK_BUDGET) -> VerificationResult:
    """Decide local robustness (Def 3.1 of 004) of the network at every point.

    Args:
        net_or_path: a Network or an ONNX path.
        points: (N, *input_shape) or (N, m) array of points.
        radius: the ball radius, a number or one per point (N,), each > 0.
        norm: 2 or inf (see :func:`pacverify.validation.check_norm`).
        labels: (N,) classes each point must keep; default: the network's own argmax at the points.
        method: bound method of the incomplete pass, a name in :data:`~pacverify.verify.bounds.BOUND_METHODS`:
            "ibp", "crown" or "alpha-crown".
        complete: run branch and bound on the points the bounds leave unknown.
        timeout: seconds per point for the complete search (None: no limit).
        domain: optional (lower, upper) box every perturbed input must stay in (e.g. (0, 1) for pixels).
        attack: attack the points the bounds leave open, cheapest first (:func:`_decide`; counterexamples only,
            never needed for soundness).
        seed: fixes every random draw (attack starts).
        attack_budget: the attack does at most this multiple (> 0) of the bound pass's work, counted in the model of
            :mod:`pacverify.verify.work` (multiply-adds, so that the verdicts do not depend on the machine), but
            at least :data:`MIN_QUICK_STEPS` steps per open point; None: no budget (the full attack on every near
            miss).
        device: "cpu" or "cuda".
        backend: "native" (built in; "crown" is its former name), "marabou" (complete, L∞ only) or "auto_lirpa".
        progress: called as ``progress(part, done, total)`` while it runs: "bounds" after each block of
            :data:`PROGRESS_BLOCK` points, "attack" and "search" with the points each has settled or left (the
            blocks change only the order of floating-point sums: bounds agree to float64 rounding).
        executor: "local" (this process) or "ray" (Ray tasks; :mod:`pacverify.executor`), or an Executor.
        ray_address: with "ray": None (a local Ray instance), "auto" or HOST:PORT of a cluster's head.
        chunk_points: the points are decided in chunks of this many, independently, chunk k's attacks seeded by
            :func:`~pacverify.executor.chunk_seed` (seed, k): the result depends on the chunking, never on the
            executor or its workers (one chunk, N <= chunk_points: exactly the unchunked run).

    Returns:
        :class:`VerificationResult`; VERIFIED only where sound bounds (or a complete search) prove the
        whole ball, FALSIFIED only with a checked counterexample in the ball.
    """
    start = time.perf_counter()
    net = load(net_or_path, device=device)
    x = _points(points, net)
    radii = _radii(radius, x.shape[0])
    norm = check_norm(norm)
    method, seed, timeout = check_bound_method(method), check_seed(seed), _timeout(timeout)
    chosen = get_backend(backend)
    y = _labels(labels, net, x)
    input_set = perturbation_set(x, radii, norm, domain, dtype=net.dtype, device=net.device)
    chosen.check(input_set, complete=complete)
    chunks = chunk_ranges(x.shape[0], check_positive_int(chunk_points, "chunk_points"))
    job = _PointsJob(net, x, radii, y, norm, domain, backend, method, complete, timeout, attack, seed, None,
                     attack_budget=None if attack_budget is None else check_positive(attack_budget, "attack_budget"))
    parts, info = _run_chunks(_verify_chunk, job, chunks, executor, ray_address, progress)
    verdicts = [v for part in parts for v in part[0]]
    lower = torch.cat([part[1] for part in parts])
    counterexamples = {start + i: v for (_, start, _), part in zip(chunks, parts, strict=True)
                       for i, v in part[2].items()}
    stats = _merged_stats([part[3] for part in parts], info, len(chunks))
    return VerificationResult(tuple(verdicts), y.numpy(), radii.numpy(), lower.numpy(),
                              _shaped(counterexamples, net), norm, method, chosen.name,
                              complete or chosen.always_complete, time.perf_counter() - start, stats)


@dataclass(frozen=True)
class _PointsJob:
    """What every chunk of a verify_points / certified_radius run shares: put once into Ray's object store."""

    net: Network
    x: torch.Tensor
    radii: torch.Tensor | None
    y: torch.Tensor
    norm: str
    domain: Any
    backend: str
    method: str
    complete: bool
    timeout: float | None
    attack: bool
    seed: int
    progress: Callable[[str, int, int], None] | None
    cap: float = 1.0
    tol: float = 1e-3
    search: str = "bisect"
    attack_budget: float | None = ATTACK_BUDGET


def _run_chunks(fn: Callable, job: _PointsJob, chunks: list[tuple[int, int, int]], executor, ray_address,
                progress: Callable[[str, int, int], None] | None) -> tuple[list, ClusterInfo]:
    """``fn(job, chunk)`` for every chunk, in chunk order, on the executor asked for. In this process the job
    carries ``progress`` (points counted across chunks); on Ray, ``progress("chunks", done, total)`` as chunks end.
    An executor made here from its name is closed here; an Executor passed in is left open."""
    runner = get_executor(executor, ray_address)
    try:
        info = runner.info()
        if isinstance(runner, LocalExecutor):
            local = replace(job, progress=progress)
            return runner.map_chunks(fn, local, chunks), info
        tick = None if progress is None else (lambda done, total: progress("chunks", done, total))
        return runner.map_chunks(fn, job, chunks, on_done=tick), info
    finally:
        if not isinstance(executor, Executor):  # one the caller passed stays open for the caller's next call
            runner.close()


def _offset(progress: Callable[[str, int, int], None] | None, start: int, n: int):
    """Progress of one chunk as progress of the whole run: "bounds" and "search" counts shifted by the chunk's start."""
    if progress is None:
        return None

    def tick(part: str, done: int, total: int) -> None:
        if start == 0 and total == n:
            progress(part, done, total)
        elif part in ("bounds", "search"):
            progress(part, start + done, n)
        else:
            progress(part, done, total)
    return tick


def _verify_chunk(job: _PointsJob, chunk: tuple[int, int, int]):
    """verify_points on the points [start, stop) of chunk k, attacks seeded by chunk_seed(seed, k): (verdicts,
    lower bounds, counterexamples by index in the chunk, stats). A pure function of its arguments."""
    k, start, stop = chunk
    index = torch.arange(start, stop)
    whole = start == 0 and stop == job.x.shape[0]
    net, chosen = job.net, get_backend(job.backend)
    domain = job.domain if whole else _domain_rows(job.domain, index)
    assert job.radii is not None  # verify_points always has radii
    input_set = perturbation_set(job.x[start:stop], job.radii[start:stop], job.norm, domain, dtype=net.dtype,
                                 device=net.device)
    prop = robustness_property(job.y[start:stop], net.out_features)
    return _decide(net, input_set, prop, chosen, method=job.method, complete=job.complete, timeout=job.timeout,
                   attack=job.attack, seed=chunk_seed(job.seed, k),
                   progress=_offset(job.progress, start, job.x.shape[0]), attack_budget=job.attack_budget)


# stats of one chunk that are settings, or a count of lock-step passes: not summed over chunks
_SAME_STATS = ("search", "cap", "tol")
_MAX_STATS = ("bisection_steps", "quick_steps")


def _merged_stats(parts: list[dict], info: ClusterInfo, chunks: int) -> dict:
    """The chunks' stats as one run's: counts and seconds summed (seconds: the sum of the chunks' own times),
    settings kept, lock-step steps the most of any chunk; plus the executor, the cluster's size and the chunks."""
    out: dict = {}
    for part in parts:
        for key, value in part.items():
            if key not in out:
                out[key] = value
            elif key in _MAX_STATS:
                out[key] = max(out[key], value)
            elif key not in _SAME_STATS and isinstance(value, (int, float)) and not isinstance(value, bool):
                out[key] = out[key] + value
    out.update({"executor": info.executor, "cluster_nodes": info.nodes, "cluster_cpus": info.cpus,
                "chunks": chunks})
    return out


def certified_radius(net_or_path: Network | str | os.PathLike, points, norm, *, labels=None,
                     method: str = "crown", cap: float = 1.0, tol: float = 1e-3, complete: bool = False,
                     timeout: float | None = None, domain=None, attack: bool = True, seed: int = 0,
                     device: str = "cpu", backend: str = "native", search: str = "auto",
                     progress: Callable[[str, int, int], None] | None = None, executor: str | Executor = "local",
                     ray_address: str | None = None, chunk_points: int = CHUNK_POINTS) -> VerificationResult:
    """The largest radius proven at each point in [0, cap], to within ``tol``.

    ``search`` (:mod:`pacverify.verify.radius`): "auto" — with the native backend and incomplete bounds, "itp"
    (interpolation; with CROWN each failed pass also proves a smaller radius: 3.5–5.7 bounds per point on the
    benchmark networks against bisection's 8–8.7 at tol = cap/128); with ``complete`` or another backend,
    "bisect". "lines" (CROWN): fewer passes where the bounds degrade slowly with the radius, more elsewhere.
    "bisect": bisection on r in [0, cap], all points in lock step; every step bounds all unfinished points in one
    call (and, with ``complete``, runs the complete search on the ones the bounds leave open, ``timeout`` seconds
    each). A point stops when ``hi − lo <= tol`` (hi: the smallest radius tried and not proved). The returned
    ``radius[i]`` is the largest r at which point i was PROVED robust (0 if none): a lower bound on the true robust
    radius, never more. Verdicts: VERIFIED where
    ``radius > 0``; FALSIFIED where the point itself does not have its label (its counterexample is the
    point); UNKNOWN otherwise. With ``attack``, PGD at tol above the smallest radius not proved gives
    ``radius_upper`` (N,): a radius at which a counterexample exists (inf where none was found).
    ``progress("search", done, total)`` is called as points get their radius.
    ``executor``, ``ray_address``, ``chunk_points``: as in :func:`verify_points` — the points are searched in fixed
    chunks, independently (the "itp" pilot and the attack's seed are per chunk), on either executor, with the same
    result.
    """
    start = time.perf_counter()
    net = load(net_or_path, device=device)
    x = _points(points, net)
    norm = check_norm(norm)
    cap, tol = check_positive(cap, "cap"), check_positive(tol, "tol")
    method, seed, timeout = check_bound_method(method), check_seed(seed), _timeout(timeout)
    chosen = get_backend(backend)
    y = _labels(labels, net, x)
    n = x.shape[0]
    chosen.check(perturbation_set(x[:1], cap, norm, _domain_rows(domain, torch.tensor([0])), dtype=net.dtype),
                 complete=complete)
    search = check_choice(search, SEARCHES, "search")
    if search == "auto":
        search = "bisect" if complete or chosen.name != "native" else choose_search("auto", method)
    elif search != "bisect" and (complete or chosen.name != "native"):
        raise InputError(f"search {search!r} runs the native bounds only; use search 'bisect' with complete=True "
                         f"or another backend")
    chunks = chunk_ranges(n, check_positive_int(chunk_points, "chunk_points"))
    job = _PointsJob(net, x, None, y, norm, domain, backend, method, complete, timeout, attack, seed, None, cap, tol,
                     search)
    parts, info = _run_chunks(_radius_chunk, job, chunks, executor, ray_address, progress)
    lo = torch.cat([part[0] for part in parts])
    upper = torch.cat([part[1] for part in parts])
    misclassified = torch.cat([part[2] for part in parts])
    stats = _merged_stats([part[3] for part in parts], info, len(chunks))
    verdicts = [PointVerdict.FALSIFIED if bool(misclassified[i]) else PointVerdict.VERIFIED if lo[i] > 0 else PointVerdict.UNKNOWN
                for i in range(n)]
    counterexamples = {int(i): x[i].numpy() for i in torch.nonzero(misclassified).reshape(-1)}
    lower = torch.full((n, net.out_features - 1), -torch.inf, dtype=torch.float64)
    return VerificationResult(tuple(verdicts), y.numpy(), lo.numpy(), lower.numpy(), _shaped(counterexamples, net),
                              norm, method, chosen.name, complete or chosen.always_complete,
                              time.perf_counter() - start, stats, upper.numpy())


def _radius_chunk(job: _PointsJob, chunk: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                          dict]:
    """certified_radius on the points [start, stop) of chunk k (search and attack seeded by chunk_seed(seed, k)):
    (proved radii, attack radii (inf where none found), misclassified points (bool), stats). A pure function of its
    arguments."""
    k, begin, stop = chunk
    n_all = job.x.shape[0]
    whole = begin == 0 and stop == n_all
    index = torch.arange(begin, stop)
    net, chosen = job.net, get_backend(job.backend)
    x, y = job.x[begin:stop], job.y[begin:stop]
    domain = job.domain if whole else _domain_rows(job.domain, index)
    norm, method, cap, tol, seed = job.norm, job.method, job.cap, job.tol, chunk_seed(job.seed, k)
    complete, timeout, search = job.complete, job.timeout, job.search
    progress = _offset(job.progress, begin, n_all)
    n = x.shape[0]
    prop = robustness_property(y, net.out_features)
    with torch.no_grad():
        misclassified = prop.is_unsafe(net.to("cpu", torch.float64)(x))
    if search == "bisect":
        lo, hi, stats = _bisect(net, x, prop, misclassified, norm, domain, chosen, method=method, cap=cap, tol=tol,
                                complete=complete, timeout=timeout, seed=seed, progress=progress)
    else:
        radii = search_radii(net, x.numpy(), y.numpy(), norm, cap=cap, tol=tol, method=method, domain=domain,
                             seed=seed, search=search,
                             progress=None if progress is None else lambda done, total: progress("search", done, total))
        lo, hi = torch.from_numpy(radii.proven), torch.from_numpy(radii.failed)
        lo[misclassified], hi[misclassified] = 0.0, 0.0
        stats = {"search": search, "cap": cap, "tol": tol, "passes": radii.stats["passes"],
                 "bounded": radii.stats["bounded"]}
    upper = torch.full((n,), torch.inf, dtype=torch.float64)
    upper[misclassified] = 0.0
    if job.attack:
        probe = torch.nonzero(~misclassified & (hi < cap) & (hi > 0)).reshape(-1)
        if probe.numel():
            # tol above the smallest radius not proved: a search may stop with it exactly on the decision boundary
            # (a linear network's first pass), where no point of another class strictly exists
            reach = torch.minimum(hi[probe] + tol, torch.full_like(hi[probe], cap))
            found = attack_set(net, perturbation_set(x[probe], reach, norm, _domain_rows(domain, probe),
                                                     dtype=net.dtype), prop.select(probe), seed=seed)
            upper[probe[found.found]] = reach[found.found]
    return lo, upper, misclassified, stats


def _bisect(net: Network, x: torch.Tensor, prop, misclassified: torch.Tensor, norm: str, domain, chosen, *,
            method: str, cap: float, tol: float, complete: bool, timeout, seed: int,
            progress: Callable[[str, int, int], None] | None = None):
    """Bisection on r in [0, cap], all points in lock step: (proved, smallest failed, stats)."""
    n = x.shape[0]
    lo = torch.zeros(n, dtype=torch.float64)
    hi = torch.full((n,), cap, dtype=torch.float64)
    hi[misclassified] = 0.0
    r = torch.full((n,), cap, dtype=torch.float64)
    active = ~misclassified
    steps = bounded = 0
    while active.any():
        index = torch.nonzero(active).reshape(-1)
        ok = _prove(net, x[index], r[index], norm, domain, prop.select(index), chosen, method=method,
                    complete=complete, timeout=timeout, seed=seed, index=index)
        lo[index[ok]] = r[index[ok]]
        hi[index[~ok]] = r[index[~ok]]
        active = (hi - lo) > tol
        r = (lo + hi) / 2
        steps += 1
        bounded += int(index.numel())
        if progress is not None:
            progress("search", n - int(active.sum()), n)
    return lo, hi, {"search": "bisect", "cap": cap, "tol": tol, "bisection_steps": steps, "passes": steps,
                    "bounded": bounded}


def verify_vnnlib(net_or_path: Network | str | os.PathLike, vnnlib_path: str | os.PathLike,
                  timeout: float | None = None, *, method: str = "alpha-crown", seed: int = 0, device: str = "cpu",
                  backend: str = "native") -> VnnlibResult:
    """Answer a VNN-LIB instance: SAT (with a checked counterexample), UNSAT (proved) or UNKNOWN.

    Conjunctions get implied rows (:meth:`OutputProperty.with_implied_rows`). Every region (input box with
    its unsafe output set) is attacked first (PGD with 20 restarts, 1000 for
    boxes of at most 10 inputs; then the minimisers of CROWN's lower bounds); then each is bounded (``method``, α-CROWN by default) and, if open, decided
    by the backend's complete search within what is left of ``timeout`` (total seconds for the
    instance; None: no limit). UNSAT requires every region proved (:mod:`.property`).
    """
    start = time.perf_counter()
    net = load(net_or_path, device=device)
    vnnlib = read_vnnlib(vnnlib_path)
    if vnnlib.n_inputs != net.in_features or vnnlib.n_outputs != net.out_features:
        raise InputError(f"the VNN-LIB file declares {vnnlib.n_inputs} inputs and {vnnlib.n_outputs} outputs, the "
                         f"network has {net.in_features} and {net.out_features}")
    method, seed, timeout = check_bound_method(method), check_seed(seed), _timeout(timeout)
    chosen = get_backend(backend)
    regions = [(Box(torch.from_numpy(r.lower)[None], torch.from_numpy(r.upper)[None]), r.prop.with_implied_rows())
               for r in vnnlib.regions]
    for box, _ in regions:
        chosen.check(box, complete=chosen.can_decide)

    def done(status: VnnlibStatus, detail: str, x: np.ndarray | None = None) -> VnnlibResult:
        out = None
        if x is not None:
            with torch.no_grad():
                out = net.to("cpu", torch.float64)(torch.from_numpy(x)[None])[0].numpy()
        return VnnlibResult(status, time.perf_counter() - start, x, out, detail)

    for k, (box, prop) in enumerate(regions):
        restarts = VNNLIB_RESTARTS_LOW_DIM if box.dim <= LOW_DIM else VNNLIB_RESTARTS
        attacks = (("PGD", partial(attack_set, restarts=restarts, steps=100)), ("bound minimiser", bound_guided_attack))
        for name, attack in attacks:
            found = attack(net, box, prop, seed=seed)
            if bool(found.found[0]):
                return done(VnnlibStatus.SAT, f"region {k}: {name}", found.inputs[0].numpy())
    open_regions = []
    for k, (box, prop) in enumerate(regions):
        lower = chosen.bounds(net, box, prop, method=method)
        if lower is None or not bool(prop.to(lower.device, lower.dtype).proven(lower)[0]):
            open_regions.append(k)
    details = []
    for k in open_regions:
        left = None if timeout is None else timeout - (time.perf_counter() - start)
        if left is not None and left <= 0:
            return done(VnnlibStatus.UNKNOWN, "time budget spent")
        if not chosen.can_decide:
            return done(VnnlibStatus.UNKNOWN,
                        f"region {k}: not proved by the bounds ({chosen.name} has no complete search)")
        box, prop = regions[k]
        decision = chosen.decide(net, box, prop, timeout=left, method=method, seed=seed)[0]
        if decision.verdict is PointVerdict.FALSIFIED:
            return done(VnnlibStatus.SAT, f"region {k}: {decision.detail}", decision.counterexample)
        if decision.verdict is PointVerdict.UNKNOWN:
            return done(VnnlibStatus.UNKNOWN, f"region {k}: {decision.detail}")
        details.append(f"region {k}: {decision.detail}")
    if not regions:
        return done(VnnlibStatus.UNSAT, "every input box of the property is empty")
    return done(VnnlibStatus.UNSAT, "; ".join(details) or "bounds")


def _points(points, net: Network) -> torch.Tensor:
    """Points as an (N, m) float64 CPU tensor; InputError on a shape the network does not take or NaN/inf."""
    try:
        x = torch.as_tensor(np.asarray(points.detach().cpu() if isinstance(points, torch.Tensor) else points,
                                       dtype=np.float64))
    except (TypeError, ValueError):
        raise InputError("points must be a numeric array of shape (N, *input_shape) or (N, m)") from None
    shape, m = tuple(x.shape), net.in_features
    if x.dim() < 2 or x.shape[0] == 0 or (tuple(x.shape[1:]) != tuple(net.input_shape) and tuple(x.shape[1:]) != (m,)):
        raise InputError(f"points have shape {shape}; the network takes (N, {', '.join(map(str, net.input_shape))})"
                         f" or (N, {m}) with N >= 1")
    x = x.reshape(x.shape[0], m)
    bad = ~torch.isfinite(x).all(dim=1)
    if bad.any():
        raise InputError(f"point {int(torch.nonzero(bad)[0])} contains NaN or infinite values")
    return x


def _radii(radius, n: int) -> torch.Tensor:
    """One radius per point, each a finite number > 0."""
    values = np.atleast_1d(np.asarray(radius, dtype=object))
    if values.ndim != 1 or values.shape[0] not in (1, n):
        raise InputError(f"radius must be a number or one number per point ({n}), got shape {values.shape}")
    out = torch.tensor([check_radius(v, "radius") for v in values], dtype=torch.float64)
    return out.expand(n).clone() if out.shape[0] == 1 else out


def _timeout(timeout) -> float | None:
    return None if timeout is None else check_positive(timeout, "timeout")


def _labels(labels, net: Network, x: torch.Tensor) -> torch.Tensor:
    """(N,) int64 labels: the given ones (checked) or the network's argmax at the points."""
    if labels is None:
        with torch.no_grad():
            return net.to("cpu", torch.float64)(x).argmax(dim=1)
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if y.shape != (x.shape[0],) or not (np.issubdtype(y.dtype, np.integer) or
                                        (np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0))):
        raise InputError(f"labels must be {x.shape[0]} integer class indices (one per point), got shape {y.shape} "
                         f"and dtype {y.dtype}")
    if y.min() < 0 or y.max() >= net.out_features:
        raise InputError(f"labels must lie in [0, {net.out_features - 1}], got values from {y.min()} to {y.max()}")
    return torch.as_tensor(y.astype(np.int64))


def _domain_rows(domain, index: torch.Tensor):
    """The domain for the points ``index``: per-point (N, m) bounds are subset, shared ones kept."""
    if domain is None or not isinstance(domain, (tuple, list)) or len(domain) != 2:
        return domain
    return tuple(np.asarray(d)[index.numpy()] if np.ndim(d) == 2 else d for d in domain)


def _shaped(counterexamples: dict[int, np.ndarray], net: Network) -> dict[int, np.ndarray]:
    return {i: np.asarray(v, dtype=np.float64).reshape(net.input_shape) for i, v in counterexamples.items()}


def _decide(net: Network, input_set: InputSet, prop: OutputProperty, backend: Backend, *, method: str,
            complete: bool, timeout: float | None, attack: bool, seed: int,
            progress: Callable[[str, int, int], None] | None = None, attack_budget: float | None = ATTACK_BUDGET):
    """Bound, attack what the bounds leave open, then (optionally) complete search:
    (verdicts, lower bounds (N, R), counterexamples, stats).

    The attack is budgeted against the bounds (issue 12): it only sees the points the bounds leave open, and does
    at most ``attack_budget`` × the bound pass's work on all N points in the model of :mod:`.work`, cheapest first
    (:func:`_attack`; None: no budget). ``stats`` records the seconds of each part, both works (multiply-adds),
    the quick stage's steps, the near misses and how many of them were attacked strongly."""
    n = input_set.batch_size
    verdicts = [PointVerdict.UNKNOWN] * n
    lower = torch.full(prop.C.shape[:2], -torch.inf, dtype=torch.float64)
    counterexamples: dict[int, np.ndarray] = {}
    stats: dict = {"falsified_by_attack": 0, "verified_by_bounds": 0, "verified_by_search": 0,
                   "falsified_by_search": 0, "bounds_s": 0.0, "attack_s": 0.0, "search_s": 0.0}
    todo = torch.arange(n)
    start = time.perf_counter()
    bounds = _bounds_in_blocks(net, input_set, prop, backend, method, progress)
    if bounds is not None:
        lower = bounds.detach().to("cpu", torch.float64)
        proven = prop.proven(lower)
        for i in torch.nonzero(proven).reshape(-1).tolist():
            verdicts[i] = PointVerdict.VERIFIED
        stats["verified_by_bounds"] = int(proven.sum())
        todo = todo[~proven]
    stats["bounds_s"] = time.perf_counter() - start
    if attack and todo.numel():
        start = time.perf_counter()
        opened = int(todo.numel())
        if progress is not None:
            progress("attack", 0, opened)
        rows = prop.C.shape[1]
        stats["bounds_work"] = bound_macs(net, rows, method, n)
        budget = None if attack_budget is None else attack_budget * stats["bounds_work"]
        todo = _attack(net, input_set, prop, todo, verdicts, counterexamples, stats, seed=seed, budget=budget,
                       lower=lower)
        stats["attack_s"] = time.perf_counter() - start
        if progress is not None:
            progress("attack", opened, opened)
    if (complete or backend.always_complete) and todo.numel():
        start = time.perf_counter()
        if progress is not None:
            progress("search", 0, int(todo.numel()))
        decisions: list[Decision] = backend.decide(net, input_set.select(todo), prop.select(todo), timeout=timeout,
                                                   method=method, seed=seed)
        for i, decision in zip(todo.tolist(), decisions, strict=True):
            verdicts[i] = decision.verdict
            if decision.verdict is PointVerdict.FALSIFIED:
                assert decision.counterexample is not None  # a FALSIFIED decision carries its counterexample
                counterexamples[i] = decision.counterexample
                stats["falsified_by_search"] += 1
            elif decision.verdict is PointVerdict.VERIFIED:
                stats["verified_by_search"] += 1
        stats["domains"] = sum(d.domains for d in decisions)
        stats["search_s"] = time.perf_counter() - start
        if progress is not None:
            progress("search", len(decisions), len(decisions))
    return verdicts, lower, counterexamples, stats


def _attack(net: Network, input_set: InputSet, prop: OutputProperty, todo: torch.Tensor, verdicts: list,
            counterexamples: dict, stats: dict, *, seed: int, budget: float | None,
            lower: torch.Tensor | None = None) -> torch.Tensor:
    """Attack the open points ``todo`` within ``budget`` multiply-adds of :mod:`~pacverify.verify.work`'s model
    (None: no limit); mark what it finds FALSIFIED and return the points still open.

    Cheapest first: one PGD start at the centre on every open point, :data:`QUICK_STEPS` steps or fewer if the
    budget cannot pay them (never fewer than :data:`MIN_QUICK_STEPS`); the near misses (that attack took the
    margin below :data:`NEAR_MISS` of its value at the centre), closest first, as many as the rest of the budget
    pays for at the full price: :data:`STRONG_RESTARTS` restarts × :data:`STRONG_STEPS` steps, then the bound
    minimisers of those still open (:func:`~pacverify.verify.attacks.bound_guided_attack`) on the
    :data:`GUIDED_ROWS` rows whose bounds ``lower`` (N, R) are lowest (all rows without bounds, or where a clause
    has several rows; a counterexample to some clauses is one to the property). Work is counted as
    it is done (a PGD row stops once its point is found), and what a round saves pays for the next closest near
    misses in a second round (:data:`STRONG_ROUNDS`). The count is a pure function of the inputs and the seed:
    the verdicts are the same on any machine."""
    step, rows, opened = attack_step_macs(net), prop.C.shape[1], int(todo.numel())
    per_step = opened * step + -(-opened // ATTACK_CHUNK) * PASS_OVERHEAD    # one quick step on every open point
    steps = QUICK_STEPS if budget is None else int(min(QUICK_STEPS, max(MIN_QUICK_STEPS, budget // per_step - 1)))
    quick = attack_set(net, input_set.select(todo), prop.select(todo), seed=seed, steps=steps, restarts=1,
                       chunk=ATTACK_CHUNK)
    spent = attack_macs(net, quick.evaluations, quick.passes)
    todo = _record_found(quick, todo, verdicts, counterexamples, stats)
    stats.update(quick_steps=steps, near_misses=0, attacked_strongly=0)
    if todo.numel():
        with torch.no_grad():
            centre = prop.select(todo).violation(net.to("cpu", torch.float64)(_centres(input_set.select(todo))))
        spent += attack_macs(net, int(todo.numel()), 1)
        closeness = quick.violation[~quick.found] / centre.clamp_min(torch.finfo(torch.float64).tiny)
        near = torch.nonzero(closeness <= NEAR_MISS).reshape(-1)
        candidates = todo[near[torch.sort(closeness[near], stable=True).indices]]
        stats["near_misses"] = int(candidates.numel())
        # the most a near miss can cost (no early stop), and a round's runs of the model whatever its size
        guided_rows = rows if lower is None or not bool(torch.isfinite(lower).all()) \
            or prop.n_clauses != rows else min(rows, GUIDED_ROWS)
        guided_price = crown_macs(net, guided_rows) + guided_rows * (GUIDED_STEPS + 2) * step
        full_price = STRONG_RESTARTS * (STRONG_STEPS + 1) * step + guided_price
        round_overhead = -(-int(candidates.numel()) // ATTACK_CHUNK) * (STRONG_STEPS + GUIDED_STEPS + 4) * PASS_OVERHEAD
        for _ in range(STRONG_ROUNDS):
            take = candidates.numel() if budget is None else \
                int(min(candidates.numel(), (budget - spent - round_overhead) // full_price))
            if take <= 0 or not candidates.numel():
                break
            close, candidates = candidates[:take], candidates[take:]
            stats["attacked_strongly"] += take
            strong = attack_set(net, input_set.select(close), prop.select(close), seed=seed, steps=STRONG_STEPS,
                                restarts=STRONG_RESTARTS, chunk=ATTACK_CHUNK)
            spent += attack_macs(net, strong.evaluations, strong.passes)
            close = _record_found(strong, close, verdicts, counterexamples, stats)
            if close.numel():
                sub = prop.select(close)
                if guided_rows < rows:   # the clauses (single rows) whose bounds are lowest
                    assert lower is not None  # guided_rows < rows only with bounds
                    sub = sub.some_clauses(lower[close].argsort(dim=1, stable=True)[:, :guided_rows])
                guided = bound_guided_attack(net, input_set.select(close), sub, seed=seed, steps=GUIDED_STEPS)
                spent += attack_macs(net, guided.evaluations, guided.passes + 1)   # + 1: the CROWN pass
                spent += crown_macs(net, guided_rows) * int(close.numel())
                _record_found(guided, close, verdicts, counterexamples, stats)
        todo = torch.tensor([i for i in todo.tolist() if verdicts[i] is PointVerdict.UNKNOWN], dtype=torch.long)
    stats["attack_work"] = spent
    return todo


def _bounds_in_blocks(net: Network, input_set: InputSet, prop: OutputProperty, backend: Backend, method: str,
                      progress: Callable[[str, int, int], None] | None) -> torch.Tensor | None:
    """``backend.bounds`` on all points, in blocks of :data:`PROGRESS_BLOCK` when there is a ``progress`` to tell (a
    point's bounds do not depend on the others; blocks only reorder floating-point sums, to float64 rounding)."""
    n = input_set.batch_size
    if progress is None or n <= PROGRESS_BLOCK:
        out = backend.bounds(net, input_set, prop, method=method)
        if progress is not None:
            progress("bounds", n, n)
        return out
    parts = []
    for start in range(0, n, PROGRESS_BLOCK):
        index = torch.arange(start, min(n, start + PROGRESS_BLOCK))
        part = backend.bounds(net, input_set.select(index), prop.select(index), method=method)
        if part is None:
            return None
        parts.append(part)
        progress("bounds", int(index[-1]) + 1, n)
    return torch.cat(parts)


def _record_found(found, index: torch.Tensor, verdicts: list, counterexamples: dict, stats: dict) -> torch.Tensor:
    """Mark the problems ``found`` (of the points ``index``) FALSIFIED with their checked inputs; the rest of index."""
    for i, x in zip(index[found.found].tolist(), found.inputs[found.found], strict=True):
        verdicts[i], counterexamples[i] = PointVerdict.FALSIFIED, x.numpy()
    stats["falsified_by_attack"] += int(found.found.sum())
    return index[~found.found]


def _centres(input_set: InputSet) -> torch.Tensor:
    """The centre of each set, in float64 (a box's midpoint: the point itself unless a domain clipped it)."""
    if isinstance(input_set, L2Ball):
        return input_set.center.to("cpu", torch.float64)
    return ((input_set.lower + input_set.upper) / 2).to("cpu", torch.float64)


def _prove(net: Network, x: torch.Tensor, r: torch.Tensor, norm: str, domain, prop: OutputProperty,
           backend: Backend, *, method: str, complete: bool, timeout: float | None, seed: int,
           index: torch.Tensor) -> torch.Tensor:
    """(B,) bool: the balls of radii ``r`` around ``x`` are proved robust (bounds, then the complete search)."""
    input_set = perturbation_set(x, r, norm, _domain_rows(domain, index), dtype=net.dtype, device=net.device)
    verdicts, _, _, _ = _decide(net, input_set, prop, backend, method=method, complete=complete, timeout=timeout,
                                attack=False, seed=seed)
    return torch.tensor([v is PointVerdict.VERIFIED for v in verdicts], dtype=torch.bool)
