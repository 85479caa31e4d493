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

# The distillation API is imported on first use (PEP 562), so that `import pacverify` and the pure
# modules (pac, validation) do not pull in torch and onnxruntime.
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
}
__all__ += sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pacverify' has no attribute {name!r}")
