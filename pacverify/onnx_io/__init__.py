"""ONNX input and output: reading a model into the verifier's :class:`~pacverify.verify.network.Network`.

The export functions of ``pacverify.onnx_io.export`` (written with the distillation work) get
re-exported here beside the reader once they exist.
"""
from __future__ import annotations

from pacverify.onnx_io.reader import load_network, onnx_input

__all__ = ["load_network", "onnx_input"]
