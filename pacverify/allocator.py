"""The C allocator's settings for long runs of the bound engine (glibc on Linux only).

glibc's ``malloc`` serves a block above its *mmap threshold* with a fresh ``mmap`` and unmaps it when freed, and it
gives the free memory at the top of a heap back to the system once it exceeds the *trim threshold*. Both thresholds
adapt at run time (the mmap threshold rises to the size of the largest mmapped block freed so far, up to 32 MiB, and
the trim threshold follows it). The engine allocates and frees tensors of a few MiB for every chunk of points
(docs/verifier.md, "Batching, chunking, devices"), so memory the system took back is asked for again at the next
chunk and every page of it faults in again, zeroed by the kernel. How often that happens depends on the order in
which the adaptive thresholds saw the blocks: a pass of the same CROWN computation took from 2,400 to 614,000
page faults, and where they storm the fixed thresholds below run 1.4–1.6× faster (mnist-net_256x2 at L∞, the
float32 path on the 64-64-64-10 student; benchmarks/results/verify.md, "The allocator").

:func:`keep_freed_memory` fixes the thresholds: blocks up to :data:`MMAP_THRESHOLD` come from the heaps, and up to
:data:`TRIM_THRESHOLD` of free memory stays with the process for the next chunk. Nothing is computed differently:
only where memory comes from changes, so the bounds are bit for bit the same. The command line calls it once at
start; library users may call it themselves. It does nothing where the C library is not glibc, when the environment
sets glibc's own malloc settings (``GLIBC_TUNABLES`` with ``glibc.malloc.``, or ``MALLOC_MMAP_THRESHOLD_`` /
``MALLOC_TRIM_THRESHOLD_``), or when ``PACVERIFY_MALLOC=system``.
"""
from __future__ import annotations

import ctypes
import os
import platform
import sys

M_TRIM_THRESHOLD = -1            # mallopt's parameter numbers (glibc's malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2 ** 20    # glibc's largest mmap threshold on 64-bit systems (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 256 * 2 ** 20   # above the engine's working memory per chunk (≤ ~170 MiB measured)
OPT_OUT = "PACVERIFY_MALLOC"     # "system": leave the C allocator's settings alone

_applied: bool | None = None


def _user_settings() -> bool:
    """True when the environment already tunes glibc's malloc, which then takes precedence."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return "glibc.malloc." in tunables or any(
        name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"))


def keep_freed_memory() -> bool:
    """Fix glibc's mmap and trim thresholds (module docstring); True when they are set, False when left alone.

    Idempotent: the first call decides, later calls return its answer. Process-wide: it changes the allocator of
    the whole process, so a library calls it only on its user's behalf.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if (sys.platform != "linux" or platform.libc_ver()[0] != "glibc" or os.environ.get(OPT_OUT) == "system"
            or _user_settings()):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    _applied = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _applied
