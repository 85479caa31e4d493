"""The certificate on disk: ``certificate.json`` plus the compressed side file ``points.npz``.

The JSON schema is documented in docs/certificate.md (``schema`` = :data:`SCHEMA`). Keys that
scripts rely on (DESIGN.md §4): ``verdict``, ``pac.samples``, ``pac.delta``, ``pac.eps``,
``pac.eta``, ``relaxation.delta_T``. The side file holds the sample points and every per-point
result; its sha256 is recorded in the JSON, and the JSON body carries a sha256 digest of itself
(``integrity.body_sha256``) so that ``pacverify check`` detects edits. The digest is an integrity
check, not a signature: someone who edits the file can recompute it, which is why ``check``
also re-verifies the student and recomputes every derived number.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pacverify.errors import InputError
from pacverify.fileio import atomic_save_npz, atomic_write_json, ensure_dir, sha256_file, sha256_json, to_jsonable
from pacverify.guarantee import Verdict

SCHEMA = "pacverify.certificate/1"
CERTIFICATE_FILE = "certificate.json"
POINTS_FILE = "points.npz"
REQUIRED_KEYS = ("verdict", "pac.samples", "pac.delta", "pac.eps", "pac.eta", "relaxation.delta_T")


def lookup(body: dict, dotted: str):
    """``lookup(body, "pac.delta")`` → body["pac"]["delta"]; KeyError if absent."""
    node = body
    for part in dotted.split("."):
        node = node[part]
    return node


def body_digest(body: dict) -> str:
    """sha256 of the canonical JSON of ``body`` without its ``integrity`` entry."""
    return sha256_json({k: v for k, v in body.items() if k != "integrity"})


@dataclass(frozen=True)
class Certificate:
    """A certificate: its JSON ``body``, its per-point ``arrays`` and the directory it lives in."""

    body: dict
    arrays: dict = field(default_factory=dict)
    directory: Path | None = None

    @property
    def verdict(self) -> Verdict:
        return Verdict(self.body["verdict"])

    @property
    def delta_T(self) -> float:  # noqa: N802 - the paper's name
        return float(self.body["relaxation"]["delta_T"])

    @property
    def exit_code(self) -> int:
        return self.verdict.exit_code

    def path(self, key: str) -> Path:
        """Absolute path of a file recorded under ``files.<key>`` (relative to the certificate)."""
        rel = Path(self.body["files"][key]["path"])
        return rel if rel.is_absolute() or self.directory is None else self.directory / rel


def write_certificate(body: dict, arrays: dict[str, np.ndarray], out_dir: str | os.PathLike) -> Certificate:
    """Write ``points.npz`` then ``certificate.json`` into ``out_dir``, each whole.

    Fills ``files.points`` (path and sha256 of the side file), ``schema`` and
    ``integrity.body_sha256``. Returns the written :class:`Certificate`.
    """
    directory = ensure_dir(out_dir)
    missing = [key for key in REQUIRED_KEYS if not _has(body, key)]
    if missing:
        raise ValueError(f"certificate body lacks required keys {missing}")
    points_path = atomic_save_npz(directory / POINTS_FILE, **arrays)
    body = to_jsonable(dict(body))
    body["schema"] = SCHEMA
    body.setdefault("files", {})["points"] = {"path": POINTS_FILE, "sha256": sha256_file(points_path)}
    body["integrity"] = {"body_sha256": body_digest(body)}
    atomic_write_json(directory / CERTIFICATE_FILE, body)
    return Certificate(body=body, arrays=dict(arrays), directory=directory.resolve())


def _has(body: dict, dotted: str) -> bool:
    try:
        lookup(body, dotted)
    except (KeyError, TypeError):
        return False
    return True


def load_certificate(path: str | os.PathLike, *, load_arrays: bool = True) -> Certificate:
    """Read a certificate (a ``certificate.json`` file or its directory).

    Raises :class:`InputError` when the file is missing, not JSON, of another schema, lacks a
    required key, or when its side file is missing or unreadable. Does *not* check hashes or
    re-verify: that is :func:`pacverify.check.check_certificate`.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CERTIFICATE_FILE
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"certificate {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"certificate {path} is not readable JSON: {exc}") from None
    if not isinstance(body, dict) or body.get("schema") != SCHEMA:
        raise InputError(f"{path} is not a pacverify certificate of schema {SCHEMA}")
    missing = [key for key in REQUIRED_KEYS if not _has(body, key)]
    if missing:
        raise InputError(f"certificate {path} lacks required keys: {', '.join(missing)}")
    try:
        Verdict(body["verdict"])
    except ValueError:
        raise InputError(f"certificate {path} has an unknown verdict {body['verdict']!r}") from None
    cert = Certificate(body=body, directory=path.parent.resolve())
    if not load_arrays:
        return cert
    points = cert.path("points")
    try:
        with np.load(points, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise InputError(f"the certificate's side file {points} is missing") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"the certificate's side file {points} is unreadable: {exc}") from None
    return Certificate(body=body, arrays=arrays, directory=cert.directory)

# Per-point status codes stored in ``points.npz["status"]``.
STATUS_NAMES = ("not confident", "verified", "falsified", "unknown", "disagree")
STATUS_CODE = {name: code for code, name in enumerate(STATUS_NAMES)}


def status_names(codes: np.ndarray) -> np.ndarray:
    """Map the int codes of ``points.npz["status"]`` to their names."""
    return np.asarray(STATUS_NAMES, dtype=object)[np.asarray(codes, dtype=int)]
