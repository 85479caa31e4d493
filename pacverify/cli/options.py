"""Option declarations that several sub-commands share (not a sub-command itself).

``--domain LO,HI`` takes values that start with '-' (``--domain -3,3``). argparse reads an argument
that starts with '-' as an option unless it looks like a negative number (``-3``, ``-0.5``), so
``--domain -3,3`` would fail with "expected one argument". :func:`add_domain_option` widens that
test, for the parser it declares the option on, to ``-NUMBER,...``: no option name contains a comma,
so nothing else changes. (``--domain=-3,3`` works in any case.) The value is read by
:func:`pacverify.validation.parse_domain` when the command runs (``verify --global`` also takes a (2, m) ``.npy``
file: :func:`global_domain`).

:func:`add_global_options` declares the options of ``verify --global`` (``--kappa``, ``--max-boxes``,
``--min-width``, ``--outside-domain``).

:func:`add_threads_option` declares ``--threads`` (torch's CPU threads) and :func:`apply_threads` sets it: by default
:data:`DEFAULT_THREADS` (or the environment's ``PACVERIFY_THREADS``). One thread, because what is not run in
chunks side by side (a single chunk, branch and bound) uses torch's own threads, which wait for each other at every
operation: on a busy machine they were up to 40× slower than one thread (docs/verifier.md, "Batching, chunking,
devices"). The chunked bound passes and attacks scale with ``--threads`` and keep the machine's share under load.
"""
from __future__ import annotations

import argparse
import os
import re

# argparse's own negative-number test, plus '-' followed by a number and a comma (a negative LO of LO,HI).
_NEGATIVE_VALUE = re.compile(r"^-\d+$|^-\d*\.\d+$|^-\.?\d[^\s,]*,")


def add_domain_option(p: argparse.ArgumentParser, help: str) -> None:
    """Declare ``--domain LO,HI`` on the parser ``p`` such that negative bounds parse (module docstring)."""
    p.add_argument("--domain", metavar="LO,HI", help=f"{help}; negative bounds as in --domain -3,3")
    p._negative_number_matcher = _NEGATIVE_VALUE


# --- verify --global -------------------------------------------------------------------------------------------------

DEFAULT_GLOBAL_TIMEOUT = 60.0
DEFAULT_GLOBAL_BOXES = 200_000
GLOBAL_ONLY = (("kappa", "--kappa"), ("max_boxes", "--max-boxes"), ("min_width", "--min-width"),
               ("outside_domain", "--outside-domain"))


def add_global_options(p: argparse.ArgumentParser) -> None:
    """Declare the options of ``verify --global`` (global robustness over a domain box) on ``p``."""
    p.add_argument("--kappa", help="with --global: confidence threshold κ in [0.5, 1); points where the network's "
                                   "largest softmax output is >= κ must keep their class")
    p.add_argument("--max-boxes", help=f"with --global: budget of boxes bounded (default {DEFAULT_GLOBAL_BOXES})")
    p.add_argument("--min-width", help="with --global: boxes narrower than this are not split (default 1e-6 of the "
                                       "domain's widest side)")
    p.add_argument("--outside-domain", action="store_true",
                   help="with --global: the perturbed input x' may leave the domain (default: it stays inside)")


def global_domain(value: str, m: int):
    """The ``--domain`` of ``verify --global``: a ``.npy`` file of shape (2, m) (row 0 the lower bounds, row 1 the
    upper), read as an array, or ``LO,HI`` for every input, read by :func:`pacverify.validation.parse_domain`.
    The shapes and values are checked by :func:`pacverify.verify.global_robustness.check_global_domain`."""
    import numpy as np

    from pacverify.errors import InputError
    from pacverify.validation import parse_domain

    if value.lower().endswith(".npy"):
        try:
            array = np.load(value, allow_pickle=False)
        except FileNotFoundError:
            raise InputError(f"domain file {value!r} does not exist") from None
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read domain file {value!r} as a .npy array: {exc}") from None
        if array.dtype.kind not in "biuf":
            raise InputError(f"domain file {value!r} must hold numbers, got dtype {array.dtype}")
        if array.shape != (2, m):
            raise InputError(f"domain file {value!r} must have shape (2, {m}) (lower and upper bounds of the "
                             f"model's {m} inputs), got {array.shape}")
        return array.astype(np.float64)
    return parse_domain(value)


DEFAULT_THREADS = 1
THREADS_HELP = ("CPU threads for torch (default 1, or the environment's PACVERIFY_THREADS): the bound passes and "
                "attacks run this many chunks side by side; a single chunk and branch and bound split each "
                "operation, which can collapse on a busy machine")


def add_threads_option(p: argparse.ArgumentParser) -> None:
    """``--threads N`` (module docstring)."""
    p.add_argument("--threads", help=THREADS_HELP)


def apply_threads(value: str | None) -> int:
    """Set torch's CPU threads to ``value``, else ``PACVERIFY_THREADS``, else :data:`DEFAULT_THREADS`; the count set.
    InputError (exit 2) when it is not a positive integer."""
    import torch

    from pacverify.validation import check_positive_int

    given = value if value is not None else os.environ.get("PACVERIFY_THREADS")
    threads = DEFAULT_THREADS if given is None else check_positive_int(given, "threads")
    torch.set_num_threads(threads)
    return threads


# --- executor (pacverify.executor) -----------------------------------------------------------------------------------

EXECUTOR_CHOICES = ("local", "ray")


def add_executor_options(p: argparse.ArgumentParser) -> None:
    """Declare ``--executor local|ray`` and ``--ray-address`` on ``p`` (read by :func:`pacverify.executor.get_executor`
    when the command runs; ray is imported only then)."""
    p.add_argument("--executor", default="local", choices=EXECUTOR_CHOICES,
                   help="where the per-point work runs: local (this process, default) or ray (Ray tasks over chunks "
                        "of points; needs pip install 'pacverify[ray]'); same results either way")
    p.add_argument("--ray-address", metavar="HOST:PORT",
                   help="with --executor ray: the cluster's head (HOST:PORT, or 'auto' for the one running on this "
                        "machine); default: start a local Ray instance. An address that does not answer fails within "
                        "seconds (exit 2)")
