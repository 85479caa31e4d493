"""The top-level API re-exports what the CLI can do (STYLE.md: a small public surface)."""
from __future__ import annotations

import importlib
import subprocess
import sys

import pacverify


def test_certify_is_the_function_whatever_the_import_order():
    code = ("import pacverify.pipeline.run, pacverify.cli.certify, pacverify; "
            "from pacverify.pipeline.run import CertifySettings; "
            "print(callable(pacverify.certify), pacverify.certify.__module__, pacverify.CertifySettings.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True pacverify.pipeline.run CertifySettings"


def test_every_name_in_all_resolves():
    for name in pacverify.__all__:
        assert getattr(pacverify, name) is not None, name
    assert pacverify.sample_size(2, 0.05, 0.01) == 3720
    assert importlib.import_module("pacverify.pipeline.run").CertifySettings is not None
