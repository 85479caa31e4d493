"""pacverify: PAC robustness guarantees for large classifiers through verified, gradient-aligned students.

The public API is re-exported here; implementation lives in the submodules.
"""
from __future__ import annotations

__version__ = "0.1.0"

from pacverify.errors import InputError, UnsupportedOperationError
from pacverify.pac import (
    epsnet_statement,
    min_eps,
    min_eta,
    pac_statement,
    sample_size,
    shifted_eps,
    vc_dimension,
)

__all__ = [
    "__version__",
    "InputError",
    "UnsupportedOperationError",
    "epsnet_statement",
    "min_eps",
    "min_eta",
    "pac_statement",
    "sample_size",
    "shifted_eps",
    "vc_dimension",
]
