"""The verifier's network: a sequence of affine maps and ReLUs (DESIGN.md §5, STYLE.md §3).

Every graph the verifier accepts (Gemm / MatMul / Add / Conv / BatchNormalization ...
read from ONNX by :mod:`pacverify.onnx_io`) is lowered to this one typed form, so bound
rules need only two cases. Shapes: a batch of inputs is ``(B, in_features)``, flattened in
the ONNX input's C order; the network maps it to ``(B, out_features)`` logits.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Affine:
    """``y = x @ weight.T + bias`` with ``weight`` of shape (out, in) and ``bias`` of shape (out,)."""

    weight: torch.Tensor
    bias: torch.Tensor

    def __post_init__(self) -> None:
        if self.weight.dim() != 2 or self.bias.dim() != 1 or self.bias.shape[0] != self.weight.shape[0]:
            raise ValueError(f"Affine needs weight (out, in) and bias (out,), got {tuple(self.weight.shape)} "
                             f"and {tuple(self.bias.shape)}")

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x, self.weight.T)

    def to(self, device=None, dtype=None) -> "Affine":
        return Affine(self.weight.to(device=device, dtype=dtype), self.bias.to(device=device, dtype=dtype))


@dataclass(frozen=True)
class Relu:
    """Elementwise ``max(x, 0)``."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)

    def to(self, device=None, dtype=None) -> "Relu":
        return self


Layer = Affine | Relu


@dataclass(frozen=True)
class Network:
    """A feed-forward ReLU network: ``layers`` applied in order to flattened inputs.

    ``input_shape`` is the per-sample shape of the original model input (without the batch
    dimension), kept so that points can be reshaped back for onnxruntime; ``input_name`` and
    ``output_name`` are the ONNX tensor names (empty when built in Python).
    """

    layers: tuple[Layer, ...]
    input_shape: tuple[int, ...]
    input_name: str = ""
    output_name: str = ""
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        width = None
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Affine):
                if width is not None and layer.in_features != width:
                    raise ValueError(f"layer {i}: Affine expects {layer.in_features} inputs, previous layer gives {width}")
                width = layer.out_features
            elif not isinstance(layer, Relu):
                raise TypeError(f"layer {i}: unsupported layer type {type(layer).__name__}")
        if not any(isinstance(layer, Affine) for layer in self.layers):
            raise ValueError("a Network needs at least one Affine layer")
        first = next(layer for layer in self.layers if isinstance(layer, Affine))
        if int(torch.tensor(self.input_shape).prod()) != first.in_features:
            raise ValueError(f"input_shape {self.input_shape} has {int(torch.tensor(self.input_shape).prod())} "
                             f"entries, the first layer expects {first.in_features}")

    @property
    def in_features(self) -> int:
        return next(layer for layer in self.layers if isinstance(layer, Affine)).in_features

    @property
    def out_features(self) -> int:
        return next(layer for layer in reversed(self.layers) if isinstance(layer, Affine)).out_features

    @property
    def dtype(self) -> torch.dtype:
        return next(layer for layer in self.layers if isinstance(layer, Affine)).weight.dtype

    @property
    def device(self) -> torch.device:
        return next(layer for layer in self.layers if isinstance(layer, Affine)).weight.device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch ``x`` of shape (B, in_features) (or (B, *input_shape))."""
        x = x.reshape(x.shape[0], -1)
        for layer in self.layers:
            x = layer(x)
        return x

    __call__ = forward

    def to(self, device=None, dtype=None) -> "Network":
        return Network(tuple(layer.to(device, dtype) for layer in self.layers), self.input_shape,
                       self.input_name, self.output_name, dict(self.meta))

    def relu_widths(self) -> list[int]:
        """The width of each ReLU layer, in order: the shapes (B, width) of split constraints and of the
        pre-activation bounds the bound routines report."""
        widths, width = [], self.in_features
        for layer in self.layers:
            if isinstance(layer, Affine):
                width = layer.out_features
            else:
                widths.append(width)
        return widths

    def affine_layers(self) -> list[Affine]:
        return [layer for layer in self.layers if isinstance(layer, Affine)]

    def as_module(self) -> torch.nn.Module:
        """A ``torch.nn.Sequential`` computing the same function (on flattened inputs)."""
        modules: list[torch.nn.Module] = []
        for layer in self.layers:
            if isinstance(layer, Affine):
                lin = torch.nn.Linear(layer.in_features, layer.out_features, dtype=layer.weight.dtype,
                                      device=layer.weight.device)
                with torch.no_grad():
                    lin.weight.copy_(layer.weight)
                    lin.bias.copy_(layer.bias)
                modules.append(lin)
            else:
                modules.append(torch.nn.ReLU())
        return torch.nn.Sequential(torch.nn.Flatten(), *modules)
