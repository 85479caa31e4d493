"""No code from a teacher file runs without ``--trust-pickle``: real poisoned files of every kind.

Each poisoned file, loaded the plain torch way, touches a marker file (checked first, so that the
refusals below are meaningful). Without trust, :func:`load_teacher` and the CLI refuse every one of
them with one line naming ``--trust-pickle``, before any torch loader is called, and the marker is
never written. The decision is pacverify's own inspection, not the text of a torch exception.
"""
from __future__ import annotations

import io
import json
import pathlib
import pickle
import re
import warnings
import zipfile
from typing import Tuple

import pytest
import torch
from torch import nn

from pacverify.cli import main
from pacverify.errors import InputError
from pacverify.models import _ALLOWED_GLOBALS, load_teacher, pickle_imports, teacher_format, teacher_logits

MARKER = "payload-ran"


class _Touch:
    """Unpickling this calls ``pathlib.Path.touch(marker)``: the classic pickle payload, made harmless."""

    def __init__(self, marker) -> None:
        self.marker = pathlib.Path(marker)

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def _module() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)).eval()


def _exported(path, dynamic: bool = True):
    dims = ({0: torch.export.Dim("batch")},) if dynamic else None
    torch.export.save(torch.export.export(_module(), (torch.zeros(4, 3),), dynamic_shapes=dims), str(path))
    return path


def _torch_save_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _rewrite(src, dst, edits: dict) -> None:
    """Copy the zip archive ``src`` to ``dst``, replacing the members whose names end with an ``edits`` key."""
    done = set()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            for suffix, new in edits.items():
                if info.filename.endswith(suffix):
                    data = new(data) if callable(new) else new
                    done.add(suffix)
            zout.writestr(info.filename, data)
    assert done == set(edits), f"the archive layout changed: {set(edits) - done} not found"


# ------------------------------------------------------------------------------ the poisoned files
def _pt2_sample_inputs(tmp_path, marker):
    """A genuine torch.export archive whose example inputs are a pickle with a payload (torch.export.load
    tries weights_only=True, then falls back to weights_only=False)."""
    _exported(tmp_path / "genuine.pt2")
    _rewrite(tmp_path / "genuine.pt2", tmp_path / "teacher.pt2",
             {"data/sample_inputs/model.pt": _torch_save_bytes(_Touch(marker))})
    return tmp_path / "teacher.pt2"


def _pt2_pickled_weight(tmp_path, marker):
    """A weight entry marked ``use_pickle`` (read with weights_only=False) holding the payload."""
    def config(data):
        body = json.loads(data)
        entry = next(iter(body["config"].values()))
        entry["use_pickle"] = True
        weights.append(entry["path_name"])
        return json.dumps(body).encode()

    weights: list[str] = []
    _exported(tmp_path / "genuine.pt2")
    _rewrite(tmp_path / "genuine.pt2", tmp_path / "step.pt2", {"model_weights_config.json": config})
    _rewrite(tmp_path / "step.pt2", tmp_path / "teacher.pt2",
             {f"data/weights/{weights[0]}": _torch_save_bytes(_Touch(marker))})
    return tmp_path / "teacher.pt2"


def _pt2_expression(tmp_path, marker):
    """No pickle at all: a shape expression in the program's JSON, which torch.export.load hands to sympify (eval)."""
    evil = (f"Integer.__new__.__globals__['__builtins__']['__import__']('pathlib').Path('{marker}').touch()")
    escaped = json.dumps(evil)[1:-1].encode()

    def graph(data):
        new, count = re.subn(rb"Symbol\('s\d+', positive=True, integer=True\)", lambda _: escaped, data)
        assert count, "no symbolic shape found in the exported program"
        return new

    _exported(tmp_path / "genuine.pt2")
    _rewrite(tmp_path / "genuine.pt2", tmp_path / "teacher.pt2", {"models/model.json": graph})
    return tmp_path / "teacher.pt2"


def _pt2_renamed(tmp_path, marker):
    """The example-inputs archive under a .pt name: recognised by its content."""
    return _pt2_sample_inputs(tmp_path, marker).rename(tmp_path / "teacher.pt")


def _full_pickle(tmp_path, marker):
    torch.save({"model": _module(), "extra": _Touch(marker)}, tmp_path / "full.pt")
    return tmp_path / "full.pt"


