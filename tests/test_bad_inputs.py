"""Bad input through the real command line (issue 10 §3, §7): exit 2, one line on stderr, no traceback, nothing written.

Every case runs ``python -m pacverify ...`` in a fresh working directory and asserts the exit code, exactly one line
on stderr (the message, naming what to fix), no "Traceback", and that the working directory — where every output of
the case points — holds the same files afterwards as before. Most cases fail before heavy work; the few that need
the sample (duplicates, the domain, a teacher that is never κ-confident) stop before distillation.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pacverify.errors import InputError
from pacverify.fileio import (
    LOCK_FILE,
    acquire_lock,
    check_output_dir,
    check_output_file,
    release_lock,
    remove_new,
    run_lock,
    snapshot,
)

TINY = ["--delta", "0.05", "--eps", "0.5", "--eta", "0.1", "--epochs", "2", "--timeout", "1", "--quiet"]

USER_SAMPLERS = """
import numpy as np

def boom(n, rng):
    raise ValueError("no data today\\nand a second line")
"""


class _OnlyOne(nn.Module):
    """A TorchScript teacher that fails on batches of more than one point."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 1:
            raise RuntimeError("batches\nare not supported")
        return self.lin(x)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Every input file the cases read (outputs never go here)."""
    from helpers_certify import onnx_teacher, robust_teacher

    from pacverify.certificate.schema import SCHEMA
    from pacverify.models import build_student, save_student

    d = tmp_path_factory.mktemp("inputs")
    onnx_teacher(robust_teacher(), d / "teacher.onnx")
    flat = nn.Sequential(nn.Linear(2, 2))
    with torch.no_grad():
        flat[0].weight.zero_()
        flat[0].bias.zero_()
    onnx_teacher(flat, d / "flat.onnx")  # softmax 0.5 / 0.5 everywhere: never κ-confident
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit announces its deprecation
        torch.jit.save(torch.jit.script(_OnlyOne()), str(d / "onlyone.pt"))
    save_student(build_student("mlp:1x4", (2,), 2), d / "student.pt")
    rng = np.random.default_rng(0)
    np.save(d / "zero.npy", np.zeros((0, 2), np.float32))
    np.save(d / "empty.npy", np.zeros((0,), np.float32))
    np.save(d / "complex.npy", (rng.random((300, 2)) + 1j).astype(np.complex64))
    np.save(d / "small.npy", rng.normal(size=(50, 2)).astype(np.float32))
    np.save(d / "dups.npy", np.repeat(rng.normal(size=(40, 2)), 93, axis=0).astype(np.float32))  # 3 720 rows
    np.save(d / "labels_complex.npy", np.ones(4, np.complex64))
    np.save(d / "points4.npy", rng.random((4, 2)).astype(np.float32))
    (d / "samplers.py").write_text(USER_SAMPLERS)
    (d / "afile").write_text("a file, not a directory\n")
    (d / "nofiles.json").write_text(json.dumps({"schema": SCHEMA, "verdict": "CERTIFIED"}))
    return d


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# (id, arguments with {i} = the inputs directory, expected exit code, words the one line must hold, setup)
# Outputs are relative paths: the case runs in its own empty working directory.
CASES = [
    # --- samples ---------------------------------------------------------------------------------------------------
    ("samples-fractional-samples", ["samples", "--dim", "2", "--samples", "1.5", "--eta", "0.1"], ["integer", "1.5"]),
    ("samples-zero-samples", ["samples", "--dim", "2", "--samples", "0", "--eta", "0.1"], ["positive integer"]),
    ("samples-nan-eps", ["samples", "--dim", "2", "--eps", "nan", "--eta", "0.1"], ["eps", "finite"]),
    # --- certify: the data ------------------------------------------------------------------------------------------
    ("certify-data-zero-rows", ["certify", "{i}/teacher.onnx", "--data", "{i}/zero.npy", *TINY],
     ["zero.npy", "holds no points"]),
    ("certify-data-complex", ["certify", "{i}/teacher.onnx", "--data", "{i}/complex.npy", *TINY],
     ["complex", "imaginary"]),
    ("certify-data-too-few-rows", ["certify", "{i}/teacher.onnx", "--data", "{i}/small.npy", *TINY],
     ["has 50 rows", "s = 244", "--guarantee mass"]),
    ("certify-data-duplicates", ["certify", "{i}/teacher.onnx", "--data", "{i}/dups.npy", *TINY],
     ["repeat an earlier point", "1%", "--allow-duplicates"]),
    ("certify-domain-moves-no-point", ["certify", "{i}/teacher.onnx", "--synthetic", "gaussians", "--domain", "0,1",
                                       *TINY], ["outside the domain box [0, 1]", "first: row"]),
    ("certify-samples-1e12", ["certify", "{i}/teacher.onnx", "--synthetic", "gaussians", "--samples", "1e12", *TINY],
     ["1000000000000", "GiB of memory", "available"]),
    ("certify-sampler-raises", ["certify", "{i}/teacher.onnx", "--sampler", "{i}/samplers.py:boom", *TINY],
     ["samplers.py:boom", "ValueError: no data today"]),
    # --- certify: the teacher ---------------------------------------------------------------------------------------
    ("certify-torchscript-fails-on-batches", ["certify", "{i}/onlyone.pt", "--trust-pickle", "--synthetic",
                                              "gaussians", *TINY], ["failed", "batches"]),
    ("certify-never-kappa-confident", ["certify", "{i}/flat.onnx", "--synthetic", "gaussians", *TINY, "--out",
                                       "earlier-run"], ["κ-confident at no sample point", "--kappa"]),
    # --- certify: settings and output locations ---------------------------------------------------------------------
    ("certify-json-missing-dir", ["certify", "{i}/teacher.onnx", "--synthetic", "gaussians", *TINY, "--json",
                                  "nodir/cert.json"], ["--json", "does not exist"]),
    ("certify-json-is-a-directory", ["certify", "{i}/teacher.onnx", "--synthetic", "gaussians", *TINY, "--json", "."],
     ["--json", "is a directory"]),
    ("certify-junit-under-a-file", ["certify", "{i}/teacher.onnx", "--synthetic", "gaussians", *TINY, "--junit",
                                    "{i}/afile/j.xml"], ["--junit", "not a directory"]),
    ("certify-out-is-a-file", ["certify", "{i}/teacher.onnx", "--synthetic", "gaussians", *TINY, "--out",
                               "{i}/afile"], ["--out", "not a directory"]),
    ("certify-out-locked", ["certify", "{i}/teacher.onnx", "--synthetic", "gaussians", *TINY, "--out", "busy"],
     ["another pacverify run", "busy"]),
    # --- check and report -------------------------------------------------------------------------------------------
    ("check-negative-timeout", ["check", "{i}/nofiles.json", "--timeout", "-1"], ["timeout"]),
    ("check-certificate-without-files", ["check", "{i}/nofiles.json"], ["files"]),
    ("check-missing-certificate", ["check", "{i}/missing.json"], ["missing.json"]),
    ("report-certificate-without-files", ["report", "{i}/nofiles.json", "--html", "r.html"], ["files"]),
    ("report-html-is-a-directory", ["report", "{i}/nofiles.json", "--html", "."], ["--html", "is a directory"]),
    # --- verify -----------------------------------------------------------------------------------------------------
    ("verify-empty-points", ["verify", "{i}/teacher.onnx", "--points", "{i}/empty.npy", "--radius", "0.1", "--norm",
                             "2"], ["holds no points"]),
    ("verify-complex-points", ["verify", "{i}/teacher.onnx", "--points", "{i}/complex.npy", "--radius", "0.1",
                               "--norm", "2"], ["complex"]),
    ("verify-complex-labels", ["verify", "{i}/teacher.onnx", "--points", "{i}/points4.npy", "--labels",
                               "{i}/labels_complex.npy", "--radius", "0.1", "--norm", "2"], ["labels", "integer"]),
    ("verify-json-is-a-directory", ["verify", "{i}/teacher.onnx", "--points", "{i}/points4.npy", "--radius", "0.1",
                                    "--norm", "2", "--json", "."], ["--json", "is a directory"]),
    # --- distill ----------------------------------------------------------------------------------------------------
    ("distill-data-zero-rows", ["distill", "{i}/teacher.onnx", "--data", "{i}/zero.npy", "--samples", "5", "--out",
                                "run"], ["holds no points"]),
    ("distill-torchscript-fails-on-batches", ["distill", "{i}/onlyone.pt", "--trust-pickle", "--synthetic",
                                              "gaussians", "--samples", "20", "--out", "run"],
     ["failed", "batches"]),
    ("distill-checkpoint-dir-is-a-file", ["distill", "{i}/teacher.onnx", "--synthetic", "gaussians", "--samples",
                                          "20", "--checkpoint-dir", "{i}/afile", "--out", "run"],
     ["--checkpoint-dir", "not a directory"]),
    ("distill-samples-too-large", ["distill", "{i}/teacher.onnx", "--synthetic", "gaussians", "--samples", "1e11",
                                   "--out", "run"], ["GiB of memory"]),
    ("distill-fresh-too-large", ["distill", "{i}/teacher.onnx", "--synthetic", "gaussians", "--samples", "20",
                                 "--fresh", "1e11", "--out", "run"], ["GiB of memory"]),
    ("distill-fresh-fractional", ["distill", "{i}/teacher.onnx", "--synthetic", "gaussians", "--samples", "20",
                                  "--fresh", "1.5", "--out", "run"], ["fresh", "integer"]),
    ("distill-out-is-a-file", ["distill", "{i}/teacher.onnx", "--synthetic", "gaussians", "--samples", "20", "--out",
                               "{i}/afile"], ["--out", "not a directory"]),
    ("distill-data-duplicates", ["distill", "{i}/teacher.onnx", "--data", "{i}/dups.npy", "--samples", "500",
                                 "--out", "run"], ["repeat an earlier point"]),
    # --- export and demo --------------------------------------------------------------------------------------------
    ("export-out-is-a-directory", ["export", "{i}/student.pt", "--out", "."], ["--out", "is a directory"]),
    ("export-out-missing-dir", ["export", "{i}/student.pt", "--out", "nodir/s.onnx"], ["does not exist"]),
    ("export-points-zero-rows", ["export", "{i}/student.pt", "--out", "s.onnx", "--points", "{i}/zero.npy"],
     ["holds no points"]),
    ("export-points-complex", ["export", "{i}/student.pt", "--out", "s.onnx", "--points", "{i}/complex.npy"],
     ["complex"]),
    ("demo-out-is-a-file", ["demo", "--out", "{i}/afile"], ["--out", "not a directory"]),
]


def _setup(case: str, work: Path) -> None:
    if case == "certify-out-locked":  # a live run (this test process) holds the directory
        (work / "busy").mkdir()
        (work / "busy" / LOCK_FILE).write_text(f"{os.getpid()} {socket.gethostname()}\n")
    if case == "certify-never-kappa-confident":  # a directory of an earlier run: only what this run added goes
        (work / "earlier-run").mkdir()
        (work / "earlier-run" / "certificate.json").write_text("{}")


@pytest.mark.parametrize("case, args, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(cli, inputs, tmp_path, case, args, words):
    work = tmp_path / "work"
    work.mkdir()
    _setup(case, work)
    before = _files(work), _files(inputs)
    proc = cli(*[a.replace("{i}", str(inputs)) for a in args], cwd=work, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("pacverify"), lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    assert (_files(work), _files(inputs)) == before  # no file left behind, none overwritten into existence


def test_samples_1e12_is_a_plain_answer(cli, tmp_path):
    """A sample size written as 1e12 is the integer 10^12: the calculator answers (the warning is one line)."""
    proc = cli("samples", "--dim", "2", "--samples", "1e12", "--eta", "0.1", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["rows"][0]["samples"] == 10**12
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# --- internal errors: exit 4, one line, --debug for the traceback ---------------------------------------------------

_CRASH = ("import sys, warnings, pacverify.cli.samples as s\n"
          "def boom(args):\n"
          "    warnings.warn('a library warning\\nover several\\nlines')\n"
          "    raise KeyError('deep inside')\n"
          "s.run = boom\n"
          "from pacverify.cli import main\n"
          "raise SystemExit(main(sys.argv[1:]))\n")


def test_an_internal_error_is_exit_4_with_a_pointer_to_debug(tmp_path):
    argv = ["samples", "--dim", "2", "--eps", "0.1", "--eta", "0.1"]
    proc = subprocess.run([sys.executable, "-c", _CRASH, *argv], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 4, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr  # the warning did not leak either
    assert lines[0] == "pacverify: internal error: KeyError: 'deep inside'; rerun with --debug for the traceback"
    debug = subprocess.run([sys.executable, "-c", _CRASH, *argv, "--debug"], capture_output=True, text=True,
                           cwd=tmp_path)
    assert debug.returncode == 4
    assert "Traceback" in debug.stderr and "KeyError" in debug.stderr and "a library warning" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("pacverify: internal error: KeyError")


def test_debug_is_accepted_before_the_command_and_changes_nothing_else(cli, tmp_path):
    proc = cli("--debug", "samples", "--dim", "2", "--eps", "0.05", "--eta", "0.01", cwd=tmp_path)
    assert proc.returncode == 0 and "3720" in proc.stdout, proc.stderr
    proc = cli("samples", "--dim", "2", "--samples", "1.5", "--eta", "0.1", "--debug", cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1  # bad input stays one line


def test_multi_line_messages_are_printed_as_one_line(capsys, monkeypatch):
    import pacverify.cli.samples as samples
    from pacverify.cli import main

    def bad(args):
        warnings.warn("torch says\nmany\nthings", UserWarning)
        raise InputError("first part\nsecond part")

    monkeypatch.setattr(samples, "run", bad)
    assert main(["samples", "--dim", "2", "--eps", "0.1", "--eta", "0.1"]) == 2
    assert capsys.readouterr().err == "pacverify: error: first part second part\n"


# --- the lock and the output checks ---------------------------------------------------------------------------------

def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_is_exclusive_released_and_taken_over_when_stale(tmp_path):
    path = acquire_lock(tmp_path)
    assert path == tmp_path / LOCK_FILE and path.read_text().split()[0] == str(os.getpid())
    with pytest.raises(InputError, match=f"another pacverify run \\(pid {os.getpid()}\\) is using"):
        acquire_lock(tmp_path)
    release_lock(path)
    assert not path.exists()
    path.write_text(f"{_dead_pid()} {socket.gethostname()}\n")  # a run that crashed
    with run_lock(tmp_path) as taken:
        assert taken.read_text().split()[0] == str(os.getpid())
    assert os.listdir(tmp_path) == []
    path.write_text("1 some-other-host\n")  # cannot be checked from here: treated as live
    with pytest.raises(InputError, match="another pacverify run"):
        acquire_lock(tmp_path)
    path.write_text("")  # a run that is just writing its pid
    with pytest.raises(InputError, match="another pacverify run is using"):
        acquire_lock(tmp_path)
    os.utime(path, (0, 0))  # ... or one that died long ago before writing it
    release_lock(acquire_lock(tmp_path))
    assert os.listdir(tmp_path) == []


def test_release_leaves_a_lock_of_another_process(tmp_path):
    path = tmp_path / LOCK_FILE
    path.write_text(f"{os.getppid()} {socket.gethostname()}\n")
    release_lock(path)
    assert path.exists()


def test_output_checks_create_nothing(tmp_path):
    (tmp_path / "f").write_text("x")
    assert check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert check_output_file(tmp_path / "out.json") == tmp_path / "out.json"
    for bad, call, word in ((tmp_path / "f", check_output_dir, "not a directory"),
                            (tmp_path / "f" / "sub", check_output_dir, "not a directory"),
                            (tmp_path, check_output_file, "is a directory"),
                            (tmp_path / "nodir" / "x.json", check_output_file, "does not exist"),
                            (tmp_path / "f" / "x.json", check_output_file, "not a directory"),
                            ("", check_output_file, "empty path")):
        with pytest.raises(InputError, match=word):
            call(bad)
    assert sorted(os.listdir(tmp_path)) == ["f"]


def test_remove_new_removes_only_what_is_new(tmp_path):
    (tmp_path / "old.txt").write_text("keep")
    (tmp_path / "cache").mkdir()
    before = snapshot(tmp_path)
    (tmp_path / "new.txt").write_text("x")
    (tmp_path / "newdir" / "a" / "b").mkdir(parents=True)
    (tmp_path / "newdir" / "a" / "b" / "c.txt").write_text("x")
    (tmp_path / "cache" / "entry").write_text("x")
    remove_new(tmp_path, before, keep=("cache",))
    assert sorted(os.listdir(tmp_path)) == ["cache", "old.txt"] and os.listdir(tmp_path / "cache") == ["entry"]
    remove_new(tmp_path, before)
    assert os.listdir(tmp_path / "cache") == []


def test_a_data_file_with_no_rows_left_for_coverage_gives_a_verdict_not_a_crash(cli, tmp_path):
    """Audit: rows enough for the sample but none for the coverage estimate ended in a TypeError after a
    CERTIFIED certificate was written (exit 1). Now: a verdict's exit code, coverage "not estimated", no traceback."""
    from pacverify.data import TruncatedGaussians

    np.save(tmp_path / "rows.npy", TruncatedGaussians(seed=5).draw(250))
    from helpers_certify import onnx_teacher, robust_teacher

    teacher = onnx_teacher(robust_teacher(), tmp_path / "teacher.onnx")
    out = tmp_path / "out"
    proc = cli("certify", teacher, "--data", tmp_path / "rows.npy", "--delta", "0.05", "--eps", "0.5", "--eta", "0.1",
               "--epochs", "30", "--timeout", "1", "--quiet", "--out", out, "--json", tmp_path / "cert.json",
               cwd=tmp_path)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stdout.startswith("verdict: ")
    body = json.loads((tmp_path / "cert.json").read_text())
    assert body["coverage"]["points"] == 0 and "not estimated" in body["coverage"]["note"]
    assert not (out / LOCK_FILE).exists()  # the run's lock is gone with the run



def test_m_5000_is_refused_with_the_memory_estimate_before_sampling(tmp_path):
    """Audit: m = 5,000 tried to allocate 426 GiB. The estimate refuses it first, saying what to change."""
    from pacverify.pipeline.run import certify
    from pacverify.validation import available_memory

    with pytest.raises(InputError) as info:
        certify(nn.Sequential(nn.Linear(5000, 2)), out=tmp_path / "out", delta=0.05, eps=0.05, eta=0.01,
                synthetic="gaussians:5000")
    text = str(info.value)
    assert "m = 5000" in text and "GiB of memory" in text and "--eps or --eta" in text, text
    assert available_memory() is None or "available" in text
    assert not (tmp_path / "out").exists()
