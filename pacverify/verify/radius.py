"""Certified radii: at each point the largest radius at which sound bounds PROVE the network's class constant.

:func:`search_radii` returns, per point, ``a_i`` — 0 or a radius at which point i was proved robust, so
``a_i ≤ rob_N(x_i)`` (the true robust radius of the function N the Network computes) by soundness of the bounds —
and ``b_i``, the smallest radius tried and not proved (``cap`` when every try up to the cap was proved); the search
stops when ``b_i − a_i ≤ tol``. It is the search behind :func:`~pacverify.verify.api.certified_radius` (the
student's radii, δ_T, mass mode's student oracle) and :func:`~pacverify.verify.oracle.teacher_lower_radii` (the
teacher oracle). Each pass bounds every unfinished point once, at its own radius, in one batched call.

Searches (``search``; "auto" is "itp"):

* ``"itp"`` (any bound method): a bracket ``[a_i, b_i]`` — a_i proved (0 at the start), b_i not proved (the cap,
  untested, at the start) — and the lower bound of the margin ``f_i(r) = min_j lower(z_y − z_j)`` over the r-ball
  at the last radius proved by a pass and at b_i (``f_i(0)`` is the margin at the point itself). The first pass
  tests the radius where the first-order model of the margin (its gradient at x_i, moving inside the domain box)
  reaches 0, times a factor learnt on a pilot of :data:`PILOT` points when there are many (how far the bounds
  fall short of the linearisation), else :data:`ITP_FIRST_GUESS` = 0.6 (a pass below the root proves and says where
  its lines reach 0, one far above it usually proves nothing, so the guess errs low: 3.72 → 2.97 bounds per pilot
  point on the benchmark student at L2 against a factor of 1, 5.75 → 5.84 on mnist-net_256x2); where that model
  never reaches 0 within the cap (L∞ in a domain whose faces block the descent), the pilot's median radius, else
  the cap. Later radii follow the ITP
  rule (Oliveira & Takahashi, *An Enhancement of the Bisection Method Average Performance Preserving Minmax
  Optimality*, ACM TOMS 2020): an interpolated root (on ``[0, b_i]`` the quadratic ``g − s·r − c·r²`` through
  f(b_i) with the model's slope s; else regula falsi), moved toward the midpoint and kept within a shrinking
  distance of it, which keeps the worst case within two passes of bisection's once a pass has failed. A point
  proved below an untested cap tries the cap next; with CROWN first at most :data:`EXPANSIONS` larger radii, each
  where the proving pass's linear bounds reach 0 but at least :data:`EXPAND` times the radius proved (a failure
  there leaves a bracket far narrower than [a_i, cap]: 3.53 → 3.07 bounds per point on the benchmark student,
  6.38 → 5.76 on mnist-net_256x2 at L2, benchmarks/results/verify.md). With CROWN a failed pass also raises a_i:
  :func:`~pacverify.verify.bounds.crown.crown_radius` reads the pass at every smaller radius (the final linear
  bounds, with the intermediate bounds of the larger ball, are linear in r, so the largest r they prove has a
  closed form, checked by evaluating them there).
* ``"lines"`` (CROWN only): uses that reading to aim. Let s(ρ) be where the linear bounds of a pass at ρ reach
  zero: s falls as ρ grows (looser intermediate bounds) and CROWN's radius is its fixed point ρ* = s(ρ*). The
  first pass tests :data:`FIRST_GUESS` times the first-order radius; each later pass aims at the fixed point
  of a line through its last pass with slope :data:`S_SLOPE` (or the slope measured by two close passes), plus
  tol/6, so that a failure's proof lands within tol; the midpoint when the aim leaves the bracket. Fewest passes
  where s is flat (2.7 per point on the benchmark student against 3.5 for "itp"), many more where it is steep
  (9.7 against 5.7 on mnist-net_256x2): benchmarks/results/verify.md.
* ``"bisect"``: bisection on [0, cap] in lock step (the reference; :func:`~pacverify.verify.api.certified_radius`
  bisects the same way with complete search or another backend).

For CROWN and α-CROWN on a network whose first layer is an affine map followed by a ReLU, the first ReLU
layer's CROWN pre-activation bounds equal the exact range of that affine map over the set, which the engine's
interval pass already computes (:func:`~pacverify.verify.bounds.ibp.forward_interval`); the searches therefore
pass ``(−inf, +inf)`` as that layer's ``intermediate`` bounds (trivially sound: the engine intersects them with
the interval image and widens by its rounding margin) and skip recomputing them: about 4× less work per pass on
a 784-50-10 MLP, same bounds to 1e-11.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from pacverify.attacks import margin_loss
from pacverify.errors import InputError
from pacverify.network import LINEAR, Network, Relu
from pacverify.validation import check_choice, check_norm, check_positive, check_seed
from pacverify.verify.bounds import BOUND_METHODS, check_bound_method
from pacverify.verify.bounds.common import default_max_batch
from pacverify.verify.bounds.crown import crown_radius
from pacverify.verify.property import robustness_property
from pacverify.verify.sets import perturbation_set

SEARCHES = ("auto", "lines", "itp", "bisect")
ALPHA_ITERATIONS = 20       # α-CROWN steps per bound call (as branch and bound's incomplete pass)
ITP_KAPPA1 = 0.1           # ITP truncation δ = κ1 · width² with κ1 = ITP_KAPPA1 / cap
CPU_CHUNK_BYTES = 32 * 2**20   # row tensors per chunk of the bound engine on CPU (_max_batch)
S_SLOPE = -1.7              # "lines": the slope of s(ρ) near its fixed point where two close passes do not give it
S_SLOPE_MIN, S_SLOPE_MAX = 0.2, 20.0   # a measured slope is clamped to [−S_SLOPE_MAX, −S_SLOPE_MIN]
CLOSE = 0.25                # "lines": passes within CLOSE·b of each other measure the slope
FIRST_GUESS = 0.45          # "lines": the first pass tries this fraction of the first-order radius
PILOT = 64                  # searches over ≥ 4·PILOT points first search PILOT of them to learn the first guess
ITP_FIRST_GUESS = 0.6       # "itp" without a pilot's ratio: the first pass at this fraction of the first-order radius
EXPAND, EXPANSIONS = 1.25, 2   # "itp" with CROWN: a point proved below an untested cap tries at most EXPANSIONS radii
                               # ≥ EXPAND × its proved radius (where its proving pass's lines reach 0) before the cap


def _domain_rows(domain, index: np.ndarray):
    """The domain of the points ``index``: per-point (N, m) bounds are subset, shared ones kept."""
    if domain is None:
        return None
    return tuple(np.asarray(d)[index] if np.ndim(d) == 2 else d for d in domain)


def _skip_first_layer(net: Network, method: str) -> bool:
    """Whether the first ReLU layer's CROWN bounds equal its interval image (a linear layer, then a ReLU)."""
    return (method != "ibp" and len(net.layers) >= 2 and isinstance(net.layers[0], LINEAR)
            and isinstance(net.layers[1], Relu))


