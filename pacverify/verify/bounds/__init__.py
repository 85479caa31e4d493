"""Sound bounds on ``C f(x)`` over input sets: IBP, CROWN and α-CROWN, batched over points.

Every routine returns :class:`Bounds` with ``lower <= C f(x) <= upper`` for every x in each point's
input set (that satisfies the split constraints, when given). See docs/verifier.md.
"""
from __future__ import annotations

from pacverify.verify.bounds.alpha import alpha_crown
from pacverify.verify.bounds.crown import crown
from pacverify.verify.bounds.ibp import ibp
from pacverify.verify.bounds.types import Bounds, PropagationResult

__all__ = ["Bounds", "PropagationResult", "alpha_crown", "crown", "ibp"]
