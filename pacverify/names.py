"""The closed sets of names pacverify accepts, in a light module (no torch) so that the command line can declare
them as ``choices`` and reject a typo before anything heavy is imported. The modules that implement each set import
it from here; tests check that the implementations and these tables agree."""
from __future__ import annotations

NORMS = ("2", "inf")
DISTILL_METHODS = ("kd", "kdiga", "igam", "igdm")
BOUND_METHOD_NAMES = ("ibp", "crown", "alpha-crown")
DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("native", "marabou", "auto_lirpa")
BACKEND_ALIASES = {"crown": "native"}  # former names still accepted: alias -> backend
