"""The one projected-gradient (PGD) attack core of pacverify.

Every attack in the package runs here: the verifier's falsification
(:mod:`pacverify.verify.attacks`, a :class:`~pacverify.network.Network` against an output property),
distillation (IGDM's perturbations and the quality markers, :mod:`pacverify.distill`, on torch
modules) and the teacher cross-check (:mod:`pacverify.pipeline.teacher_check`, on the user's teacher).
This module imports only torch, numpy and pacverify's leaf modules (norms, errors, validation).

**The model** is anything satisfying :class:`Attackable`: a callable mapping a batch of inputs
(B, \\*shape) — in the dtype and on the device of the points the caller passes — to logits (B, n),
differentiable in its input. Nothing else is asked of it (no ``to``, ``device`` or ``dtype``): the
core never moves a model; a model that wants its inputs elsewhere, in another dtype or in another
shape is wrapped in a function that moves and reshapes them (as the teacher check does).

**The set** of problem b is the box ``[lower_b, upper_b]`` (either side may be omitted: unbounded)
intersected with the ``norm`` ball of ``radius_b`` around ``center_b`` (omitted: the box alone).
An L∞ ball intersected with a box is a box, and is attacked as one. Projections: onto a box,
clamping; onto an L2 ball, radial scaling; onto L2 ball ∩ box, :func:`project_l2_box`.

**The search** (:func:`pgd_search`) *minimises* an :data:`Objective` — per problem a vector of
clause values whose minimum is the quantity to push down — from ``restarts`` starts per problem,
batched over problems and restarts, seeded (a CPU generator: the same seed gives the same result).
Losses for labelled points (:func:`objective`): ``"margin"``, the clauses ``z_y − z_j`` (j ≠ y; a
point breaks when one is < 0), and ``"ce"``, minus the cross-entropy (one clause; PGD ascends CE).

**Front ends**: :func:`attack` (labelled points, confirmed counterexamples), :func:`random_search`
(dense random sampling in the same sets: forward passes only, for regions no descent path reaches),
:func:`pgd` (a perturbation δ per point, for training) and the primitives :func:`project`,
:func:`random_in_ball`, :func:`spread_in_ball`, :func:`ascent_direction` for custom ascents.

**Guarantee**: :func:`attack` reports ``found`` only for a point that lies in the set (checked in
float64) and whose label changes in a final forward pass of the model (a tie is no change). An
attack only ever *finds*: a point it fails to break is not proven robust.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from pacverify.errors import InputError
from pacverify.norms import vector_norm
from pacverify.validation import check_choice, check_norm, check_positive, check_samples

LOSSES = ("margin", "ce")
STARTS = ("centre+box", "ball", "centre", "spread")
_SHRINK = 1.0 - 1e-9   # radial safety factor for the L2 ball against rounding in the final check


@runtime_checkable
class Attackable(Protocol):
    """What the core attacks: ``model(x)`` maps inputs (B, \\*shape) to logits (B, n), differentiably in ``x``.

    The core calls it with the points it is given (their dtype, device and shape) and takes the
    gradient of a loss of its output with respect to ``x`` only; the model's parameters get no
    gradient. Network objects, ``nn.Module``s and plain functions all qualify.
    """

    def __call__(self, x: torch.Tensor, /) -> torch.Tensor: ...


Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``objective(logits, problems) → values``: logits (R, n) of R attacked points, ``problems`` (R,) int64 the
problem (0..B−1) each point belongs to; values (R, K) per clause. :func:`pgd_search` minimises the minimum
over the K clauses (restart j ≥ 1 of a problem descends clause (j − 1) mod K alone: a targeted start)."""


@dataclass(frozen=True)
class AttackResult:
    """Per problem b: ``found[b]`` (a confirmed counterexample), ``inputs[b]`` the best point seen (inside the
    set; a counterexample when found), ``outputs[b]`` the model's output there, ``violation[b]`` its
    objective value (for labelled points the margin ``min_j z_y − z_j``: < 0 when found). ``evaluations`` and
    ``passes``: the points the attack ran the model on and in how many batched runs (the search's,
    :class:`SearchResult`, and the final check's), where the attack counts them (0 otherwise)."""

    found: torch.Tensor
    inputs: torch.Tensor
    outputs: torch.Tensor
    violation: torch.Tensor
    evaluations: int = 0
    passes: int = 0


