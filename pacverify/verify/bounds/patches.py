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

import dataclasses
import itertools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pacverify.network import Block, Conv, Relu, Scale
from pacverify.verify.bounds import conv32
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
    if (P, Q) == (H, W) and not anchor.any():   # every window the whole image: no padding, no gather
        return image.expand(anchor.shape[0], -1, -1, -1) if image.shape[0] == 1 else image.index_select(0, owner)
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


def through_conv(rows: Patches, layer: Conv, H: torch.Tensor | None = None) -> Patches:
    """Rows on a convolution's output → rows on its input: ``A W`` by a transposed convolution of each window,
    ``c + A · bias``; entries that fall in the zero padding are dropped. ``H`` (B, in_features): bounds of ``|input|``
    for a convolution marked for float32 pulls (:mod:`.conv32`: the float32 product, its charge taken from ``c``)."""
    return _pull_conv(rows, layer, rows.c + _bias_term(rows, layer.bias), H)


def _bias_term(rows: Patches, bias: torch.Tensor) -> torch.Tensor:
    """``A · bias`` per row, (T,), for a bias (n,) on the rows' grid."""
    return (rows.A * windows(bias.reshape(1, *rows.grid), rows.anchor, rows.owner, _size(rows))).sum(dim=(1, 2, 3))


def _size(rows: Patches) -> tuple[int, int]:
    return rows.A.shape[2], rows.A.shape[3]


def _pull_conv(rows: Patches, layer: Conv, c: torch.Tensor, magnitude: torch.Tensor | None = None) -> Patches:
    """``A W`` as patches on the convolution's input grid (its bias not used), with the constants ``c`` (less the
    float32 product's charge where ``magnitude`` is given: :func:`through_conv`)."""
    stride = torch.tensor(layer.stride, device=rows.anchor.device)
    anchor = rows.anchor * stride - torch.tensor(layer.pads[:2], device=rows.anchor.device)
    charged = None if magnitude is None else conv32.pull_windows(layer, rows.A, magnitude)
    if charged is None:
        A = layer.pull_window(rows.A)
    else:
        A, v, kappa = charged
        c = c - conv32.window_charge(rows.A, windows(v, rows.anchor, rows.owner, _size(rows)),
                                     kappa.index_select(0, rows.owner))
    pulled = _fit(Patches(A, c, anchor, rows.owner, layer.in_shape))
    P, Q = _size(pulled)
    _, H, W = layer.in_shape
    if pulled.anchor.min() >= 0 and pulled.anchor[:, 0].max() + P <= H and pulled.anchor[:, 1].max() + Q <= W:
        return pulled   # every window inside the grid
    inside = windows(torch.ones(1, 1, H, W, dtype=c.dtype, device=c.device), pulled.anchor, rows.owner, (P, Q))
    return dataclasses.replace(pulled, A=pulled.A * inside)


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


@dataclass(frozen=True)
class Pieces:
    """Rows on a vector made of slices, each a grid (a :class:`Block`'s parts, or one convolution's output): the sum
    of the ``parts``' rows, each :class:`Patches` on the slice that begins at its ``start``; ``width`` the vector's."""

    parts: tuple[tuple[int, Patches], ...]
    width: int


def _scaled(rows: Patches, scale: torch.Tensor) -> Patches:
    """Rows through ``y = x * scale`` on the same grid."""
    return Patches(rows.A * windows(scale.reshape(1, *rows.grid), rows.anchor, rows.owner, _size(rows)), rows.c,
                   rows.anchor, rows.owner, rows.grid)


def _place(canvas: torch.Tensor, A: torch.Tensor, offset: torch.Tensor) -> None:
    """``canvas[t, :, offset[t] + window] += A[t]`` for every row t."""
    T, _, P, Q = A.shape
    r = offset[:, 0, None] + torch.arange(P, device=A.device)
    q = offset[:, 1, None] + torch.arange(Q, device=A.device)
    t = torch.arange(T, device=A.device)[:, None, None]
    canvas[t, :, r[:, :, None], q[:, None, :]] += A.permute(0, 2, 3, 1)


def _merge(a: Patches, b: Patches) -> Patches:
    """The sum of two row sets on one grid: windows the union of both (per row), each placed in it."""
    anchor = torch.minimum(a.anchor, b.anchor)
    size = torch.tensor(a.A.shape[2:], device=anchor.device)
    end = torch.maximum(a.anchor + size, b.anchor + torch.tensor(b.A.shape[2:], device=anchor.device))
    P, Q = (int(v) for v in (end - anchor).max(dim=0).values)
    canvas = a.A.new_zeros(a.A.shape[0], a.A.shape[1], P, Q)
    _place(canvas, a.A, a.anchor - anchor)
    _place(canvas, b.A, b.anchor - anchor)
    return _fit(Patches(canvas, a.c + b.c, anchor, a.owner, a.grid))


def _fit(rows: Patches) -> Patches:
    """The same rows with windows no larger than the grid: a window longer than the grid along an axis becomes the
    whole axis (its entries outside the grid are zero)."""
    T, C, P, Q = rows.A.shape
    _, H, W = rows.grid
    if P <= H and Q <= W:
        return rows
    size = (min(P, H), min(Q, W))
    anchor = torch.stack([rows.anchor[:, 0].clamp(0, H - size[0]), rows.anchor[:, 1].clamp(0, W - size[1])], dim=1)
    # the new window read from the old one (its corner at anchor − old anchor there); zero where the old had none
    return Patches(windows(rows.A, anchor - rows.anchor, torch.arange(T, device=anchor.device), size), rows.c, anchor,
                   rows.owner, rows.grid)


