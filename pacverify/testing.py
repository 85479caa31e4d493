"""A pytest helper for teams that gate robustness in their own test suites.

    from pacverify.testing import assert_certified

    def test_classifier_is_certified(tmp_path):
        assert_certified("models/teacher.pt", out=tmp_path, delta=0.03, eps=0.05, eta=0.01, data="data/x.npy")
"""
from __future__ import annotations

import os

from pacverify.certificate.io import Certificate
from pacverify.certificate.schema import Verdict
from pacverify.pipeline.run import certify


def assert_certified(teacher, *, out: str | os.PathLike | None = None, min_delta_t: float | None = None,
                     min_coverage: float = 0.0, **settings) -> Certificate:
    """Run :func:`pacverify.pipeline.run.certify` and raise ``AssertionError`` unless it is CERTIFIED.

    Also fails when δ_T < ``min_delta_t`` or the coverage lower bound < ``min_coverage``. The
    message carries the verdict's reasons and the certificate's location. Returns the certificate.
    """
    from pacverify.certificate.gate import requirements

    cert = certify(teacher, out=out, **settings)
    failed = [r for r in requirements(cert, min_delta_t=min_delta_t, min_coverage=min_coverage) if not r.passed]
    if cert.verdict is not Verdict.CERTIFIED or failed:
        details = "; ".join(cert.record.reasons + [f"{r.name}: {r.message}" for r in failed])
        raise AssertionError(f"pacverify verdict {cert.verdict.value} ({details}); certificate in {cert.directory}")
    return cert
