"""pacverify: PAC robustness guarantees for large classifiers through verified, gradient-aligned students.

The public API is re-exported here; the implementation lives in the subpackages (docs/architecture.md).
Only the light modules load with ``import pacverify``; the rest is imported on first use (PEP 562).
"""
from __future__ import annotations

from pacverify._version import __version__
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

# name -> module that defines it
_LAZY = {
    "certify": "pacverify.pipeline.run",
    "CertifySettings": "pacverify.pipeline.run",
    "plan": "pacverify.pipeline.run",
    "ProgressReporter": "pacverify.progress",
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
    "Certificate": "pacverify.certificate.io",
    "load_certificate": "pacverify.certificate.io",
    "Verdict": "pacverify.certificate.schema",
    "check_certificate": "pacverify.pipeline.check",
    "load_network": "pacverify.onnx_io.reader",
    "verify_points": "pacverify.verify.api",
    "certified_radius": "pacverify.verify.api",
    "verify_vnnlib": "pacverify.verify.api",
    "write_report": "pacverify.report.render",
}

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
    *sorted(_LAZY),
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pacverify' has no attribute {name!r}")