def _through_linear(rows: Pieces, layer, H: torch.Tensor | None = None) -> Pieces | None:
    """Rows on a convolution's or a :class:`Block`'s output → rows on its input, as patches; None when a piece is
    not one of the layer's parts or a part holds a dense map (the caller expands the rows). ``H`` as for
    :func:`through_conv`."""
    if isinstance(layer, Conv):
        if len(rows.parts) != 1 or rows.parts[0][0] != 0:
            return None
        return Pieces(((0, through_conv(rows.parts[0][1], layer, H)),), layer.in_features)
    if not isinstance(layer, Block):
        return None
    starts = dict(zip(itertools.accumulate([0] + layer.widths[:-1]), range(len(layer.parts)), strict=True))
    out: dict[int, Patches] = {}
    for start, piece in rows.parts:
        index = starts.get(start)
        if index is None or layer.widths[index] != int(np.prod(piece.grid)):
            return None
        # the piece's constants and its part's bias go with the first term, zero with the others
        c = piece.c + _bias_term(piece, layer.bias[start:start + int(np.prod(piece.grid))])
        for term in layer.parts[index]:
            if isinstance(term.op, Conv) and term.op.out_shape == piece.grid:
                pulled = _pull_conv(piece, term.op, c, None if H is None or not conv32.is_marked(term.op)
                                    else H[:, term.start:term.stop])
            elif isinstance(term.op, Scale):
                pulled = dataclasses.replace(_scaled(piece, term.op.scale), c=c)
            else:
                return None
            c = torch.zeros_like(c)
            if term.start in out:
                if out[term.start].grid != pulled.grid:
                    return None
                pulled = _merge(out[term.start], pulled)
            out[term.start] = pulled
    return Pieces(tuple(sorted(out.items())), layer.in_features)


def _through_relu(rows: Pieces, relax: ReluRelaxation) -> Pieces:
    parts = []
    for start, piece in rows.parts:
        n = int(np.prod(piece.grid))
        part = ReluRelaxation(*(getattr(relax, f.name)[:, start:start + n] for f in dataclasses.fields(relax)))
        parts.append((start, through_relu(piece, part)))
    return Pieces(tuple(parts), rows.width)


def _expand(rows: Pieces) -> Rows:
    """The rows at full width (T, width)."""
    first = rows.parts[0][1]
    A = first.A.new_zeros(first.A.shape[0], rows.width)
    c = torch.zeros_like(first.c)
    for start, piece in rows.parts:
        full = expand(piece)
        A[:, start:start + full.A.shape[1]] = full.A
        c = c + full.c
    return Rows(A, c, first.owner)


def _start(layer, select: Select) -> Pieces | None:
    """One-hot rows on the neurons ``select`` of a convolution's or a Block part's output; None when they are not
    all in one part with a grid."""
    if isinstance(layer, Conv):
        return Pieces(((0, start(layer, select)),), layer.out_features)
    offsets = list(itertools.accumulate([0] + layer.widths))
    part = int(torch.searchsorted(torch.tensor(offsets[1:], device=select.neuron.device), select.neuron.min(),
                                  right=True))
    conv = next((term.op for term in layer.parts[part] if isinstance(term.op, Conv)), None)   # the part's grid
    if conv is None or int(select.neuron.max()) >= offsets[part + 1]:
        return None
    local = Select(select.neuron - offsets[part], select.owner, select.sign)
    return Pieces(((offsets[part], start(conv, local)),), layer.out_features)


def lower_values_from(layers: list, select: Select, relaxations: list[ReluRelaxation],
                      input_set: InputSet) -> torch.Tensor:
    """CROWN's lower bounds (T,) of the rows ``select`` on the output of ``layers`` (which ends in a :class:`Conv`
    or a :class:`Block`), over the input set: the rows of :func:`.linear.pull_back` and :func:`.linear.lower_values`,
    computed as patches for as long as the layers are convolutions, Blocks of convolutions and scales, and ReLUs.
    Rows in several parts of a Block are computed part by part."""
    last = layers[-1]
    if isinstance(last, Block):
        offsets = torch.tensor(list(itertools.accumulate(last.widths)), device=select.neuron.device)
        part = torch.searchsorted(offsets, select.neuron, right=True)
        if int(part.min()) != int(part.max()):
            out = torch.empty(select.neuron.shape[0], dtype=last.bias.dtype, device=last.bias.device)
            for p in part.unique().tolist():
                at = torch.nonzero(part == p).squeeze(1)
                out[at] = lower_values_from(layers, Select(select.neuron[at], select.owner[at], select.sign[at]),
                                            relaxations, input_set)
            return out
    rows = _start(last, select)
    if rows is None:
        full = pull_back(layers, select, relaxations)
        assert full is not None
        return lower_values(full, input_set)
    k = len(relaxations)
    for position in range(len(layers) - 1, -1, -1):
        layer = layers[position]
        if isinstance(layer, Relu):
            k -= 1
            rows = _through_relu(rows, relaxations[k])
            continue
        pulled = _through_linear(rows, layer, conv32.input_bound(layers, position, relaxations, k))
        if pulled is None:
            full = pull_back(layers[:position + 1], _expand(rows), relaxations[:k])
            assert full is not None
            return lower_values(full, input_set)
        rows = pulled
    if len(rows.parts) == 1 and int(np.prod(rows.parts[0][1].grid)) == rows.width:
        return input_lower(rows.parts[0][1], input_set)
    return lower_values(_expand(rows), input_set)
