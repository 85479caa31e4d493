"""Whole-file writes and content hashes (DESIGN.md §4: nothing is written half-way).

Every writer goes to a temporary file in the target's directory and then ``os.replace``s
it, so a reader sees either the old file or the complete new one. Errors the user can fix
(a missing or unwritable directory) become :class:`InputError`.

Before any work a command checks every place it will write (:func:`check_output_file`,
:func:`check_output_dir`) without creating anything, and a certification run holds
``OUT/.pacverify.lock`` (:func:`run_lock`) so that two runs never interleave in one directory.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from pacverify.errors import InputError


def ensure_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents) if needed and check that it is writable."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output directory {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise InputError(f"output directory {out} is not writable")
    return out


def _nearest_existing(path: Path) -> Path:
    """``path`` itself or its closest ancestor that exists (``.`` for a relative path with none)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def check_output_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """Check, before any work and without creating anything, that a file can be written whole at ``path``.

    The file is written as a temporary file in its directory and renamed (:func:`atomic_write_bytes`),
    so the directory must exist and be writable, and ``path`` must not be a directory.
    """
    target = Path(path)
    if str(path).strip() == "":
        raise InputError(f"{what}: an empty path names no file")
    if target.is_dir():
        raise InputError(f"{what} {target} is a directory; give a file name")
    parent = target.parent
    if not parent.exists():
        raise InputError(f"cannot write {what} {target}: directory {parent} does not exist")
    if not parent.is_dir():
        raise InputError(f"cannot write {what} {target}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {what} {target}: directory {parent} is not writable")
    return target