@dataclass(frozen=True)
class SearchResult:
    """What :func:`pgd_search` returns per problem: ``inputs`` (B, \\*shape), the best point over steps and
    restarts (``keep="best"``) or the last iterate (``keep="last"``), and ``value`` (B,), the objective
    there (None with ``keep="last"``: the last iterate is not evaluated). Unconfirmed. ``evaluations``: the
    points the model was run on, over all steps and restarts (each step's rows, with their gradient but the last);
    ``passes``: the batched runs of the model (one per step)."""

    inputs: torch.Tensor
    value: torch.Tensor | None
    evaluations: int = 0
    passes: int = 0


# ------------------------------------------------------------------------------------------ geometry
def _per_row(t: torch.Tensor, dims: int) -> torch.Tensor:
    """(B,) → (B, 1, ..., 1) with ``dims`` dimensions in all, to broadcast against (B, \\*shape)."""
    return t.reshape(-1, *[1] * (dims - 1))


def _row_norm(t: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-row norm of a batch (B, \\*shape), keeping the dimensions: (B, 1, ..., 1)."""
    return _per_row(vector_norm(t.flatten(1), norm, axis=1), t.dim())


def _clamp(x: torch.Tensor, lower: torch.Tensor | None, upper: torch.Tensor | None) -> torch.Tensor:
    if lower is not None:
        x = torch.maximum(x, lower)
    if upper is not None:
        x = torch.minimum(x, upper)
    return x


def project(delta: torch.Tensor, radius: float | torch.Tensor, norm: str) -> torch.Tensor:
    """Project each row of ``delta`` (B, \\*shape) onto the ball {‖δ‖ ≤ radius} of the given norm ('2' or 'inf');
    ``radius`` a number or (B,)."""
    radius = torch.as_tensor(radius, dtype=delta.dtype, device=delta.device)
    radius = _per_row(radius.expand(delta.shape[0]), delta.dim())
    if norm == "inf":
        return torch.maximum(torch.minimum(delta, radius), -radius)
    scale = torch.clamp(radius / _row_norm(delta, "2").clamp_min(1e-12), max=1.0)
    return delta * scale


def project_ball(x: torch.Tensor, center: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """The Euclidean projection of ``x`` onto ``{‖z − center‖₂ ≤ radius}`` (x, center (B, \\*shape); radius
    (B,) or broadcastable (B, 1, ..., 1)): radial scaling toward the centre."""
    radius = _per_row(radius, x.dim())
    diff = x - center
    norm = _row_norm(diff, "2")
    scale = torch.where(norm > radius, radius / norm.clamp_min(torch.finfo(x.dtype).tiny), torch.ones_like(norm))
    return center + diff * scale


def project_l2_box(x: torch.Tensor, center: torch.Tensor, radius: torch.Tensor, lower: torch.Tensor | None,
                   upper: torch.Tensor | None, *, iters: int = 8) -> torch.Tensor:
    """A point of ``{‖z − center‖₂ ≤ radius} ∩ [lower, upper]`` near ``x`` (all (B, \\*shape); radius (B,)).

    Dykstra's alternating projections (``iters`` rounds, converging to the exact projection onto the
    intersection), then shrink toward ``center`` by ``radius/‖z − center‖·(1 − 1e-9)`` if outside the ball,
    then clamp to the box. Clamping cannot move a point away from a centre inside the box (projections
    are non-expansive), so for a centre in the box the result lies in both sets up to float rounding.
    """
    radius = _per_row(radius, x.dim())
    p = torch.zeros_like(x)
    q = torch.zeros_like(x)
    y = x
    for _ in range(iters):
        z = _clamp(y + p, lower, upper)
        p = y + p - z
        y = project_ball(z + q, center, radius)
        q = z + q - y
    y = project_ball(y, center, radius * _SHRINK)
    return _clamp(y, lower, upper)


def linf_box(center: torch.Tensor, radius: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The box ``center ± radius`` (radius (B,) or broadcastable) with every bound rounded toward the centre
    where ``center − radius`` rounded outward, so that all its points pass :func:`in_set`'s float64 L∞ check."""
    r = _per_row(radius, center.dim()) if radius.dim() <= 1 else radius
    lo, hi = center - r, center + r
    c64, r64 = center.double(), r.double()
    for _ in range(2):
        lo = torch.where(c64 - lo.double() > r64, torch.nextafter(lo, center), lo)
        hi = torch.where(hi.double() - c64 > r64, torch.nextafter(hi, center), hi)
    return lo, hi