def _legacy_pickle(tmp_path, marker):
    torch.save(_Touch(marker), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    return tmp_path / "legacy.pt"


def _bare_pickle(tmp_path, marker):
    """pickle.dumps (protocol 5: STACK_GLOBAL from memoised strings), not torch.save."""
    (tmp_path / "bare.pt").write_bytes(pickle.dumps(_Touch(marker), protocol=5))
    return tmp_path / "bare.pt"


def _broken_pickle(tmp_path, marker):
    """The payload, then bytes that are not a pickle: an unpickler has already called touch when it stops."""
    (tmp_path / "broken.pt").write_bytes(pickle.dumps(_Touch(marker), protocol=2)[:-1] + b"\xff\xff")
    return tmp_path / "broken.pt"


class _StateWriter(nn.Module):
    """TorchScript whose ``__setstate__`` (run by torch.jit.load) writes a file: no Python pickle is involved."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.weight = torch.ones(3)
        self.marker = marker

    @torch.jit.export
    def __getstate__(self) -> Tuple[torch.Tensor, bool, str]:
        return self.weight, self.training, self.marker

    @torch.jit.export
    def __setstate__(self, state: Tuple[torch.Tensor, bool, str]) -> None:
        self.weight, self.training, self.marker = state
        torch.save(self.weight, self.marker)  # aten::save: any path, any time the archive is loaded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x @ self.weight, -(x @ self.weight)], 1)


def _torchscript(tmp_path, marker):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(_StateWriter(str(marker))), str(tmp_path / "scripted.pt"))
    return tmp_path / "scripted.pt"


POISONED = {
    "pt2-sample-inputs": (_pt2_sample_inputs, "export"),
    "pt2-pickled-weight": (_pt2_pickled_weight, "export"),
    "pt2-expression": (_pt2_expression, "export"),
    "pt2-renamed-pt": (_pt2_renamed, "export"),
    "full-pickle": (_full_pickle, "torch.save"),
    "legacy-pickle": (_legacy_pickle, "pickle"),
    "bare-pickle": (_bare_pickle, "pickle"),
    "broken-pickle": (_broken_pickle, "pickle"),
    "torchscript-setstate": (_torchscript, "torchscript"),
}


def _poisoned(name, tmp_path):
    build, kind = POISONED[name]
    folder = tmp_path / "files"
    folder.mkdir()
    marker = tmp_path / MARKER
    return build(folder, marker), marker, kind


def _plain_torch_load(path, kind):
    """What torch's own loaders do with the file (the route pacverify used to take)."""
    if kind == "export":
        with open(path, "rb") as fh:
            return torch.export.load(fh)
    if kind == "torchscript":
        return torch.jit.load(str(path))
    return torch.load(str(path), weights_only=False)


# ----------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("name", sorted(POISONED))
def test_the_poison_is_real(tmp_path, name):
    """Loaded the plain torch way, every poisoned file runs its payload; pacverify recognises its kind."""
    path, marker, kind = _poisoned(name, tmp_path)
    assert teacher_format(path) == kind and not marker.exists()
    try:
        _plain_torch_load(path, kind)
    except Exception:  # the payload replaced a value torch expected: it fails, after running
        pass
    assert marker.exists()


@pytest.fixture
def torch_loaders(monkeypatch):
    """Every torch loader replaced by a recorder: a refused file must reach none of them."""
    calls: list[str] = []

    def recorder(name):
        def refuse(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} was called")
        return refuse

    for owner, attr in ((torch, "load"), (torch.jit, "load"), (torch.export, "load")):
        monkeypatch.setattr(owner, attr, recorder(f"{owner.__name__}.{attr}"))
    return calls


@pytest.mark.parametrize("name", sorted(POISONED))
def test_refused_without_trust_before_any_torch_loader(tmp_path, torch_loaders, name):
    path, marker, _ = _poisoned(name, tmp_path)
    with pytest.raises(InputError) as info:
        load_teacher(path, device="cpu")
    message = str(info.value)
    assert "--trust-pickle" in message and "\n" not in message
    assert torch_loaders == []
    assert not marker.exists()


@pytest.mark.parametrize("name", sorted(POISONED))
def test_cli_refuses_in_process(tmp_path, capsys, name):
    path, marker, _ = _poisoned(name, tmp_path)
    code = main(["distill", str(path), "--synthetic", "gaussians", "--samples", "50", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "--trust-pickle" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "o").exists()


@pytest.mark.parametrize("command, name", [
    ("distill", "pt2-sample-inputs"), ("distill", "pt2-renamed-pt"), ("distill", "full-pickle"),
    ("distill", "torchscript-setstate"), ("certify", "pt2-renamed-pt"),
])
def test_cli_subprocess_exit_2_one_line_no_payload(cli, tmp_path, command, name):
    path, marker, _ = _poisoned(name, tmp_path)
    extra = ["--delta", "0.05", "--eps", "0.5", "--eta", "0.1"] if command == "certify" else ["--samples", "50"]
    result = cli(command, path, "--synthetic", "gaussians", *extra, "--out", tmp_path / "o")
    assert result.returncode == 2, result.stderr
    assert "--trust-pickle" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert not marker.exists() and not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", ["pt2-sample-inputs", "full-pickle", "torchscript-setstate"])
def test_trust_is_the_consent_that_runs_the_file(tmp_path, name):
    """--trust-pickle is what lets the file's code run: with it the payload does run (by design)."""
    path, marker, _ = _poisoned(name, tmp_path)
    try:
        load_teacher(path, trust_pickle=True, device="cpu")
    except InputError:
        pass  # the payload replaced the model or its inputs
    assert marker.exists()


@pytest.mark.parametrize("filename, dynamic", [("teacher.pt2", True), ("static.pt2", False), ("renamed.pt", True)])
def test_trusted_genuine_export_gives_the_module_logits(tmp_path, filename, dynamic):
    path = _exported(tmp_path / filename, dynamic=dynamic)
    assert teacher_format(path) == "export"
    with pytest.raises(InputError, match="torch.export program"):
        load_teacher(path, device="cpu")
    loaded = load_teacher(path, trust_pickle=True, device="cpu")
    x = torch.randn(7, 3)
    torch.testing.assert_close(teacher_logits(loaded, x), _module()(x), atol=1e-6, rtol=1e-5)


def test_trusted_genuine_torchscript_loads(tmp_path):
    torch.jit.save(torch.jit.script(_module()), str(tmp_path / "t.pt"))
    with pytest.raises(InputError, match="TorchScript archive"):
        load_teacher(tmp_path / "t.pt", device="cpu")
    x = torch.randn(5, 3)
    torch.testing.assert_close(load_teacher(tmp_path / "t.pt", trust_pickle=True, device="cpu")(x), _module()(x))


def test_state_dict_decision_ignores_torch_error_text(tmp_path, monkeypatch):
    """A clean state dict whose torch.load fails with torch's 'Unsupported global' text is 'could not be loaded',
    not a pickle refusal; and it is read with weights_only=True even with trust."""
    torch.save(_module().state_dict(), tmp_path / "sd.pt")
    (tmp_path / "arch.py").write_text("from torch import nn\n"
                                      "def make():\n    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))\n")
    arch = f"{tmp_path / 'arch.py'}:make"
    seen: list = []

    def failing_load(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        raise pickle.UnpicklingError("Weights only load failed. Unsupported global: GLOBAL os.system was not allowed")

    real_load = torch.load
    monkeypatch.setattr(torch, "load", failing_load)
    for trust in (False, True):
        with pytest.raises(InputError) as info:
            load_teacher(tmp_path / "sd.pt", arch=arch, trust_pickle=trust, device="cpu")
        assert "could not be loaded" in str(info.value) and "--trust-pickle" not in str(info.value)
    assert seen == [True, True]
    monkeypatch.setattr(torch, "load", real_load)
    x = torch.randn(4, 3)
    torch.testing.assert_close(load_teacher(tmp_path / "sd.pt", arch=arch, device="cpu")(x), _module()(x))


@pytest.mark.parametrize("protocol", [2, 4])
def test_scan_reads_real_state_dicts_as_weights_only(protocol):
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    objects = [model.state_dict(), dict(model.named_parameters()),
               {str(d): torch.zeros(2, dtype=d) for d in (torch.float16, torch.bfloat16, torch.int64, torch.bool)}]
    for obj in objects:
        buffer = io.BytesIO()
        torch.save(obj, buffer, pickle_protocol=protocol)
        with zipfile.ZipFile(buffer) as archive:
            data = archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))
        names = pickle_imports(data)
        assert names and names <= _ALLOWED_GLOBALS, names - _ALLOWED_GLOBALS


def test_scan_follows_the_memo_and_reports_what_it_cannot_read():
    # PROTO 4; "os", "system" memoised, popped, fetched back with BINGET, STACK_GLOBAL, EMPTY_TUPLE, REDUCE, STOP
    via_memo = (b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94" + b"00" + b"h\x00h\x01\x93)R.")
    assert pickle_imports(via_memo) == {"os.system"}
    # the two strings are on the stack but not pushed just before STACK_GLOBAL: not followed, reported as "?"
    indirect = b"\x80\x04\x8c\x02os\x8c\x06system)0\x93)R."
    assert pickle_imports(indirect) == {"?"}
    assert pickle_imports(pickle.dumps(_Touch("m"), protocol=5)) == {"pathlib.Path.touch", "pathlib.PosixPath"}


def test_unreadable_files_are_not_a_trust_question(tmp_path):
    """Corrupt or foreign files are 'could not be loaded' with or without trust, never a pickle refusal."""
    buffer = io.BytesIO()
    torch.save(_module().state_dict(), buffer)
    _rewrite(io.BytesIO(buffer.getvalue()), tmp_path / "cut.pt", {"/data.pkl": lambda data: data[: len(data) // 2]})
    with zipfile.ZipFile(tmp_path / "other.pt", "w") as archive:
        archive.writestr("readme.txt", "not a model")
    (tmp_path / "text.pt").write_text("hello, not a pickle\n")
    for name in ("cut.pt", "other.pt", "text.pt"):
        for trust in (False, True):
            with pytest.raises(InputError, match="could not be loaded") as info:
                load_teacher(tmp_path / name, trust_pickle=trust, device="cpu")
            assert "--trust-pickle" not in str(info.value)
