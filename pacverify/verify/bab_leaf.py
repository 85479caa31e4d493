"""Exact decision of a fully split subdomain over a box, by linear programming (branch-and-bound leaves).

When every ReLU of a subdomain has a fixed phase (split by the search, or stable by its bounds) the
network is one affine map ``y = A x + a`` on the subdomain, and the subdomain is the polytope
``P = {x in box : G x <= g}`` (one row per neuron: ``−z_i <= 0`` if active, ``z_i <= 0`` if inactive).
For each clause ``⋂_r {C_r y <= d_r}`` of the unsafe set, the LP

    minimise t  subject to  C_r (A x + a) − d_r <= t  (every row r of the clause),
                            (G_i x − g_i)/‖G_i‖ <= t  (every neuron row),  x in box

is always feasible. Its answer decides the clause on the subdomain:

- **empty** (proved) when a sound lower bound of t* is > 0: for the LP's dual multipliers
  (μ, λ) ≥ 0, every x in P has
  ``Σ_r μ_r (C_r y − d_r) >= L(x) := Σ_r μ_r (C_r y − d_r) + Σ_i λ_i ĝ_i(x)``
  (the λ terms are ≤ 0 on P), so ``min_box L > 0`` forces some ``C_r y − d_r > 0`` — no x of P
  satisfies the clause. ``min_box L`` is evaluated in closed form (the box minimum of a linear
  function), so the proof does not rest on the LP solver's tolerances, only on its multipliers.
- **a candidate counterexample** when t* <= 0: the LP's x lies in P and (up to tolerance) in the
  clause; it is reported only after a float64 forward pass confirms it (by the caller).
- **undecided** otherwise (a solver failure, or a tie at t* ≈ 0).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linprog

from pacverify.network import LINEAR, Network

_PROOF_MARGIN = 1e-9   # relative slack demanded of the closed-form Lagrangian bound


@dataclass(frozen=True)
class LeafAnswer:
    """``proved``: no input of the subdomain reaches the unsafe set; ``candidate``: an input (m,) to check, or None."""

    proved: bool
    candidate: np.ndarray | None


def decide_leaf(net: Network, lower: np.ndarray, upper: np.ndarray, phases: list[np.ndarray], C: np.ndarray,
                d: np.ndarray, clause: np.ndarray) -> LeafAnswer:
    """Decide one fully split subdomain (module docstring).

    ``lower``/``upper`` (m,): the box; ``phases``: per ReLU layer a (width,) array of +1 (active) / −1
    (inactive) — every neuron fixed; ``C`` (R, n), ``d`` (R,), ``clause`` (R,): the unsafe set.
    """
    A, a, G, g = _affine_pieces(net, phases)
    norms = np.linalg.norm(G, axis=1)
    keep = norms > 0
    G_hat, g_hat = G[keep] / norms[keep, None], g[keep] / norms[keep]
    if np.any(~keep & (g < 0)):           # a neuron row 0 <= g with g < 0: the polytope is empty
        return LeafAnswer(True, None)
    candidate = None
    for k in np.unique(clause):
        rows = clause == k
        out_A, out_c = C[rows] @ A, C[rows] @ a - d[rows]       # clause rows: out_A x + out_c <= t
        m = A.shape[1]
        A_ub = np.vstack([np.hstack([out_A, -np.ones((out_A.shape[0], 1))]),
                          np.hstack([G_hat, -np.ones((G_hat.shape[0], 1))])])
        b_ub = np.concatenate([-out_c, g_hat])
        cost = np.zeros(m + 1)
        cost[-1] = 1.0
        bounds = [(float(lo), float(hi)) for lo, hi in zip(lower, upper, strict=True)] + [(None, None)]
        res = linprog(cost, A_ub=A_ub, b_ub=b_ub, bounds=bounds, method="highs")
        if res.status != 0:
            return LeafAnswer(False, candidate)
        if res.fun <= 0:
            candidate = res.x[:m] if candidate is None else candidate
            continue
        multipliers = np.clip(-res.ineqlin.marginals, 0.0, None)
        mu, lam = multipliers[: out_A.shape[0]], multipliers[out_A.shape[0]:]
        coef = mu @ out_A + lam @ G_hat
        const = mu @ out_c - lam @ g_hat
        bound = np.minimum(coef * lower, coef * upper).sum() + const
        scale = np.abs(coef).sum() * np.abs(np.concatenate([lower, upper])).max() + abs(const) + 1.0
        if not bound > _PROOF_MARGIN * scale:
            return LeafAnswer(False, candidate)
    return LeafAnswer(candidate is None, candidate)


def _affine_pieces(net: Network, phases: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The output map ``y = A x + a`` and phase constraints ``G x <= g`` of a fixed activation pattern (float64)."""
    A = np.eye(net.in_features)
    a = np.zeros(net.in_features)
    G_rows, g_rows = [], []
    k = 0
    for layer in net.layers:
        if isinstance(layer, LINEAR):
            W, b = layer.dense_weight().detach().double().cpu().numpy(), layer.bias.detach().double().cpu().numpy()
            A, a = W @ A, W @ a + b
        else:
            sign = phases[k].astype(np.float64)       # +1 active: −z <= 0; −1 inactive: z <= 0
            G_rows.append(-sign[:, None] * A)
            g_rows.append(sign * a)
            active = (sign > 0).astype(np.float64)
            A, a = active[:, None] * A, active * a
            k += 1
    m = net.in_features
    G = np.vstack(G_rows) if G_rows else np.zeros((0, m))
    g = np.concatenate(g_rows) if g_rows else np.zeros(0)
    return A, a, G, g


def leaf_phases(pre_activation: list[tuple[torch.Tensor, torch.Tensor]], splits: list[torch.Tensor], row: int
                ) -> list[np.ndarray] | None:
    """The fixed phase (+1/−1) of every neuron of subdomain ``row``: its split, else the sign its bounds give;
    None if some neuron is neither split nor stable."""
    out = []
    for (lo, hi), split in zip(pre_activation, splits, strict=True):
        s = split[row].to(torch.int64)
        phase = torch.where(s != 0, s, torch.where(lo[row] >= 0, 1, torch.where(hi[row] <= 0, -1, 0)))
        if bool((phase == 0).any()):
            return None
        out.append(phase.cpu().numpy())
    return out
