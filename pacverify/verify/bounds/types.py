"""Result types of the bound routines."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Bounds:
    """Sound bounds ``lower <= C f(x) <= upper`` for every x of a point's input set, each (B, K).

    ``infeasible`` (B,) bool marks points whose split constraints admit no input at all (an empty
    subdomain, vacuously verified); their ``lower`` is ``+inf`` and ``upper`` is ``-inf``.
    """

    lower: torch.Tensor
    upper: torch.Tensor
    infeasible: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.lower.shape[0]


@dataclass(frozen=True)
class PropagationResult:
    """Bounds on the specification plus the pre-activation bounds the propagation used.

    ``pre_activation[k]`` is the pair (lower, upper), each (B, width_k), of the input of the k-th
    ReLU layer of the network (the order of :meth:`Network.relu_widths`), valid for every input of
    the set that satisfies the split constraints, with those constraints already applied
    (forced-active neurons have lower >= 0, forced-inactive ones upper <= 0).
    """

    bounds: Bounds
    pre_activation: list[tuple[torch.Tensor, torch.Tensor]]
    # where the routine counts it (crown_with_coefficients): the rows it pulled back times the linear maps each
    # crossed, a model of its work that does not depend on the clock (branch and bound schedules by it)
    row_maps: int | None = None


@dataclass(frozen=True)
class OutputRowsAffine:
    """The network's last affine layer with the output rows C folded in: ``x -> C (W x + b)``.

    Not a :class:`~pacverify.network.Affine` (whose weight is one (out, in) matrix): ``weight`` is
    ``C W``, (K, m) for rows shared by every point or (B, K, m) for per-point rows, and ``bias`` is
    ``C b``, (K,) or (B, K). It only ever ends the layer list of a bound routine
    (:func:`~pacverify.verify.bounds.common.output_layers`); the propagation steps treat every layer
    that is not a ReLU as ``weight``/``bias``, which covers both kinds.
    """

    weight: torch.Tensor
    bias: torch.Tensor
