"""The closed sets of names pacverify accepts, in a light module (no torch) so that the command line can declare
them as ``choices`` and reject a typo before anything heavy is imported. The modules that implement each set import
it from here; tests check that the implementations and these tables agree."""
from __future__ import annotations

NORMS = ("2", "inf")
DISTILL_METHODS = ("kd", "kdiga", "igam", "igdm")
BOUND_METHOD_NAMES = ("ibp", "crown-ibp", "crown-f32", "crown", "alpha-crown")
DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("native", "marabou", "auto_lirpa")
BACKEND_ALIASES = {"crown": "native"}  # former names still accepted: alias -> backend
ORACLES = ("auto", "teacher", "student")  # mass mode: who gives the lower radii (docs/theory.md)
BOUNDS = ("thm38", "tight")  # ε-net sample size: Thm 3.8 of 004, or the double-sampling bound (docs/theory.md)
OUTPUT_KINDS = ("logits", "probabilities", "costs")  # what a teacher's outputs are; converted once to logits
GUARANTEES = ("ball", "mass")  # δ-balls of mass ≥ ε (d = m + 1), or the dimension-free map M(κ) (d = 2)
