"""CROWN rows of a convolutional layer's neurons, kept as patches.

The pre-activation bound of one neuron of a convolutional layer is a row of CROWN's backward pass
(:mod:`.linear`) started at that neuron. Pulled back through convolutions and ReLUs, such a row is zero
outside the neuron's receptive field, a window of ``P × Q`` positions of each layer's grid whose size
depends only on the layer, not on the neuron. So rows are kept as :class:`Patches`: the window's
coefficients (T, C, P, Q) and its top-left corner (``anchor``) in the grid; pulling them back through a
convolution is a transposed convolution of the window alone (its cost that of the receptive field, not of
the whole image), and through a ReLU an elementwise product with the window of the relaxation's slopes.
This is what auto_LiRPA calls patches mode (Xu et al., *Automatic Perturbation Analysis for Scalable
Certified Robustness and Beyond*, NeurIPS 2020, §3.2); the bounds are CROWN's own, on fewer operations.

Windows may reach outside the grid (into a convolution's zero padding): entries there are kept zero, so
every sum over a window is the sum over the row's entries inside the grid. When a window covers the
whole grid, or a dense layer is met, the rows are expanded to full width and :func:`.linear.pull_back`
finishes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pacverify.network import Conv, Relu
from pacverify.verify.bounds.linear import Rows, Select, lower_values, pull_back
from pacverify.verify.bounds.relax import ReluRelaxation, relu_backward_lower
from pacverify.verify.sets import Box, InputSet, L2Ball


@dataclass(frozen=True)
class Patches:
    """Rows ``Σ A[t] · h[owner[t], :, anchor[t] + window] + c[t]`` of a layer's output h on the grid ``grid`` (C, H, W);
    ``A`` (T, C, P, Q), zero wherever the window leaves the grid; ``anchor`` (T, 2) may be negative."""

    A: torch.Tensor
    c: torch.Tensor
    anchor: torch.Tensor
    owner: torch.Tensor
    grid: tuple[int, int, int]


def windows(image: torch.Tensor, anchor: torch.Tensor, owner: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``image[owner[t], :, anchor[t] + (0..P, 0..Q)]`` for every t, (T, C, P, Q); zero outside the image.

    ``image`` (B, C, H, W), or (1, C, H, W) shared by every owner."""
    P, Q = size
    H, W = image.shape[2:]
    top = max(0, -int(anchor[:, 0].min()))
    left = max(0, -int(anchor[:, 1].min()))
    bottom = max(0, int(anchor[:, 0].max()) + P - H)
    right = max(0, int(anchor[:, 1].max()) + Q - W)
    padded = F.pad(image, (left, right, top, bottom))
    rows = (anchor[:, 0] + top)[:, None] + torch.arange(P, device=anchor.device)
    cols = (anchor[:, 1] + left)[:, None] + torch.arange(Q, device=anchor.device)
    who = owner if image.shape[0] > 1 else torch.zeros_like(owner)
    picked = padded[who[:, None, None], :, rows[:, :, None], cols[:, None, :]]   # (T, P, Q, C)
    return picked.permute(0, 3, 1, 2)


