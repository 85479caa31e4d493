"""Exceptions that pacverify raises for the user to act on.

Every error a user can fix (a bad parameter, a missing file, an unsupported ONNX op)
is an :class:`InputError`; the command line turns it into exit code 2 and one line.
"""
from __future__ import annotations


class InputError(ValueError):
    """Bad input or usage that the user can fix; its message says what to fix."""


class UnsupportedOperationError(InputError):
    """An ONNX graph uses an operation the verifier has no sound rule for."""
