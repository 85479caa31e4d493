"""Teachers loaded only with consent to run code from the file, and the small ReLU student architectures
(DESIGN.md §1 steps 2–3).

Teacher formats (:func:`load_teacher`), recognised from the file's content, not its name:

* ONNX graphs (``.onnx``), evaluated by pacverify's own interpreter of a fixed op table
  (:mod:`pacverify.onnx_io.torch_module`, so that input gradients exist): no code from the file runs;
* a state dict (``torch.save(model.state_dict())``) with the architecture given as ``module:factory``
  (the user's own code, imported and called), and a pacverify student file (``student.pt``): read with
  ``torch.load(weights_only=True)`` after pacverify's own scan of the pickle found only tensors and
  plain containers;
* with ``trust_pickle=True`` only (CLI ``--trust-pickle``), because loading runs code stored in the file:
  a full pickled module (``torch.save(model)``; unpickling calls whatever the file names), a
  ``torch.export`` program (``torch.export.load`` unpickles parts of the archive and evaluates
  expressions stored in it; a static batch size is handled by chunking), and a TorchScript archive
  (``torch.jit.load`` runs the archive's TorchScript, e.g. ``__setstate__``, whose operators can
  read and write files).

The decision is pacverify's own inspection (zip member names, pickle opcodes read with
:func:`pickletools.genops`), never the text of an exception torch raises.

Students (:func:`build_student`) use only Linear, Conv2d, ReLU, Flatten and (training-only)
Dropout — the ops the verifier reads.
"""
from __future__ import annotations

import io
import pickletools
import re
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import nn

from pacverify.errors import InputError
from pacverify.fileio import atomic_write_bytes
from pacverify.names import DEVICES as _DEVICES
from pacverify.validation import check_choice, check_probability, check_seed

STUDENT_FORMAT = "pacverify.student/1"
DEVICES = _DEVICES


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
_ALTERNATIVES = ("or give the teacher as ONNX (torch.onnx.export) or as a state dict "
                 "(torch.save(model.state_dict())) read with --arch MODULE:FACTORY")
_PICKLE_REFUSAL = ("{path} holds pickled Python objects ({names}), and unpickling them executes code stored in the "
                   "file: pass --trust-pickle (trust_pickle=True) only for a file you trust, " + _ALTERNATIVES)
_REFUSALS = {  # the formats whose loading runs code stored in the file, whatever it contains
    "export": ("{path} is a torch.export program, and torch.export.load unpickles parts of it and evaluates expressions "
               "stored in it, which can execute code from the file: pass --trust-pickle (trust_pickle=True) only for a "
               "file you trust, " + _ALTERNATIVES),
    "torchscript": ("{path} is a TorchScript archive, and torch runs the TorchScript code stored in it when loading and "
                    "calling it (code that can read and write files): pass --trust-pickle (trust_pickle=True) only for "
                    "a file you trust, " + _ALTERNATIVES),
}

# What a weights-only pickle (a state dict, a pacverify student file) may import: tensor and storage
# rebuilders, dtypes, sizes and devices, plain containers. Anything else makes the file a pickle that
# needs trust_pickle.
_STORAGE_TYPES = ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool", "ComplexFloat",
                  "ComplexDouble", "Untyped")
_DTYPES = ("float16", "float32", "float64", "bfloat16", "half", "float", "double", "int8", "int16", "int32", "int64",
           "uint8", "bool", "long", "int", "short", "complex64", "complex128", "cfloat", "cdouble")
_ALLOWED_GLOBALS = frozenset(
    {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter", "torch.Size",
     "torch.device", "_codecs.encode", "builtins.set", "builtins.frozenset", "__builtin__.set", "__builtin__.frozenset"}
    | {f"torch.{kind}Storage" for kind in _STORAGE_TYPES} | {f"torch.{name}" for name in _DTYPES})

_STRING_OPS = frozenset({"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
                         "BINUNICODE8"})
_MEMO_GETS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_MEMO_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_UNKNOWN = object()  # a stack value the scan does not follow (anything but a string)


class _UnreadablePickle(Exception):
    """The bytes are not a whole pickle; ``names`` holds the imports found before the unreadable part."""

    def __init__(self, names: set[str]) -> None:
        super().__init__("not a pickle")
        self.names = names