def _shrink(dtype: torch.dtype) -> float:
    """Radial safety factor for a final float64 ball check of points stored in ``dtype``."""
    return min(_SHRINK, 1.0 - 4 * torch.finfo(dtype).eps)


def clip_into_set(x: torch.Tensor, lower: torch.Tensor | None = None, upper: torch.Tensor | None = None,
                  center: torch.Tensor | None = None, radius: torch.Tensor | None = None, *,
                  norm: str = "2") -> torch.Tensor:
    """Pull candidate points into the set before a final check: clamp to the box and, for an L2 ball,
    shrink toward the centre by ``1 − 1e-9`` (more in low precision) and clamp again (an L∞ ball: clamp to
    :func:`linf_box`)."""
    x = _clamp(x, lower, upper)
    if center is None:
        return x
    r = torch.as_tensor(radius, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
    if norm == "inf":
        return _clamp(x, *linf_box(center, r))
    return _clamp(project_ball(x, center, r * _shrink(x.dtype)), lower, upper)


def in_set(x: torch.Tensor, lower: torch.Tensor | None = None, upper: torch.Tensor | None = None,
           center: torch.Tensor | None = None, radius: torch.Tensor | None = None, *, norm: str = "2") -> torch.Tensor:
    """(B,) bool: ``x`` (B, \\*shape) lies in the box and, if ``center`` is given, in the ``norm`` ball
    (checked in float64)."""
    x = x.double()
    ok = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    if lower is not None:
        ok &= (x >= lower.double()).flatten(1).all(dim=1)
    if upper is not None:
        ok &= (x <= upper.double()).flatten(1).all(dim=1)
    if center is not None:
        r = torch.as_tensor(radius, dtype=torch.float64, device=x.device).reshape(-1)
        ok &= vector_norm((x - center.double()).flatten(1), norm, axis=1) <= r
    return ok


def random_in_ball(shape: tuple[int, ...], radius: float | torch.Tensor, norm: str,
                   generator: torch.Generator) -> torch.Tensor:
    """Uniform random points (float32, CPU) in the ball about 0 (L∞: the box; L2: uniform direction,
    radius·U^(1/d)); ``radius`` a number or (shape[0],)."""
    radius = _per_row(torch.as_tensor(radius, dtype=torch.float32).expand(shape[0]), len(shape))
    if norm == "inf":
        return (torch.rand(shape, generator=generator) * 2 - 1) * radius
    direction = torch.randn(shape, generator=generator)
    direction = direction / _row_norm(direction, "2").clamp_min(1e-12)
    d = int(np.prod(shape[1:]))
    r = radius * _per_row(torch.rand(shape[0], generator=generator) ** (1.0 / d), len(shape))
    return direction * r


def spread_in_ball(shape: tuple[int, ...], k: int, radius: float | torch.Tensor, norm: str,
                   generator: torch.Generator) -> torch.Tensor:
    """``k`` points per row spread over the ball about 0 (float32, CPU): (shape[0]·k, \\*shape[1:]), the k points of
    row b consecutive; ``radius`` a number or (shape[0],).

    Radii are stratified: the j-th point lies in the j-th of k shells of equal volume (radius·((j + U)/k)^(1/d),
    the shells shuffled per row), so each point is marginally uniform in the ball for either norm. Directions
    are antithetic and orthogonal: ±q₁, ±q₂, … for a random orthonormal set q (a fresh set for every d
    directions); for L∞ each is scaled onto the cube's surface. So the k points of a row cover every shell
    and opposite sides of the ball instead of clustering.
    """
    k = check_samples(k, "k (points per row)")
    n, d = shape[0], int(np.prod(shape[1:]))
    frac = ((torch.arange(k) + torch.rand(n, k, generator=generator)) / k) ** (1.0 / d)
    frac = frac.gather(1, torch.argsort(torch.rand(n, k, generator=generator), dim=1))
    groups, left = [], (k + 1) // 2
    while left > 0:
        g = min(left, d)
        q, _ = torch.linalg.qr(torch.randn(n, d, g, generator=generator))   # (n, d, g), orthonormal columns
        groups.append(q.transpose(1, 2))
        left -= g
    q = torch.cat(groups, 1)
    direction = torch.stack([q, -q], 2).reshape(n, -1, d)[:, :k]
    if norm == "inf":
        direction = direction / direction.abs().amax(2, keepdim=True).clamp_min(1e-12)
    radius = torch.as_tensor(radius, dtype=torch.float32).expand(n)
    points = direction * (frac * radius[:, None])[..., None]
    return points.reshape(n * k, *shape[1:])


def ascent_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest-ascent direction of unit size in the norm: sign(g) for L∞, g/‖g‖₂ for L2 (per row)."""
    if norm == "inf":
        return grad.sign()
    return grad / _row_norm(grad, "2").clamp_min(max(1e-30, torch.finfo(grad.dtype).tiny))


# -------------------------------------------------------------------------------------------- losses
def margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, n) logits, (B,) labels → (B, n − 1): ``z_y − z_j`` for the classes j ≠ y in increasing order.
    The class changes exactly when one of them is < 0."""
    batch, n = logits.shape
    others = torch.arange(n, device=logits.device).expand(batch, n)
    others = others[others != labels[:, None]].reshape(batch, n - 1)
    return logits.gather(1, labels[:, None]) - logits.gather(1, others)


def ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, n) logits, (B,) labels → (B, 1): minus the cross-entropy (the core minimises; PGD ascends CE)."""
    return -F.cross_entropy(logits, labels, reduction="none")[:, None]


def objective(loss: str, labels: torch.Tensor) -> Objective:
    """The :data:`Objective` of ``loss`` ("margin" or "ce") for the problems' ``labels`` (B,)."""
    fn = margin_loss if check_choice(loss, LOSSES, "loss") == "margin" else ce_loss
    return lambda logits, problems: fn(logits, labels[problems])


