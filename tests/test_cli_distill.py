"""``pacverify distill`` and ``pacverify export`` end to end, as a user runs them."""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from pacverify.cli import main
from pacverify.errors import InputError
from pacverify.models import load_student


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    """A non-ReLU teacher (Tanh) saved as a torch.export program."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2)).eval()
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt2"
    program = torch.export.export(model, (torch.zeros(4, 2),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(path))
    return path


def test_distill_writes_student_onnx_and_json(cli, teacher_file, tmp_path):
    out = tmp_path / "run"
    result = cli("distill", teacher_file, "--synthetic", "gaussians", "--samples", "200", "--fresh", "100",
                 "--student", "mlp:2x16", "--epochs", "8", "--lr", "0.01", "--seed", "3", "--trust-pickle", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "agreement with the teacher" in result.stdout and "ONNX parity" in result.stdout
    assert "it/s" not in result.stderr  # no progress bar when stderr is not a terminal
    assert sorted(p.name for p in out.iterdir()) == ["distill.json", "student.onnx", "student.pt"]
    summary = json.loads((out / "distill.json").read_text())
    assert summary["settings"]["method"] == "kdiga" and summary["settings"]["seed"] == 3
    assert summary["data"]["samples"] == 200 and summary["data"]["fresh"] == 100
    assert summary["data"]["duplicates"] == 0  # exact duplicate rows in the sample (refused above 1%)
    assert summary["markers"]["n"] == 200 and summary["markers"]["n_fresh"] == 100
    assert len(summary["history"]) == summary["epochs_run"] <= 8
    assert summary["export"]["max_abs_diff_sample"] < 1e-4
    raw = torch.load(out / "student.pt", weights_only=True)
    assert raw["spec"] == "mlp:2x16"
    student = load_student(out / "student.pt")
    x = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
    session = ort.InferenceSession(str(out / "student.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {"input": x})[0], student(torch.from_numpy(x)).numpy(), atol=1e-5)

    exported = tmp_path / "again.onnx"
    np.save(tmp_path / "points.npy", x)
    again = cli("export", out / "student.pt", "--out", exported, "--points", tmp_path / "points.npy", "--json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["n_sample"] == 5 and report["max_abs_diff_sample"] < 1e-5 and exported.is_file()


def test_too_few_rows_exit_2_and_nothing_written(cli, teacher_file, tmp_path):
    np.save(tmp_path / "rows.npy", np.zeros((50, 2), dtype=np.float32))
    out = tmp_path / "run"
    result = cli("distill", teacher_file, "--data", tmp_path / "rows.npy", "--samples", "3720", "--out", out)
    assert result.returncode == 2
    assert "50 rows but 3720 are needed" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def _main(capsys, *args) -> tuple[int, str]:
    """The CLI entry point in-process (fast): exit code and stderr."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    return code, capsys.readouterr().err


def test_pickled_teacher_refused_without_trust(capsys, tmp_path):
    torch.save(nn.Sequential(nn.Linear(2, 2)), tmp_path / "full.pt")
    code, err = _main(capsys, "distill", tmp_path / "full.pt", "--synthetic", "gaussians", "--samples", "10",
                      "--out", tmp_path / "o")
    assert code == 2 and "--trust-pickle" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, words", [
    (["--lr", "-1"], ["lr", "> 0"]),
    (["--student", "resnet"], ["student spec"]),
    (["--method", "magic"], ["invalid choice"]),
    (["--synthetic", "moons"], ["unknown synthetic"]),
])
def test_bad_settings_exit_2(capsys, teacher_file, tmp_path, args, words):
    base = ["distill", teacher_file, "--synthetic", "gaussians", "--samples", "10", "--trust-pickle", "--out",
            tmp_path / "o"]
    code, err = _main(capsys, *base, *args)
    assert code == 2
    for word in words:
        assert word in err
    assert not (tmp_path / "o").exists()


def test_export_refuses_a_file_that_is_not_a_student(capsys, tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "weights.pt")
    code, err = _main(capsys, "export", tmp_path / "weights.pt", "--out", tmp_path / "s.onnx")
    assert code == 2 and "not a pacverify student file" in err
    assert not (tmp_path / "s.onnx").exists()


def test_negative_domain_parses_through_the_real_cli(cli, teacher_file, tmp_path, capsys):
    """``--domain -3,3``: a value starting with '-' is the option's value, not an unknown option."""
    from pacverify.cli import build_parser
    from pacverify.cli.distill import sampler_from_args

    for flag in (["--domain", "-3,-0.5"], ["--domain=-3,-0.5"]):
        args = build_parser("distill").parse_args(["distill", "t.pt", "--synthetic", "gaussians", "--samples", "10",
                                                   "--out", "o", *flag])
        sampler = sampler_from_args(args)
        assert sampler.domain == (-3.0, -0.5)
        with pytest.raises(InputError, match="outside the domain box"):  # half the Gaussians lie on the + side:
            sampler.draw(50)                                               # refused, never clipped into the box
    out = tmp_path / "run"
    result = cli("distill", teacher_file, "--synthetic", "gaussians", "--samples", "60", "--fresh", "0",
                 "--student", "mlp:1x8", "--epochs", "1", "--domain", "-3,3", "--trust-pickle", "--out", out)
    assert result.returncode == 0, result.stderr
    assert (out / "student.onnx").is_file()
    code, err = _main(capsys, "distill", teacher_file, "--synthetic", "gaussians", "--samples", "10",
                      "--domain", "3,-3", "--out", tmp_path / "bad")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--domain" in err and "LO,HI" in err and "'3,-3'" in err
    assert not (tmp_path / "bad").exists()