def pickle_imports(source: bytes | IO[bytes]) -> set[str]:
    """The ``module.name`` globals one pickle imports, read from its opcodes without running it.

    Reads ``GLOBAL``/``INST`` arguments and, for ``STACK_GLOBAL``, the two strings on top of the stack
    (followed through the memo); an import whose name cannot be read this way, or an ``EXT*`` registry
    import, is reported as ``"?"``. Every callable a pickle can call (``REDUCE``, ``NEWOBJ``, ``OBJ``,
    ``BUILD`` via ``__setstate__``) is one of these imports or an object built by one. A stream
    that is not a whole pickle raises :class:`_UnreadablePickle` carrying the imports read so far
    (an unpickler runs opcodes as it reads them, so they count).
    """
    names: set[str] = set()
    memo: dict[Any, Any] = {}
    recent: list[Any] = []  # the values pushed since the last opcode that did anything else: the top of the stack
    try:
        for op, arg, _ in pickletools.genops(source):
            name = op.name
            if name in _STRING_OPS:
                recent.append(arg)
            elif name in _MEMO_GETS:
                recent.append(memo.get(arg, _UNKNOWN))
            elif name in _MEMO_PUTS or name == "MEMOIZE":
                memo[len(memo) if name == "MEMOIZE" else arg] = recent[-1] if recent else _UNKNOWN
            elif name in ("FRAME", "PROTO"):
                pass
            else:
                if name in ("GLOBAL", "INST"):
                    names.add(str(arg).replace(" ", ".", 1))
                elif name == "STACK_GLOBAL":
                    pair = recent[-2:]
                    known = len(pair) == 2 and all(isinstance(v, str) for v in pair)
                    names.add(f"{pair[0]}.{pair[1]}" if known else "?")
                elif name.startswith("EXT"):
                    names.add("?")
                recent = []
    except Exception as exc:  # pickletools raises ValueError and friends on bytes that are not a pickle
        raise _UnreadablePickle(names) from exc
    return names


def _zip_names(path: Path) -> list[str] | None:
    """Member names when ``path`` is a zip archive the way torch sees one (local header first), else None."""
    with open(path, "rb") as fh:
        if fh.read(4) != b"PK\x03\x04":
            return None
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return None


def _archive_kind(names: list[str]) -> str | None:
    """``export``, ``torchscript`` or ``torch.save`` from the member names of a zip archive; None if none fits."""
    split = [n.split("/") for n in names]
    if any(p[-1] in ("archive_format", "serialized_exported_program.json") or "aotinductor" in p
           or (len(p) >= 2 and p[-2] == "models" and p[-1].endswith(".json")) for p in split):
        return "export"
    if any("code" in p[:-1] or p[-1] in ("constants.pkl", "bytecode.pkl") or p[-1].endswith(".debug_pkl")
           for p in split):
        return "torchscript"
    if any(p[-1] == "data.pkl" for p in split):
        return "torch.save"
    return None


def teacher_format(path: str | Path) -> str:
    """What :func:`load_teacher` reads ``path`` as, from its content (``.onnx`` aside, which only the ONNX parser reads).

    ``export`` (a ``torch.export`` archive, whatever its name), ``torchscript``, ``torch.save`` (a zip
    archive written by ``torch.save``), ``onnx`` (a non-archive named ``.onnx``), or ``pickle`` (any
    other file: the legacy ``torch.save`` stream or a bare pickle). A zip archive of another kind is
    an :class:`InputError`.
    """
    path = Path(path)
    names = _zip_names(path)
    if names is not None:
        kind = _archive_kind(names)
        if kind is None:
            raise InputError(f"teacher file {path} could not be loaded: a zip archive that is not written by "
                             "torch.save, torch.jit.save or torch.export.save")
        return kind
    return "onnx" if path.suffix.lower() == ".onnx" else "pickle"


def _file_imports(path: Path, kind: str) -> set[str]:
    """Every import of every pickle that ``torch.load`` reads from ``path`` (see :func:`pickle_imports`).

    A pickle that breaks off counts with the imports read before the break (an unpickler has run them
    by then); if none of those needs trust the file is simply unreadable (:class:`InputError`).
    """
    names: set[str] = set()

    def scan(source) -> bool:
        try:
            names.update(pickle_imports(source))
            return True
        except _UnreadablePickle as exc:
            names.update(exc.names)
            if not _unsafe(names):
                raise InputError(f"teacher file {path} could not be loaded: it is not an ONNX graph (.onnx), nor a "
                                 "TorchScript, torch.export or torch.save file") from None
            return False

    if kind == "torch.save":
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if member.split("/")[-1] == "data.pkl":
                    scan(archive.read(member))
        return names
    # the legacy torch.save stream is five pickles (magic number, protocol, system info, the object, storage
    # keys) and then raw storage bytes; a bare pickle is one
    size = path.stat().st_size
    with open(path, "rb") as fh:
        for _ in range(5):
            if not scan(fh) or fh.tell() >= size:
                break
    return names


