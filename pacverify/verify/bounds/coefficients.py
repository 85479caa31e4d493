"""The coefficients of CROWN's linear lower bounds, for the search heuristics (not for proofs).

CROWN bounds each specification row by a linear function of the input, ``C_k·f(x) >= A_k·x + c_k``
on the set. The public bound routines (:mod:`pacverify.verify.bounds`) return only the minimum of that
function over the set; branching rules and counterexample candidates need ``A`` itself. This adapter
reruns the engine's backward pass (``bounds.crown.relax_network`` and ``bounds.linear.pull_back``,
internal functions) to get it. Nothing here decides a verdict: the coefficients only steer the search.
"""
from __future__ import annotations

import torch

from pacverify.network import Network
from pacverify.verify.sets import InputSet


def lower_bound_coefficients(net: Network, input_set: InputSet, C: torch.Tensor, splits=None,
                             intermediate=None) -> torch.Tensor:
    """``A`` (B, K, m) of CROWN's linear lower bound ``A_bk·x + c_bk`` of ``C_bk·f(x)`` over set b (under
    ``splits``, with the caller's ``intermediate`` bounds if given, as in the bound routines)."""
    from pacverify.verify.bounds.common import prepare
    from pacverify.verify.bounds.crown import relax_network
    from pacverify.verify.bounds.linear import Rows, pull_back

    problem = prepare(net, input_set, C, splits, intermediate)
    relaxed = relax_network(net, problem)
    start = None if relaxed.C_left is None else Rows(relaxed.C_left, torch.zeros(
        relaxed.C_left.shape[:-1], dtype=net.dtype, device=net.device))
    rows = pull_back(relaxed.layers, start, relaxed.relaxations, both=False)
    batch, k = problem.input_set.batch_size, C.shape[-2]
    A = (rows.A if rows is not None else C).detach()
    return A.expand(batch, k, A.shape[-1]) if A.dim() == 2 else A
