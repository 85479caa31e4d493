"""Falsification by projected gradient descent (PGD) on the property's violation.

The attack looks for x in the input set with f(x) in the unsafe set of an
:class:`~pacverify.verify.property.OutputProperty` by minimising its ``violation``
``min_k max_{r∈k} (C_r·f(x) − d_r)`` (for robustness: the margin ``min_j z_y − z_j``), with random
restarts, batched over problems and restarts, seeded.

Input sets, per problem b: the box ``[lower_b, upper_b]``, intersected with the Euclidean ball
``‖x − center_b‖₂ ≤ radius_b`` when a ``center`` is given (an L2 ball clipped to a domain box).
Projection onto the box is clamping; onto ball ∩ box, a few Dykstra steps (which converge to the
exact projection onto the intersection) followed by a radial shrink toward the centre and a
final clamp, so the point is in the set up to the float64 check that follows.

Guarantee: a problem is reported ``found`` only if its point passes a final check — inside the
box exactly, inside the ball (float64 norm ≤ radius), and unsafe in a plain float64 forward pass
of the network (``Network.forward``). Nothing is claimed about problems not found.
"""
from __future__ import annotations

from dataclasses import dataclass

import math

import torch

from pacverify.verify.linear_bounds import lower_bound_coefficients
from pacverify.verify.network import Network
from pacverify.verify.property import OutputProperty
from pacverify.verify.sets import InputSet, L2Ball

_SHRINK = 1.0 - 1e-9   # radial safety factor for the L2 ball against rounding in the final check


@dataclass(frozen=True)
class AttackResult:
    """Per problem b: ``found[b]`` (a confirmed counterexample), ``inputs[b]`` (B, m) float64 — the
    best point seen (inside the set; a counterexample when found), ``outputs[b]`` (B, n) float64 its
    network output, ``violation[b]`` its property violation (≤ 0, or < 0 for strict, when found)."""

    found: torch.Tensor
    inputs: torch.Tensor
    outputs: torch.Tensor
    violation: torch.Tensor


def project_l2_box(x: torch.Tensor, center: torch.Tensor, radius: torch.Tensor, lower: torch.Tensor,
                   upper: torch.Tensor, *, iters: int = 8) -> torch.Tensor:
    """A point of ``{‖z − center‖₂ ≤ radius} ∩ [lower, upper]`` near ``x`` (all (B, m); radius (B,)).

    Dykstra's alternating projections (``iters`` rounds), then shrink toward ``center`` by
    ``radius/‖z − center‖·(1 − 1e-9)`` if outside the ball, then clamp to the box. Clamping cannot
    move a point away from a centre inside the box (projections are non-expansive), so for a
    centre in the box the result lies in both sets up to float rounding.
    """
    radius = radius.reshape(-1, 1)
    p = torch.zeros_like(x)
    q = torch.zeros_like(x)
    y = x
    for _ in range(iters):
        z = torch.minimum(torch.maximum(y + p, lower), upper)
        p = y + p - z
        y = _project_ball(z + q, center, radius)
        q = z + q - y
    y = _project_ball(y, center, radius * _SHRINK)
    return torch.minimum(torch.maximum(y, lower), upper)