def start(layer: Conv, select: Select) -> Patches:
    """The rows ``sign · h[owner, neuron]`` on the output of ``layer`` (one-hot 1×1 windows)."""
    channels, height, width = layer.out_shape
    neuron = select.neuron
    A = F.one_hot(neuron // (height * width), channels).to(layer.bias.dtype) * select.sign[:, None]
    anchor = torch.stack([(neuron // width) % height, neuron % width], dim=1)
    zero = torch.zeros(neuron.shape[0], dtype=layer.bias.dtype, device=neuron.device)
    return Patches(A[:, :, None, None], zero, anchor, select.owner, layer.out_shape)


def through_conv(rows: Patches, layer: Conv) -> Patches:
    """Rows on a convolution's output → rows on its input: ``A W`` by a transposed convolution of each window,
    ``c + A · bias``; entries that fall in the zero padding are dropped."""
    P, Q = rows.A.shape[2:]
    bias = windows(layer.bias.reshape(1, *layer.out_shape), rows.anchor, rows.owner, (P, Q))
    c = rows.c + (rows.A * bias).sum(dim=(1, 2, 3))
    A = layer.pull_window(rows.A)
    stride = torch.tensor(layer.stride, device=rows.anchor.device)
    anchor = rows.anchor * stride - torch.tensor(layer.pads[:2], device=rows.anchor.device)
    inside = windows(torch.ones(1, 1, *layer.in_shape[1:], dtype=A.dtype, device=A.device), anchor, rows.owner,
                     (A.shape[2], A.shape[3]))
    return Patches(A * inside, c, anchor, rows.owner, layer.in_shape)


def _read(rows: Patches, values: torch.Tensor) -> torch.Tensor:
    """Per-point values (B, C·H·W) on the rows' grid, read in each row's window: (T, C, P, Q)."""
    return windows(values.reshape(-1, *rows.grid), rows.anchor, rows.owner, (rows.A.shape[2], rows.A.shape[3]))


def through_relu(rows: Patches, relax: ReluRelaxation) -> Patches:
    """Rows on a ReLU's output → rows on its input, by CROWN's relaxation lines (:func:`.relax.relu_backward_lower`)
    read in each row's window."""
    T = rows.A.shape[0]
    up = _read(rows, relax.up_slope).reshape(T, -1)
    A, shift = relu_backward_lower(rows.A.reshape(T, -1), up, _read(rows, relax.lo_slope).reshape(T, -1) - up,
                                   _read(rows, relax.up_intercept).reshape(T, -1))
    return Patches(A.reshape(rows.A.shape), rows.c + shift, rows.anchor, rows.owner, rows.grid)


def expand(rows: Patches) -> Rows:
    """The same rows at full width (T, C·H·W), in the sparse layout of :class:`.linear.Rows`."""
    T, C, P, Q = rows.A.shape
    _, H, W = rows.grid
    top = max(0, -int(rows.anchor[:, 0].min()))
    left = max(0, -int(rows.anchor[:, 1].min()))
    canvas = rows.A.new_zeros(T, C, top + max(H, int(rows.anchor[:, 0].max()) + P),
                              left + max(W, int(rows.anchor[:, 1].max()) + Q))
    r = (rows.anchor[:, 0] + top)[:, None] + torch.arange(P, device=rows.A.device)
    q = (rows.anchor[:, 1] + left)[:, None] + torch.arange(Q, device=rows.A.device)
    t = torch.arange(T, device=rows.A.device)
    canvas[t[:, None, None], :, r[:, :, None], q[:, None, :]] = rows.A.permute(0, 2, 3, 1)
    return Rows(canvas[:, :, top:top + H, left:left + W].reshape(T, -1), rows.c, rows.owner)


def input_lower(rows: Patches, input_set: InputSet) -> torch.Tensor:
    """``min_{x in set of point owner[t]} A[t] x + c[t]``, (T,), rows on the network input (closed forms of
    :class:`~pacverify.verify.sets.Box` and :class:`~pacverify.verify.sets.L2Ball`, read in the windows)."""
    def over_box(box: Box) -> torch.Tensor:
        mid, rad = _read(rows, (box.lower + box.upper) / 2), _read(rows, (box.upper - box.lower) / 2)
        return (rows.A * mid).sum(dim=(1, 2, 3)) - (rows.A.abs() * rad).sum(dim=(1, 2, 3))

    if isinstance(input_set, Box):
        return over_box(input_set) + rows.c
    assert isinstance(input_set, L2Ball)
    norms = torch.linalg.vector_norm(rows.A.flatten(1), dim=1)
    out = (rows.A * _read(rows, input_set.center)).sum(dim=(1, 2, 3)) - input_set.radius[rows.owner] * norms
    if input_set.has_domain:
        out = torch.maximum(out, over_box(input_set.bounding_box()))
    return out + rows.c


def lower_values_from(layers: list, select: Select, relaxations: list[ReluRelaxation],
                      input_set: InputSet) -> torch.Tensor:
    """CROWN's lower bounds (T,) of the rows ``select`` on the output of ``layers`` (which ends in a :class:`Conv`),
    over the input set: the rows of :func:`.linear.pull_back` and :func:`.linear.lower_values`, computed as patches
    for as long as the layers are convolutions and ReLUs and the windows are smaller than the grid."""
    rows = start(layers[-1], select)
    k = len(relaxations)
    for position in range(len(layers) - 1, -1, -1):
        layer = layers[position]
        _, H, W = rows.grid
        if not isinstance(layer, (Conv, Relu)) or rows.A.shape[2] * rows.A.shape[3] >= H * W:
            full = pull_back(layers[:position + 1], expand(rows), relaxations[:k])
            assert full is not None
            return lower_values(full, input_set)
        if isinstance(layer, Relu):
            k -= 1
            rows = through_relu(rows, relaxations[k])
        else:
            rows = through_conv(rows, layer)
    return input_lower(rows, input_set)
