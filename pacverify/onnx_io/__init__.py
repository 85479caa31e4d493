"""ONNX input and output: reading a model into the verifier's :class:`~pacverify.network.Network`,
exporting a student (:func:`export_onnx`, checked against onnxruntime), and evaluating an ONNX teacher
with torch so that its input gradients exist (:func:`onnx_to_torch`).
"""
from __future__ import annotations

from pacverify.onnx_io.export import ExportError, ExportReport, export_onnx
from pacverify.onnx_io.reader import load_network, onnx_input
from pacverify.onnx_io.torch_module import onnx_to_torch

__all__ = ["ExportError", "ExportReport", "export_onnx", "load_network", "onnx_input", "onnx_to_torch"]
