"""--outputs: a teacher's probabilities or costs are converted once to logits, recorded, re-derived by check; the
teacher oracle negates costs in the engine's network and refuses probabilities; mismatches are caught on the probe."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_certify import TINY, onnx_teacher, robust_teacher

from pacverify.certificate.schema import Verdict
from pacverify.errors import InputError
from pacverify.models import LogitsOf, as_logits, load_teacher, looks_like_probabilities, output_kind
from pacverify.pipeline.check import check_certificate
from pacverify.pipeline.run import certify
from pacverify.verify.oracle import teacher_network


class _Costs(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return -self.inner(x)


class _Probabilities(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return torch.softmax(self.inner(x), dim=1)


def test_conversions_to_logits():
    base = robust_teacher()
    x = torch.randn(16, 2)
    z = base(x)
    assert as_logits(base, "logits") is base and output_kind(base) == "logits"
    costs = as_logits(_Costs(base), "costs")
    assert isinstance(costs, LogitsOf) and output_kind(costs) == "costs"
    assert torch.allclose(costs(x), z)
    probabilities = as_logits(_Probabilities(base), "probabilities")
    assert torch.allclose(torch.softmax(probabilities(x), 1), torch.softmax(z, 1))   # same confidences
    assert torch.equal(probabilities(x).argmax(1), z.argmax(1))
    assert looks_like_probabilities(torch.softmax(z, 1)) and not looks_like_probabilities(z)
    assert not looks_like_probabilities(np.ones((3, 1)))
    with pytest.raises(InputError, match="outputs must be one of"):
        as_logits(base, "scores")


def test_teacher_oracle_negates_costs_and_refuses_probabilities(tmp_path):
    path = onnx_teacher(_Costs(robust_teacher()), tmp_path / "costs.onnx")
    teacher = as_logits(load_teacher(path, device="cpu"), "costs")
    net, why = teacher_network(teacher, path, (2,))
    assert net is not None, why
    assert "negated" in why
    x = np.random.default_rng(0).normal(size=(8, 2))
    with torch.no_grad():
        expected = robust_teacher()(torch.from_numpy(x).float()).double().numpy()
        assert np.allclose(net(torch.from_numpy(x)).numpy(), expected, atol=1e-5)
    ppath = onnx_teacher(_Probabilities(robust_teacher()), tmp_path / "p.onnx")
    net, why = teacher_network(as_logits(load_teacher(ppath, device="cpu"), "probabilities"), ppath, (2,))
    assert net is None and "probabilities" in why


def test_a_costs_teacher_is_certified_recorded_and_checked(tmp_path):
    teacher = onnx_teacher(_Costs(robust_teacher()), tmp_path / "costs.onnx")
    out = tmp_path / "out"
    cert = certify(teacher, out=out, delta=0.05, seed=0, outputs="costs", **TINY)
    assert cert.verdict is Verdict.CERTIFIED
    assert cert.record.settings.outputs == "costs"
    result = check_certificate(out / "certificate.json", teacher=teacher)
    assert result.confirmed, result.problems


def test_probe_mismatches_stop_or_warn(tmp_path):
    logits_teacher = onnx_teacher(robust_teacher(), tmp_path / "logits.onnx")
    with pytest.raises(InputError, match="not probabilities"):
        certify(logits_teacher, out=tmp_path / "a", delta=0.05, seed=0, outputs="probabilities", **TINY)
    said: list = []
    probabilities = onnx_teacher(_Probabilities(robust_teacher()), tmp_path / "p.onnx")
    with pytest.raises(InputError, match="κ-confident at no sample point"):   # softmax of probabilities ≤ e/(e+1)
        certify(probabilities, out=tmp_path / "b", delta=0.05, seed=0, progress=lambda *a: said.append(a), **TINY)
    assert any("look like probabilities" in message for _, message in said)
