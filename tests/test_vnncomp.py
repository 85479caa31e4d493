"""A quick VNN-COMP 2022 subset (ACAS Xu and mnistfc 256x2) against ../shared/vnncomp/*/reference.csv.

Never ``unsat`` where the conservative label is ``sat``; every ``sat`` answer's counterexample is
re-checked with onnxruntime (independent of pacverify's ONNX reader) against the VNN-LIB file.
The full benchmark is benchmarks/bench_vnncomp.py.
"""
from __future__ import annotations

import csv

import numpy as np
import onnxruntime as ort
import pytest
import torch

from pacverify.verify.api import verify_vnnlib
from pacverify.verify.result import VnnlibStatus
from pacverify.verify.vnnlib import read_vnnlib

from conftest import SHARED

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


def _check_with_onnxruntime(onnx_path, vnnlib_path, x: np.ndarray) -> None:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    shape = [1 if not isinstance(d, int) else d for d in feed.shape]
    y = session.run(None, {feed.name: x.astype(np.float32).reshape(shape)})[0].reshape(-1).astype(np.float64)
    spec = read_vnnlib(vnnlib_path)
    inside = [k for k, r in enumerate(spec.regions) if np.all(x >= r.lower) and np.all(x <= r.upper)]
    assert inside, "the counterexample lies in no input box of the property"
    unsafe = [bool(spec.regions[k].prop.violation(torch.from_numpy(y)[None])[0] <= 1e-4) for k in inside]
    assert any(unsafe), "onnxruntime's output is not in the unsafe set"


@pytest.mark.parametrize("bench, onnx_name, vnnlib_name, expected", INSTANCES,
                         ids=[f"{b}-{o.split('_batch')[0]}-{v[:-7]}" for b, o, v, _ in INSTANCES])
def test_vnncomp_instance(bench, onnx_name, vnnlib_name, expected):
    truth = _reference(bench, onnx_name, vnnlib_name)
    onnx_path, vnnlib_path = VNN / bench / "onnx" / onnx_name, VNN / bench / "vnnlib" / vnnlib_name
    result = verify_vnnlib(onnx_path, vnnlib_path, timeout=60)
    assert not (result.status is VnnlibStatus.UNSAT and truth == "sat"), "unsat on an instance with a counterexample"
    assert not (result.status is VnnlibStatus.SAT and truth == "unsat")
    if result.status is VnnlibStatus.SAT:
        _check_with_onnxruntime(onnx_path, vnnlib_path, result.counterexample)
    assert result.status.value == expected, result.detail
