"""Issue 10 §4: cross-checks of a certificate that share no code with ``certify`` or ``check``.

Where ``check`` re-uses pacverify's own engine (bounds, ρ, s), these tests re-derive the same quantities from the
files with plain numpy and onnxruntime only: interval arithmetic on the student's ONNX weights, finite differences of
both ONNX models for ρ and the margin ratio, and the sample size formula by hand.
"""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers_certify import TINY, robust_teacher
from onnx import numpy_helper

from pacverify.pipeline.run import certify


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("independent")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(robust_teacher().eval(), (torch.zeros(2, 2),), str(out / "teacher.onnx"), dynamo=False,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "b"}, "y": {0: "b"}})
    certify(out / "teacher.onnx", out=out, delta=0.05, seed=0, **TINY)
    body = json.loads((out / "certificate.json").read_text())
    with np.load(out / "points.npz") as data:
        arrays = {k: data[k] for k in data.files}
    return out, body, arrays


def _layers(path):
    """(kind, W, b) of a Gemm/ReLU chain, read with the onnx package alone."""
    model = onnx.load(str(path))
    init = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    layers = []
    for node in model.graph.node:
        if node.op_type == "Gemm":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            w = init[node.input[1]]
            layers.append(("affine", w if attrs.get("transB", 0) else w.T, init[node.input[2]]))
        elif node.op_type == "Relu":
            layers.append(("relu", None, None))
        elif node.op_type not in ("Flatten", "Identity", "Reshape"):
            pytest.skip(f"op {node.op_type} not handled by this independent reader")
    return layers


def _ibp_margins(layers, lo, hi, label):
    """Plain float64 interval arithmetic; lower bounds of z_label − z_j (j ≠ label), widened by a rounding slack."""
    for kind, w, b in layers:
        if kind == "affine":
            mid, rad = (hi + lo) / 2, (hi - lo) / 2
            c, r = w @ mid + b, np.abs(w) @ rad
            slack = 1e-9 * (np.abs(w) @ np.maximum(np.abs(lo), np.abs(hi)) + np.abs(b) + 1)
            lo, hi = c - r - slack, c + r + slack
        else:
            lo, hi = np.maximum(lo, 0), np.maximum(hi, 0)
    others = [j for j in range(len(lo)) if j != label]
    return np.array([lo[label] - hi[j] for j in others])


def test_sample_size_by_hand(run):
    _, body, _ = run
    p = body["pac"]
    d = p["dim"] + 1  # L2 balls in R^m (Dudley); the certificate is L2
    s = math.ceil(8 * d / p["eps"] * math.log(16 * d / p["eps"]) + 4 / p["eps"] * math.log(2 / p["eta"]))
    assert p["samples_required"] == s and p["samples"] >= s and p["vc_dimension"] == d


def test_verified_points_hold_under_independent_interval_arithmetic(run):
    """Every point the certificate calls verified: the 3δ L2 ball lies in the L∞ box of the same radius; where plain
    IBP on that box proves every margin positive, the claim is independently confirmed; no sampled point in the ball
    ever flips the student's class (onnxruntime)."""
    out, body, arrays = run
    layers = _layers(out / "student.onnx")
    session = ort.InferenceSession(str(out / "student.onnx"), providers=["CPUExecutionProvider"])
    radius = 3 * body["pac"]["delta"]
    verified = np.nonzero(arrays["status"] == 1)[0]
    assert verified.size > 0
    rng = np.random.default_rng(0)
    proven = 0
    for i in verified[:60]:
        x, y = arrays["points"][i].astype(np.float64), int(arrays["teacher_label"][i])
        proven += bool((_ibp_margins(layers, x - radius, x + radius, y) > 0).all())
        u = rng.normal(size=(256, x.size))
        u *= (radius * rng.random(256) ** (1 / x.size) / np.linalg.norm(u, axis=1))[:, None]
        logits = session.run(None, {session.get_inputs()[0].name: (x + u).astype(np.float32)})[0]
        assert (logits.argmax(1) == y).all(), f"point {i}: a sampled input in the claimed ball changes the class"
    assert proven > 0


def test_rho_and_margin_ratio_by_finite_differences(run):
    """ρ and g_T/g_S at the binding runner-up, from central differences of both ONNX models (2 classes here)."""
    out, body, arrays = run
    sessions = [ort.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])
                for name in ("teacher.onnx", "student.onnx")]

    def margin(session, x, y):
        z = session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})[0].astype(np.float64)
        return z[:, y] - z[:, 1 - y]

    idx = np.nonzero(arrays["required"])[0][:20]
    h = 1e-3
    for i in idx:
        x, y = arrays["points"][i].astype(np.float64), int(arrays["teacher_label"][i])
        steps = np.concatenate([x + h * np.eye(2), x - h * np.eye(2)])
        grads, values = [], []
        for session in sessions:
            g = margin(session, steps, y)
            grads.append((g[:2] - g[2:]) / (2 * h))
            values.append(margin(session, x[None], y)[0])
        rho = np.linalg.norm(grads[1]) / np.linalg.norm(grads[0])
        assert arrays["rho"][i] == pytest.approx(rho, rel=2e-2)
        assert arrays["margin_ratio"][i] == pytest.approx(values[0] / values[1], rel=1e-3)
