"""The coefficients of CROWN's linear lower bounds, for the search heuristics (not for proofs).

CROWN bounds each specification row by a linear function of the input, ``C_k·f(x) >= A_k·x + c_k``
on the set. The public bound routines (:mod:`pacverify.verify.bounds`) return only the minimum of that
function over the set; branching rules and counterexample candidates need ``A`` itself. This adapter
returns the ``A`` of :func:`~pacverify.verify.bounds.crown.crown_with_coefficients` (a search that also needs
the bounds calls that function itself: one pass for both). The coefficients only steer a search.
"""
from __future__ import annotations

import torch

from pacverify.network import Network
from pacverify.verify.sets import InputSet


def lower_bound_coefficients(net: Network, input_set: InputSet, C: torch.Tensor, splits=None,
                             intermediate=None) -> torch.Tensor:
    """``A`` (B, K, m) of CROWN's linear lower bound ``A_bk·x + c_bk`` of ``C_bk·f(x)`` over set b (under
    ``splits``, with the caller's ``intermediate`` bounds if given, as in the bound routines)."""
    from pacverify.verify.bounds.crown import crown_with_coefficients

    return crown_with_coefficients(net, input_set, C, splits=splits, intermediate=intermediate)[1]
