"""Input sets the verifier bounds a network over: L∞ boxes and L2 balls, batched over points.

Every set holds a batch of ``B`` points in ``R^n`` (inputs flattened in C order, as
:class:`pacverify.network.Network` takes them):

* :class:`Box` — per-coordinate bounds ``lower <= x <= upper``, shape (B, n) each. An L∞ ball of
  radius r around x is the box ``[x - r, x + r]``; VNN-LIB properties give boxes directly.
* :class:`L2Ball` — ``{x : ||x - center||_2 <= radius}``, centre (B, n), radius (B,), optionally
  intersected with a domain box (e.g. pixels in [0, 1]).

The one operation bound propagation needs from a set is the range of a linear function over it:
:meth:`Box.linear_min` / :meth:`L2Ball.linear_min` return a sound lower bound of
``min_{x in set} a·x`` for every row ``a`` of ``A`` (and ``linear_max`` the matching upper bound):

* box: ``a·mid - |a|·rad`` with ``mid = (lower + upper)/2``, ``rad = (upper - lower)/2`` — exact;
* L2 ball: ``a·x0 - r·||a||_2`` (Hölder's inequality with the dual norm) — exact;
* L2 ball ∩ domain box — the relaxation used: the intersection lies both in the ball and in the box
  ``[max(x0 - r, lo), min(x0 + r, hi)]``, so the larger of the two lower bounds above (and the
  smaller of the two upper bounds) is sound. It is exact whenever one of the two sets is the
  binding one (in particular when the ball lies inside the domain), and may be loose otherwise.
  Per-coordinate (interval) bounds of the intersection are ``[max(x0 - r, lo), min(x0 + r, hi)]``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np
import torch

from pacverify.errors import InputError
from pacverify.validation import check_norm

Domain = tuple  # (lower, upper): scalars, (n,) or (B, n) array-likes


def _as_tensor(name: str, value, dtype: torch.dtype | None, device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        out = value.detach().to(device=device, dtype=dtype or (value.dtype if value.is_floating_point()
                                                                else torch.float64))
    else:
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"{name} must be an array of numbers, got {type(value).__name__}") from None
        out = torch.as_tensor(array, dtype=dtype or torch.float64, device=device)
    if torch.isnan(out).any():
        raise InputError(f"{name} contains NaN")
    return out


def _check_points(name: str, points: torch.Tensor) -> torch.Tensor:
    """Flatten (B, *shape) to (B, n); refuse empty or non-finite batches."""
    if points.dim() < 2:
        raise InputError(f"{name} must have a leading batch dimension: shape (B, n) or (B, *input_shape), "
                         f"got shape {tuple(points.shape)}")
    if points.shape[0] == 0 or points[0].numel() == 0:
        raise InputError(f"{name} is empty (shape {tuple(points.shape)})")
    points = points.reshape(points.shape[0], -1)
    if not torch.isfinite(points).all():
        raise InputError(f"{name} must be finite (found ±inf)")
    return points


def _per_point(name: str, value: torch.Tensor, batch: int) -> torch.Tensor:
    """A scalar or (B,) value (a radius) broadcast to shape (B,)."""
    if value.dim() == 0:
        return value.expand(batch).clone()
    if value.dim() == 1 and value.shape[0] == batch:
        return value
    raise InputError(f"{name} must be a number or one value per point (shape ({batch},)), "
                     f"got shape {tuple(value.shape)}")


def _per_coordinate(name: str, value: torch.Tensor, batch: int, dim: int) -> torch.Tensor:
    """A scalar, (n,) or (B, n) value (domain bounds) broadcast to shape (B, n)."""
    if value.numel() == 1 or value.numel() == dim:
        return value.reshape(1, -1).expand(batch, dim).clone()
    if value.numel() == batch * dim and value.dim() >= 2 and value.shape[0] == batch:
        return value.reshape(batch, dim)
    raise InputError(f"{name} must be a number, one value per coordinate ({dim},) or per point and coordinate "
                     f"({batch}, {dim}), got shape {tuple(value.shape)}")


@dataclass(frozen=True)
class Box:
    """The batch of boxes ``lower[b] <= x <= upper[b]``; ``lower`` and ``upper`` have shape (B, n).

    Invariants (checked): same shape, finite, ``lower <= upper``.
    """

    lower: torch.Tensor
    upper: torch.Tensor

    def __post_init__(self) -> None:
        if self.lower.shape != self.upper.shape or self.lower.dim() != 2:
            raise InputError(f"box bounds must both have shape (B, n), got {tuple(self.lower.shape)} and "
                             f"{tuple(self.upper.shape)}")
        if not (torch.isfinite(self.lower).all() and torch.isfinite(self.upper).all()):
            raise InputError("box bounds must be finite numbers (no NaN or ±inf)")
        if (self.lower > self.upper).any():
            bad = torch.nonzero(self.lower > self.upper)[0].tolist()
            raise InputError(f"box lower bound exceeds its upper bound at point {bad[0]}, coordinate {bad[1]}")

    @property
    def batch_size(self) -> int:
        return self.lower.shape[0]

    @property
    def dim(self) -> int:
        return self.lower.shape[1]

    @property
    def device(self) -> torch.device:
        return self.lower.device

    @property
    def center(self) -> torch.Tensor:
        return (self.lower + self.upper) / 2

    def interval(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-coordinate bounds (lower, upper), each (B, n)."""
        return self.lower, self.upper

    def linear_min(self, A: torch.Tensor) -> torch.Tensor:
        """``min_{x in box} A[b,k]·x`` exactly, shape (B, K), for ``A`` of shape (B, K, n) or (K, n)."""
        mid, rad = (self.lower + self.upper) / 2, (self.upper - self.lower) / 2
        return batched_matvec(A, mid) - batched_matvec(A.abs(), rad)

    def linear_max(self, A: torch.Tensor) -> torch.Tensor:
        """``max_{x in box} A[b,k]·x`` exactly, shape (B, K)."""
        mid, rad = (self.lower + self.upper) / 2, (self.upper - self.lower) / 2
        return batched_matvec(A, mid) + batched_matvec(A.abs(), rad)

    def linear_min_rows(self, A: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        """``min_{x in box of point owner[t]} A[t]·x`` exactly, shape (T,), for rows A (T, n)."""
        mid, rad = ((self.lower + self.upper) / 2).index_select(0, owner), ((self.upper - self.lower) / 2).index_select(
            0, owner)
        return torch.einsum("tn,tn->t", A, mid) - torch.einsum("tn,tn->t", A.abs(), rad)

    def select(self, index) -> "Box":
        """The sub-batch ``index`` (a slice, index tensor or boolean mask over the B points)."""
        return Box(self.lower[index], self.upper[index])

    def to(self, device=None, dtype=None) -> "Box":
        """The box on ``device`` in ``dtype``, rounded outward so that it still contains the original box."""
        return Box(round_outward(self.lower, dtype, -1).to(device), round_outward(self.upper, dtype, +1).to(device))


@dataclass(frozen=True)
class L2Ball:
    """The batch of sets ``{x : ||x - center[b]||_2 <= radius[b]}``, optionally ∩ ``[domain_lower, domain_upper]``.

    ``center`` (B, n); ``radius`` (B,), each >= 0; ``domain_lower``/``domain_upper`` (B, n) or both None.
    Invariants (checked): finite, radii >= 0, domain lower <= upper, every centre inside its domain
    (so the intersection is never empty).
    """

    center: torch.Tensor
    radius: torch.Tensor
    domain_lower: torch.Tensor | None = None
    domain_upper: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.center.dim() != 2 or self.radius.shape != (self.center.shape[0],):
            raise InputError(f"an L2 ball needs centre (B, n) and radius (B,), got {tuple(self.center.shape)} and "
                             f"{tuple(self.radius.shape)}")
        if not (torch.isfinite(self.center).all() and torch.isfinite(self.radius).all()):
            raise InputError("L2 ball centre and radius must be finite numbers (no NaN or ±inf)")
        if (self.radius < 0).any():
            raise InputError(f"L2 ball radius must be >= 0, got {self.radius.min().item()!r}")
        if (self.domain_lower is None) != (self.domain_upper is None):
            raise InputError("give both domain bounds or neither")
        if self.domain_lower is not None and self.domain_upper is not None:  # both or neither (checked above)
            Box(self.domain_lower, self.domain_upper)  # shape, finiteness and order checks
            if self.domain_lower.shape != self.center.shape:
                raise InputError(f"domain bounds must have the centre's shape {tuple(self.center.shape)}, "
                                 f"got {tuple(self.domain_lower.shape)}")
            outside = (self.center < self.domain_lower) | (self.center > self.domain_upper)
            if outside.any():
                b, i = torch.nonzero(outside)[0].tolist()
                raise InputError(f"point {b} lies outside the domain box at coordinate {i}; points must lie in "
                                 f"the domain")

    @property
    def batch_size(self) -> int:
        return self.center.shape[0]

    @property
    def dim(self) -> int:
        return self.center.shape[1]

    @property
    def device(self) -> torch.device:
        return self.center.device

    @property
    def has_domain(self) -> bool:
        return self.domain_lower is not None

    def bounding_box(self) -> Box:
        """The smallest box holding the set's ball-bounding box ∩ domain: ``[max(x0 - r, lo), min(x0 + r, hi)]``."""
        r = self.radius[:, None]
        lower, upper = self.center - r, self.center + r
        if self.domain_lower is not None and self.domain_upper is not None:
            lower, upper = torch.maximum(lower, self.domain_lower), torch.minimum(upper, self.domain_upper)
        return Box(lower, upper)

    def interval(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-coordinate bounds (lower, upper), each (B, n)."""
        return self.bounding_box().interval()

    def linear_min(self, A: torch.Tensor) -> torch.Tensor:
        """A sound lower bound of ``min_{x in set} A[b,k]·x``, shape (B, K), for A (B, K, n) or (K, n).

        Ball alone: ``A·x0 - r·||A||_2`` (exact). With a domain: the maximum of that and the
        bound over :meth:`bounding_box` (module docstring).
        """
        out = batched_matvec(A, self.center) - self.radius[:, None] * _row_norms(A)
        if self.has_domain:
            out = torch.maximum(out, self.bounding_box().linear_min(A))
        return out

    def linear_max(self, A: torch.Tensor) -> torch.Tensor:
        """A sound upper bound of ``max_{x in set} A[b,k]·x``, shape (B, K)."""
        out = batched_matvec(A, self.center) + self.radius[:, None] * _row_norms(A)
        if self.has_domain:
            out = torch.minimum(out, self.bounding_box().linear_max(A))
        return out

    def linear_min_rows(self, A: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        """A sound lower bound of ``min_{x in set of point owner[t]} A[t]·x``, shape (T,), for rows A (T, n)."""
        out = torch.einsum("tn,tn->t", A, self.center.index_select(0, owner)) - self.radius.index_select(
            0, owner) * torch.linalg.vector_norm(A, dim=1)
        if self.has_domain:
            out = torch.maximum(out, self.bounding_box().linear_min_rows(A, owner))
        return out

    def select(self, index) -> "L2Ball":
        """The sub-batch ``index`` (a slice, index tensor or boolean mask over the B points)."""
        if self.domain_lower is None or self.domain_upper is None:
            return L2Ball(self.center[index], self.radius[index])
        return L2Ball(self.center[index], self.radius[index], self.domain_lower[index], self.domain_upper[index])

    def to(self, device=None, dtype=None) -> "L2Ball":
        """The set on ``device`` in ``dtype``, enlarged to contain the original set despite rounding: the radius
        grows by the distance the centre moved (rounded up), the domain is rounded outward."""
        if dtype is None or dtype == self.center.dtype:
            return L2Ball(self.center.to(device), self.radius.to(device),
                          None if self.domain_lower is None else self.domain_lower.to(device),
                          None if self.domain_upper is None else self.domain_upper.to(device))
        center = self.center.to(dtype=dtype)
        shift = torch.linalg.vector_norm(self.center - center.to(self.center.dtype), dim=1)
        radius = round_outward(self.radius + shift * (1 + 4 * torch.finfo(self.center.dtype).eps), dtype, +1)
        if self.domain_lower is None or self.domain_upper is None:
            return L2Ball(center.to(device), radius.to(device))
        return L2Ball(center.to(device), radius.to(device), round_outward(self.domain_lower, dtype, -1).to(device),
                      round_outward(self.domain_upper, dtype, +1).to(device))


InputSet = Union[Box, L2Ball]


def batched_matvec(A: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``A[b] @ x[b]`` for every point: A (B, K, n) or (K, n) shared, x (B, n) → (B, K)."""
    if A.dim() == 2:
        return x @ A.T
    return torch.bmm(A, x.unsqueeze(-1)).squeeze(-1)


def round_outward(values: torch.Tensor, dtype: torch.dtype | None, direction: int) -> torch.Tensor:
    """``values`` converted to ``dtype``, each entry moved one step further (down for direction −1, up for
    +1) where rounding moved it inward: the result bounds the original from that side."""
    if dtype is None or dtype == values.dtype:
        return values
    out = values.to(dtype)
    back = out.to(values.dtype)
    inward = back > values if direction < 0 else back < values
    if inward.any():
        out = torch.where(inward, torch.nextafter(out, torch.full_like(out, direction * torch.inf)), out)
    return out


def _row_norms(A: torch.Tensor) -> torch.Tensor:
    """Euclidean norms of A's rows: (B, K) for (B, K, n); (1, K) for a shared (K, n)."""
    norms = torch.linalg.vector_norm(A, dim=-1)
    return norms if A.dim() == 3 else norms.unsqueeze(0)


def _domain(domain, batch: int, dim: int, dtype, device) -> tuple[torch.Tensor, torch.Tensor] | None:
    if domain is None:
        return None
    if not isinstance(domain, (tuple, list)) or len(domain) != 2:
        raise InputError("domain must be a pair (lower, upper) of numbers or arrays")
    lo = _per_coordinate("domain lower bound", _as_tensor("domain lower bound", domain[0], dtype, device), batch, dim)
    hi = _per_coordinate("domain upper bound", _as_tensor("domain upper bound", domain[1], dtype, device), batch, dim)
    if (lo > hi).any():
        raise InputError("domain lower bound exceeds its upper bound")
    return lo, hi


def _center_radius(center, radius, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    c = _check_points("center", _as_tensor("center", center, dtype, device))
    r = _per_point("radius", _as_tensor("radius", radius, c.dtype, c.device), c.shape[0])
    if not torch.isfinite(r).all():
        raise InputError("radius must be finite")
    if (r < 0).any():
        raise InputError(f"radius must be >= 0, got {r.min().item()!r}")
    return c, r


def linf_ball(center, radius, domain: Domain | None = None, *, dtype: torch.dtype | None = None,
              device=None) -> Box:
    """The L∞ balls ``{x : ||x - center[b]||_∞ <= radius[b]}`` (∩ domain) as a :class:`Box`.

    ``center``: (B, n) or (B, *input_shape) array; ``radius``: a number or (B,); ``domain``: an optional
    pair (lower, upper) of numbers, (n,) or (B, n) arrays the box is clipped to (each centre must lie
    in it). Values become ``dtype`` (default: the centre's floating dtype, float64 for arrays).
    """
    c, r = _center_radius(center, radius, dtype, device)
    lower, upper = c - r[:, None], c + r[:, None]
    dom = _domain(domain, c.shape[0], c.shape[1], c.dtype, c.device)
    if dom is not None:
        if ((c < dom[0]) | (c > dom[1])).any():
            raise InputError("every point must lie inside the domain box")
        lower, upper = torch.maximum(lower, dom[0]), torch.minimum(upper, dom[1])
    return Box(lower, upper)


def l2_ball(center, radius, domain: Domain | None = None, *, dtype: torch.dtype | None = None,
            device=None) -> L2Ball:
    """The L2 balls ``{x : ||x - center[b]||_2 <= radius[b]}`` (∩ domain) as an :class:`L2Ball`.

    Arguments as for :func:`linf_ball`; the intersection with a domain is kept exact in the set and
    relaxed only when bounding (module docstring).
    """
    c, r = _center_radius(center, radius, dtype, device)
    dom = _domain(domain, c.shape[0], c.shape[1], c.dtype, c.device)
    return L2Ball(c, r) if dom is None else L2Ball(c, r, dom[0], dom[1])


def perturbation_set(center, radius, norm, domain: Domain | None = None, *, dtype: torch.dtype | None = None,
                     device=None) -> InputSet:
    """The ball of the given ``norm`` (2 or inf, see :func:`pacverify.validation.check_norm`) around each point."""
    if check_norm(norm) == "2":
        return l2_ball(center, radius, domain, dtype=dtype, device=device)
    return linf_ball(center, radius, domain, dtype=dtype, device=device)


def box(lower, upper, *, dtype: torch.dtype | None = None, device=None) -> Box:
    """A :class:`Box` from array-likes ``lower``/``upper`` of shape (B, n) or (B, *input_shape), checked."""
    lo = _check_points("box lower bound", _as_tensor("box lower bound", lower, dtype, device))
    hi = _check_points("box upper bound", _as_tensor("box upper bound", upper, lo.dtype, lo.device))
    return Box(lo, hi)
