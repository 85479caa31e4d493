"""Teachers loaded safely, and the small ReLU student architectures (DESIGN.md §1 steps 2–3).

Teacher formats (:func:`load_teacher`), none of which runs code from the file unless asked:

* TorchScript archives (``torch.jit.save``),
* ``torch.export`` programs (``.pt2``; a static batch size is handled by chunking),
* ONNX graphs (evaluated with torch so that input gradients exist, :mod:`pacverify.onnx_io.torch_module`),
* a state dict (``torch.save(model.state_dict())``) with the architecture given as ``module:factory``,
* a pacverify student file (``student.pt``: spec + state dict),
* a full pickled module (``torch.save(model)``) only with ``trust_pickle=True``: unpickling runs
  arbitrary code, so it is refused otherwise.

Students (:func:`build_student`) use only Linear, Conv2d, ReLU, Flatten and (training-only)
Dropout — the ops the verifier reads.
"""
from __future__ import annotations

import io
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pacverify.errors import InputError
from pacverify.fileio import atomic_write_bytes
from pacverify.validation import check_choice, check_probability, check_seed

STUDENT_FORMAT = "pacverify.student/1"
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` → the GPU when one is present, else the CPU; ``cuda`` without a GPU → InputError."""
    if isinstance(device, torch.device):
        return device
    name = str(device).strip().lower()
    base = "cuda" if name.startswith("cuda:") else check_choice(name, DEVICES, "device")
    if base == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise InputError("device cuda was requested but torch sees no CUDA GPU; use --device cpu or auto")
    return torch.device(name)


def module_device(model: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU when it has none)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


# ---------------------------------------------------------------------------------------- teachers
_PICKLE_REFUSAL = (
    "{path} is a full pickled module (torch.save(model)); unpickling it executes code stored in the file, "
    "so pacverify refuses it unless you pass --trust-pickle (trust_pickle=True) for a file you trust. "
    "Safer formats: torch.jit.save(torch.jit.script(model), 'teacher.pt'), torch.export.save(torch.export."
    "export(model, (x,)), 'teacher.pt2'), torch.onnx.export(...), or torch.save(model.state_dict()) with "
    "--arch MODULE:FACTORY")


class _FixedBatch(nn.Module):
    """Run a module compiled for one batch size on any batch: zero-pad and chunk (per-sample outputs)."""

    def __init__(self, inner: nn.Module, batch: int) -> None:
        super().__init__()
        self.inner, self.batch = inner, batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for chunk in torch.split(x, self.batch):
            n = chunk.shape[0]
            if n < self.batch:
                chunk = torch.cat([chunk, chunk.new_zeros((self.batch - n,) + tuple(chunk.shape[1:]))])
            outs.append(self.inner(chunk)[:n])
        return torch.cat(outs)


def _load_export(path: Path) -> nn.Module:
    program = torch.export.load(str(path))
    module = program.module()
    user = set(program.graph_signature.user_inputs)
    shapes = [n.meta["val"].shape for n in program.graph.nodes if n.op == "placeholder" and n.name in user]
    if len(shapes) != 1:
        raise InputError(f"{path}: a teacher takes exactly one input, this program takes {len(shapes)}")
    batch = shapes[0][0] if len(shapes[0]) else None
    return _FixedBatch(module, int(batch)) if isinstance(batch, int) else module


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def _is_torchscript(names: list[str]) -> bool:
    return any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names)


def _is_export(path: Path, names: list[str]) -> bool:
    return path.suffix.lower() == ".pt2" or any(n.endswith("/archive_format") for n in names)


def load_factory(spec: str) -> nn.Module:
    """Call ``module:factory()`` (an importable module or ``path/file.py:factory``); it must return a module."""
    from pacverify.data import load_callable

    module = load_callable(spec)()
    if not isinstance(module, nn.Module):
        raise InputError(f"{spec} must return a torch.nn.Module, it returned {type(module).__name__}")
    return module


def _from_state(obj: Any, path: Path, arch: str | None) -> nn.Module:
    if isinstance(obj, dict) and obj.get("format") == STUDENT_FORMAT:
        return student_from_dict(obj, source=str(path))
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        if arch is None:
            raise InputError(f"{path} holds a state dict (weights only); give the architecture that builds the "
                             "module with --arch MODULE:FACTORY (arch='module:factory')")
        module = load_factory(arch)
        try:
            module.load_state_dict(obj, strict=True)
        except RuntimeError as exc:
            raise InputError(f"the state dict in {path} does not fit {arch}(): {str(exc).splitlines()[0]}") from None
        return module
    if isinstance(obj, torch.jit.ScriptModule) or isinstance(obj, nn.Module):
        return obj
    raise InputError(f"{path} holds a {type(obj).__name__}, not a model or a state dict")


def load_teacher(path: str | Path, *, arch: str | None = None, trust_pickle: bool = False,
                 device: str | torch.device = "auto") -> nn.Module:
    """Load a teacher classifier from ``path``; returned in eval mode on ``device``, parameters frozen.

    The file's format is recognised from its content (see the module docstring); ``arch`` is the
    ``module:factory`` that builds the architecture for a state dict. The teacher's output is taken
    as logits, shape (B, n_classes). Raises :class:`InputError` for a missing or unreadable file,
    a state dict without ``arch``, or a pickled module without ``trust_pickle``.
    """
    path = Path(path)
    target = resolve_device(device)
    if not path.is_file():
        raise InputError(f"teacher file {path} does not exist")
    names = _zip_names(path)
    try:
        if path.suffix.lower() == ".onnx":
            from pacverify.onnx_io.torch_module import onnx_to_torch

            model = onnx_to_torch(path)
        elif _is_torchscript(names):
            model = torch.jit.load(str(path), map_location="cpu")
        elif _is_export(path, names):
            model = _load_export(path)
        else:
            model = _load_pickled(path, arch, trust_pickle)
    except InputError:
        raise
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise InputError(f"teacher file {path} could not be loaded: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    return _prepare(model, target)


def _load_pickled(path: Path, arch: str | None, trust_pickle: bool) -> nn.Module:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        if "Unsupported global" not in str(exc):  # not a pickled object graph: a corrupt or foreign file
            raise
        if not trust_pickle:
            raise InputError(_PICKLE_REFUSAL.format(path=path)) from None
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    return _from_state(obj, path, arch)


def _prepare(model: nn.Module, device: torch.device) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model.eval()
        except (NotImplementedError, RuntimeError):
            pass  # torch.export modules stay in the mode they were exported in
    for param in model.parameters():
        param.requires_grad_(False)
    return model.to(device)


def teacher_logits(model: nn.Module, x: np.ndarray | torch.Tensor, *, batch_size: int = 1024,
                   device: str | torch.device | None = None) -> torch.Tensor:
    """Logits of ``model`` on ``x`` (N, *input_shape), batched, under ``torch.no_grad``: float32 (N, n) on CPU.

    ``device`` defaults to the model's own device. A model that fails on the inputs, or whose output
    is not a (B, n ≥ 2) tensor, raises :class:`InputError` saying so.
    """
    target = module_device(model) if device is None else resolve_device(device)
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    outs = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            outs.append(call_model(model, x[start:start + batch_size].to(target)).float().cpu())
    return torch.cat(outs) if outs else torch.empty(0, 0)


def call_model(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` with a clear :class:`InputError` if it fails or does not return (B, n ≥ 2) logits."""
    try:
        out = model(x)
    except (RuntimeError, ValueError, TypeError, AssertionError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"the model failed on inputs of shape {tuple(x.shape)}: {first}") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0] or out.shape[1] < 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(f"a classifier must return logits of shape (batch, classes >= 2), got {shape} "
                         f"for inputs of shape {tuple(x.shape)}")
    return out


# ---------------------------------------------------------------------------------------- students
class Student(nn.Sequential):
    """A ReLU student: ``nn.Sequential`` of Flatten/Linear/Conv2d/ReLU (+ Dropout before the last layer).

    Knows the ``spec`` it was built from, its per-sample ``input_shape`` and ``n_classes``, so that
    it can be saved as a state dict and rebuilt (:func:`save_student`, :func:`load_student`).
    """

    def __init__(self, layers: list[nn.Module], *, spec: str, input_shape: tuple[int, ...], n_classes: int,
                 dropout: float) -> None:
        super().__init__(*layers)
        self.spec, self.input_shape, self.n_classes, self.dropout = spec, tuple(input_shape), n_classes, dropout


@dataclass(frozen=True)
class _Conv:
    channels: int
    kernel: int = 3
    stride: int = 2
    padding: int = 1


_CONV = re.compile(r"^(\d+)(?:k(\d+))?(?:s(\d+))?(?:p(\d+))?$")
_SPEC_HELP = ("student spec must be 'linear', 'mlp:DxW' (D hidden layers of width W, e.g. mlp:2x64), "
              "'mlp:W1-W2-...', or 'cnn:C1-C2-...[-fcW]' (3x3 stride-2 convolutions with C channels; "
              "'16k5s1p2' sets kernel, stride, padding; 'fcW' adds a hidden dense layer)")


def _parse_mlp(body: str) -> list[int]:
    match = re.fullmatch(r"(\d+)x(\d+)", body)
    widths = [int(match[2])] * int(match[1]) if match else [int(w) for w in body.split("-") if w.isdigit()]
    if not widths or (not match and len(widths) != len(body.split("-"))) or min(widths) < 1:
        raise InputError(f"{_SPEC_HELP}; got 'mlp:{body}'")
    return widths


def _parse_cnn(body: str) -> tuple[list[_Conv], list[int]]:
    convs, dense = [], []
    for token in body.split("-"):
        conv = _CONV.fullmatch(token)
        if conv and not dense:
            channels, kernel, stride, padding = conv.groups()
            convs.append(_Conv(int(channels), int(kernel or 3), int(stride or 2), 1 if padding is None else int(padding)))
        elif re.fullmatch(r"fc\d+", token):
            dense.append(int(token[2:]))
        else:
            raise InputError(f"{_SPEC_HELP}; got 'cnn:{body}'")
    if not convs or min(min(c.channels, c.kernel, c.stride) for c in convs) < 1 or min(dense, default=1) < 1:
        raise InputError(f"{_SPEC_HELP}; got 'cnn:{body}'")
    return convs, dense


def build_student(spec: str, input_shape: tuple[int, ...], n_classes: int, *, dropout: float = 0.0,
                  seed: int = 0) -> Student:
    """A freshly initialised ReLU student for inputs of ``input_shape`` and ``n_classes`` logits.

    ``spec``: ``linear``; ``mlp:2x64`` (two hidden layers of 64) or ``mlp:64-32``; ``cnn:16-32-fc64``
    (conv layers need ``input_shape = (C, H, W)``). ``dropout`` > 0 adds Dropout before the last
    layer (ISD, 001 §2.2; identity in eval mode and absent from the ONNX export). The initial
    weights depend only on ``seed`` (torch's global RNG is left untouched).
    """
    input_shape = tuple(int(s) for s in input_shape)
    dropout = check_probability(dropout, "dropout")
    if dropout >= 1:
        raise InputError("dropout must be < 1")
    if not isinstance(n_classes, int) or n_classes < 2:
        raise InputError(f"a classifier needs at least 2 classes, got {n_classes!r}")
    kind, _, body = str(spec).strip().lower().partition(":")
    layers: list[nn.Module] = [nn.Flatten()]
    features = int(np.prod(input_shape))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(check_seed(seed))
        if kind == "linear" and not body:
            hidden = []
        elif kind == "mlp":
            hidden = _parse_mlp(body)
        elif kind == "cnn":
            convs, hidden = _parse_cnn(body)
            layers, features = _conv_layers(convs, input_shape)
        else:
            raise InputError(f"{_SPEC_HELP}; got {spec!r}")
        for width in hidden:
            layers += [nn.Linear(features, width), nn.ReLU()]
            features = width
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(features, n_classes))
        canonical = f"{kind}:{body}" if body else kind
        return Student(layers, spec=canonical, input_shape=input_shape, n_classes=n_classes, dropout=dropout)


def _conv_layers(convs: list[_Conv], input_shape: tuple[int, ...]) -> tuple[list[nn.Module], int]:
    if len(input_shape) != 3:
        raise InputError(f"a cnn student needs image inputs of shape (C, H, W), got {input_shape}; "
                         "reshape the points to (N, C, H, W) or use an mlp student")
    channels, height, width = input_shape
    layers: list[nn.Module] = []
    for conv in convs:
        layers += [nn.Conv2d(channels, conv.channels, conv.kernel, conv.stride, conv.padding), nn.ReLU()]
        channels = conv.channels
        height = (height + 2 * conv.padding - conv.kernel) // conv.stride + 1
        width = (width + 2 * conv.padding - conv.kernel) // conv.stride + 1
        if height < 1 or width < 1:
            raise InputError(f"the cnn student's convolutions shrink {input_shape} to nothing; use fewer or "
                             "smaller-stride layers")
    return layers + [nn.Flatten()], channels * height * width


def student_to_dict(student: Student) -> dict:
    """The safe on-disk form of a student: plain types and tensors only (``weights_only`` loadable)."""
    return {"format": STUDENT_FORMAT, "spec": student.spec, "input_shape": list(student.input_shape),
            "n_classes": student.n_classes, "dropout": student.dropout,
            "state_dict": {k: v.detach().cpu().clone() for k, v in student.state_dict().items()}}


def student_from_dict(obj: dict, *, source: str = "student") -> Student:
    """Rebuild a :class:`Student` from :func:`student_to_dict` output (eval mode, CPU)."""
    try:
        student = build_student(obj["spec"], tuple(obj["input_shape"]), int(obj["n_classes"]),
                                dropout=float(obj.get("dropout", 0.0)))
        student.load_state_dict(obj["state_dict"], strict=True)
    except (KeyError, RuntimeError, TypeError) as exc:
        raise InputError(f"{source} is not a valid pacverify student file: {str(exc).splitlines()[0]}") from None
    return student.eval()


def save_student(student: Student, path: str | Path) -> None:
    """Save ``student`` as ``student.pt`` (spec + state dict), atomically; loadable with weights_only=True."""
    buffer = io.BytesIO()
    torch.save(student_to_dict(student), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_student(path: str | Path) -> Student:
    """Load a student saved by :func:`save_student` (no code runs: ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"student file {path} does not exist")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign files
        raise InputError(f"{path} is not a pacverify student file (read with weights_only=True): "
                         f"{str(exc).splitlines()[0]}") from None
    if not isinstance(obj, dict) or obj.get("format") != STUDENT_FORMAT:
        raise InputError(f"{path} is not a pacverify student file (written by pacverify distill)")
    return student_from_dict(obj, source=str(path))
