"""Export a student to ONNX and check that onnxruntime reproduces it (DESIGN.md §1 step 4).

The exported graph has a dynamic batch dimension and uses only ops the verifier's reader lowers
(:data:`VERIFIER_OPS`); it passes ``onnx.checker`` (full check with shape inference), and
onnxruntime's outputs are compared with torch's on random inputs and on given sample inputs. The
file is written whole (temporary name, then rename) only after every check passed; otherwise
:class:`ExportError` is raised and nothing is written.

Exporter: torch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``), which
needs nothing beyond torch and emits plain Gemm/Conv/Relu/Flatten graphs. The newer dynamo
exporter would add the ``onnxscript`` dependency.
"""
from __future__ import annotations

import copy
import inspect
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from pacverify.errors import InputError
from pacverify.fileio import atomic_write_bytes
from pacverify.onnx_io.ops import OPS
from pacverify.validation import check_positive, check_positive_int, check_seed

# the ops the verifier's reader has a rule for (pacverify.onnx_io.ops), plus Constant (folded), Concat and MaxPool
# (lowered by the traversal): an exported graph with any other op cannot be read
VERIFIER_OPS = frozenset(OPS) | {"Constant", "Concat", "MaxPool"}
INPUT_NAME, OUTPUT_NAME = "input", "logits"


class ExportError(InputError):
    """The exported graph failed a check (ops, onnx.checker, or parity with torch); nothing was written."""


@dataclass(frozen=True)
class ExportReport:
    """What was written and how closely onnxruntime reproduces torch.

    ``max_abs_diff_random`` / ``max_abs_diff_sample``: largest |onnxruntime − torch| over all
    logits of the random and the sample inputs (``None`` when no sample was given).
    """

    path: str
    opset: int
    ops: tuple
    input_shape: tuple
    n_random: int
    n_sample: int
    max_abs_diff_random: float
    max_abs_diff_sample: float | None
    tolerance: float

    def as_dict(self) -> dict:
        return {"path": self.path, "opset": self.opset, "ops": list(self.ops), "input_shape": list(self.input_shape),
                "n_random": self.n_random, "n_sample": self.n_sample, "max_abs_diff_random": self.max_abs_diff_random,
                "max_abs_diff_sample": self.max_abs_diff_sample, "tolerance": self.tolerance}


def _legacy_exporter() -> dict:
    """``dynamo=False`` where torch has the switch (torch >= 2.5; from 2.9 the default is the dynamo exporter)."""
    return {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


def onnx_bytes(student: nn.Module, input_shape: tuple[int, ...], *, opset: int = 17) -> bytes:
    """The ONNX serialisation of ``student`` (eval mode, float32, CPU) with a dynamic batch dimension."""
    model = copy.deepcopy(student).cpu().float().eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation on every call
        # the TorchScript exporter writes to a file object too; torch's hint for f names paths only
        torch.onnx.export(model, (torch.zeros((2,) + tuple(input_shape)),), buffer,  # type: ignore[arg-type]
                          **_legacy_exporter(), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          opset_version=opset, dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          do_constant_folding=True)
    return buffer.getvalue()


def _max_diff(student: nn.Module, session: ort.InferenceSession, x: np.ndarray) -> float:
    with torch.no_grad():
        expected = student(torch.from_numpy(x)).numpy()
    got = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    if got.shape != expected.shape:
        raise ExportError(f"onnxruntime returned shape {got.shape}, torch {expected.shape}")
    return float(np.abs(got - expected).max()) if got.size else 0.0


def export_onnx(student: nn.Module, path: str | Path, input_shape: tuple[int, ...], *, opset: int = 17,
                sample: np.ndarray | None = None, n_random: int = 64, seed: int = 0,
                tolerance: float = 1e-4) -> ExportReport:
    """Write ``student`` to ``path`` as ONNX after checking the graph and onnxruntime parity.

    Random inputs: ``n_random`` points, standard normal, or uniform in the bounding box of
    ``sample`` (widened by 10%) when one is given; ``sample`` (N, *input_shape) is checked too.
    A difference above ``tolerance`` (absolute, plus the same relative to the logit's size) is an
    error. Opset must be ≥ 13. Raises :class:`ExportError` (nothing written) on any failed check.
    """
    opset = check_positive_int(opset, "opset")
    if opset < 13:
        raise InputError(f"opset must be >= 13, got {opset}")
    tolerance, n_random = check_positive(tolerance, "tolerance"), check_positive_int(n_random, "n_random")
    input_shape = tuple(int(s) for s in input_shape)
    model = copy.deepcopy(student).cpu().float().eval()
    data = onnx_bytes(model, input_shape, opset=opset)
    proto = onnx.load_from_string(data)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported graph fails onnx.checker: {exc}") from None
    ops = tuple(sorted({node.op_type for node in proto.graph.node}))
    foreign = sorted(set(ops) - VERIFIER_OPS)
    if foreign:
        raise ExportError(f"the exported graph uses op(s) the verifier does not read: {', '.join(foreign)}; "
                          "build the student from Linear, Conv2d, ReLU and Flatten only")
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(check_seed(seed))
    x_sample = None if sample is None else np.asarray(sample, dtype=np.float32).reshape((-1,) + input_shape)
    if x_sample is not None and len(x_sample):
        lo, hi = x_sample.min(axis=0), x_sample.max(axis=0)
        pad = 0.1 * (hi - lo) + 1e-3
        x_random = rng.uniform(lo - pad, hi + pad, size=(n_random,) + input_shape).astype(np.float32)
    else:
        x_random = rng.standard_normal((n_random,) + input_shape).astype(np.float32)
    diff_random = _max_diff(model, session, x_random)
    diff_sample = None
    if x_sample is not None and len(x_sample):
        diff_sample = max(_max_diff(model, session, x_sample[i:i + 4096]) for i in range(0, len(x_sample), 4096))
    _check_parity(model, x_random, x_sample, diff_random, diff_sample, tolerance)
    atomic_write_bytes(path, data)
    return ExportReport(str(path), opset, ops, input_shape, n_random, 0 if x_sample is None else len(x_sample),
                        diff_random, diff_sample, tolerance)


def _check_parity(model: nn.Module, x_random: np.ndarray, x_sample: np.ndarray | None, diff_random: float,
                  diff_sample: float | None, tolerance: float) -> None:
    inputs = x_random if x_sample is None else np.concatenate([x_random, x_sample[:4096]])
    with torch.no_grad():
        scale = float(model(torch.from_numpy(inputs)).abs().max())
    allowed = tolerance * (1.0 + scale)
    worst = max(diff_random, diff_sample or 0.0)
    if worst > allowed:
        raise ExportError(f"onnxruntime differs from torch by {worst:.3g} (allowed {allowed:.3g}); the export "
                          "is not faithful, nothing was written")
