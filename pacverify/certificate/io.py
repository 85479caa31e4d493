"""The certificate on disk: ``certificate.json`` plus the compressed side file ``points.npz``.

``certificate.json`` is the JSON form of :class:`~pacverify.certificate.schema.CertificateBody`
(docs/certificate.md; JSON Schema in docs/certificate.schema.json). Keys that scripts rely on
(DESIGN.md §4): ``verdict``, ``pac.samples``, ``pac.delta``, ``pac.eps``, ``pac.eta``,
``relaxation.delta_T``. The side file holds the sample points and every per-point result; its sha256
is recorded in the JSON, and the JSON body carries a sha256 digest of itself
(``integrity.body_sha256``) so that ``pacverify check`` detects edits. The digest is an integrity
check, not a signature: someone who edits the file can recompute it, which is why ``check`` also
re-verifies the student and recomputes every derived number.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pacverify.certificate.schema import (
    MASS_SCHEMA,
    SCHEMA,
    CertificateBody,
    FileRef,
    Integrity,
    MassCertificateBody,
    PointStatus,
    Verdict,
    body_from_dict,
)
from pacverify.errors import InputError
from pacverify.fileio import (
    atomic_save_npz,
    atomic_write_json,
    ensure_dir,
    sha256_file,
    sha256_json,
)

CERTIFICATE_FILE = "certificate.json"
POINTS_FILE = "points.npz"


def body_digest(body: dict) -> str:
    """sha256 of the canonical JSON of ``body`` (a dict) without its ``integrity`` entry."""
    return sha256_json({k: v for k, v in body.items() if k != "integrity"})


@dataclass(frozen=True)
class Certificate:
    """A certificate: its typed ``record``, its per-point ``arrays`` and the directory it lives in.

    ``body`` is the JSON form of ``record`` (what ``certificate.json`` holds).
    """

    record: CertificateBody | MassCertificateBody
    arrays: dict = field(default_factory=dict)
    directory: Path | None = None

    @property
    def mass(self) -> bool:
        """True for a mass-mode certificate (``--guarantee mass``)."""
        return isinstance(self.record, MassCertificateBody)

    @property
    def body(self) -> dict:
        return self.record.to_dict()

    @property
    def verdict(self) -> Verdict:
        return self.record.verdict

    @property
    def delta_T(self) -> float:  # noqa: N802 - the paper's name
        return self.record.relaxation.delta_T

    @property
    def exit_code(self) -> int:
        return self.verdict.exit_code

    def path(self, ref: FileRef) -> Path:
        """Absolute path of a recorded file (relative paths are relative to the certificate's directory)."""
        if ref.path is None:
            raise InputError("the certificate records no path for this file")
        rel = Path(ref.path)
        return rel if rel.is_absolute() or self.directory is None else self.directory / rel


def write_certificate(record: CertificateBody | MassCertificateBody, arrays: dict[str, np.ndarray],
                      out_dir: str | os.PathLike) -> Certificate:
    """Write ``points.npz`` then ``certificate.json`` into ``out_dir``, each whole.

    Fills ``files.points`` (path and sha256 of the side file), ``schema`` and
    ``integrity.body_sha256``. Returns the written :class:`Certificate`.
    """
    directory = ensure_dir(out_dir)
    points_path = atomic_save_npz(directory / POINTS_FILE, **arrays)
    files: Any = dataclasses.replace(record.files, points=FileRef(POINTS_FILE, sha256_file(points_path)))
    schema = MASS_SCHEMA if isinstance(record, MassCertificateBody) else SCHEMA
    record = dataclasses.replace(record, schema=schema, files=files, integrity=Integrity(""))
    record = dataclasses.replace(record, integrity=Integrity(body_digest(record.to_dict())))
    atomic_write_json(directory / CERTIFICATE_FILE, record.to_dict())
    return Certificate(record=record, arrays=dict(arrays), directory=directory.resolve())


def read_body(path: str | os.PathLike) -> tuple[dict, CertificateBody | MassCertificateBody, Path]:
    """The raw JSON dict and the typed body of a certificate file (or its directory), and the file's path."""
    path = Path(path)
    if path.is_dir():
        path = path / CERTIFICATE_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"certificate {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"certificate {path} is not readable JSON: {exc}") from None
    try:
        record = body_from_dict(raw)
    except InputError as exc:
        raise InputError(f"certificate {path}: {exc}") from None
    return raw, record, path


def load_certificate(path: str | os.PathLike, *, load_arrays: bool = True) -> Certificate:
    """Read a certificate (a ``certificate.json`` file or its directory).

    Raises :class:`InputError` when the file is missing, not JSON, of another schema, has an
    unknown or missing key or a value of the wrong type, or when its side file is missing or
    unreadable. Does *not* check hashes or re-verify: that is :func:`pacverify.pipeline.check.check_certificate`.
    """
    _, record, path = read_body(path)
    cert = Certificate(record=record, directory=path.parent.resolve())
    if not load_arrays:
        return cert
    points = cert.path(record.files.points)
    try:
        with np.load(points, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise InputError(f"the certificate's side file {points} is missing") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"the certificate's side file {points} is unreadable: {exc}") from None
    return Certificate(record=record, arrays=arrays, directory=cert.directory)


def status_names(codes: np.ndarray) -> np.ndarray:
    """Map the int codes of ``points.npz["status"]`` to their names (:class:`PointStatus` labels)."""
    names = np.asarray([s.label for s in PointStatus], dtype=object)
    return names[np.asarray(codes, dtype=int)]