def _unsafe(names: set[str]) -> list[str]:
    """The imports outside the weights-only allowlist, made printable (they come from the file)."""
    return sorted(re.sub(r"[^\w.?]", "_", n)[:80] for n in names - _ALLOWED_GLOBALS)


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


class ExportedModule(nn.Module):
    """A ``torch.export`` program's module that pickles as the program's bytes (its own module does not pickle), so a
    teacher read from a ``.pt2`` file can travel to Ray workers (:mod:`pacverify.executor`)."""

    def __init__(self, blob: bytes) -> None:
        super().__init__()
        self.blob = blob
        self.program = torch.export.load(io.BytesIO(blob))
        self.inner = self.program.module()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)

    def __reduce__(self):
        return _exported_from_bytes, (self.blob, str(module_device(self)))


def _exported_from_bytes(blob: bytes, device: str) -> nn.Module:
    """An :class:`ExportedModule` back from its program's bytes, frozen, on ``device``."""
    return _prepare(ExportedModule(blob), torch.device(device))


def _load_export(path: Path) -> nn.Module:
    module = ExportedModule(path.read_bytes())
    program = module.program
    user = set(program.graph_signature.user_inputs)
    shapes = [n.meta["val"].shape for n in program.graph.nodes if n.op == "placeholder" and n.name in user]
    if len(shapes) != 1:
        raise InputError(f"{path}: a teacher takes exactly one input, this program takes {len(shapes)}")
    batch = shapes[0][0] if len(shapes[0]) else None
    return _FixedBatch(module, int(batch)) if isinstance(batch, int) else module


