"""The verifier: input sets, specifications, sound bounds, and the verification built on them (DESIGN.md §5).

Entry points: :func:`verify_points` (local robustness of many points), :func:`certified_radius`
(largest proven radius per point), :func:`verify_vnnlib` (a VNN-LIB instance: sat / unsat / unknown).
Building blocks: :func:`load_network`, the input sets, :func:`margin_spec`, the bound routines
:func:`ibp`, :func:`crown`, :func:`alpha_crown`, :func:`branch_and_bound`, :func:`read_vnnlib`.
"""
from __future__ import annotations

from pacverify.verify.api import certified_radius, verify_points, verify_vnnlib
from pacverify.verify.attacks import AttackResult, attack_set
from pacverify.verify.bab import BabConfig, branch_and_bound
from pacverify.verify.bounds import Bounds, PropagationResult, alpha_crown, crown, ibp
from pacverify.verify.network import Network
from pacverify.verify.property import OutputProperty, robustness_property
from pacverify.verify.result import Decision, Verdict, VerificationResult, VnnlibResult, VnnlibStatus
from pacverify.verify.sets import Box, L2Ball, l2_ball, linf_ball, perturbation_set
from pacverify.verify.spec import margin_spec
from pacverify.verify.vnnlib import VnnlibSpec, read_vnnlib

__all__ = [
    "AttackResult", "BabConfig", "Bounds", "Box", "Decision", "L2Ball", "Network", "OutputProperty",
    "PropagationResult", "Verdict", "VerificationResult", "VnnlibResult", "VnnlibSpec", "VnnlibStatus",
    "alpha_crown", "attack_set", "branch_and_bound", "certified_radius", "crown", "ibp", "l2_ball", "linf_ball",
    "load_network", "margin_spec", "perturbation_set", "read_vnnlib", "robustness_property", "verify_points",
    "verify_vnnlib",
]


def __getattr__(name: str):
    # load_network lives in pacverify.onnx_io, whose reader imports this package's network module:
    # resolving it on first use avoids the import cycle.
    if name == "load_network":
        from pacverify.onnx_io.reader import load_network
        return load_network
    raise AttributeError(f"module 'pacverify.verify' has no attribute {name!r}")