def _project_ball(x: torch.Tensor, center: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    diff = x - center
    norm = diff.norm(dim=1, keepdim=True)
    scale = torch.where(norm > radius, radius / norm.clamp_min(torch.finfo(x.dtype).tiny), torch.ones_like(norm))
    return center + diff * scale


def in_set(x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, center: torch.Tensor | None = None,
           radius: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) bool: ``x`` (B, m) lies in the box and, if ``center`` is given, in the L2 ball (float64 check)."""
    x = x.double()
    ok = ((x >= lower.double()) & (x <= upper.double())).all(dim=1)
    if center is not None:
        ok &= (x - center.double()).norm(dim=1) <= radius.double().reshape(-1)
    return ok


def pgd_attack(net: Network, prop: OutputProperty, lower: torch.Tensor, upper: torch.Tensor, *,
               center: torch.Tensor | None = None, radius: torch.Tensor | None = None, steps: int = 50,
               restarts: int = 5, seed: int = 0, target: float = 1e-5, start: torch.Tensor | None = None
               ) -> AttackResult:
    """PGD with ``restarts`` starts per problem (the first at the set's centre, the others uniform at
    random in the box, projected), ``steps`` signed-gradient (box) or normalised-gradient (ball) steps
    whose size decays from 0.25 to 0.5/steps of the set's half-width (radius) on a cosine schedule;
    the first start descends the violation itself, start j >= 1 the violation of clause (j − 1) mod K
    alone (a targeted attack: for robustness, one target class per start). Stops early once every
    problem's violation is below ``−target``. ``start`` (B, m), if given, replaces the centre as the
    first start.

    Shapes: ``lower``/``upper`` (B, m); ``center`` (B, m) and ``radius`` (B,) for ball ∩ box; ``prop``
    of batch B. Runs in the network's dtype and device; the final check is float64 (module doc).
    """
    batch, m = lower.shape
    device, dtype = net.device, net.dtype
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    lo = lower.to(device, dtype).repeat_interleave(restarts, 0)
    hi = upper.to(device, dtype).repeat_interleave(restarts, 0)
    ctr = rad = None
    if center is not None:
        ctr = center.to(device, dtype).repeat_interleave(restarts, 0)
        rad = radius.to(device, dtype).reshape(-1).repeat_interleave(restarts, 0)
    rep = prop.select(torch.arange(batch).repeat_interleave(restarts)).to(device, dtype)

    def project(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        if ctr is None:
            return torch.minimum(torch.maximum(x, lo[rows]), hi[rows])
        return project_l2_box(x, ctr[rows], rad[rows], lo[rows], hi[rows])

    everything = torch.arange(batch * restarts, device=device)
    x = lo + (hi - lo) * torch.rand(lo.shape, generator=gen, dtype=torch.float64).to(device, dtype)
    first = torch.arange(batch, device=device) * restarts
    if start is not None:
        x[first] = start.to(device, dtype)
    else:
        x[first] = ctr[first] if ctr is not None else (lo[first] + hi[first]) / 2
    x = project(x, everything)
    scale = (hi - lo) / 2 if ctr is None else rad[:, None].expand_as(x)
    best_x, best_v = x.clone(), torch.full((batch * restarts,), torch.inf, device=device, dtype=dtype)
    rows = everything                      # rows still attacked: problems without a counterexample yet
    start = torch.arange(restarts, device=device).repeat(batch)
    target_of = torch.where(start > 0, (start - 1) % max(prop.n_clauses, 1), torch.full_like(start, -1))
    for t in range(steps + 1):
        xr = x[rows].requires_grad_(True)
        per_clause = rep.select(rows.cpu()).clause_violation(net(xr))
        v = per_clause.detach().amin(dim=1)
        better = v < best_v[rows]
        best_v[rows[better]] = v[better]
        best_x[rows[better]] = xr.detach()[better]
        aimed = target_of[rows]
        loss = torch.where(aimed >= 0, per_clause.gather(1, aimed.clamp(min=0)[:, None]).squeeze(1),
                           per_clause.amin(dim=1))
        done = (best_v.reshape(batch, restarts).amin(1) < -target).repeat_interleave(restarts)
        if t == steps or bool(done.all()):
            break
        (grad,) = torch.autograd.grad(loss.sum(), xr)
        size = 0.25 * (1 + math.cos(math.pi * t / steps)) / 2 + 0.5 / steps
        with torch.no_grad():
            if ctr is None:
                step = grad.sign() * scale[rows]
            else:
                step = grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-30) * scale[rows]
            x[rows] = project(xr.detach() - size * step, rows)
        if t % 5 == 4:
            rows = everything[~done]
    pick = best_v.reshape(batch, restarts).argmin(1) + torch.arange(batch, device=device) * restarts
    return confirm(net, prop, best_x[pick], lower, upper, center=center, radius=radius)


def confirm(net: Network, prop: OutputProperty, x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, *,
            center: torch.Tensor | None = None, radius: torch.Tensor | None = None) -> AttackResult:
    """Check candidate points ``x`` (B, m): clamp to the box (exact), shrink into the ball if needed,
    then ``found = in_set & unsafe`` in a float64 forward pass. The returned ``inputs`` are the checked points."""
    x = x.detach().to("cpu", torch.float64)
    lower, upper = lower.to("cpu", torch.float64), upper.to("cpu", torch.float64)
    x = torch.minimum(torch.maximum(x, lower), upper)
    if center is not None:
        center = center.to("cpu", torch.float64)
        radius = radius.to("cpu", torch.float64).reshape(-1)
        x = torch.minimum(torch.maximum(_project_ball(x, center, radius[:, None] * _SHRINK), lower), upper)
    net64 = net.to("cpu", torch.float64)
    prop64 = prop.to("cpu", torch.float64)
    with torch.no_grad():
        y = net64(x)
        v = prop64.violation(y)
        found = prop64.is_unsafe(y) & in_set(x, lower, upper, center, radius)
    return AttackResult(found, x, y, v)


def attack_set(net: Network, input_set: InputSet, prop: OutputProperty, *, seed: int = 0, steps: int = 50,
               restarts: int = 5, chunk: int = 2048) -> AttackResult:
    """:func:`pgd_attack` on a :class:`~pacverify.verify.sets.Box` or :class:`~pacverify.verify.sets.L2Ball`
    batch, ``chunk`` problems at a time (memory: chunk × restarts × input size); same guarantee."""
    parts = []
    for start in range(0, input_set.batch_size, chunk):
        index = torch.arange(start, min(start + chunk, input_set.batch_size))
        part = input_set.select(index)
        lower, upper = part.interval()
        center = radius = None
        if isinstance(part, L2Ball):
            center, radius = part.center, part.radius
        parts.append(pgd_attack(net, prop.select(index), lower, upper, center=center, radius=radius, steps=steps,
                                restarts=restarts, seed=seed + start))
    return AttackResult(*(torch.cat([getattr(p, name) for p in parts])
                          for name in ("found", "inputs", "outputs", "violation")))


def bound_minimisers(net: Network, input_set: InputSet, C: torch.Tensor, splits=None) -> torch.Tensor:
    """Per problem b and specification row k, the input minimising CROWN's linear lower bound ``A_bk·x + c``
    of ``C_bk·f(x)`` over set b: (B, K, m).

    For a box that is the vertex ``lower`` where ``A > 0`` and ``upper`` elsewhere; for an L2 ball
    ``x0 − r·A/‖A‖₂``, clamped to the domain box if there is one (clamping toward a box that holds the
    centre keeps the point in the ball). Where the relaxation is tight these are the points where the
    specification is smallest, hence good counterexample candidates (they are only candidates: the
    caller confirms them). ``splits`` restricts the relaxation to a subdomain, as in the bound routines.
    """
    s = input_set.to(net.device, net.dtype)
    A = lower_bound_coefficients(net, s, C, splits)
    if isinstance(s, L2Ball):
        norm = A.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(A.dtype).tiny)
        x = s.center[:, None, :] - s.radius[:, None, None] * A / norm
        if s.has_domain:
            x = torch.minimum(torch.maximum(x, s.domain_lower[:, None, :]), s.domain_upper[:, None, :])
        return x
    return torch.where(A > 0, s.lower[:, None, :], s.upper[:, None, :])


def bound_guided_attack(net: Network, input_set: InputSet, prop: OutputProperty, *, splits=None, seed: int = 0,
                        steps: int = 20) -> AttackResult:
    """Check the bound minimisers of every row (:func:`bound_minimisers`) and run a short PGD from them.

    Same guarantee as :func:`pgd_attack`: ``found`` only for confirmed points of the set. ``input_set``
    and ``prop`` have batch B; the best candidate per problem is returned.
    """
    batch, rows = input_set.batch_size, prop.C.shape[1]
    cand = bound_minimisers(net, input_set, prop.C, splits).reshape(batch * rows, -1)
    index = torch.arange(batch).repeat_interleave(rows)
    lower, upper = input_set.interval()
    center = radius = None
    if isinstance(input_set, L2Ball):
        center, radius = input_set.center[index], input_set.radius[index]
    rep = prop.select(index)
    checked = confirm(net, rep, cand, lower[index], upper[index], center=center, radius=radius)
    if steps and not bool(checked.found.all()):
        refined = pgd_attack(net, rep, lower[index], upper[index], center=center, radius=radius, steps=steps,
                             restarts=1, seed=seed, start=checked.inputs)
        better = refined.found & ~checked.found
        checked = AttackResult(*(torch.where(better.reshape(-1, *([1] * (a.dim() - 1))), b, a)
                                 for a, b in zip((checked.found, checked.inputs, checked.outputs, checked.violation),
                                                 (refined.found, refined.inputs, refined.outputs, refined.violation))))
    score = torch.where(checked.found, checked.violation - torch.inf, checked.violation).reshape(batch, rows)
    pick = score.argmin(1) + torch.arange(batch) * rows
    return AttackResult(checked.found[pick], checked.inputs[pick], checked.outputs[pick], checked.violation[pick])