def check_output_dir(path: str | os.PathLike, what: str = "output directory") -> Path:
    """Check, before any work and without creating anything, that ``path`` is or can become a writable directory."""
    out = Path(path)
    if str(path).strip() == "":
        raise InputError(f"{what}: an empty path names no directory")
    if out.exists():
        if not out.is_dir():
            raise InputError(f"{what} {out} exists and is not a directory")
        if not os.access(out, os.W_OK | os.X_OK):
            raise InputError(f"{what} {out} is not writable")
        return out
    ancestor = _nearest_existing(out.parent)
    if not ancestor.is_dir():
        raise InputError(f"cannot create {what} {out}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"cannot create {what} {out}: {ancestor} is not writable")
    return out


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` whole: a temporary file in the same directory, then rename."""
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"cannot write {target}: directory {parent} does not exist")
    if target.is_dir():
        raise InputError(f"cannot write {target}: it is a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise InputError(f"cannot write {target}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the permissions open() would
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise InputError(f"cannot write {target}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays, Paths and Enums inside ``value`` to plain JSON types."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "value") and hasattr(type(value), "__members__"):  # Enum
        return value.value
    if isinstance(value, float) and not np.isfinite(value):
        return None if np.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def dumps_json(value: Any) -> str:
    return json.dumps(to_jsonable(value), indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def atomic_write_json(path: str | os.PathLike, value: Any) -> Path:
    return atomic_write_text(path, dumps_json(value))


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Save arrays to a compressed ``.npz`` whole."""
    buffer = io.BytesIO()
    # allow_pickle spelled out (numpy's default) so that no array name can be taken for the flag
    np.savez_compressed(buffer, allow_pickle=True, **arrays)
    return atomic_write_bytes(path, buffer.getvalue())


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_json(value: Any) -> str:
    """sha256 of the canonical JSON form of ``value`` (sorted keys, no whitespace)."""
    canonical = json.dumps(to_jsonable(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return sha256_bytes(canonical.encode("utf-8"))


def sha256_arrays(*arrays: np.ndarray) -> str:
    """sha256 over arrays' dtypes, shapes and bytes (C order)."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


# --- one run per output directory --------------------------------------------------------------------------------

LOCK_FILE = ".pacverify.lock"
_YOUNG_LOCK_S = 10.0  # a lock file without a readable pid this young may be a run that is writing it


def _lock_owner(path: Path) -> tuple[int, str] | None:
    """(pid, host) written in a lock file, or None if it holds no readable owner."""
    try:
        pid_text, _, host = path.read_text(encoding="utf-8").strip().partition(" ")
        return int(pid_text), host
    except (OSError, ValueError):
        return None


def _alive(owner: tuple[int, str] | None, path: Path) -> bool:
    """Whether the run named in a lock file may still be running (when unsure: yes)."""
    if owner is None:
        try:
            return time.time() - path.stat().st_mtime < _YOUNG_LOCK_S
        except OSError:
            return False
    pid, host = owner
    if host and host != socket.gethostname():
        return True  # a run on another machine: its pid cannot be checked from here
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _busy(directory: Path, owner: tuple[int, str] | None) -> InputError:
    who = f" (pid {owner[0]})" if owner is not None else ""
    return InputError(f"another pacverify run{who} is using {directory}; wait for it to finish or give another --out "
                      f"(a lock left by a crashed run is {directory / LOCK_FILE}; remove it if no run is active)")


def check_unlocked(directory: str | os.PathLike) -> None:
    """Refuse early (before any work) when a live run holds ``directory``'s lock; :func:`acquire_lock` decides."""
    path = Path(directory) / LOCK_FILE
    if path.exists():
        owner = _lock_owner(path)
        if _alive(owner, path):
            raise _busy(Path(directory), owner)


def acquire_lock(directory: str | os.PathLike) -> Path:
    """Create ``directory/.pacverify.lock`` atomically (O_CREAT | O_EXCL) with this process's pid in it.

    A lock whose process no longer exists (on this host) is taken over; a live one raises
    :class:`InputError` ("another pacverify run is using DIR"). Release with :func:`release_lock`.
    """
    directory = Path(directory)
    path = directory / LOCK_FILE
    mine = f"{os.getpid()} {socket.gethostname()}"
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _lock_owner(path)
            if _alive(owner, path):
                raise _busy(directory, owner) from None
            # stale: move it aside under a name of our own (atomic), then check that what we moved is the stale one
            aside = directory / f"{LOCK_FILE}.stale-{os.getpid()}"
            try:
                os.replace(path, aside)
            except FileNotFoundError:
                continue  # someone else took it over first; try again
            except OSError as exc:
                raise InputError(f"cannot take over the stale lock {path}: {exc.strerror or exc}") from None
            moved = _lock_owner(aside)
            if moved != owner and _alive(moved, aside):  # another run locked in between: give its lock back
                try:
                    os.link(aside, path)
                except OSError:
                    pass
                aside.unlink(missing_ok=True)
                raise _busy(directory, moved) from None
            aside.unlink(missing_ok=True)
            continue
        except OSError as exc:
            raise InputError(f"cannot create the lock file {path}: {exc.strerror or exc}") from None
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(mine + "\n")
        return path
    raise _busy(directory, _lock_owner(path))


def release_lock(path: str | os.PathLike) -> None:
    """Remove a lock taken by :func:`acquire_lock` in this process (a lock another process holds stays)."""
    path = Path(path)
    owner = _lock_owner(path)
    if owner is not None and owner[0] == os.getpid():
        path.unlink(missing_ok=True)


@contextmanager
def run_lock(directory: str | os.PathLike) -> Iterator[Path]:
    """``with run_lock(out):`` hold ``out/.pacverify.lock`` for the duration of a run (see :func:`acquire_lock`)."""
    path = acquire_lock(directory)
    try:
        yield path
    finally:
        release_lock(path)


def snapshot(directory: str | os.PathLike, depth: int = 2) -> set[Path]:
    """The paths in ``directory`` down to ``depth`` levels (to remove afterwards what a failed run added:
    :func:`remove_new`); bounded, so that ``--out .`` in a large tree stays cheap."""
    root = Path(directory)
    out: set[Path] = set()

    def walk(folder: Path, level: int) -> None:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return
        for entry in entries:
            path = Path(entry.path)
            out.add(path)
            if level < depth and entry.is_dir(follow_symlinks=False):
                walk(path, level + 1)

    if root.is_dir():
        walk(root, 1)
    return out


def remove_new(directory: str | os.PathLike, before: set[Path], *, keep: tuple[str, ...] = ()) -> None:
    """Remove what is in ``directory`` now but not in ``before`` (a :func:`snapshot`): new files, and new folders
    whole. Entries named in ``keep`` (top-level names, e.g. a cache folder) and everything in them stay."""
    root = Path(directory)
    kept = [root / name for name in keep]
    for path in sorted(snapshot(root) - before, key=lambda p: len(p.parts)):
        if any(path == k or k in path.parents for k in kept) or not os.path.lexists(path):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        except OSError:
            pass
