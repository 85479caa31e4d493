"""Test helpers other test modules may import: random networks, points sampled inside input sets,
activation patterns, and an unbatched float64 reference CROWN to compare the engine against."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from pacverify.network import Affine, Network, Relu
from pacverify.onnx_io import load_network
from pacverify.verify.sets import Box, L2Ball


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's CPU threads set to ``count`` inside the block, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def random_mlp(widths: list[int], seed: int, *, dtype: torch.dtype = torch.float64, bias_scale: float = 0.3,
               final_relu: bool = False) -> Network:
    """An MLP ``widths[0] → ... → widths[-1]`` with He-scaled Gaussian weights and ReLUs between layers."""
    gen = torch.Generator().manual_seed(seed)
    layers: list = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        weight = torch.randn(n_out, n_in, generator=gen, dtype=torch.float64) * (2.0 / n_in) ** 0.5
        bias = torch.randn(n_out, generator=gen, dtype=torch.float64) * bias_scale
        layers.append(Affine(weight.to(dtype), bias.to(dtype)))
        if i < len(widths) - 2 or final_relu:
            layers.append(Relu())
    return Network(tuple(layers), (widths[0],))


def conv_model(seed: int, *, channels: int = 2, size: int = 5, batchnorm: bool = True,
               dynamic_batch: bool = True) -> onnx.ModelProto:
    """A small conv student built with onnx.helper: Conv(3x3, pad 1) [→ BN] → Relu → Conv(stride 2) → Relu
    → Flatten → Gemm(transB=1) → 3 logits; input (N, 1, size, size)."""
    rng = np.random.default_rng(seed)
    f32 = np.float32

    def init(name, array):
        return numpy_helper.from_array(np.asarray(array, dtype=f32), name)

    inits = [init("w1", rng.normal(0, 0.6, (channels, 1, 3, 3))), init("b1", rng.normal(0, 0.2, channels)),
             init("w2", rng.normal(0, 0.4, (channels, channels, 3, 3))), init("b2", rng.normal(0, 0.2, channels))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1")]
    last = "c1"
    if batchnorm:
        inits += [init("s", rng.uniform(0.5, 1.5, channels)), init("bb", rng.normal(0, 0.2, channels)),
                  init("m", rng.normal(0, 0.2, channels)), init("v", rng.uniform(0.5, 1.5, channels))]
        nodes.append(helper.make_node("BatchNormalization", ["c1", "s", "bb", "m", "v"], ["n1"], name="bn1"))
        last = "n1"
    side = (size - 1) // 2 + 1
    inits += [init("w3", rng.normal(0, 0.5, (3, channels * side * side))), init("b3", rng.normal(0, 0.2, 3))]
    nodes += [helper.make_node("Relu", [last], ["r1"], name="relu1"),
              helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1], name="conv2"),
              helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
              helper.make_node("Flatten", ["r2"], ["f"], name="flat"),
              helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], transB=1, name="fc")]
    batch = "N" if dynamic_batch else 1
    graph = helper.make_graph(nodes, "conv_student",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 1, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def random_conv_net(seed: int, **kwargs) -> Network:
    """:func:`conv_model` lowered by the ONNX reader (float64)."""
    return load_network(conv_model(seed, **kwargs))


def sample_in_set(input_set: Box | L2Ball, n: int, seed: int) -> torch.Tensor:
    """``n`` points inside each of the set's B sets, shape (n, B, dim), in the set's dtype.

    Boxes: the centre, vertices (every coordinate at a bound), points on faces (one coordinate at a
    bound) and uniform points. L2 balls: the centre, points on the sphere and uniform points in the
    ball; with a domain every point is clipped to the domain box, which keeps it in the ball
    (the centre lies in the domain, so clipping never moves a coordinate away from the centre).
    """
    gen = torch.Generator().manual_seed(seed)
    if isinstance(input_set, Box):
        lo, hi = input_set.lower, input_set.upper
        shape = (n,) + tuple(lo.shape)
        u = torch.rand(shape, generator=gen, dtype=lo.dtype)
        kind = torch.arange(n) % 3
        vertex = (torch.rand(shape, generator=gen) < 0.5).to(lo.dtype)
        u = torch.where((kind == 1)[:, None, None], vertex, u)
        face = torch.randint(0, lo.shape[1], (n, lo.shape[0]), generator=gen)
        side = (torch.rand((n, lo.shape[0]), generator=gen) < 0.5).to(lo.dtype)
        on_face = torch.nn.functional.one_hot(face, lo.shape[1]).bool() & (kind == 2)[:, None, None]
        u = torch.where(on_face, side[..., None].expand_as(u), u)
        points = lo + (hi - lo) * u
        points[0] = (lo + hi) / 2
        return points
    c, r = input_set.center, input_set.radius
    direction = torch.randn((n,) + tuple(c.shape), generator=gen, dtype=c.dtype)
    direction = direction / direction.norm(dim=-1, keepdim=True).clamp(min=1e-30)
    scale = torch.where((torch.arange(n) % 2 == 0)[:, None], torch.ones(n, c.shape[0], dtype=c.dtype),
                        torch.rand(n, c.shape[0], generator=gen, dtype=c.dtype) ** (1.0 / c.shape[1]))
    points = c + direction * (scale * r)[..., None]
    points[0] = c
    if input_set.has_domain:
        points = torch.minimum(torch.maximum(points, input_set.domain_lower), input_set.domain_upper)
    return points


def assert_samples_inside_nested_bounds(net: Network, input_set: Box | L2Ball, C: torch.Tensor, seed: int) -> None:
    """100 points sampled in each set never leave the IBP, CROWN or α-CROWN bounds of ``C · net(x)``, and
    IBP ⊇ CROWN ⊇ α-CROWN (lower bounds)."""
    from pacverify.verify.bounds import alpha_crown, crown, ibp

    points = sample_in_set(input_set, 100, seed)                          # (100, B, n)
    B, K = C.shape[0], C.shape[1]
    values = torch.einsum("bko,pbo->pbk", C, net(points.reshape(-1, net.in_features)).reshape(100, B, -1))
    bounds = {"ibp": ibp(net, input_set, C), "crown": crown(net, input_set, C),
              "alpha": alpha_crown(net, input_set, C, iterations=4)}
    for name, b in bounds.items():
        assert values.shape[-1] == K
        assert (values >= b.lower - 1e-9).all() and (values <= b.upper + 1e-9).all(), name
    assert (bounds["crown"].lower >= bounds["ibp"].lower - 1e-9).all()
    assert (bounds["alpha"].lower >= bounds["crown"].lower - 1e-12).all()


def pre_activations(net: Network, x: torch.Tensor) -> list[torch.Tensor]:
    """The input of every ReLU layer for points x (..., n), in order."""
    out = []
    h = x
    for layer in net.layers:
        if isinstance(layer, Relu):
            out.append(h)
        h = layer(h.reshape(-1, h.shape[-1])).reshape(*h.shape[:-1], -1) if isinstance(layer, Affine) else layer(h)
    return out


def satisfies(pre: list[torch.Tensor], splits: list[torch.Tensor] | None) -> torch.Tensor:
    """Mask (..., B): the points whose pre-activations meet the split constraints (B, w)."""
    ok = torch.ones(pre[0].shape[:-1] if pre else (), dtype=torch.bool)
    if splits is None:
        return ok
    for z, split in zip(pre, splits, strict=True):
        ok &= ((split > 0) & (z < 0) | (split < 0) & (z > 0)).logical_not().all(dim=-1)
    return ok


def spec_values(net: Network, C: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """``C f(x)`` for points x (S, B, n) → (S, B, K)."""
    logits = net(x.reshape(-1, x.shape[-1])).reshape(x.shape[0], x.shape[1], -1)
    if C is None:
        return logits
    return torch.einsum("bkn,sbn->sbk", C, logits) if C.dim() == 3 else logits @ C.T


def _set_min(input_set: Box | L2Ball, b: int, a: np.ndarray) -> np.ndarray:
    """Reference: min over point b's set of a @ x, rows of a (K, n)."""
    if isinstance(input_set, Box):
        lo, hi = input_set.lower[b].numpy(), input_set.upper[b].numpy()
        return np.minimum(a * lo, a * hi).sum(axis=1)
    c, r = input_set.center[b].numpy(), float(input_set.radius[b])
    out = a @ c - r * np.sqrt((a * a).sum(axis=1))
    if input_set.has_domain:
        lo = np.maximum(c - r, input_set.domain_lower[b].numpy())
        hi = np.minimum(c + r, input_set.domain_upper[b].numpy())
        out = np.maximum(out, np.minimum(a * lo, a * hi).sum(axis=1))
    return out


