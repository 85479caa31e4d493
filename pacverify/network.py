"""The verifier's network: a sequence of affine maps and ReLUs (DESIGN.md §5, STYLE.md §3).

Every graph the verifier accepts (Gemm / MatMul / Add / Conv / BatchNormalization ...
read from ONNX by :mod:`pacverify.onnx_io`) is lowered to this one typed form, so bound
rules need only two cases: a linear layer (:class:`Affine`, a dense matrix, or :class:`Conv`, a
convolution kept as one, whose matrix would be too large to store) and a ReLU. Shapes: a batch of
inputs is ``(B, in_features)``, flattened in the ONNX input's C order; the network maps it to
``(B, out_features)`` logits.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


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

    def dense_weight(self) -> torch.Tensor:
        return self.weight

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """``x W^T`` (no bias) for rows x (..., in_features)."""
        return x @ self.weight.T

    def pull(self, A: torch.Tensor) -> torch.Tensor:
        """``A W`` for rows A (..., out_features) → (..., in_features)."""
        return A @ self.weight

    def abs(self) -> "Affine":
        """The map ``|W|`` with bias ``|bias|``."""
        return Affine(self.weight.abs(), self.bias.abs())

    def row_norms(self) -> torch.Tensor:
        """``‖W[j, :]‖₂`` for every output j, (out_features,)."""
        return torch.linalg.vector_norm(self.weight, dim=1)

    def negated(self) -> "Affine":
        return Affine(-self.weight, -self.bias)


@contextlib.contextmanager
def sums_of_products():
    """Convolutions computed as plain sums of products (im2col and matrix products), the arithmetic whose
    rounding errors the bound routines' margins cover (``γ_n`` per dot product): oneDNN, NNPACK and cuDNN
    may pick Winograd or FFT algorithms, or TF32, whose errors are of another kind."""
    mkldnn = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False   # (its flags() context also resets oneDNN's TF32 switch, with a warning)
    try:
        with torch.backends.nnpack.flags(enabled=False), torch.backends.cudnn.flags(enabled=False):
            yield
    finally:
        torch.backends.mkldnn.enabled = mkldnn


def conv_out_shape(in_shape: tuple[int, ...], kernel_shape: tuple[int, ...], stride: tuple[int, int],
                   pads: tuple[int, int, int, int], dilation: tuple[int, int]) -> tuple[int, int, int]:
    """(C_out, H_out, W_out) of a 2-D convolution: ``⌊(n + pads − d·(k − 1) − 1) / s⌋ + 1`` per spatial axis."""
    top, left, bottom, right = pads
    size = [(n + a + b - d * (k - 1) - 1) // s + 1 for n, a, b, k, s, d in zip(
        in_shape[1:], (top, left), (bottom, right), kernel_shape[2:], stride, dilation, strict=True)]
    return (kernel_shape[0], size[0], size[1])


@dataclass(frozen=True)
class Conv:
    """A 2-D convolution kept as one: ``y = conv2d(pad(x), kernel) + bias`` on entries flattened in C order.

    ``kernel`` (C_out, C_in / groups, kh, kw); ``bias`` (out_features,): one value per output entry (a
    per-channel bias repeated, plus whatever constant the reader folded in); ``in_shape`` (C_in, H, W);
    ``pads`` (top, left, bottom, right) of zeros; a 1-D convolution is one of height 1. The same linear map
    as the dense :class:`Affine` layer :meth:`dense_weight` would build, in memory proportional to the
    activations rather than to their product, and with the costs of a convolution: the forward map is
    ``conv2d``, rows are pulled back through it (``A ↦ A W``) by ``conv_transpose2d``.
    """

    kernel: torch.Tensor
    bias: torch.Tensor
    in_shape: tuple[int, int, int]
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    # the bound routines may pull rows back through this map in float32, each pull charged its rounding errors
    # (pacverify.verify.bounds.conv32); the map itself, and every other method here, stays in the kernel's dtype
    float32_products: bool = False

    def __post_init__(self) -> None:
        c_out, c_in, kh, kw = self.kernel.shape if self.kernel.dim() == 4 else (0, 0, 0, 0)
        if self.kernel.dim() != 4 or len(self.in_shape) != 3 or c_in * self.groups != self.in_shape[0] \
                or c_out % self.groups:
            raise ValueError(f"Conv needs a kernel (C_out, C_in/groups, kh, kw) that fits the input shape "
                             f"{self.in_shape} with groups={self.groups}, got {tuple(self.kernel.shape)}")
        if min(self.out_shape) < 1 or self.bias.shape != (self.out_features,):
            raise ValueError(f"Conv: output shape {self.out_shape} and bias {tuple(self.bias.shape)} do not fit")

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return conv_out_shape(self.in_shape, tuple(self.kernel.shape), self.stride, self.pads, self.dilation)

    @property
    def in_features(self) -> int:
        c, h, w = self.in_shape
        return c * h * w

    @property
    def out_features(self) -> int:
        c, h, w = self.out_shape
        return c * h * w

    def linear(self, x: torch.Tensor, kernel: torch.Tensor | None = None) -> torch.Tensor:
        """``x W^T`` (no bias) for rows x (..., in_features) → (..., out_features); ``kernel`` replaces the
        layer's own (e.g. its absolute value)."""
        top, left, bottom, right = self.pads
        lead = x.shape[:-1]
        image = F.pad(x.reshape(-1, *self.in_shape), (left, right, top, bottom))
        with sums_of_products():
            out = F.conv2d(image, self.kernel if kernel is None else kernel, None, self.stride, 0, self.dilation,
                           self.groups)
        return out.reshape(*lead, self.out_features)

    def pull_window(self, A: torch.Tensor, kernel: torch.Tensor | None = None, crop: tuple[int, int] = (0, 0),
                    extend: tuple[int, int] = (0, 0)) -> torch.Tensor:
        """Coefficients A (N, C_out, P, Q) on a window of output positions → the coefficients they put on the
        window of padded-input positions the kernel reaches from it, (N, C_in, (P−1)·s + d·(k−1) + 1, ...): the
        transposed convolution, whose top-left entry is padded-input position ``stride ×`` the window's. ``crop``
        rows and columns are dropped on each side and ``extend`` (< stride) added at the bottom and right
        (conv_transpose2d's padding and output_padding)."""
        with sums_of_products():
            return F.conv_transpose2d(A, self.kernel if kernel is None else kernel, None, self.stride, crop, extend,
                                      self.groups, self.dilation)

    def pull(self, A: torch.Tensor, kernel: torch.Tensor | None = None) -> torch.Tensor:
        """``A W`` for rows A (..., out_features) → (..., in_features): the transposed convolution."""
        top, left, bottom, right = self.pads
        lead = A.shape[:-1]
        padded = (self.in_shape[1] + top + bottom, self.in_shape[2] + left + right)
        if (top, left) == (bottom, right):
            # symmetric zero padding: the transposed convolution drops the padded border itself, and output_padding
            # (< stride) adds the last rows and columns no kernel reaches, so no padded copy is made and cut
            reached = [(n - 1) * s + d * (k - 1) + 1 for n, s, d, k in zip(
                self.out_shape[1:], self.stride, self.dilation, self.kernel.shape[2:], strict=True)]
            image = self.pull_window(A.reshape(-1, *self.out_shape), kernel, (top, left),
                                     (padded[0] - reached[0], padded[1] - reached[1]))
            return image.reshape(*lead, self.in_features)
        image = self.pull_window(A.reshape(-1, *self.out_shape), kernel)
        # entries the kernel never reaches at the bottom or right (a stride that does not divide) get no rows
        image = F.pad(image, (0, padded[1] - image.shape[3], 0, padded[0] - image.shape[2]))
        image = image[:, :, top:top + self.in_shape[1], left:left + self.in_shape[2]]
        return image.reshape(*lead, self.in_features)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.bias

    def abs(self) -> "Conv":
        """The convolution by ``|kernel|`` with bias ``|bias|``: the map ``|W|`` of the dense matrix."""
        return Conv(self.kernel.abs(), self.bias.abs(), self.in_shape, self.stride, self.pads, self.dilation,
                    self.groups)

    def row_norms(self) -> torch.Tensor:
        """``‖W[j, :]‖₂`` for every output entry j, (out_features,): zero padding takes no part in a row."""
        ones = torch.ones(1, self.in_features, dtype=self.kernel.dtype, device=self.kernel.device)
        return self.linear(ones, self.kernel.square())[0].sqrt()

    def dense_weight(self) -> torch.Tensor:
        """The (out_features, in_features) matrix of the map (for small layers: MILP, Marabou, tests)."""
        eye = torch.eye(self.out_features, dtype=self.kernel.dtype, device=self.kernel.device)
        return self.pull(eye)

    def to(self, device=None, dtype=None) -> "Conv":
        return Conv(self.kernel.to(device=device, dtype=dtype), self.bias.to(device=device, dtype=dtype),
                    self.in_shape, self.stride, self.pads, self.dilation, self.groups)

    def negated(self) -> "Conv":
        return Conv(-self.kernel, -self.bias, self.in_shape, self.stride, self.pads, self.dilation, self.groups)


