"""``pacverify.allocator``: glibc's malloc thresholds are fixed when asked and left alone when not, and the command
line asks. Each check runs in a fresh interpreter: the settings are process-wide and glibc's adaptive thresholds
depend on the process's history. What is observed is glibc's own accounting (``mallinfo2``): whether a block came
from ``mmap`` (``hblkhd``) and whether freed memory stays with the process (``arena``)."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

GLIBC = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"
needs_glibc = pytest.mark.skipif(not GLIBC, reason="the allocator's settings are glibc's")

PROBE = textwrap.dedent("""
    import ctypes, json, sys
    from pacverify import allocator

    class Info(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Info
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    applied = allocator.keep_freed_memory() if sys.argv[1] == "call" else None

    def block(mib):
        # a block of ``mib`` MiB, written through, then freed: was it mmapped, and did the heap keep it after free?
        before = libc.mallinfo2()
        p = libc.malloc(mib << 20)
        ctypes.memset(p, 1, mib << 20)
        during = libc.mallinfo2()
        libc.free(p)
        after = libc.mallinfo2()
        return {"mmapped": during.hblkhd - before.hblkhd >= mib << 20, "kept": after.fordblks >= mib << 20}

    blocks = {"16": block(16), "64": block(64)}
    print(json.dumps({"applied": applied, "again": allocator.keep_freed_memory(), **blocks}))
""")


def _probe(call: bool, **env: str) -> dict:
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("PACVERIFY_MALLOC", "GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}
    environment.update(env)
    out = subprocess.run([sys.executable, "-c", PROBE, "call" if call else "none"], capture_output=True, text=True,
                         env=environment, check=True)
    return json.loads(out.stdout)


@needs_glibc
def test_fixed_thresholds_serve_blocks_up_to_32_mib_from_the_heap_and_keep_them():
    got = _probe(True)
    assert got["applied"] is True and got["again"] is True
    assert got["16"] == {"mmapped": False, "kept": True}
    # above the mmap threshold a block is still mmapped and given back: the probe tells the two apart
    assert got["64"] == {"mmapped": True, "kept": False}


@needs_glibc
def test_without_the_call_glibc_mmaps_a_fresh_process_s_large_block_and_gives_it_back():
    assert _probe(False)["16"] == {"mmapped": True, "kept": False}


@pytest.mark.parametrize("env", [{"PACVERIFY_MALLOC": "system"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1048576"},
                                 {"MALLOC_TRIM_THRESHOLD_": "4096"}])
def test_the_user_s_own_settings_or_opt_out_leave_the_allocator_alone(env):
    got = _probe(True, **env)
    assert got["applied"] is False and got["again"] is False
    if GLIBC:
        assert got["16"]["mmapped"] is True


@needs_glibc
def test_the_command_line_fixes_the_thresholds_before_it_runs_a_command():
    code = ("import json, sys\n"
            "from pacverify.cli import main\n"
            "from pacverify import allocator\n"
            "rc = main(['samples', '--dim', '2', '--eps', '0.05', '--eta', '0.01', '--json'])\n"
            "print(json.dumps({'rc': rc, 'applied': allocator._applied}), file=sys.stderr)\n")
    environment = {k: v for k, v in os.environ.items() if k not in ("PACVERIFY_MALLOC", "GLIBC_TUNABLES")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, check=True)
    assert json.loads(out.stderr.strip().splitlines()[-1]) == {"rc": 0, "applied": True}


BOUNDS = textwrap.dedent("""
    import hashlib, sys
    sys.path.insert(0, sys.argv[2])
    from pacverify import allocator
    if sys.argv[1] == "call":
        assert allocator.keep_freed_memory()
    import torch
    from helpers_nets import random_mlp
    from pacverify.verify.bounds import crown
    from pacverify.verify.output_rows import margin_rows
    from pacverify.verify.sets import perturbation_set
    torch.set_num_threads(1)
    net = random_mlp([16, 64, 64, 10], 0)
    x = torch.rand(600, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    bounds = crown(net, perturbation_set(x, 0.3, "2"), margin_rows(net(x).argmax(1), 10), max_batch=64)
    print(hashlib.sha256(bounds.lower.numpy().tobytes() + bounds.upper.numpy().tobytes()).hexdigest())
""")


@needs_glibc
def test_the_bounds_are_the_same_bits_with_the_thresholds_fixed_or_not():
    """The module's claim: only where memory comes from changes. CROWN over several chunks, in two interpreters."""
    tests = os.path.dirname(os.path.abspath(__file__))
    environment = {k: v for k, v in os.environ.items() if k not in ("PACVERIFY_MALLOC", "GLIBC_TUNABLES")}
    digests = [subprocess.run([sys.executable, "-c", BOUNDS, mode, tests], capture_output=True, text=True,
                              env=environment, check=True).stdout.strip() for mode in ("call", "none")]
    assert len(digests[0]) == 64 and digests[0] == digests[1]
