"""Falsification by projected gradient descent (PGD) on the property's violation.

The attack looks for x in the input set with f(x) in the unsafe set of an
:class:`~pacverify.verify.property.OutputProperty` by minimising its ``violation``
``min_k max_{r∈k} (C_r·f(x) − d_r)`` (for robustness: the margin ``min_j z_y − z_j``), with random
restarts, batched over problems and restarts, seeded. The search itself is the package's one attack
core, :func:`pacverify.attacks.pgd_search` (a :class:`~pacverify.network.Network` is an
:class:`~pacverify.attacks.Attackable`); this module adds what is specific to the verifier: the
property as the objective, the input-set types, the float64 confirmation and the bound-guided starts.

Input sets, per problem b: the box ``[lower_b, upper_b]``, intersected with the Euclidean ball
``‖x − center_b‖₂ ≤ radius_b`` when a ``center`` is given (an L2 ball clipped to a domain box).
Projection onto the box is clamping; onto ball ∩ box, a few Dykstra steps (which converge to the
exact projection onto the intersection) followed by a radial shrink toward the centre and a
final clamp, so the point is in the set up to the float64 check that follows
(:func:`pacverify.attacks.project_l2_box`); where every ball lies inside its box (no domain cuts it), the
radial projection onto the ball alone.

Guarantee: a problem is reported ``found`` only if its point passes a final check — inside the
box exactly, inside the ball (float64 norm ≤ radius), and unsafe in a plain float64 forward pass
of the network (``Network.forward``). Nothing is claimed about problems not found.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from pacverify.attacks import AttackResult, clip_into_set, in_set, pgd_search
from pacverify.network import Network
from pacverify.verify.bounds.coefficients import lower_bound_coefficients
from pacverify.verify.bounds.common import chunks_side_by_side
from pacverify.verify.property import OutputProperty
from pacverify.verify.sets import InputSet, L2Ball

__all__ = ["AttackResult", "attack_set", "bound_guided_attack", "bound_minimisers", "confirm", "pgd_attack"]


def _ball_radius(radius: torch.Tensor | None) -> torch.Tensor:
    """The radius that must come with a ``center``."""
    if radius is None:
        raise ValueError("a center (ball ∩ box) needs its radius")
    return radius


def _box_holds_ball(lower: torch.Tensor, upper: torch.Tensor, center: torch.Tensor, radius: torch.Tensor) -> bool:
    """Every L2 ball ``‖x − center_b‖₂ ≤ radius_b`` lies inside its box (then ball ∩ box is the ball)."""
    r = radius.reshape(-1, 1)
    return bool(((center - r) >= lower).all()) and bool(((center + r) <= upper).all())


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
    first start. (:func:`pacverify.attacks.pgd_search` with the property's clause violations.)

    Shapes: ``lower``/``upper`` (B, m); ``center`` (B, m) and ``radius`` (B,) for ball ∩ box; ``prop``
    of batch B. Runs in the network's dtype and device; the final check is float64 (module doc).
    """
    device, dtype = net.device, net.dtype
    prop_on = prop.to(device, dtype)

    def violation(logits: torch.Tensor, problems: torch.Tensor) -> torch.Tensor:
        return prop_on.select(problems.cpu()).clause_violation(logits)

    # a ball inside its box is attacked alone: a radial projection, not Dykstra's alternating ones
    ball_only = center is not None and _box_holds_ball(lower, upper, center, _ball_radius(radius))
    box_lower = None if ball_only else lower.to(device, dtype)
    box_upper = None if ball_only else upper.to(device, dtype)
    ball_center = None if center is None else center.to(device, dtype)
    ball_radius = None if center is None else _ball_radius(radius).to(device, dtype)
    found = pgd_search(net, violation, box_lower, box_upper, center=ball_center, radius=ball_radius, norm="2",
                       steps=steps, restarts=restarts, seed=seed, start=start, stop_below=-target)
    checked = confirm(net, prop, found.inputs, lower, upper, center=center, radius=radius)
    return replace(checked, evaluations=found.evaluations + checked.found.numel(), passes=found.passes + 1)