def _max_batch(net: Network, rows: int) -> int:
    """Points per chunk of the bound engine: its default (:func:`default_max_batch`), raised on CPU to row tensors
    of :data:`CPU_CHUNK_BYTES` (at most 2048 points). The default's 2 MiB tensors (16 to 150 points on a 784-input
    network) leave a pass dominated by per-chunk overhead; 32 MiB chunks ran 1.6–1.8× faster on the digits
    benchmark (benchmarks/results/mass.md)."""
    default = default_max_batch(net, rows)
    if net.device.type != "cpu":
        return default
    per_point = max(1, rows) * max([net.in_features] + [a.out_features for a in net.affine_layers()]) \
        * torch.finfo(net.dtype).bits // 8
    return max(default, min(2048, CPU_CHUNK_BYTES // per_point))


def _bound_margin(net: Network, x: torch.Tensor, labels: torch.Tensor, radii: torch.Tensor, norm: str, domain,
                  method: str, index: np.ndarray) -> torch.Tensor:
    """(B,) ``min_j`` of sound lower bounds of ``z_y − z_j`` over each ball (> 0: the ball is proved robust)."""
    prop = robustness_property(labels, net.out_features)
    input_set = perturbation_set(x.to("cpu", torch.float64), radii.to("cpu", torch.float64), norm,
                                 _domain_rows(domain, index), dtype=torch.float64)   # the engine rounds it outward
    kwargs: dict = _skipped_first_layer(net, method, x.shape[0])
    if method != "ibp":
        kwargs["upper"] = False
    if method == "alpha-crown":
        kwargs["iterations"] = ALPHA_ITERATIONS
        kwargs.pop("max_batch", None)
    lower = BOUND_METHODS[method](net, input_set, prop.C, **kwargs).lower
    return prop.proof_margin(lower.to("cpu", torch.float64))


def _skipped_first_layer(net: Network, method: str, batch: int) -> dict:
    """``intermediate`` (and CROWN's ``max_batch``) for ``batch`` points when :func:`_skip_first_layer` applies
    (module docstring), else nothing."""
    if not _skip_first_layer(net, method):
        return {}
    widths = net.relu_widths()
    unknown = torch.full((batch, widths[0]), torch.inf, dtype=net.dtype, device=net.device)
    # the largest row tensors left: the later layers' neurons and the margins
    return {"intermediate": [(-unknown, unknown)] + [None] * (len(widths) - 1),
            "max_batch": _max_batch(net, 2 * max(widths[1:] + [net.out_features - 1]))}


def _labels(labels, n: int, n_classes: int | None) -> torch.Tensor:
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"labels must be {n} integer class indices, got shape {y.shape} and dtype {y.dtype}")
    if n and (y.min() < 0 or (n_classes is not None and y.max() >= n_classes)):
        raise InputError(f"labels must be class indices in [0, {n_classes}), got values from {y.min()} to {y.max()}")
    return torch.as_tensor(y.astype(np.int64))


def _points(points, m: int) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(points, dtype=np.float64))
    if x.dim() < 2:
        raise InputError(f"points must have shape (N, {m}) or (N, *input_shape), got {tuple(x.shape)}")
    x = x.reshape(x.shape[0], -1)
    if x.shape[1] != m:
        raise InputError(f"points have {x.shape[1]} coordinates, the network takes {m}")
    if not torch.isfinite(x).all():
        raise InputError("points contain NaN or infinite values")
    return x



