"""Marabou backend: a complete SMT-based check for L∞ boxes (optional extra ``pacverify[marabou]``).

The query is built from the :class:`~pacverify.network.Network`'s weights directly: one
Marabou variable per input, per affine output and per ReLU output; an equation per affine row and
a ReLU constraint per neuron; the input box as variable bounds. The unsafe set
``⋃_k ⋂_{r∈k} {C_r y ≤ d_r}`` is asked one clause at a time (one query per clause, each
``C_r y ≤ d_r`` an LE equation): ``unsat`` on every clause proves the box safe — also for a strict
unsafe set, which is contained in its non-strict closure. A ``sat`` answer is reported as a
counterexample only after the point is clamped into the box and a float64 forward pass
(``Network.forward``) confirms it is unsafe; a Marabou point that fails this check (a tie, or
rounding) leaves the answer UNKNOWN, never VERIFIED.
"""
from __future__ import annotations

import math
import time
import warnings

import numpy as np
import torch

from pacverify.errors import InputError
from pacverify.network import LINEAR, Network
from pacverify.verify.backends.base import Backend
from pacverify.verify.property import OutputProperty
from pacverify.verify.result import Decision, PointVerdict
from pacverify.verify.sets import Box, InputSet

INSTALL_HINT = 'the marabou backend needs maraboupy: pip install "pacverify[marabou]"'


def _marabou():
    try:
        with warnings.catch_warnings():   # maraboupy warns at import that its TensorFlow parser is unavailable
            warnings.simplefilter("ignore")
            from maraboupy import Marabou, MarabouCore
    except ImportError:
        raise InputError(INSTALL_HINT) from None
    return Marabou, MarabouCore


def _network_query(core, net: Network, lower: np.ndarray, upper: np.ndarray):
    """A Marabou InputQuery encoding ``y = net(x)`` for x in the box; returns (query, input vars, output vars)."""
    weights = [(layer.dense_weight().double().cpu().numpy(), layer.bias.double().cpu().numpy())
               if isinstance(layer, LINEAR) else None for layer in net.layers]
    n_vars, width = net.in_features, net.in_features
    for w in weights:
        width = width if w is None else w[0].shape[0]
        n_vars += width
    query = core.InputQuery()
    query.setNumberOfVariables(n_vars)
    current = list(range(net.in_features))
    for i in current:
        query.setLowerBound(i, float(lower[i]))
        query.setUpperBound(i, float(upper[i]))
    nxt = net.in_features
    for w in weights:
        fresh = list(range(nxt, nxt + (len(current) if w is None else w[0].shape[0])))
        nxt += len(fresh)
        if w is None:
            for a, b in zip(current, fresh, strict=True):
                core.addReluConstraint(query, a, b)
        else:
            W, bias = w
            for row, out in enumerate(fresh):
                eq = core.Equation(core.Equation.EQ)
                for col in np.flatnonzero(W[row]):
                    eq.addAddend(float(W[row, col]), current[col])
                eq.addAddend(-1.0, out)
                eq.setScalar(-float(bias[row]))
                query.addEquation(eq)
        current = fresh
    return query, list(range(net.in_features)), current


def _solve_clause(Marabou, core, net: Network, lower: np.ndarray, upper: np.ndarray, C: np.ndarray, d: np.ndarray,
                  timeout: float | None) -> tuple[str, np.ndarray | None]:
    """One Marabou query: is ``C y ≤ d`` (the rows of one clause) reachable from the box?
    Returns Marabou's exit code and, for sat, its input clamped to the box."""
    query, xs, ys = _network_query(core, net, lower, upper)
    for row, bound in zip(C, d, strict=True):
        eq = core.Equation(core.Equation.LE)
        for j in np.flatnonzero(row):
            eq.addAddend(float(row[j]), ys[j])
        eq.setScalar(float(bound))
        query.addEquation(eq)
    options = Marabou.createOptions(verbosity=0, timeoutInSeconds=0 if timeout is None else max(1, math.ceil(timeout)))
    code, values, _ = core.solve(query, options, "")
    x = np.clip(np.array([values[v] for v in xs]), lower, upper) if code == "sat" else None
    return code, x


def decide_box(net: Network, lower: np.ndarray, upper: np.ndarray, prop: OutputProperty, *,
               timeout: float | None = None) -> Decision:
    """Decide with Marabou whether some x in ``[lower, upper]`` ((m,) each) reaches ``prop``'s unsafe
    set (batch 1). ``timeout``: wall-clock seconds for all clause queries together (None: no limit)."""
    Marabou, core = _marabou()
    lower = np.asarray(lower, dtype=np.float64).reshape(-1)
    upper = np.asarray(upper, dtype=np.float64).reshape(-1)
    C, d = prop.C[0].double().cpu().numpy(), prop.d[0].double().cpu().numpy()
    clause = prop.clause.cpu().numpy()
    start = time.monotonic()
    open_clauses = 0
    for k in range(prop.n_clauses):
        rows = np.flatnonzero(clause == k)
        # A point on the boundary of a strict unsafe set (a tie) is no counterexample: ask once more
        # with the constraints pushed inside by a small slack before giving up on the clause.
        for slack in (0.0, 1e-6):
            left = None if timeout is None else timeout - (time.monotonic() - start)
            if left is not None and left <= 0:
                return Decision(PointVerdict.UNKNOWN, domains=k, detail="marabou: time budget spent")
            code, x = _solve_clause(Marabou, core, net, lower, upper, C[rows], d[rows] - slack * (1 + np.abs(d[rows])),
                                    left)
            if code == "unsat" and slack == 0.0:
                break
            if code == "sat":
                with torch.no_grad():
                    y = net.to("cpu", torch.float64)(torch.from_numpy(x)[None])
                if bool(prop.to("cpu", torch.float64).is_unsafe(y)[0]):
                    return Decision(PointVerdict.FALSIFIED, x, domains=k + 1, detail=f"marabou: clause {k} sat")
            if code != "sat":
                open_clauses += 1
                break
        else:
            open_clauses += 1
    if open_clauses:
        return Decision(PointVerdict.UNKNOWN, domains=prop.n_clauses,
                        detail=f"marabou: {open_clauses} clause(s) neither proved nor falsified")
    return Decision(PointVerdict.VERIFIED, domains=prop.n_clauses, detail="marabou: every clause unsat")


class MarabouBackend(Backend):
    """Every problem is decided by Marabou (no incomplete pass); boxes (L∞, VNN-LIB) only."""

    name = "marabou"
    always_complete = True

    def check(self, input_set: InputSet, *, complete: bool) -> None:
        _marabou()
        if not isinstance(input_set, Box):
            raise InputError("the marabou backend handles L∞ boxes only; use --norm inf or --backend native")

    def bounds(self, net: Network, input_set: InputSet, prop: OutputProperty, *, method: str) -> None:
        return None

    def decide(self, net: Network, input_set: InputSet, prop: OutputProperty, *, timeout: float | None,
               method: str, seed: int) -> list[Decision]:
        self.check(input_set, complete=True)
        assert isinstance(input_set, Box)  # check() refuses every other set
        lower, upper = input_set.lower.double().cpu().numpy(), input_set.upper.double().cpu().numpy()
        return [decide_box(net, lower[b], upper[b], prop.select(torch.tensor([b])), timeout=timeout)
                for b in range(input_set.batch_size)]