def confirm(net: Network, prop: OutputProperty, x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, *,
            center: torch.Tensor | None = None, radius: torch.Tensor | None = None) -> AttackResult:
    """Check candidate points ``x`` (B, m): clamp to the box (exact), shrink into the ball if needed,
    then ``found = in_set & unsafe`` in a float64 forward pass. The returned ``inputs`` are the checked points."""
    lower, upper = lower.to("cpu", torch.float64), upper.to("cpu", torch.float64)
    if center is not None:
        center = center.to("cpu", torch.float64)
        radius = _ball_radius(radius).to("cpu", torch.float64).reshape(-1)
    x = clip_into_set(x.detach().to("cpu", torch.float64), lower, upper, center, radius)
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
    batch, ``chunk`` problems at a time (memory: chunk × restarts × input size per worker), chunk i seeded with
    ``seed + i·chunk``; with several torch threads the chunks run side by side
    (:func:`~pacverify.verify.bounds.common.chunks_side_by_side`: same result); same guarantee."""
    def one(start: int) -> AttackResult:
        index = torch.arange(start, min(start + chunk, input_set.batch_size))
        part = input_set.select(index)
        lower, upper = part.interval()
        center = radius = None
        if isinstance(part, L2Ball):
            center, radius = part.center, part.radius
        return pgd_attack(net, prop.select(index), lower, upper, center=center, radius=radius, steps=steps,
                          restarts=restarts, seed=seed + start)

    parts = chunks_side_by_side(net, range(0, input_set.batch_size, chunk), one)
    found, inputs, outputs, violation = (torch.cat([getattr(p, name) for p in parts])
                                         for name in ("found", "inputs", "outputs", "violation"))
    return AttackResult(found, inputs, outputs, violation, sum(p.evaluations for p in parts),
                        sum(p.passes for p in parts))


def bound_minimisers(net: Network, input_set: InputSet, C: torch.Tensor, splits=None, intermediate=None
                     ) -> torch.Tensor:
    """Per problem b and specification row k, the input minimising CROWN's linear lower bound ``A_bk·x + c``
    of ``C_bk·f(x)`` over set b: (B, K, m).

    For a box that is the vertex ``lower`` where ``A > 0`` and ``upper`` elsewhere; for an L2 ball
    ``x0 − r·A/‖A‖₂``, clamped to the domain box if there is one (clamping toward a box that holds the
    centre keeps the point in the ball). Where the relaxation is tight these are the points where the
    specification is smallest, hence good counterexample candidates (they are only candidates: the
    caller confirms them). ``splits`` restricts the relaxation to a subdomain and ``intermediate`` gives
    pre-activation bounds, as in the bound routines.
    """
    s = input_set.to(net.device, net.dtype)
    A = lower_bound_coefficients(net, s, C, splits, intermediate)
    if isinstance(s, L2Ball):
        norm = A.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(A.dtype).tiny)
        x = s.center[:, None, :] - s.radius[:, None, None] * A / norm
        if s.domain_lower is not None and s.domain_upper is not None:
            x = torch.minimum(torch.maximum(x, s.domain_lower[:, None, :]), s.domain_upper[:, None, :])
        return x
    return torch.where(A > 0, s.lower[:, None, :], s.upper[:, None, :])


def bound_guided_attack(net: Network, input_set: InputSet, prop: OutputProperty, *, splits=None, intermediate=None,
                        seed: int = 0, steps: int = 20) -> AttackResult:
    """Check the bound minimisers of every row (:func:`bound_minimisers`) and run a short PGD from them.

    Same guarantee as :func:`pgd_attack`: ``found`` only for confirmed points of the set. ``input_set``
    and ``prop`` have batch B (``splits`` and ``intermediate`` as in :func:`bound_minimisers`); the best
    candidate per problem is returned. ``evaluations`` and ``passes`` count the
    candidates' check and the PGD's, not the CROWN pass that finds the minimisers.
    """
    batch, rows = input_set.batch_size, prop.C.shape[1]
    cand = bound_minimisers(net, input_set, prop.C, splits, intermediate).reshape(batch * rows, -1)
    index = torch.arange(batch).repeat_interleave(rows)
    lower, upper = input_set.interval()
    center = radius = None
    if isinstance(input_set, L2Ball):
        center, radius = input_set.center[index], input_set.radius[index]
    rep = prop.select(index)
    checked = confirm(net, rep, cand, lower[index], upper[index], center=center, radius=radius)
    evaluations, passes = batch * rows, 1
    if steps and not bool(checked.found.all()):
        refined = pgd_attack(net, rep, lower[index], upper[index], center=center, radius=radius, steps=steps,
                             restarts=1, seed=seed, start=checked.inputs)
        evaluations, passes = evaluations + refined.evaluations, passes + refined.passes
        better = refined.found & ~checked.found
        found, inputs, outputs, violation = (
            torch.where(better.reshape(-1, *([1] * (a.dim() - 1))), b, a)
            for a, b in zip((checked.found, checked.inputs, checked.outputs, checked.violation),
                            (refined.found, refined.inputs, refined.outputs, refined.violation), strict=True))
        checked = AttackResult(found, inputs, outputs, violation)
    score = torch.where(checked.found, checked.violation - torch.inf, checked.violation).reshape(batch, rows)
    pick = score.argmin(1) + torch.arange(batch) * rows
    return AttackResult(checked.found[pick], checked.inputs[pick], checked.outputs[pick], checked.violation[pick],
                        evaluations, passes)