def crown_reference(net: Network, input_set: Box | L2Ball, C: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray]:
    """Unbatched float64 CROWN, one point at a time with explicit diagonal relaxation matrices.

    Same definition as the engine: the pre-activation bounds of a layer are the interval image of
    the previous layer's bounds, intersected, for the neurons that image leaves unstable, with
    CROWN's bounds; the adaptive lower slope is 1 if u >= -l else 0; the final bounds are CROWN's ∩
    the interval image. For alternating Affine/ReLU networks ending in an Affine layer; no rounding
    margins. Returns (lower, upper), each (B, K).
    """
    weights = [(layer.dense_weight().double().numpy(), layer.bias.double().numpy()) for layer in net.affine_layers()]
    lowers, uppers = [], []
    for b in range(input_set.batch_size):
        spec = np.eye(net.out_features) if C is None else (C[b] if C.dim() == 3 else C).double().numpy()
        bounds: list[tuple[np.ndarray, np.ndarray]] = []
        for k in range(len(weights)):
            rows = spec @ weights[k][0] if k == len(weights) - 1 else weights[k][0]
            bias = spec @ weights[k][1] if k == len(weights) - 1 else weights[k][1]
            low, up = _reference_backward(weights, bounds, k, rows, bias, input_set, b)
            if k > 0:
                l_prev, u_prev = np.maximum(bounds[-1][0], 0), np.maximum(bounds[-1][1], 0)
                mid, rad = (l_prev + u_prev) / 2, (u_prev - l_prev) / 2
                ibp_low, ibp_up = rows @ mid + bias - np.abs(rows) @ rad, rows @ mid + bias + np.abs(rows) @ rad
                if k < len(weights) - 1:  # intermediate layers: CROWN only where the interval is unstable
                    stable = (ibp_low >= 0) | (ibp_up <= 0)
                    low, up = np.where(stable, ibp_low, low), np.where(stable, ibp_up, up)
                low, up = np.maximum(low, ibp_low), np.minimum(up, ibp_up)
            bounds.append((low, up))
        lowers.append(bounds[-1][0])
        uppers.append(bounds[-1][1])
    return np.array(lowers), np.array(uppers)


