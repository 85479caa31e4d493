"""A quick VNN-COMP 2022 subset (ACAS Xu and mnistfc 256x2) against ../shared/vnncomp/*/reference.csv.

Never ``unsat`` where the conservative label is ``sat``; every ``sat`` answer's counterexample is
re-checked with onnxruntime (independent of pacverify's ONNX reader) against the VNN-LIB file.
The full benchmark is benchmarks/bench_vnncomp.py.
"""
from __future__ import annotations

import csv

import numpy as np
import pytest
from conftest import SHARED

from pacverify.verify.api import verify_vnnlib
from pacverify.verify.result import VnnlibStatus
from pacverify.verify.vnnlib import check_counterexample, read_vnnlib

VNN = SHARED / "vnncomp"
pytestmark = pytest.mark.skipif(not VNN.is_dir(), reason="../shared/vnncomp (VNN-COMP 2022 data) is not present")

# (benchmark, onnx, vnnlib, answer this engine gives within the timeout on a 2-core CPU)
INSTANCES = [
    ("acasxu", "ACASXU_run2a_1_2_batch_2000.onnx", "prop_1.vnnlib", "unsat"),
    ("acasxu", "ACASXU_run2a_1_3_batch_2000.onnx", "prop_3.vnnlib", "unsat"),
    ("acasxu", "ACASXU_run2a_1_2_batch_2000.onnx", "prop_2.vnnlib", "sat"),
    ("mnistfc", "mnist-net_256x2.onnx", "prop_0_0.03.vnnlib", "unsat"),
    ("mnistfc", "mnist-net_256x2.onnx", "prop_1_0.03.vnnlib", "sat"),
    ("mnistfc", "mnist-net_256x2.onnx", "prop_2_0.03.vnnlib", "sat"),
]


def _reference(bench: str, onnx_name: str, vnnlib_name: str) -> str:
    with open(VNN / bench / "reference.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["onnx"] == f"onnx/{onnx_name}" and row["vnnlib"] == f"vnnlib/{vnnlib_name}":
                return row["conservative_label"]
    raise AssertionError(f"{bench}/{onnx_name}/{vnnlib_name} is not in reference.csv")


@pytest.mark.parametrize("bench, onnx_name, vnnlib_name, expected", INSTANCES,
                         ids=[f"{b}-{o.split('_batch')[0]}-{v[:-7]}" for b, o, v, _ in INSTANCES])
def test_vnncomp_instance(bench, onnx_name, vnnlib_name, expected):
    truth = _reference(bench, onnx_name, vnnlib_name)
    onnx_path, vnnlib_path = VNN / bench / "onnx" / onnx_name, VNN / bench / "vnnlib" / vnnlib_name
    result = verify_vnnlib(onnx_path, vnnlib_path, timeout=60)
    assert not (result.status is VnnlibStatus.UNSAT and truth == "sat"), "unsat on an instance with a counterexample"
    assert not (result.status is VnnlibStatus.SAT and truth == "unsat")
    if result.status is VnnlibStatus.SAT:
        spec = read_vnnlib(vnnlib_path)
        x = result.counterexample
        assert any(np.all(x >= r.lower) and np.all(x <= r.upper) for r in spec.regions)   # exactly inside a box
        assert check_counterexample(onnx_path, spec, x)        # unsafe under onnxruntime too
    assert result.status.value == expected, result.detail


def test_counterexample_check_rejects_safe_and_outside_points():
    onnx_path = VNN / "mnistfc" / "onnx" / "mnist-net_256x2.onnx"
    spec = read_vnnlib(VNN / "mnistfc" / "vnnlib" / "prop_0_0.03.vnnlib")   # unsat: no point of the box is unsafe
    region = spec.regions[0]
    assert not check_counterexample(onnx_path, spec, (region.lower + region.upper) / 2)
    assert not check_counterexample(onnx_path, spec, np.full(784, 5.0))