# -------------------------------------------------------------------------------------------- search
def pgd_search(model: Attackable, objective: Objective, lower: torch.Tensor | None = None,
               upper: torch.Tensor | None = None, *, center: torch.Tensor | None = None,
               radius: float | torch.Tensor | None = None, norm: str = "2", steps: int = 50, restarts: int = 5,
               seed: int = 0, step_size: float | None = None, starts: str = "centre+box",
               start: torch.Tensor | None = None, stop_below: float | None = None,
               keep: str = "best") -> SearchResult:
    """Minimise ``objective(model(x))`` over the set of each problem by projected gradient descent.

    Set (module doc): box ``lower``/``upper`` (B, \\*shape), either may be None; ball ``center`` (B, \\*shape),
    ``radius`` (number or (B,)) in ``norm``. Runs in the dtype and on the device of these tensors.

    Starts, per problem (``restarts`` of them): ``"centre+box"`` — the first at ``start`` (B, \\*shape) if
    given, else at the ball's centre (the box midpoint when there is no ball or the ball is L∞), the
    others uniform in the box (the ball's bounding box when there is no box: pass a box no larger than
    the set), projected; ``"ball"`` — all uniform in the ball (:func:`random_in_ball`), projected;
    ``"centre"`` — all at ``start``/the centre; ``"spread"`` — the first as for ``"centre+box"``, the others
    spread over the set by :func:`spread_in_ball` (an L2 ball: around its centre; otherwise the box around its
    midpoint, per coordinate), projected.

    Steps: ``steps`` steepest-descent steps (sign of the gradient for a box or L∞ ball, normalised
    gradient for L2), each followed by the projection. ``step_size`` None: a cosine schedule from 0.25 to
    0.5/steps of the set's half-width (per coordinate for a box, the radius for an L2 ball); a number: that
    constant step length. Restart j ≥ 1 descends clause (j − 1) mod K alone (a targeted start); the
    first start the minimum over clauses. With ``stop_below``, the search stops once every problem's
    best value is below it (the attacked rows are pruned every 5 steps).

    ``keep="best"``: the best point per problem over all steps and restarts (the final iterate is
    evaluated too); ``keep="last"`` (one restart only): the last iterate, without a final evaluation.
    """
    norm = check_norm(norm)
    steps = int(steps)
    restarts = check_samples(restarts, "restarts")
    starts = check_choice(starts, STARTS, "starts")
    keep = check_choice(keep, ("best", "last"), "keep")
    if keep == "last" and restarts != 1:
        raise InputError("pgd_search: keep='last' needs restarts=1")
    if center is None and (lower is None or upper is None):
        raise InputError("pgd_search needs a box (lower and upper) or a ball (center and radius)")
    if center is not None and radius is None:
        raise InputError("pgd_search: a center needs a radius")
    ref = center if center is not None else lower
    assert ref is not None                      # a ball or a box, checked above
    batch, device, dtype = ref.shape[0], ref.device, ref.dtype
    gen = torch.Generator(device="cpu").manual_seed(int(seed))

    def rep(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(device, dtype).repeat_interleave(restarts, 0)

    lo, hi, ctr = rep(lower), rep(upper), rep(center)
    rad = torch.as_tensor(radius if center is not None else 0.0).to(device, dtype).reshape(-1).expand(batch)
    rad = rad.repeat_interleave(restarts, 0)    # (zeros, never read, without a ball)
    ndim = ref.dim()
    ball = ctr is not None and norm == "2"
    if ctr is not None and norm == "inf":       # an L∞ ball ∩ box is a box
        ball_lo, ball_hi = linf_box(ctr, rad)
        lo = ball_lo if lo is None else torch.maximum(lo, ball_lo)
        hi = ball_hi if hi is None else torch.minimum(hi, ball_hi)
    init_lo: torch.Tensor | None
    init_hi: torch.Tensor | None
    if ball and starts == "centre+box" and (lo is None or hi is None):   # random starts need a bounded box
        assert ctr is not None
        r = _per_row(rad, ndim)
        init_lo = ctr - r if lo is None else lo
        init_hi = ctr + r if hi is None else hi
    else:
        init_lo, init_hi = lo, hi

    def project_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        if not ball:
            assert lo is not None and hi is not None
            return torch.minimum(torch.maximum(x, lo[rows]), hi[rows])
        assert ctr is not None
        if lo is None and hi is None:
            return project_ball(x, ctr[rows], rad[rows])
        return project_l2_box(x, ctr[rows], rad[rows], None if lo is None else lo[rows],
                              None if hi is None else hi[rows])

    total = batch * restarts
    everything = torch.arange(total, device=device)
    first = torch.arange(batch, device=device) * restarts
    restart_no = torch.arange(restarts, device=device).repeat(batch)
    if starts == "ball":
        if ctr is None:
            raise InputError("pgd_search: starts='ball' needs a center")
        x = ctr + random_in_ball(tuple(ctr.shape), rad.cpu(), norm, gen).to(ctr)
    else:
        if starts == "centre+box":
            assert init_lo is not None and init_hi is not None
            x = init_lo + (init_hi - init_lo) * torch.rand(init_lo.shape, generator=gen,
                                                           dtype=torch.float64).to(device, dtype)
            pick = first
        elif starts == "spread":
            x = torch.empty((total, *ref.shape[1:]), device=device, dtype=dtype)
            pick = first
            others = restart_no > 0
            if restarts > 1:
                shape = (batch, *x.shape[1:])
                if ball:
                    assert ctr is not None
                    unit = spread_in_ball(shape, restarts - 1, 1.0, "2", gen).to(device, dtype)
                    x[others] = ctr[others] + unit * _per_row(rad[others], ndim)
                else:
                    assert init_lo is not None and init_hi is not None
                    unit = spread_in_ball(shape, restarts - 1, 1.0, "inf", gen).to(device, dtype)
                    mid, half = (init_lo[others] + init_hi[others]) / 2, (init_hi[others] - init_lo[others]) / 2
                    x[others] = mid + unit * half
        else:
            x = torch.empty((total, *ref.shape[1:]), device=device, dtype=dtype)
            pick = everything
        if start is not None:
            x[pick] = start.to(device, dtype).repeat_interleave(len(pick) // batch, 0)
        elif ctr is not None and (ball or starts == "centre"):
            x[pick] = ctr[pick]
        else:
            assert lo is not None and hi is not None
            x[pick] = (lo[pick] + hi[pick]) / 2
    x = project_rows(x, everything)
    if step_size is None:
        if ball:
            scale = _per_row(rad, ndim).expand_as(x)
        else:
            assert lo is not None and hi is not None
            scale = (hi - lo) / 2
    problem = torch.arange(batch, device=device).repeat_interleave(restarts)
    best_x = x.clone() if keep == "best" else None
    best_v = torch.full((total,), torch.inf, device=device, dtype=dtype)
    rows = everything                      # rows still attacked: problems not yet below stop_below
    target_of = None
    evaluations = passes = 0
    for t in range(steps + 1):
        if keep == "last" and t == steps:
            break
        xr = x[rows].requires_grad_(True)
        evaluations, passes = evaluations + rows.numel(), passes + 1
        with torch.enable_grad():
            per_clause = objective(model(xr), problem[rows])
            if target_of is None:
                n_clauses = max(per_clause.shape[1], 1)
                target_of = torch.where(restart_no > 0, (restart_no - 1) % n_clauses, torch.full_like(restart_no, -1))
            v = per_clause.detach().amin(dim=1)
            if best_x is not None:
                better = v < best_v[rows]
                best_v[rows[better]] = v[better]
                best_x[rows[better]] = xr.detach()[better]
            aimed = target_of[rows]
            loss = torch.where(aimed >= 0, per_clause.gather(1, aimed.clamp(min=0)[:, None]).squeeze(1),
                               per_clause.amin(dim=1))
        if stop_below is None:
            done = torch.zeros(total, dtype=torch.bool, device=device)
        else:
            done = (best_v.reshape(batch, restarts).amin(1) < stop_below).repeat_interleave(restarts)
        if t == steps or bool(done.all()):
            break
        (grad,) = torch.autograd.grad(loss.sum(), xr)
        with torch.no_grad():
            direction = grad.sign() if not ball else ascent_direction(grad, "2")
            if step_size is None:
                size = 0.25 * (1 + math.cos(math.pi * t / steps)) / 2 + 0.5 / steps
                x[rows] = project_rows(xr.detach() - size * (direction * scale[rows]), rows)
            else:
                x[rows] = project_rows(xr.detach() - step_size * direction, rows)
        if t % 5 == 4:
            rows = everything[~done]
    if best_x is None:
        return SearchResult(x.detach()[first], None, evaluations, passes)
    pick = best_v.reshape(batch, restarts).argmin(1) + first
    return SearchResult(best_x[pick], best_v[pick], evaluations, passes)


# ------------------------------------------------------------------------------------------ front ends
def _labelled_set(x: torch.Tensor, radius: float | torch.Tensor, norm: str, domain: tuple[float, float] | None):
    """Box and ball of :func:`attack`: L∞ → the box ``[x − r, x + r] ∩ domain`` (:func:`linf_box`), attacked
    as a box; L2 → the ball with its bounding box clipped to the domain, or the ball alone (no box: a plain
    radial projection) when every ball's bounding box lies inside the domain."""
    r = torch.as_tensor(radius, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
    rb = _per_row(r, x.dim())
    lo_dom, hi_dom = (-math.inf, math.inf) if domain is None else domain
    if norm == "inf":
        lower, upper = linf_box(x, r)
        return lower.clamp(min=lo_dom), upper.clamp(max=hi_dom), x, r
    if bool(((x - rb) >= lo_dom).all()) and bool(((x + rb) <= hi_dom).all()):
        return None, None, x, r
    lower = torch.full_like(x, lo_dom).maximum(x - rb)
    upper = torch.full_like(x, hi_dom).minimum(x + rb)
    return lower, upper, x, r


def confirm_labels(model: Attackable, x: torch.Tensor, labels: torch.Tensor, lower: torch.Tensor | None = None,
                   upper: torch.Tensor | None = None, center: torch.Tensor | None = None,
                   radius: torch.Tensor | None = None, *, norm: str = "2") -> AttackResult:
    """Check candidates ``x`` (B, \\*shape): :func:`clip_into_set`, then one forward pass of ``model`` on the
    clipped points (in their dtype) and ``found = (some z_j > z_y) & in_set`` (float64 membership check)."""
    x = clip_into_set(x.detach(), lower, upper, center, radius, norm=norm)
    labels = torch.as_tensor(labels, dtype=torch.long)
    with torch.no_grad():
        z = model(x)
        margin = margin_loss(z, labels.to(z.device)).amin(dim=1)
    found = (margin < 0).to(x.device) & in_set(x, lower, upper, center, radius, norm=norm)
    return AttackResult(found, x, z, margin)


def attack(model: Attackable, x: torch.Tensor, labels: torch.Tensor, radius: float | torch.Tensor, *,
           norm: str = "2", loss: str = "margin", domain: tuple[float, float] | None = None, steps: int = 50,
           restarts: int = 5, seed: int = 0, target: float = 1e-5, starts: str = "centre+box") -> AttackResult:
    """Look for a point in the ``norm`` ball of ``radius`` (number or (B,)) around each ``x`` (B, \\*shape),
    clipped to ``domain`` (lo, hi), where ``model``'s class differs from ``labels`` (B,).

    :func:`pgd_search` with ``loss`` ("margin": the clauses ``z_y − z_j``, stopping once every problem's
    margin is below ``−target``; "ce": ascend the cross-entropy), first start at the centre (for L∞, the
    midpoint of the clipped box), the others uniform in the box (``starts="centre+box"``) or spread over the
    set (``starts="spread"``, :func:`spread_in_ball`), cosine step schedule; then :func:`confirm_labels`.
    Runs in ``x``'s dtype and device; only confirmed counterexamples are ``found``.
    """
    norm, loss = check_norm(norm), check_choice(loss, LOSSES, "loss")
    if not isinstance(radius, torch.Tensor):
        check_positive(radius, "radius")
    x = x.detach()
    labels = torch.as_tensor(labels, dtype=torch.long, device=x.device)
    lower, upper, center, r = _labelled_set(x, radius, norm, domain)
    ball = norm == "2"     # an L∞ ball is searched as its box (first start at the box midpoint)
    found = pgd_search(model, objective(loss, labels), lower, upper, center=center if ball else None,
                       radius=r if ball else None, norm=norm, steps=steps, restarts=restarts, seed=seed,
                       stop_below=-target if loss == "margin" else None,
                       starts=check_choice(starts, ("centre+box", "spread"), "starts"))
    return confirm_labels(model, found.inputs, labels, lower, upper, center, r, norm=norm)


def random_search(model: Attackable, x: torch.Tensor, labels: torch.Tensor, radius: float | torch.Tensor, *,
                  norm: str = "2", domain: tuple[float, float] | None = None, samples: int = 2000, seed: int = 0,
                  chunk: int = 1 << 19) -> AttackResult:
    """Dense random sampling in the sets of :func:`attack`: ``samples`` points per ``x`` (B, \\*shape), one forward
    pass each and no gradient, then :func:`confirm_labels` on each problem's point of smallest margin.

    The points are uniform in the set: L∞ — in the box ``[x − r, x + r] ∩ domain``; L2 — in the ball
    (:func:`random_in_ball`), clamped to the domain (clamping toward a box that holds the centre stays in the
    ball). It finds what descent cannot: a region of another class inside the ball that no gradient leads to
    (a flat or opposing slope around it). A region filling a fraction p of the set is missed with probability
    (1 − p)^samples. At most ``chunk`` input values are evaluated per forward pass. Runs in ``x``'s dtype and
    device; only confirmed counterexamples are ``found``.
    """
    norm = check_norm(norm)
    samples = check_samples(samples, "samples")
    if not isinstance(radius, torch.Tensor):
        check_positive(radius, "radius")
    x = x.detach()
    labels = torch.as_tensor(labels, dtype=torch.long, device=x.device)
    lower, upper, center, r = _labelled_set(x, radius, norm, domain)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    batch, shape = x.shape[0], tuple(x.shape[1:])
    per = max(1, chunk // (samples * max(1, int(np.prod(shape)))))
    best = x.clone()
    for start in range(0, batch, per):
        rows = torch.arange(start, min(batch, start + per), device=x.device).repeat_interleave(samples)
        if norm == "inf":
            u = torch.rand((len(rows), *shape), generator=gen, dtype=torch.float32).to(x)
            points = lower[rows] + (upper[rows] - lower[rows]) * u
        else:   # in the ball up to rounding (confirm_labels pulls the chosen point in); clamped to the domain
            points = x[rows] + random_in_ball((len(rows), *shape), r[rows].float().cpu(), norm, gen).to(x)
            if lower is not None:
                points = _clamp(points, lower[rows], upper[rows])
        with torch.no_grad():
            z = model(points)
            y = labels[rows].to(z.device)[:, None]
            margin = z.gather(1, y).squeeze(1) - z.scatter(1, y, -torch.inf).amax(dim=1)
        pick = margin.reshape(-1, samples).argmin(dim=1)
        best[start:start + len(pick)] = points.reshape(-1, samples, *shape)[torch.arange(len(pick)), pick]
    return confirm_labels(model, best, labels, lower, upper, center, r, norm=norm)


def pgd(model: Attackable, x: torch.Tensor, y: torch.Tensor, *, radius: float, norm: str = "2", steps: int = 10,
        step_size: float | None = None, random_start: bool = True, seed: int = 0,
        domain: tuple[float, float] | None = None, loss: str = "ce") -> torch.Tensor:
    """Perturbations δ (same shape as x) with ‖δ_i‖ ≤ radius that ascend ``loss`` (CE by default) at x + δ.

    :func:`pgd_search` from one start (uniform in the ball, or x itself without ``random_start``), ``steps``
    steepest-ascent steps of constant length ``step_size`` (default 2.5·radius/steps), the last iterate
    kept. With ``domain`` (which must contain x) x + δ also stays in the box: clipping towards a box
    containing x never lengthens δ, so δ stays in the ball. Only the input receives gradients.
    """
    norm, radius = check_norm(norm), check_positive(radius, "radius")
    steps = check_samples(steps, "steps")
    alpha = 2.5 * radius / steps if step_size is None else check_positive(step_size, "step_size")
    x = x.detach()
    if domain is not None and (x.min() < domain[0] or x.max() > domain[1]):
        raise InputError(f"pgd: the points must lie in the domain [{domain[0]:g}, {domain[1]:g}]")
    lower = upper = None
    if domain is not None:
        lower, upper = torch.full_like(x, domain[0]), torch.full_like(x, domain[1])
    found = pgd_search(model, objective(loss, torch.as_tensor(y, device=x.device)), lower, upper, center=x,
                       radius=radius, norm=norm, steps=steps, restarts=1, seed=seed, step_size=alpha,
                       starts="ball" if random_start else "centre", keep="last")
    # the iterate lives in input coordinates: make δ exact (in the ball, x + δ in the domain)
    delta = project(found.inputs - x, radius, norm)
    return delta if domain is None else torch.clamp(x + delta, domain[0], domain[1]) - x