@dataclass(frozen=True)
class Radii:
    """:func:`search_radii`'s result: ``proven`` (N,) radii proved (0: none), ``failed`` (N,) the smallest radius
    tried and not proved (``cap`` where all tries were proved; 0 where the point itself is not of its class),
    ``search`` the search run and ``stats`` (``passes``: bound calls, ``bounded``: point-bounds, ``proved_at_cap``,
    ``seconds``)."""

    proven: np.ndarray
    failed: np.ndarray
    search: str
    stats: dict


def choose_search(search: str, method: str) -> str:
    """``search`` with "auto" resolved to "itp" (the fewest bounds per point on the benchmark networks but one:
    benchmarks/results/verify.md); "lines" needs CROWN."""
    search = check_choice(search, SEARCHES, "search")
    if search == "lines" and method != "crown":
        raise InputError(f"search 'lines' needs method 'crown' (its linear bounds), got method {method!r}")
    return "itp" if search == "auto" else search


def search_radii(network: Network, points, labels, norm, *, cap: float, tol: float, method: str = "crown",
                 domain=None, seed: int = 0, search: str = "auto",
                 progress: Callable[[int, int], None] | None = None) -> Radii:
    """At each point, the largest radius in [0, cap] at which ``method``'s sound bounds PROVE that ``network``'s
    class stays ``labels[i]`` on the whole ``norm``-ball (∩ ``domain``), to within ``tol`` (module docstring).

    Guarantee: ``proven[i]`` is 0 or a radius at which point i was proved robust (by the bound routine, or by
    :func:`~pacverify.verify.bounds.crown.crown_radius`'s reading of a CROWN pass at a larger radius), so
    ``proven[i] ≤ rob_N(x_i)``; 0 where the network's class at x_i is not ``labels[i]`` (or ties).
    ``failed[i] − proven[i] ≤ tol`` unless ``proven[i] = cap``. ``seed`` is checked and unused (the searches
    draw nothing). ``progress(done, total)`` is called as points get their radius. Method "crown-f32" searches
    with float64 CROWN (the searches read one pass at several radii; the float32 path has no such reading).
    """
    start = time.perf_counter()
    norm = check_norm(norm)
    cap, tol = check_positive(cap, "cap"), check_positive(tol, "tol")
    method, seed = check_bound_method(method), check_seed(seed)
    if method == "crown-f32":   # the searches read float64 CROWN passes at several radii (crown_radius): no float32 path
        method = "crown"
    search = choose_search(search, method)
    x = _points(points, network.in_features)
    n = x.shape[0]
    y = _labels(labels, n, network.out_features)
    info: dict = {"passes": 0, "bounded": 0, "proved_at_cap": 0, "points": n, "progress": progress}
    if n == 0:
        proven, failed = np.zeros(0), np.zeros(0)
    else:
        searcher = {"lines": _lines_search, "itp": _itp_search, "bisect": _bisect_search}[search]
        if search != "bisect" and n >= 4 * PILOT:
            a, b = _with_pilot(searcher, network, x, y, norm, cap, tol, method, domain, info)
        else:
            a, b = searcher(network, x, y, norm, cap, tol, method, domain, info)
        proven, failed = a.numpy(), b.numpy()
    info["seconds"] = time.perf_counter() - start
    for key in ("progress", "finished", "points"):
        info.pop(key, None)
    return Radii(proven, failed, search, info)