@dataclass(frozen=True)
class Scale:
    """``y = x * scale``, entrywise: a diagonal map kept as its diagonal (a part of a :class:`Block`)."""

    scale: torch.Tensor

    @property
    def in_features(self) -> int:
        return self.scale.shape[0]

    out_features = in_features

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

    pull = linear

    def abs(self) -> "Scale":
        return Scale(self.scale.abs())

    def row_norms(self) -> torch.Tensor:
        return self.scale.abs()

    def dense_weight(self) -> torch.Tensor:
        return torch.diag(self.scale)

    def to(self, device=None, dtype=None) -> "Scale":
        return Scale(self.scale.to(device=device, dtype=dtype))

    def negated(self) -> "Scale":
        return Scale(-self.scale)


@dataclass(frozen=True)
class Term:
    """One linear map of a :class:`Block`: ``op`` (a dense :class:`Affine` whose bias is not used, a :class:`Conv`
    whose bias is not used, or a :class:`Scale`) applied to the input entries ``start … start + op.in_features − 1``."""

    start: int
    op: "Affine | Conv | Scale"

    @property
    def stop(self) -> int:
        return self.start + self.op.in_features


@dataclass(frozen=True)
class Block:
    """A linear layer made of smaller maps: ``y = concat_p(Σ_{t ∈ parts[p]} op_t(x[start_t : stop_t])) + bias``.

    This is the layer of a residual block lowered to the chain (:mod:`pacverify.onnx_io.reader`): e.g. the output
    ``[conv1(x), x]`` of the layer that carries the skip x through a ReLU, then ``conv2(h) + x``, the sum of a
    convolution of one slice of its input and the identity on another. Within a part the terms read disjoint
    slices (checked), so that every entry of the dense matrix belongs to at most one term: :meth:`abs` is exactly
    ``|W|``, :meth:`row_norms` exactly ``‖W[j, :]‖₂``, and a forward dot product has at most ``in_features``
    products and a backward one at most ``out_features`` (the rounding margins' premise). Memory and work are those
    of its terms, not of the dense matrix.
    """

    parts: tuple[tuple[Term, ...], ...]
    bias: torch.Tensor
    in_features: int

    def __post_init__(self) -> None:
        for p, part in enumerate(self.parts):
            widths = {term.op.out_features for term in part}
            spans = sorted((term.start, term.stop) for term in part)
            if not part or len(widths) != 1 or spans[0][0] < 0 or spans[-1][1] > self.in_features \
                    or any(a[1] > b[0] for a, b in zip(spans, spans[1:], strict=False)):
                raise ValueError(f"Block part {p}: terms must have one output width and read disjoint slices of "
                                 f"the {self.in_features} inputs, got {[(t.start, t.stop) for t in part]} with "
                                 f"output widths {sorted(widths)}")
        if self.bias.shape != (self.out_features,):
            raise ValueError(f"Block: bias {tuple(self.bias.shape)} does not fit {self.out_features} outputs")

    @property
    def maps(self) -> list["Affine | Conv | Scale"]:
        """The maps of its terms, part by part."""
        return [term.op for part in self.parts for term in part]

    @property
    def widths(self) -> list[int]:
        """The output width of each part."""
        return [part[0].op.out_features for part in self.parts]

    @property
    def out_features(self) -> int:
        return sum(self.widths)

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """``x W^T`` (no bias) for rows x (..., in_features) → (..., out_features)."""
        outputs = []
        for part in self.parts:
            total = part[0].op.linear(x[..., part[0].start:part[0].stop])
            for term in part[1:]:
                total = total + term.op.linear(x[..., term.start:term.stop])
            outputs.append(total)
        return torch.cat(outputs, dim=-1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.bias

    def pull(self, A: torch.Tensor) -> torch.Tensor:
        """``A W`` for rows A (..., out_features) → (..., in_features)."""
        out = A.new_zeros(*A.shape[:-1], self.in_features)
        for part, rows in zip(self.parts, A.split(self.widths, dim=-1), strict=True):
            for term in part:
                out[..., term.start:term.stop] += term.op.pull(rows)
        return out

    def _map(self, how, bias: torch.Tensor) -> "Block":
        return Block(tuple(tuple(Term(t.start, how(t.op)) for t in part) for part in self.parts), bias,
                     self.in_features)

    def abs(self) -> "Block":
        """The map ``|W|`` with bias ``|bias|`` (exact: terms of a part read disjoint slices)."""
        return self._map(lambda op: op.abs(), self.bias.abs())

    def row_norms(self) -> torch.Tensor:
        """``‖W[j, :]‖₂`` for every output j, (out_features,)."""
        return torch.cat([torch.stack([t.op.row_norms().square() for t in part]).sum(0).sqrt()
                          for part in self.parts])

    def dense_weight(self) -> torch.Tensor:
        """The (out_features, in_features) matrix of the map (for small layers: MILP, Marabou, tests)."""
        return self.pull(torch.eye(self.out_features, dtype=self.bias.dtype, device=self.bias.device))

    def to(self, device=None, dtype=None) -> "Block":
        return Block(tuple(tuple(Term(t.start, t.op.to(device, dtype)) for t in part) for part in self.parts),
                     self.bias.to(device=device, dtype=dtype), self.in_features)

    def negated(self) -> "Block":
        return self._map(lambda op: op.negated(), -self.bias)


@dataclass(frozen=True)
class Relu:
    """Elementwise ``max(x, 0)``."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)

    def to(self, device=None, dtype=None) -> "Relu":
        return self


Layer = Affine | Conv | Block | Relu
LINEAR = (Affine, Conv, Block)
NATIVE = (Conv, Block)  # linear layers kept as their maps, not as dense matrices


def maps_of(layer) -> list:
    """The linear maps a layer is made of: a :class:`Block`'s terms' maps, the layer itself otherwise."""
    return layer.maps if isinstance(layer, Block) else [layer]


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
            if isinstance(layer, LINEAR):
                if width is not None and layer.in_features != width:
                    raise ValueError(f"layer {i}: Affine expects {layer.in_features} inputs, previous layer gives {width}")
                width = layer.out_features
            elif not isinstance(layer, Relu):
                raise TypeError(f"layer {i}: unsupported layer type {type(layer).__name__}")
        if not any(isinstance(layer, LINEAR) for layer in self.layers):
            raise ValueError("a Network needs at least one Affine layer")
        first = self.affine_layers()[0]
        if int(torch.tensor(self.input_shape).prod()) != first.in_features:
            raise ValueError(f"input_shape {self.input_shape} has {int(torch.tensor(self.input_shape).prod())} "
                             f"entries, the first layer expects {first.in_features}")

    @property
    def in_features(self) -> int:
        return self.affine_layers()[0].in_features

    @property
    def out_features(self) -> int:
        return self.affine_layers()[-1].out_features

    @property
    def dtype(self) -> torch.dtype:
        return self.affine_layers()[0].bias.dtype

    @property
    def device(self) -> torch.device:
        return self.affine_layers()[0].bias.device

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
            if isinstance(layer, LINEAR):
                width = layer.out_features
            else:
                widths.append(width)
        return widths

    def affine_layers(self) -> list[Affine | Conv | Block]:
        """The linear layers (dense and convolutional), in order."""
        return [layer for layer in self.layers if isinstance(layer, LINEAR)]

    def dense(self) -> "Network":
        """The same network with every convolution as its dense matrix (small networks only: a reference for tests
        and comparisons; the MILP leaf and Marabou read each layer's :meth:`dense_weight` themselves)."""
        return Network(tuple(Affine(layer.dense_weight(), layer.bias) if isinstance(layer, NATIVE) else layer
                             for layer in self.layers), self.input_shape, self.input_name, self.output_name,
                       dict(self.meta))

    def as_module(self) -> torch.nn.Module:
        """A ``torch.nn.Sequential`` computing the same function (on flattened inputs)."""
        modules: list[torch.nn.Module] = []
        for layer in self.layers:
            if isinstance(layer, Conv):
                modules.append(_ConvModule(layer))
            elif isinstance(layer, Block):
                modules.append(_BlockModule(layer))
            elif isinstance(layer, Affine):
                lin = torch.nn.Linear(layer.in_features, layer.out_features, dtype=layer.weight.dtype,
                                      device=layer.weight.device)
                with torch.no_grad():
                    lin.weight.copy_(layer.weight)
                    lin.bias.copy_(layer.bias)
                modules.append(lin)
            else:
                modules.append(torch.nn.ReLU())
        return torch.nn.Sequential(torch.nn.Flatten(), *modules)


class _ConvModule(torch.nn.Module):
    """A :class:`Conv` layer as a module on flattened rows (its kernel and bias as parameters)."""

    def __init__(self, layer: Conv) -> None:
        super().__init__()
        self.layer = layer
        self.kernel = torch.nn.Parameter(layer.kernel.detach().clone())
        self.bias = torch.nn.Parameter(layer.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer.linear(x, self.kernel) + self.bias


class _BlockModule(torch.nn.Module):
    """A :class:`Block` layer as a module on flattened rows (fixed weights: no parameters)."""

    def __init__(self, layer: Block) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)
