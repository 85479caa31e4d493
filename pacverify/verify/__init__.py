"""The verifier: input sets, output rows and properties, sound bounds, and the verification built on them
(DESIGN.md §5).

Entry points: :func:`verify_points` (local robustness of many points), :func:`certified_radius`
(largest proven radius per point), :func:`verify_vnnlib` (a VNN-LIB instance: sat / unsat / unknown).
Building blocks: :func:`load_network`, the input sets, :func:`margin_rows` (output rows C), the bound
routines :func:`ibp`, :func:`crown`, :func:`alpha_crown` (by name: :data:`BOUND_METHODS`),
:func:`branch_and_bound`, :func:`read_vnnlib` (a :class:`VnnlibProperty`).
"""
from __future__ import annotations

from pacverify.network import Network
from pacverify.onnx_io.reader import load_network
from pacverify.verify.api import certified_radius, verify_points, verify_vnnlib
from pacverify.verify.attacks import AttackResult, attack_set
from pacverify.verify.bab import BabConfig, branch_and_bound
from pacverify.verify.bounds import (
    BOUND_METHOD_NAMES,
    BOUND_METHODS,
    Bounds,
    PropagationResult,
    alpha_crown,
    crown,
    ibp,
)
from pacverify.verify.output_rows import margin_rows
from pacverify.verify.property import OutputProperty, robustness_property
from pacverify.verify.result import (
    Decision,
    PointVerdict,
    VerificationResult,
    VnnlibResult,
    VnnlibStatus,
)
from pacverify.verify.sets import Box, L2Ball, l2_ball, linf_ball, perturbation_set
from pacverify.verify.vnnlib import VnnlibProperty, read_vnnlib

__all__ = [
    "BOUND_METHODS", "BOUND_METHOD_NAMES", "AttackResult", "BabConfig", "Bounds", "Box", "Decision", "L2Ball",
    "Network", "OutputProperty", "PropagationResult", "PointVerdict", "VerificationResult", "VnnlibProperty",
    "VnnlibResult", "VnnlibStatus", "alpha_crown", "attack_set", "branch_and_bound", "certified_radius", "crown",
    "ibp", "l2_ball", "linf_ball", "load_network", "margin_rows", "perturbation_set", "read_vnnlib",
    "robustness_property", "verify_points", "verify_vnnlib",
]