def _linear_radius(net: Network, x: torch.Tensor, y: torch.Tensor, norm: str, domain, cap: float,
                   chunk: int = 4096, *, beyond_cap: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(r_lin, slope)`` (N,): where the first-order model of the margin to the runner-up class at x, moving
    against its gradient (inside the domain box), reaches 0 (inf beyond ``cap``), and the model's slope at r = 0.
    Only a first guess for the search (no soundness rests on it): for L2, ``g / ‖∇g‖₂`` over the coordinates
    that can move; for L∞, the root of ``g − Σ_k |∂_k g| · min(r, room_k)`` (room_k: the distance to the domain's
    face the descent moves toward, capped at ``cap``), solved on the sorted rooms. With ``beyond_cap`` a root
    beyond the cap is returned as it is (else inf)."""
    out_r, out_s = [torch.zeros(0, dtype=torch.float64)], [torch.zeros(0, dtype=torch.float64)]
    net64 = net.to("cpu", torch.float64)
    for start in range(0, x.shape[0], chunk):
        xr = x[start:start + chunk].clone().requires_grad_(True)
        with torch.enable_grad():
            m = margin_loss(net64(xr), y[start:start + chunk])
            j = m.detach().argmin(dim=1)
            (grad,) = torch.autograd.grad(m.gather(1, j[:, None]).sum(), xr)
        g = m.detach().gather(1, j[:, None])[:, 0]
        xd = xr.detach()
        if domain is None:
            room = torch.full_like(xd, cap)
        else:
            dom = _domain_rows(domain, np.arange(start, start + xd.shape[0]))
            lo_dom = torch.as_tensor(np.asarray(dom[0], dtype=np.float64))
            hi_dom = torch.as_tensor(np.asarray(dom[1], dtype=np.float64))
            room = torch.where(grad > 0, xd - lo_dom, hi_dom - xd).clamp(0, cap)
        movable = room > 0
        if norm == "2":
            slope = torch.linalg.vector_norm(torch.where(movable, grad, 0.0), dim=1)
            r = g / slope
        elif domain is None:
            slope = grad.abs().sum(dim=1)
            r = g / slope
        else:
            slope = torch.where(movable, grad.abs(), 0.0).sum(dim=1)
            order = torch.from_numpy(np.argsort(room.float().numpy(), axis=1))   # the order only (float32: faster)
            rooms, ws = room.gather(1, order), grad.abs().gather(1, order)
            wr = ws * rooms
            head = wr.cumsum(1) - wr                             # Σ w·room over the coordinates before i
            tail = ws.sum(1, keepdim=True) - ws.cumsum(1) + ws   # Σ w over coordinate i and after
            drop = head + tail * rooms                           # the model's decrease at r = rooms_i
            i = torch.searchsorted(drop, g[:, None]).clamp(max=xd.shape[1] - 1)
            r = (g - head.gather(1, i)[:, 0]) / tail.gather(1, i)[:, 0]
            r = torch.where(drop[:, -1] < g, torch.full_like(r, torch.inf), r)
        out_r.append(r if beyond_cap else torch.where(r <= cap, r, torch.full_like(r, torch.inf)))
        out_s.append(slope)
    return torch.cat(out_r), torch.cat(out_s)


def _finished(info: dict, count: int) -> None:
    """``count`` more points have their radius: tell ``info["progress"]`` (done, total) when there is one."""
    info["finished"] = info.get("finished", 0) + int(count)
    tick = info.get("progress")
    if tick is not None and count:
        tick(info["finished"], info["points"])


def _narrow(info: dict, active: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``active[keep]``, the points whose bracket is still open; the others are reported finished."""
    _finished(info, int((~keep).sum()))
    return active[keep]


def _itp_search(net: Network, x: torch.Tensor, y: torch.Tensor, norm: str, cap: float, tol: float, method: str,
                domain, info: dict, first_guess: float = ITP_FIRST_GUESS, no_model_guess: float | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The bracket search of the module docstring; ``info`` gets the pass counts."""
    n = x.shape[0]
    with torch.no_grad():
        g = margin_loss(net.to("cpu", torch.float64)(x), y).amin(dim=1)   # f(0): the margin at the point
    a = torch.zeros(n, dtype=torch.float64)           # proved radius (0 at the start)
    b = torch.full((n,), cap, dtype=torch.float64)    # radius not proved (the cap: not yet tested)
    ra = torch.zeros(n, dtype=torch.float64)          # the last radius proved by a pass there (f known: fa)
    fa, fb = g.clone(), torch.full((n,), -torch.inf, dtype=torch.float64)
    proofs = method == "crown"                        # a failed CROWN pass also proves a smaller radius
    tested = torch.zeros(n, dtype=torch.bool)         # b was tested (f(b) is known)
    zero_at = torch.full((n,), torch.nan, dtype=torch.float64)   # CROWN: where the last proving pass's lines reach 0
    expansions = torch.zeros(n, dtype=torch.long)     # passes above a proved radius that left the cap untested
    eps = tol / 2
    n_max = max(0, math.ceil(math.log2(cap / tol))) + 1   # ITP: at most bisection's count + n0 (= 1)
    kappa1 = ITP_KAPPA1 / cap

    def bound(index: torch.Tensor, r: torch.Tensor) -> None:
        info["passes"] += 1
        info["bounded"] += int(index.numel())
        if proofs:
            f, proven, est = _crown_pass(net, x, y, index, r, norm, domain)
        else:
            f = _bound_margin(net, x[index].to(net.device), y[index].to(net.device), r.to(net.device), norm, domain,
                              method, index.numpy())
        ok = f > 0
        a[index[ok]], ra[index[ok]], fa[index[ok]] = r[ok], r[ok], f[ok]
        b[index[~ok]], fb[index[~ok]] = r[~ok], f[~ok]
        if proofs:
            a[index[~ok]] = torch.maximum(a[index[~ok]], proven[~ok])
            zero_at[index[ok]] = est[ok]
        tested[index[~ok]] = True

    b[g <= 0] = 0.0
    active = torch.nonzero(g > 0).reshape(-1)
    r_lin, slope = _linear_radius(net, x[active], y[active], norm, _domain_rows(domain, active.numpy()), cap,
                                  beyond_cap=True)
    first = torch.where(torch.isfinite(r_lin) & (r_lin > 0), first_guess * r_lin,
                        torch.full_like(r_lin, cap if no_model_guess is None else no_model_guess))
    first = first.clamp(max=cap)
    if active.numel():
        bound(active, first)
        tested[active[first >= cap]] = True
        info["proved_at_cap"] = int((a[active] >= cap).sum())
    lin_slope = torch.zeros(n, dtype=torch.float64)
    lin_slope[active] = slope
    j = 0
    _finished(info, n - active.numel())
    active = _narrow(info, active, (b[active] - a[active]) > tol)
    while active.numel():
        aa, bb, f_a, f_b, rr = a[active], b[active], fa[active], fb[active], ra[active]
        width = bb - aa
        mid = (aa + bb) / 2
        reach = (eps * 2.0 ** (n_max - j) - width / 2).clamp(min=0)
        delta = kappa1 * width ** 2
        known = tested[active] & torch.isfinite(f_b) & torch.isfinite(f_a) & (f_a > f_b)
        estimate = torch.where(known, (bb * f_a - rr * f_b) / torch.where(known, f_a - f_b, 1.0), aa)  # falsi
        # on [0, b]: the root of g − s·r − c·r² through f(b), s the first-order slope (f bends down as neurons
        # become unstable, so the chord from (0, g) lies below f and its root too early)
        s, g0 = lin_slope[active], g[active]
        c = (g0 - s * bb - f_b) / bb ** 2
        quad = known & (rr == 0) & (c > 0) & (s > 0)
        root = (-s + torch.sqrt(s ** 2 + 4 * c * g0)) / (2 * torch.where(quad, c, 1.0))
        estimate = torch.where(quad & (root > aa) & (root < bb), root, estimate)
        sigma = torch.sign(mid - estimate)
        moved = torch.where(delta <= (mid - estimate).abs(), estimate + sigma * delta, mid)
        r = torch.where((moved - mid).abs() <= reach, moved, mid - sigma * reach)
        r = torch.where((r > aa) & (r < bb), r, mid)   # strictly inside the bracket (else the midpoint)
        if proofs:   # proved below an untested cap: where that pass's lines reach 0 (≥ EXPAND·a), then the cap
            z = zero_at[active]
            grow = torch.where(torch.isfinite(z), z, 0.0).maximum(EXPAND * aa)
            nxt = torch.where(expansions[active] < EXPANSIONS, torch.minimum(grow, bb), bb)
            expansions[active[~tested[active] & (nxt < bb)]] += 1
        else:        # proved below an untested cap: try the cap
            nxt = bb
        r = torch.where(tested[active], r, nxt)
        bound(active, r)
        info["proved_at_cap"] = int((a >= cap).sum())
        active = _narrow(info, active, (b[active] - a[active]) > tol)
        j += 1
    return a, b


# ------------------------------------------------------------------------------------------ upper radii



def _crown_pass(net: Network, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, r: torch.Tensor, norm: str,
                domain) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One CROWN pass at radii ``r`` for the points ``index``, read at every smaller radius
    (:func:`~pacverify.verify.bounds.crown.crown_radius`): (proof margin at r, radius proved, linear estimate)."""
    prop = robustness_property(y[index], net.out_features)
    out = crown_radius(net, x[index].to(net.device), r.to(net.device), norm, prop.C,
                       domain=_domain_rows(domain, index.numpy()), **_skipped_first_layer(net, "crown", index.numel()))
    return (prop.proof_margin(out.lower.to("cpu", torch.float64)), out.proven.to("cpu", torch.float64),
            out.estimate.to("cpu", torch.float64))


def _with_pilot(searcher, net: Network, x: torch.Tensor, y: torch.Tensor, norm: str, cap: float, tol: float,
                method: str, domain, info: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``searcher`` on :data:`PILOT` evenly spaced points, then on the rest with the first guess set to the
    pilot's median ratio of radius found to first-order radius (how far this network's bounds fall short of its
    linearisation: 0.44 on the benchmark student, near 1 on almost linear networks) and, for "itp", the points
    whose first-order model has no root within the cap set to the pilot's median radius (instead of the cap: 5.15
    → 4.92 bounds per point on mnist-net_256x2 at L∞). Only the first guess changes; every radius is still proved
    by its own passes."""
    n = x.shape[0]
    pilot = torch.linspace(0, n - 1, PILOT).round().long().unique()
    rest = torch.ones(n, dtype=torch.bool)
    rest[pilot] = False
    rest_index = torch.nonzero(rest).reshape(-1)
    a, b = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    pa, pb = searcher(net, x[pilot], y[pilot], norm, cap, tol, method, _domain_rows(domain, pilot.numpy()), info)
    a[pilot], b[pilot] = pa, pb
    r_lin, _ = _linear_radius(net, x[pilot], y[pilot], norm, _domain_rows(domain, pilot.numpy()), cap,
                              beyond_cap=True)
    usable = (pa > 0) & (pa < cap) & torch.isfinite(r_lin) & (r_lin > 0)
    kwargs = {}
    if int(usable.sum()) >= PILOT // 4:
        kwargs["first_guess"] = float((pa[usable] / r_lin[usable]).median())
    inside = (pa > 0) & (pa < cap)
    if searcher is _itp_search and int(inside.sum()) >= PILOT // 4:
        kwargs["no_model_guess"] = float(pa[inside].median())
    ra, rb = searcher(net, x[rest_index], y[rest_index], norm, cap, tol, method,
                      _domain_rows(domain, rest_index.numpy()), info, **kwargs)
    a[rest_index], b[rest_index] = ra, rb
    return a, b

def _lines_search(net: Network, x: torch.Tensor, y: torch.Tensor, norm: str, cap: float, tol: float, method: str,
                  domain, info: dict, first_guess: float = FIRST_GUESS) -> tuple[torch.Tensor, torch.Tensor]:
    """The "lines" search of the module docstring (CROWN only); ``info`` gets the pass counts."""
    n = x.shape[0]
    with torch.no_grad():
        g = margin_loss(net.to("cpu", torch.float64)(x), y).amin(dim=1)   # the margin at the point
    nan = torch.full((n,), torch.nan, dtype=torch.float64)
    a = torch.zeros(n, dtype=torch.float64)             # proved radius
    b = torch.full((n,), cap, dtype=torch.float64)      # smallest radius tried and not proved (cap: none yet)
    b[g <= 0] = 0.0
    tested = torch.zeros(n, dtype=torch.bool)           # some pass failed (b was tried)
    lo_r, lo_s, hi_s = nan.clone(), nan.clone(), nan.clone()   # last proved pass (ρ, s(ρ)); s at b
    lin = nan.clone()                                   # the first-order radius (cap where beyond it)

    def bound(index: torch.Tensor, r: torch.Tensor) -> None:
        info["passes"] += 1
        info["bounded"] += int(index.numel())
        _, proven, estimate = _crown_pass(net, x, y, index, r, norm, domain)
        ok = proven >= r
        a[index] = torch.maximum(a[index], torch.where(ok, r, proven))
        lo_r[index[ok]], lo_s[index[ok]] = r[ok], estimate[ok]
        fail = index[~ok]
        b[fail], hi_s[fail] = r[~ok], estimate[~ok]
        tested[fail] = True

    active = torch.nonzero(g > 0).reshape(-1)
    if active.numel():
        # s(0+) is the first-order radius: the bounds are exact on small enough balls
        r_lin, _ = _linear_radius(net, x[active], y[active], norm, _domain_rows(domain, active.numpy()), cap,
                                  beyond_cap=True)
        first = torch.where(torch.isfinite(r_lin) & (r_lin > 0), first_guess * r_lin, torch.full_like(r_lin, cap))
        lin[active] = torch.where(torch.isfinite(r_lin) & (r_lin > 0), r_lin, torch.full_like(r_lin, cap))
        bound(active, first.clamp(max=cap))
    rounds = math.ceil(math.log2(cap / tol)) + 2     # then plain bisection (never reached on the benchmarks)
    j = 0
    _finished(info, n - active.numel())
    active = _narrow(info, active, (b[active] - a[active] > tol) & (a[active] < cap))
    while active.numel():
        aa, bb = a[active], b[active]
        mid = (aa + bb) / 2
        rl, sl, sh = lo_r[active], lo_s[active], hi_s[active]
        h_lo, h_hi = sl - rl, sh - bb
        # the slope k of s near its fixed point: from the two passes around it when they are close, else S_SLOPE
        k = ((sh - sl) / (bb - rl)).clamp(-S_SLOPE_MAX, -S_SLOPE_MIN)
        close = tested[active] & (rl > 0) & (bb - rl <= CLOSE * bb) & torch.isfinite(k)
        k = torch.where(close, k, torch.full_like(k, S_SLOPE))
        from_lo = rl + h_lo / (1 - k)
        from_hi = bb + h_hi / (1 - k)
        informative_hi = tested[active] & (sh > 0)           # s = 0: the pass's linear bounds say nothing
        use_hi = informative_hi & ((h_hi.abs() <= h_lo.abs()) | ~torch.isfinite(h_lo))
        guess = torch.where(use_hi, from_hi, torch.where(torch.isfinite(from_lo) & (rl > 0), from_lo, torch.nan))
        # no informative pass yet (the first one failed with linear bounds negative at the point itself): the
        # batch's typical ratio of guesses to first-order radii, else the midpoint
        ratio = (guess / lin[active])[torch.isfinite(guess)]
        typical = lin[active] * float(ratio.median()) if ratio.numel() else mid
        guess = torch.where(torch.isfinite(guess), guess, torch.where(torch.isfinite(typical), typical, mid))
        aim = guess.clamp(min=aa) + tol / 6
        # never failed: the last proved pass's model, capped
        untested = ~tested[active]
        aim = torch.where(untested, torch.minimum(torch.maximum(aim, aa + tol / 4), torch.full_like(aa, cap)), aim)
        inside = (aim > aa) & ((aim < bb) | untested)
        r = torch.where(inside & (j < rounds), aim, mid)
        bound(active, r)
        info["proved_at_cap"] = int((a >= cap).sum())
        active = _narrow(info, active, (b[active] - a[active] > tol) & (a[active] < cap))
        j += 1
    info["proved_at_cap"] = int((a >= cap).sum())
    return a, b


def _bisect_search(net: Network, x: torch.Tensor, y: torch.Tensor, norm: str, cap: float, tol: float, method: str,
                   domain, info: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Bisection on [0, cap] in lock step, starting at the cap; ``info`` gets the pass counts."""
    n = x.shape[0]
    with torch.no_grad():
        g = margin_loss(net.to("cpu", torch.float64)(x), y).amin(dim=1)
    a = torch.zeros(n, dtype=torch.float64)
    b = torch.where(g > 0, cap, 0.0).to(torch.float64)
    r = torch.full((n,), cap, dtype=torch.float64)
    active = torch.nonzero(g > 0).reshape(-1)
    _finished(info, n - active.numel())
    while active.numel():
        info["passes"] += 1
        info["bounded"] += int(active.numel())
        f = _bound_margin(net, x[active].to(net.device), y[active].to(net.device), r[active].to(net.device), norm,
                          domain, method, active.numpy())
        ok = f > 0
        a[active[ok]], b[active[~ok]] = r[active[ok]], r[active[~ok]]
        active = _narrow(info, active, (b[active] - a[active]) > tol)
        r = (a + b) / 2
    info["proved_at_cap"] = int((a >= cap).sum())
    return a, b