def _reference_backward(weights, bounds, k, rows, bias, input_set, b):
    """Lower and upper CROWN bounds of rows @ h_k + bias, h_k the input of affine layer k."""
    results = []
    for sign in (1.0, -1.0):
        lam, const = sign * rows, sign * bias
        for j in range(k - 1, -1, -1):
            l, u = bounds[j]
            unstable = (l < 0) & (u > 0)
            s = np.where(unstable, u / np.where(unstable, u - l, 1.0), (l >= 0).astype(float))
            t = np.where(unstable, -s * l, 0.0)
            alpha = np.where(unstable, (u >= -l).astype(float), (l >= 0).astype(float))
            lam_relu = np.where(lam >= 0, lam * alpha, lam * s)
            const = const + np.where(lam >= 0, 0.0, lam) @ t
            const = const + lam_relu @ weights[j][1]
            lam = lam_relu @ weights[j][0]
        value = _set_min(input_set, b, lam) + const
        results.append(value if sign > 0 else -value)
    return results[0], results[1]


def exact_range_milp(net: Network, lower: np.ndarray, upper: np.ndarray, c: np.ndarray,
                     split: list[np.ndarray] | None = None) -> tuple[float, float] | None:
    """The exact min and max of ``c · f(x)`` over the box [lower, upper] (and the split constraints), by MILP.

    Big-M encoding of every ReLU with interval bounds (valid for any l <= z <= u), solved with
    scipy's HiGHS. For alternating Affine/ReLU networks ending in an Affine layer. Returns None
    when the constraints leave no input (an empty subdomain).
    """
    from scipy.optimize import Bounds as VarBounds
    from scipy.optimize import LinearConstraint, milp

    weights = [(layer.dense_weight().double().numpy(), layer.bias.double().numpy()) for layer in net.affine_layers()]
    n_in = weights[0][0].shape[1]
    hidden = [w.shape[0] for w, _ in weights[:-1]]
    # variable layout: x, then per hidden layer (z, a, delta)
    offsets, size = [], n_in
    for width in hidden:
        offsets.append(size)
        size += 3 * width
    lo_var, hi_var = [*lower], [*upper]
    integrality = [0] * n_in
    rows, lb, ub = [], [], []
    l_prev, u_prev = np.asarray(lower, float), np.asarray(upper, float)
    prev = list(range(n_in))  # indices of the previous layer's activations
    for k, width in enumerate(hidden):
        W, b = weights[k]
        mid, rad = (l_prev + u_prev) / 2, (u_prev - l_prev) / 2
        l, u = W @ mid + b - np.abs(W) @ rad, W @ mid + b + np.abs(W) @ rad
        z0, a0, d0 = offsets[k], offsets[k] + width, offsets[k] + 2 * width
        for j in range(width):
            row = np.zeros(size)
            row[z0 + j] = 1.0
            row[prev] -= W[j]
            rows.append(row), lb.append(b[j]), ub.append(b[j])                          # z = W a + b
            for coeffs, low, high in (({a0 + j: 1, z0 + j: -1}, 0, np.inf),              # a >= z
                                      ({a0 + j: 1, z0 + j: -1, d0 + j: -l[j]}, -np.inf, -l[j]),  # a <= z - l(1-d)
                                      ({a0 + j: 1, d0 + j: -u[j]}, -np.inf, 0)):          # a <= u d
                row = np.zeros(size)
                for index, value in coeffs.items():
                    row[index] = value
                rows.append(row), lb.append(low), ub.append(high)
        signs = np.zeros(width) if split is None else np.asarray(split[k], dtype=float)
        d_lo = [1.0 if (signs[j] > 0 or l[j] > 0) else 0.0 for j in range(width)]   # delta: the ReLU is active
        d_hi = [0.0 if (signs[j] < 0 or u[j] <= 0) else 1.0 for j in range(width)]
        z_lo = [max(l[j], 0.0) if signs[j] > 0 else l[j] for j in range(width)]
        z_hi = [min(u[j], 0.0) if signs[j] < 0 else u[j] for j in range(width)]
        if any(a > b for a, b in zip(z_lo, z_hi, strict=True)) or any(a > b for a, b in zip(d_lo, d_hi, strict=True)):
            return None
        lo_var += z_lo + [0.0] * width + d_lo
        hi_var += z_hi + [max(v, 0.0) for v in u] + d_hi
        integrality += [0] * (2 * width) + [1] * width
        l_prev, u_prev = np.maximum(l, 0), np.maximum(u, 0)
        prev = list(range(a0, a0 + width))
    W, b = weights[-1]
    objective = np.zeros(size)
    objective[prev] = c @ W
    constant = float(c @ b)
    constraints = LinearConstraint(np.array(rows), lb, ub) if rows else ()
    values = []
    for sign in (1.0, -1.0):
        result = milp(sign * objective, integrality=integrality, bounds=VarBounds(lo_var, hi_var),
                      constraints=constraints, options={"mip_rel_gap": 1e-9})
        if result.status == 2:  # infeasible
            return None
        assert result.status == 0, result.message
        values.append(sign * result.fun + constant)
    return values[0], values[1]
