"""Resumable pipeline stages, keyed by content hashes (issue 5: ``certify --out DIR`` resumes).

A stage's result is a dict of numpy arrays plus a JSON-able ``meta`` dict, stored under
``DIR/.pacverify-cache/<stage>-<key>.npz`` where ``key`` is the sha256 of everything the
stage depends on (input hashes, parameters, seed, tool version). Same inputs → same key →
the stored result is reused; any change → a new key → the stage runs again. Entries are
written whole, so an interrupted run leaves either a complete entry or none.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from pacverify._version import __version__
from pacverify.fileio import atomic_save_npz, ensure_dir, sha256_json, to_jsonable

CACHE_DIR = ".pacverify-cache"


class StageCache:
    """Content-addressed store of stage results; a ``None`` directory disables caching."""

    def __init__(self, out_dir: str | os.PathLike | None):
        self.root = None if out_dir is None else Path(out_dir) / CACHE_DIR

    @staticmethod
    def key(stage: str, inputs: dict[str, Any]) -> str:
        return sha256_json({"stage": stage, "version": __version__, "inputs": inputs})

    def _path(self, stage: str, key: str) -> Path:
        assert self.root is not None
        return self.root / f"{stage}-{key[:32]}.npz"

    def load(self, stage: str, inputs: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict] | None:
        """The stored (arrays, meta) for (stage, inputs), or None (absent, damaged or of another key)."""
        if self.root is None:
            return None
        key = self.key(stage, inputs)
        path = self._path(stage, key)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files if name != "__meta__"}
                meta = json.loads(str(data["__meta__"]))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError):
            return None  # a damaged entry is recomputed and overwritten
        if not isinstance(meta, dict) or meta.pop("__key__", None) != key:
            return None
        return arrays, meta

    def store(self, stage: str, inputs: dict[str, Any], arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Store a result whole (temporary name, then rename)."""
        if self.root is None:
            return
        key = self.key(stage, inputs)
        ensure_dir(self.root)
        stored = dict(meta, __key__=key)
        atomic_save_npz(self._path(stage, key), __meta__=np.array(json.dumps(to_jsonable(stored))), **arrays)
