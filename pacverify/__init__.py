"""pacverify: PAC robustness guarantees for large classifiers through verified, gradient-aligned students.

The public API is re-exported here; implementation lives in the submodules.
"""
from __future__ import annotations

import sys
import types

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

def certify(teacher, **settings):
    """Run Algorithm 1 of 004 and write a certificate: see :func:`pacverify.certify.certify`.

    Returns a :class:`pacverify.certificate.Certificate`.
    """
    from pacverify.certify import certify as run

    return run(teacher, **settings)


class _Package(types.ModuleType):
    """Keeps ``pacverify.certify`` the function above when the submodule of the same name is imported
    (the import system would otherwise rebind the name to the submodule)."""

    def __setattr__(self, name, value):
        if name == "certify" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
__all__ += ["certify"]

# The rest of the API is imported on first use (PEP 562).
_LAZY = {
    "make_sampler": "pacverify.data",
    "DistillConfig": "pacverify.distill",
    "DistillResult": "pacverify.distill",
    "margin_gradient_ratio": "pacverify.distill",
    "quality_markers": "pacverify.distill",
    "build_student": "pacverify.models",
    "load_student": "pacverify.models",
    "load_teacher": "pacverify.models",
    "save_student": "pacverify.models",
    "teacher_logits": "pacverify.models",
    "export_onnx": "pacverify.onnx_io.export",
    "Certificate": "pacverify.certificate",
    "load_certificate": "pacverify.certificate",
    "Verdict": "pacverify.guarantee",
    "check_certificate": "pacverify.check",
    "load_network": "pacverify.onnx_io.reader",
    "verify_points": "pacverify.verify.api",
    "certified_radius": "pacverify.verify.api",
    "verify_vnnlib": "pacverify.verify.api",
    "write_report": "pacverify.report",
}
__all__ += sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pacverify' has no attribute {name!r}")
