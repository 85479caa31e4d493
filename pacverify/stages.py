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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pacverify import __version__
from pacverify.fileio import atomic_save_npz, ensure_dir, sha256_json, to_jsonable

CACHE_DIR = ".pacverify-cache"


@dataclass(frozen=True)
class StageResult:
    arrays: dict[str, np.ndarray]
    meta: dict
    key: str
    reused: bool


class StageCache:
    """Content-addressed store of stage results; a ``None`` directory disables caching."""

    def __init__(self, out_dir: str | os.PathLike | None):
        self.root = None if out_dir is None else Path(out_dir) / CACHE_DIR

    @staticmethod
    def key(stage: str, inputs: dict[str, Any]) -> str:
        return sha256_json({"stage": stage, "version": __version__, "inputs": inputs})

    def _path(self, stage: str, key: str) -> Path:
        return self.root / f"{stage}-{key[:32]}.npz"

    def run(self, stage: str, inputs: dict[str, Any],
            compute: Callable[[], tuple[dict[str, np.ndarray], dict]]) -> StageResult:
        """Return the stored result for (stage, inputs), or compute, store and return it."""
        key = self.key(stage, inputs)
        if self.root is not None:
            path = self._path(stage, key)
            if path.exists():
                try:
                    with np.load(path, allow_pickle=False) as data:
                        arrays = {name: data[name] for name in data.files if name != "__meta__"}
                        meta = json.loads(str(data["__meta__"]))
                    if meta.get("__key__") == key:
                        meta.pop("__key__")
                        return StageResult(arrays, meta, key, reused=True)
                except (OSError, ValueError, KeyError, json.JSONDecodeError):
                    pass  # a damaged entry is recomputed and overwritten
        arrays, meta = compute()
        if self.root is not None:
            ensure_dir(self.root)
            stored = dict(meta, __key__=key)
            atomic_save_npz(self._path(stage, key), __meta__=np.array(json.dumps(to_jsonable(stored))), **arrays)
        return StageResult(arrays, meta, key, reused=False)
