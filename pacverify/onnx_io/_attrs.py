"""ONNX attribute and operand conventions shared by the two readers of a graph.

The verifier's op rules (:mod:`pacverify.onnx_io.ops`) and the torch evaluator of ONNX teachers
(:mod:`pacverify.onnx_io.torch_module`) both need the same small conventions of the ONNX spec:
negative axes, the ``axes`` of Squeeze / Unsqueeze / Reduce* (an input in newer opsets, an attribute
in older ones), ``auto_pad`` resolution for Conv and pooling, and the conversion of ONNX pads to the
argument order of ``torch.nn.functional.pad``. They live here once.

Operands may be numpy arrays or torch tensors (on any device); attributes are what
``onnx.helper.get_attribute_value`` returns (strings may still be bytes).
"""
from __future__ import annotations

import math
from typing import Any, Sequence


def text(value: Any) -> Any:
    """A string attribute as ``str`` (``get_attribute_value`` gives bytes); other values unchanged."""
    return value.decode() if isinstance(value, bytes) else value


def ints(value: Any) -> list[int]:
    """An integer operand or attribute (array, tensor, list; None) as a flat list of Python ints."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(v) for v in value.reshape(-1).tolist()]


def normalize_axis(axis: int, rank: int) -> int:
    """An ONNX axis in ``[-rank, rank)`` (or ``[-rank, rank]`` where the op allows it) as a non-negative one.

    No range check: callers refuse out-of-range axes with their own message.
    """
    axis = int(axis)
    return axis + rank if axis < 0 else axis


def axes(operand: Any, attrs: dict) -> list[int] | None:
    """The ``axes`` of Squeeze, Unsqueeze and Reduce*: the operand when given (opset 13, or 18 for the
    reductions, and later), else the ``axes`` attribute (earlier opsets), else None (not given)."""
    if operand is not None:
        return ints(operand)
    return ints(attrs["axes"]) if "axes" in attrs else None


def conv_pads(attrs: dict, spatial_shape: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
              dilations: Sequence[int]) -> list[int]:
    """The ONNX pads ``[b_1, ..., b_k, e_1, ..., e_k]`` of a Conv or pooling node over the spatial dims.

    ``auto_pad`` NOTSET (or empty) takes the ``pads`` attribute (default zeros), VALID pads nothing, and
    SAME_UPPER / SAME_LOWER pad so that ``out = ceil(size / stride)``, the odd pixel at the end
    (SAME_UPPER) or at the beginning (SAME_LOWER).
    """
    k = len(kernel)
    auto_pad = text(attrs.get("auto_pad", "NOTSET"))
    if auto_pad in ("NOTSET", ""):
        return ints(attrs.get("pads", [0] * 2 * k))
    if auto_pad == "VALID":
        return [0] * 2 * k
    begin, end = [], []
    for size, kern, stride, dil in zip(spatial_shape, kernel, strides, dilations, strict=True):
        total = max((math.ceil(size / stride) - 1) * stride + (kern - 1) * dil + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else large)
        end.append(large if auto_pad == "SAME_UPPER" else small)
    return begin + end


def torch_pad_widths(pads: Sequence[int]) -> list[int]:
    """ONNX pads ``[b_1, ..., b_k, e_1, ..., e_k]`` (first axis first) in the order of
    ``torch.nn.functional.pad``: ``[b_k, e_k, b_(k-1), e_(k-1), ..., b_1, e_1]`` (last axis first)."""
    k = len(pads) // 2
    return [int(p) for i in reversed(range(k)) for p in (pads[i], pads[k + i])]
