"""A model of the work of the bound methods and of an attack step, in multiply-adds per point.

:func:`~pacverify.verify.api.verify_points` budgets its attack against its bounds in this unit (issue 12, goal 5):
counted work, not seconds, so that the same inputs and seed give the same verdicts on any machine and under any
load. It is a model, not a measurement: each linear map costs its multiply-adds (a dense layer in × out, a
convolution out × its window, a diagonal its length), and CROWN pulls a lower and an upper row back from every
neuron of every ReLU layer through all the maps below it, as if every neuron were unstable and every row dense.
The routines skip stable neurons and pull convolution rows back as patches, so the model over-states CROWN's
work on networks with many stable neurons or with convolutions. ``benchmarks/bench_verify.py`` measures what the
budget costs in seconds.
"""
from __future__ import annotations

import math

from pacverify.network import Affine, Block, Conv, Network, Relu, Scale
from pacverify.verify.bounds.alpha import ITERATIONS

PGD_STEP = 2.5               # one attack step on one point, in forward passes: the forward pass, the input gradient's
                             # backward pass and the projection's and objective's elementwise work (with 2, the
                             # attack's seconds per modelled multiply-add were 1.19× the bounds' on the benchmark
                             # student, benchmarks/results/verify.md)
PASS_OVERHEAD = 3_000_000    # one batched run of the model, whatever its size: ~1.5 ms of Python, autograd and
                             # small operations, the multiply-adds a core does meanwhile (2 GMAC/s)


def layer_macs(layer) -> int:
    """Multiply-adds of one application of ``layer`` to one point (0 for a ReLU)."""
    if isinstance(layer, Relu):
        return 0
    if isinstance(layer, Affine):
        return layer.in_features * layer.out_features
    if isinstance(layer, Conv):
        window = math.prod(layer.kernel.shape[1:])
        return layer.out_features * window
    if isinstance(layer, Scale):
        return layer.in_features
    if isinstance(layer, Block):
        return sum(layer_macs(op) for op in layer.maps)
    raise TypeError(f"no work model for a {type(layer).__name__} layer")


def forward_macs(net: Network) -> int:
    """Multiply-adds of one forward pass of ``net`` on one point."""
    return sum(layer_macs(layer) for layer in net.layers)


def crown_macs(net: Network, rows: int) -> int:
    """The model's multiply-adds of one CROWN pass on one point with ``rows`` specification rows.

    Every ReLU layer's pre-activations get a lower and an upper bound, i.e. 2 × width rows pulled back through
    the linear maps below the one that computes them, and concretised on the input (``in_features`` each); the
    ``rows`` specification rows are pulled back through every map and concretised.
    """
    below = 0                # multiply-adds per row of the maps below the current one
    total = 0
    current, current_below = None, 0
    for layer in net.layers:
        if isinstance(layer, Relu):
            assert current is not None  # a Network's ReLU follows a linear map
            total += 2 * current.out_features * (current_below + net.in_features)
        else:
            current, current_below = layer, below
            below += layer_macs(layer)
    return total + rows * (below + net.in_features)


def bound_macs(net: Network, rows: int, method: str, points: int, *, iterations: int = ITERATIONS) -> int:
    """The model's multiply-adds of one pass of ``method`` on ``points`` points: per point IBP two forward passes
    (centre and radius through ``W`` and ``|W|``), CROWN :func:`crown_macs`, α-CROWN ``iterations`` + 1 CROWN
    passes; plus :data:`PASS_OVERHEAD` for each backward pass of the call (one per ReLU layer and one for the
    specification; IBP: one forward pass)."""
    if method == "ibp":
        return 2 * forward_macs(net) * points + PASS_OVERHEAD
    backward = (sum(isinstance(layer, Relu) for layer in net.layers) + 1) * PASS_OVERHEAD
    passes = iterations + 1 if method == "alpha-crown" else 1
    return passes * (crown_macs(net, rows) * points + backward)


def attack_step_macs(net: Network) -> int:
    """The model's multiply-adds of one PGD step on one point (:data:`PGD_STEP` forward-pass equivalents)."""
    return math.ceil(PGD_STEP * forward_macs(net))


def attack_macs(net: Network, evaluations: int, passes: int) -> int:
    """The model's multiply-adds of an attack that ran the model on ``evaluations`` points in ``passes`` batched runs
    (:class:`~pacverify.attacks.AttackResult`'s counts): :func:`attack_step_macs` each, plus
    :data:`PASS_OVERHEAD` per run."""
    return evaluations * attack_step_macs(net) + passes * PASS_OVERHEAD