def load_factory(spec: str) -> nn.Module:
    """Call ``module:factory()`` (an importable module or ``path/file.py:factory``); it must return a module.

    This imports and runs the named code: it is the user's own code, named on the command line
    (``--arch``), never taken from a model file.
    """
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

    The file's format is recognised from its content (:func:`teacher_format`, module docstring);
    ``arch`` is the ``module:factory`` that builds the architecture for a state dict (imported and
    called: the caller's own code). ``trust_pickle`` is the caller's consent to run code stored in
    the file: without it a full pickle, a TorchScript archive or a ``torch.export`` program raises
    :class:`InputError` before any torch loader sees the file. The teacher's output is taken as
    logits, shape (B, n_classes). Also raises :class:`InputError` for a missing or unreadable file
    and a state dict without ``arch``.
    """
    path = Path(path)
    target = resolve_device(device)
    if not path.is_file():
        raise InputError(f"teacher file {path} does not exist")
    try:
        kind = teacher_format(path)
        if kind in _REFUSALS and not trust_pickle:
            raise InputError(_REFUSALS[kind].format(path=path))
        model: nn.Module
        if kind == "onnx":
            from pacverify.onnx_io.torch_module import onnx_to_torch

            model = onnx_to_torch(str(path))
        elif kind == "torchscript":
            model = torch.jit.load(str(path), map_location="cpu")
        elif kind == "export":
            model = _load_export(path)
        else:
            model = _load_pickled(path, kind, arch, trust_pickle)
    except InputError:
        raise
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise InputError(f"teacher file {path} could not be loaded: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    return _prepare(model, target)


def _load_pickled(path: Path, kind: str, arch: str | None, trust_pickle: bool) -> nn.Module:
    unsafe = _unsafe(_file_imports(path, kind))
    if unsafe and not trust_pickle:
        names = ", ".join(unsafe[:3]) + (", ..." if len(unsafe) > 3 else "")
        raise InputError(_PICKLE_REFUSAL.format(path=path, names=names))
    # weights_only=True whenever the scan allows it; it also enforces the allowlist on whatever torch reads
    obj = torch.load(str(path), map_location="cpu", weights_only=not unsafe)
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
                   device: str | torch.device | None = None,
                   progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Logits of ``model`` on ``x`` (N, *input_shape), batched, under ``torch.no_grad``: float32 (N, n) on CPU.

    ``device`` defaults to the model's own device. A model that fails on the inputs, or whose output
    is not a (B, n ≥ 2) tensor, raises :class:`InputError` saying so. ``progress(done, N)`` after each batch.
    """
    target = module_device(model) if device is None else resolve_device(device)
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    outs = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            outs.append(call_model(model, x[start:start + batch_size].to(target)).float().cpu())
            if progress is not None:
                progress(min(start + batch_size, x.shape[0]), x.shape[0])
    return torch.cat(outs) if outs else torch.empty(0, 0)


def _one_line(exc: BaseException) -> str:
    """The error a model raised, on one line (TorchScript: the model's own error after the interpreter's preamble)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if isinstance(exc, torch.jit.Error):
        starts = [i for i, line in enumerate(lines) if re.match(r"^[\w.]*(Error|Exception)\b[^:]*:", line)]
        return " ".join(lines[starts[-1]:]) if starts else lines[-1]
    return " ".join(lines)


def call_model(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` with a clear :class:`InputError` if it fails or does not return (B, n ≥ 2) logits."""
    try:
        out = model(x)
    except (RuntimeError, ValueError, TypeError, AssertionError, IndexError, torch.jit.Error) as exc:
        raise InputError(f"the model failed on inputs of shape {tuple(x.shape)}: {_one_line(exc)}") from None
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
    convs: list[_Conv] = []
    dense: list[int] = []
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


def check_student_spec(spec: object) -> str:
    """``spec`` canonicalised (stripped, lower case) if it names a student architecture; InputError otherwise."""
    text = str(spec).strip().lower()
    kind, _, body = text.partition(":")
    if kind == "linear" and not body:
        return text
    if kind == "mlp":
        _parse_mlp(body)
        return text
    if kind == "cnn":
        _parse_cnn(body)
        return text
    raise InputError(f"{_SPEC_HELP}; got {spec!r}")


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


def save_student(student: nn.Module, path: str | Path) -> None:
    """Save ``student`` as ``student.pt`` (spec + state dict), atomically; loadable with weights_only=True.

    Only a :class:`Student` (built from a spec) can be saved: the file rebuilds it from its spec.
    """
    if not isinstance(student, Student):
        raise InputError(f"only a student built from a spec (pacverify.models.Student) can be saved as a student "
                         f"file, got a {type(student).__name__}")
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


class LogitsOf(nn.Module):
    """A teacher whose outputs are ``kind`` ("probabilities" or "costs"), seen as logits: ``log p`` (softmax of
    it gives back p) or ``−cost`` (the smallest cost becomes the largest logit). Differentiable; ``inner`` is the
    teacher itself."""

    def __init__(self, inner: nn.Module, kind: str) -> None:
        super().__init__()
        self.inner = inner
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        if self.kind == "costs":
            return -out
        return torch.log(out.clamp_min(torch.finfo(out.dtype).tiny))


def as_logits(teacher: nn.Module, kind: str) -> nn.Module:
    """``teacher`` itself for "logits", else :class:`LogitsOf` (``kind`` in :data:`~pacverify.names.OUTPUT_KINDS`)."""
    from pacverify.names import OUTPUT_KINDS
    from pacverify.validation import check_choice

    kind = check_choice(kind, OUTPUT_KINDS, "outputs")
    return teacher if kind == "logits" else LogitsOf(teacher, kind).eval()


def output_kind(teacher: nn.Module) -> str:
    """What :func:`as_logits` was told the teacher returns ("logits" for an unwrapped teacher)."""
    return teacher.kind if isinstance(teacher, LogitsOf) else "logits"


def looks_like_probabilities(outputs: torch.Tensor | np.ndarray) -> bool:
    """Every row ≥ 0 and summing to 1 (to 1e-4): outputs that are probabilities, not logits (2+ columns)."""
    out = np.asarray(outputs.detach().cpu() if isinstance(outputs, torch.Tensor) else outputs, dtype=np.float64)
    return out.ndim == 2 and out.shape[1] >= 2 and len(out) > 0 and bool(
        (out >= 0).all() and np.allclose(out.sum(axis=1), 1.0, atol=1e-4))


def layout_note(teacher: nn.Module, input_shape: tuple[int, ...]) -> str | None:
    """The one sentence to tell the user when the teacher reshapes inputs of per-point ``input_shape`` to another
    declared layout (an ONNX graph declaring e.g. (1, 1, 5) for rows of 5: :meth:`OnnxModule.reshapes`); else None."""
    from pacverify.onnx_io.torch_module import OnnxModule

    teacher = teacher.inner if isinstance(teacher, LogitsOf) else teacher
    if isinstance(teacher, OnnxModule) and teacher.reshapes(tuple(input_shape)):
        return (f"the teacher's ONNX graph declares inputs of shape {teacher.input_shape}; points of shape "
                f"{tuple(input_shape)} are reshaped to it (same values, row-major order)")
    return None
