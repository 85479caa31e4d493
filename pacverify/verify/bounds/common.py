"""Plumbing shared by the bound routines: argument checks, split constraints, chunking, rounding margins.

Split constraints (the branch-and-bound contract): ``splits`` is None or a list with one integer
tensor per ReLU layer (the order of :meth:`Network.relu_widths`), shape (B, width), entries
−1 (the neuron's pre-activation is ≤ 0 on this subdomain), 0 (free) or +1 (pre-activation ≥ 0).
Bounds computed under splits hold for every input of the set whose pre-activations satisfy the
constraints; those inputs are the only ones the subdomain contains, and a family of subdomains
whose constraints cover every sign pattern covers the whole set.

Rounding: every bound is widened outward by a first-order bound on the floating-point error of
the computation that produced it (Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1:
a computed dot product of length n errs by at most γ_n = n·u/(1 − n·u) times the sum of the
absolute values of its terms, u the unit round-off of the dtype). The sum of absolute terms of
every bound is at most ``(L + 2)·M`` where M is the same expression evaluated with absolute
weights on the absolute input (:func:`rounding_margins`, L the number of ReLU layers), so the
margin ``(L + 2)·γ_N·M`` (N the total length of all accumulations) covers it. In float64 this is
~1e-12 relative and invisible; in float32 it is ~1e-4 relative and visibly loosens bounds — use
float64 (the default of :func:`pacverify.onnx_io.load_network`) for verification decisions.

Underflow: the relative model fails when products fall below the normal range (weights near the
smallest subnormal: every product rounds to 0 and the bound can land on the wrong side of 0, issue 10
§8). Each operation then also errs by an absolute η ≤ smallest subnormal / 2 (Higham §2.1, model with
underflow); the margin charges η = tiny (the smallest normal number, which also covers results flushed
to zero) per operation and adds ``2·(L + 2)·tiny·Q``: Q counts the operations of every layer (N each)
times what amplifies their errors afterwards — ``|W|`` of the later layers for forward quantities, and
for the backward pass's coefficients the magnitude ``‖M_j‖₁`` they multiply. On an L2 ball a row norm
whose squares underflow is too small by up to ``√(n·tiny)``, hence ``2·(L + 2)·√tiny·P`` with
``P = r·√n`` carried the same way. Quantities that depend on no nonzero weight, bias or input are
exact and get no absolute term. For normal-magnitude weights the term is ~1e-35 (float32) or ~1e-305
(float64). Flushing subnormal operands to zero (``torch.set_flush_denormal(True)``) is not covered.
"""
from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, TypeVar, overload

import torch

from pacverify.errors import InputError
from pacverify.network import LINEAR, NATIVE, Affine, Block, Conv, Network, maps_of
from pacverify.verify.bounds.types import Bounds, OutputRowsAffine, PropagationResult
from pacverify.verify.output_rows import check_output_rows
from pacverify.verify.sets import Box, InputSet, L2Ball, batched_matvec

Interval = tuple[torch.Tensor, torch.Tensor]
# an interval whose upper end may be None ('not computed')
PartialInterval = tuple[torch.Tensor, torch.Tensor | None]

# Memory budget (bytes) for one chunk of points when max_batch is not given.
DEFAULT_MEMORY_BUDGET = 512 * 2**20
# On CPU: the size (bytes) of one row tensor of a chunk, per worker thread (benchmarks/results/verify.md, "Chunk
# size": on the 64-64-64-10 student 8 MiB chunks ran 1.05–1.3× faster than 2 MiB ones with one thread, 1.8× with
# two workers, and 16 MiB ones slower; two workers' chunks still fit in this CPU's 32 MiB last-level cache).
CPU_CACHE_BUDGET = 8 * 2**20

T = TypeVar("T")


@dataclass(frozen=True)
class Problem:
    """One batch of bounding work, already on the network's device and dtype.

    ``C`` is None, (K, n) shared, or (B, K, n); ``splits`` None or one (B, width) int8 tensor per ReLU
    layer; ``intermediate`` None or one entry per ReLU layer, each None or an interval of (B, width);
    ``prior`` the same, bounds known to hold on the set that the interval pass intersects its own with
    (:func:`~pacverify.verify.bounds.ibp.propagate_intervals`).
    """

    input_set: InputSet
    C: torch.Tensor | None
    splits: list[torch.Tensor] | None
    intermediate: list[Interval | None] | None
    prior: list[Interval | None] | None = None

    @property
    def batch_size(self) -> int:
        return self.input_set.batch_size

    def select(self, index: slice) -> "Problem":
        C = self.C[index] if self.C is not None and self.C.dim() == 3 else self.C
        splits = None if self.splits is None else [s[index] for s in self.splits]
        intermediate, prior = ([None if pair is None else (pair[0][index], pair[1][index]) for pair in bounds]
                               if bounds is not None else None for bounds in (self.intermediate, self.prior))
        return Problem(self.input_set.select(index), C, splits, intermediate, prior)


def prepare(net: Network, input_set: InputSet, C, splits, intermediate, prior=None) -> Problem:
    """Check every argument against the network and move it to the network's device and dtype."""
    if not isinstance(net, Network):
        raise InputError(f"net must be a pacverify Network, got {type(net).__name__}")
    if not isinstance(input_set, (Box, L2Ball)):
        raise InputError(f"input_set must be a Box or an L2Ball, got {type(input_set).__name__}")
    if input_set.dim != net.in_features:
        raise InputError(f"the input set has points of dimension {input_set.dim}, the network takes "
                         f"{net.in_features} inputs")
    input_set = input_set.to(device=net.device, dtype=net.dtype)
    batch, widths = input_set.batch_size, net.relu_widths()
    C = check_output_rows(C, batch, net.out_features, dtype=net.dtype, device=net.device)
    return Problem(input_set, C, _check_splits(splits, batch, widths, net.device),
                   _check_intermediate(intermediate, batch, widths, net),
                   _check_intermediate(prior, batch, widths, net, "prior"))


def _check_splits(splits, batch: int, widths: list[int], device) -> list[torch.Tensor] | None:
    if splits is None:
        return None
    if not isinstance(splits, (list, tuple)) or len(splits) != len(widths):
        raise InputError(f"splits must be a list with one tensor per ReLU layer ({len(widths)} layers)")
    out = []
    for k, (split, width) in enumerate(zip(splits, widths, strict=True)):
        split = torch.as_tensor(split, device=device)
        if split.shape != (batch, width) or split.is_floating_point():
            raise InputError(f"splits[{k}] must be an integer tensor of shape ({batch}, {width}), got "
                             f"{tuple(split.shape)} {split.dtype}")
        if ((split < -1) | (split > 1)).any():
            raise InputError(f"splits[{k}] entries must be -1, 0 or +1")
        out.append(split.to(torch.int8))
    return out


def _check_intermediate(intermediate, batch: int, widths: list[int], net: Network, name: str = "intermediate"
                        ) -> list[Interval | None] | None:
    if intermediate is None:
        return None
    if not isinstance(intermediate, (list, tuple)) or len(intermediate) != len(widths):
        raise InputError(f"{name} must be a list with one entry per ReLU layer ({len(widths)} layers)")
    out: list[Interval | None] = []
    for k, (pair, width) in enumerate(zip(intermediate, widths, strict=True)):
        if pair is None:
            out.append(None)
            continue
        lower, upper = (torch.as_tensor(t).to(device=net.device, dtype=net.dtype) for t in pair)
        if lower.shape != (batch, width) or upper.shape != (batch, width):
            raise InputError(f"{name}[{k}] must be a pair of tensors of shape ({batch}, {width})")
        if torch.isnan(lower).any() or torch.isnan(upper).any():
            raise InputError(f"{name}[{k}] contains NaN")
        out.append((lower, upper))
    return out


def apply_split(lower: torch.Tensor, upper: torch.Tensor, split: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clamp pre-activation bounds (B, w) to a split: active → lower ≥ 0, inactive → upper ≤ 0.

    Returns (lower, upper, infeasible) with ``infeasible`` (B,) True where some neuron's interval
    became empty (lower > upper); those rows are reset to [0, 0] so later arithmetic stays finite.
    """
    if split is not None:
        lower = torch.where(split > 0, lower.clamp(min=0), lower)
        upper = torch.where(split < 0, upper.clamp(max=0), upper)
    empty = lower > upper
    infeasible = empty.any(dim=1)
    if infeasible.any():
        lower = torch.where(infeasible[:, None], torch.zeros_like(lower), lower)
        upper = torch.where(infeasible[:, None], torch.zeros_like(upper), upper)
    return lower, upper, infeasible


@overload
def intersect(a: Interval, b: Interval | None) -> Interval: ...


@overload
def intersect(a: PartialInterval, b: Interval) -> Interval: ...


def intersect(a: PartialInterval, b: Interval | None) -> PartialInterval:
    """The intersection of two intervals; ``b``, or either upper end, may be None for 'no information'."""
    if b is None:
        return a
    upper = b[1] if a[1] is None else a[1] if b[1] is None else torch.minimum(a[1], b[1])
    return torch.maximum(a[0], b[0]), upper


@dataclass(frozen=True)
class Margins:
    """Outward rounding margins: ``relu[k]`` (w_k,) for the k-th ReLU input, ``output`` (B or 1, K)."""

    relu: list[torch.Tensor]
    output: torch.Tensor


# rounding_margins' factor for a network with convolutions pulled back in float32 (:mod:`.conv32`): their rows exceed
# the float64 rows' magnitudes by at most this factor, which conv32.mark keeps
FLOAT32_PULL_SLACK = 1.01


def is_marked(layer) -> bool:
    """Whether ``layer`` (a convolution, or a Block through its terms) is pulled back in float32 (:mod:`.conv32`)."""
    return any(isinstance(op, Conv) and op.float32_products for op in maps_of(layer))


def marked(net: Network) -> bool:
    """Whether some layer of ``net`` is pulled back in float32 (the margins then take :data:`FLOAT32_PULL_SLACK`)."""
    return any(is_marked(layer) for layer in net.layers)


def rounding_margins(net: Network, input_set: InputSet, C: torch.Tensor | None) -> Margins:
    """First-order floating-point error bounds for every bound a propagation computes (module docstring).

    ``M`` runs the network on the largest absolute input of the chunk with ``|W|``, ``|b|`` and the
    identity for ReLU (slopes lie in [0, 1]); the margin of a quantity is ``(L + 2)·γ_N·M`` plus the
    underflow term ``2·(L + 2)·(tiny·Q + √tiny·P)``, which is 0 for a quantity that depends on no
    nonzero weight, bias or input (it is then computed exactly). Times :data:`FLOAT32_PULL_SLACK` when some
    convolution is marked for float32 pulls.
    """
    lo, hi = input_set.interval()
    magnitude = torch.maximum(lo.abs(), hi.abs()).amax(dim=0)
    length = 16 + net.in_features
    n_relu = len(net.relu_widths())
    info = torch.finfo(net.dtype)
    unit = info.eps / 2
    # Underflow: ``live`` is 1 where a quantity depends on some nonzero weight, bias or input (elsewhere it
    # is computed exactly), 0 elsewhere; Q (units of tiny) and P (units of √tiny, L2 balls only) bound its
    # absolute error. ``gain = |W|·live`` bounds how much |W| amplifies errors of at most 1 on the live
    # entries. ``floor`` (units of tiny) sums count·‖M_j‖₁ over the layers so far: the errors of the
    # backward pass's coefficients times the magnitudes they multiply, which no later |W| attenuates.
    ball = isinstance(input_set, L2Ball)
    live = (magnitude > 0).to(magnitude.dtype)
    q = torch.full_like(magnitude, length)
    p = torch.zeros_like(magnitude)
    radius = input_set.radius.max() * math.sqrt(net.in_features) if isinstance(input_set, L2Ball) else 0.0
    floor = torch.zeros((), dtype=magnitude.dtype, device=magnitude.device)

    def margin(m: torch.Tensor, live: torch.Tensor, q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        gamma = length * unit / (1 - length * unit)
        absolute = info.tiny * q + math.sqrt(info.tiny) * p if ball else info.tiny * q
        return (n_relu + 2) * gamma * m + 2 * (n_relu + 2) * torch.where(live > 0, absolute, 0.0)

    relu = []
    for layer in net.layers:
        if isinstance(layer, LINEAR):
            length += layer.in_features + layer.out_features
            floor = floor + length * magnitude.sum()
            bias = layer.bias.abs()
            magnitude = abs_linear(layer, magnitude) + bias
            gain = abs_linear(layer, live)
            live = (gain + bias > 0).to(gain.dtype)
            q = q.max() * gain + (length + floor)
            p = p.max() * gain + radius
        else:
            relu.append(margin(magnitude, live, q, p))
            length += 2
            q = q + length
    floor = floor + length * magnitude.sum()
    if C is None:
        output, gain = magnitude, live
    else:
        length += C.shape[-1]
        output, gain = C.abs() @ magnitude, C.abs() @ live
    output, gain = (output.unsqueeze(0), gain.unsqueeze(0)) if output.dim() == 1 else (output, gain)
    final = margin(output, gain, q.max() * gain + (length + floor), p.max() * gain + radius)
    if marked(net):
        return Margins([m * FLOAT32_PULL_SLACK for m in relu], final * FLOAT32_PULL_SLACK)
    return Margins(relu, final)


def widen(interval: Interval, margin: torch.Tensor) -> Interval:
    return interval[0] - margin, interval[1] + margin


def finish(lower: torch.Tensor, upper: torch.Tensor, infeasible: torch.Tensor, margin: torch.Tensor) -> Bounds:
    """Widen by the rounding margin and mark empty subdomains (lower = +inf, upper = -inf)."""
    lower, upper = lower - margin, upper + margin
    lower = torch.where(infeasible[:, None], torch.full_like(lower, torch.inf), lower)
    upper = torch.where(infeasible[:, None], torch.full_like(upper, -torch.inf), upper)
    return Bounds(lower.detach(), upper.detach(), infeasible)


def default_max_batch(net: Network, rows_per_point: int) -> int:
    """Points per chunk for a routine whose largest tensors hold ``rows_per_point`` rows per point over the
    widest layer: on CPU, tensors of about :data:`CPU_CACHE_BUDGET` (16 to 2048 points), whatever the number of
    threads (several threads bound chunks side by side: :func:`chunks_side_by_side`), so that a point's bounds do not
    depend on the thread count; elsewhere, four such tensors within 512 MiB."""
    per_point = max(1, rows_per_point) * max([net.in_features] + [a.out_features for a in net.affine_layers()]) \
        * torch.finfo(net.dtype).bits // 8
    if net.device.type == "cpu":
        return max(16, min(2048, CPU_CACHE_BUDGET // per_point))
    return max(1, DEFAULT_MEMORY_BUDGET // (4 * per_point))


def chunk_workers(net: Network, chunks: int) -> int:
    """Threads that bound chunks side by side: on CPU, torch's intra-op thread count (at most one per chunk); 1 on
    other devices."""
    if net.device.type != "cpu":
        return 1
    return max(1, min(torch.get_num_threads(), chunks))


def chunks_side_by_side(net: Network, starts: Sequence[int], work: Callable[[int], T]) -> list[T]:
    """``[work(start) for start in starts]``, the chunks bound side by side on :func:`chunk_workers` threads.

    Each worker runs torch with one intra-op thread: the chunks are independent, so a worker never waits for
    another (OpenMP threads that split every small operation wait for each other at each one, which collapses
    when another process holds a core: benchmarks/results/verify.md, "Under load"), and each chunk's result is the
    one a single thread computes, bit for bit. The workers run in the caller's grad and inference modes (torch keeps
    them per thread); torch's thread count is restored afterwards; on an exception the chunks not yet started are
    cancelled."""
    workers = chunk_workers(net, len(starts))
    if workers == 1:
        return [work(start) for start in starts]
    threads = torch.get_num_threads()
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()   # thread-local in torch

    def task(start: int) -> T:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return work(start)

    pool = ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,))
    try:
        return list(pool.map(task, starts))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads)


def spec_rows(net: Network, problem: Problem) -> int:
    """K, the number of specification rows (the network's outputs when C is None)."""
    return net.out_features if problem.C is None else problem.C.shape[-2]


@contextlib.contextmanager
def ieee_float32_products():
    """float32 matrix products in IEEE float32 inside the block (``torch.set_float32_matmul_precision("highest")``,
    restored after): with "medium" or "high" torch may compute them in bfloat16 or TF32 on CPUs and GPUs that have
    them, whose errors the ``γ_n`` rounding bounds do not cover."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def run_chunked(net: Network, problem: Problem, max_batch: int | None,
                bound_chunk: Callable[[Network, Problem], PropagationResult], keep_intermediate: bool,
                rows_per_point: int) -> PropagationResult:
    """Apply ``bound_chunk`` to consecutive chunks of at most ``max_batch`` points and concatenate.

    Working memory is that of one chunk per worker (:func:`chunks_side_by_side`), whatever the number of points; what is
    kept is the bounds, (B, K), and the pre-activation bounds only when ``keep_intermediate`` (else the result's
    ``pre_activation`` is empty). ``max_batch`` None: :func:`default_max_batch` for ``rows_per_point``.
    """
    if max_batch is None:
        max_batch = default_max_batch(net, rows_per_point)
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise InputError(f"max_batch must be a positive integer, got {max_batch!r}")
    with ieee_float32_products():
        return _run_chunked(net, problem, max_batch, bound_chunk, keep_intermediate)


def _run_chunked(net: Network, problem: Problem, max_batch: int,
                 bound_chunk: Callable[[Network, Problem], PropagationResult],
                 keep_intermediate: bool) -> PropagationResult:
    batch = problem.batch_size
    if batch <= max_batch:
        part = bound_chunk(net, problem)
        return part if keep_intermediate else PropagationResult(part.bounds, [])
    outputs: list[torch.Tensor] = []  # filled in place: no per-chunk pieces left between the chunks' work
    allocate = threading.Lock()

    def one(start: int) -> None:
        part = bound_chunk(net, problem.select(slice(start, start + max_batch)))
        pieces = [part.bounds.lower, part.bounds.upper, part.bounds.infeasible]
        if keep_intermediate:
            pieces += [t for pair in part.pre_activation for t in pair]
        with allocate:
            if not outputs:
                outputs.extend(piece.new_empty((batch,) + tuple(piece.shape[1:])) for piece in pieces)
        for out, piece in zip(outputs, pieces, strict=True):
            out[start:start + piece.shape[0]] = piece

    chunks_side_by_side(net, range(0, batch, max_batch), one)
    return PropagationResult(Bounds(*outputs[:3]), list(zip(outputs[3::2], outputs[4::2], strict=True)))


def output_layers(net: Network, C: torch.Tensor | None) -> tuple[list, torch.Tensor | None]:
    """The layers with C folded into a final Affine layer when there is one: (layers, C left to apply).

    Folding gives tighter interval bounds (the product C·W is bounded as one matrix) and lets the
    backward pass start from C·W. A folded C (B, K, n) yields a batched final weight (B, K, m).
    """
    layers: list = list(net.layers)
    last = layers[-1]
    if C is None or not isinstance(last, LINEAR):
        return layers, C
    return layers[:-1] + [OutputRowsAffine(pull_rows(last, C), C @ last.bias)], None


def abs_linear(layer: Affine | Conv | Block, v: torch.Tensor) -> torch.Tensor:
    """``|W| v`` for a vector v (n_in,) of a linear layer."""
    if isinstance(layer, NATIVE):
        return layer.abs().linear(v[None])[0]
    return layer.weight.abs() @ v


def abs_column_sums(layer: Affine | Conv | Block) -> torch.Tensor:
    """``Σ_j |W[j, i]|`` for every input i of a linear layer, (n_in,)."""
    if isinstance(layer, NATIVE):
        ones = torch.ones(layer.out_features, dtype=layer.bias.dtype, device=layer.bias.device)
        return layer.abs().pull(ones[None])[0]
    return layer.weight.abs().sum(0)


def pull_rows(layer, A: torch.Tensor) -> torch.Tensor:
    """``A W`` for rows A (..., n_out) of a linear layer (a dense or batched weight, a convolution or a block)."""
    if isinstance(layer, NATIVE):
        return layer.pull(A)
    weight = layer.weight
    if weight.dim() == 3:
        return torch.bmm(A if A.dim() == 3 else A.expand(weight.shape[0], -1, -1), weight)
    # weight passed as the transpose of a contiguous copy: MKL picks a faster kernel for this layout
    return (A.reshape(-1, A.shape[-1]) @ weight.T.contiguous().T).reshape(*A.shape[:-1], weight.shape[1])


def layer_interval(layer, lower: torch.Tensor, upper: torch.Tensor) -> Interval:
    """Interval image of ``[lower, upper]`` (B, m) under a linear layer (dense, batched, a convolution or a block)."""
    if not isinstance(layer, NATIVE):
        return affine_interval(layer.weight, layer.bias, lower, upper)
    mid, rad = (upper + lower) / 2, (upper - lower) / 2
    centre, spread = layer(mid), layer.abs().linear(rad)
    return centre - spread, centre + spread


def first_interval(layer, input_set: InputSet) -> Interval:
    """Interval image of the input set itself under a linear layer: exact for boxes and for L2 balls without
    a domain (``W x0 + b ± r‖W_j‖₂``); with a domain, intersected with the image of its bounding box."""
    if not isinstance(layer, NATIVE):
        return input_set.linear_min(layer.weight) + layer.bias, input_set.linear_max(layer.weight) + layer.bias
    if isinstance(input_set, Box):
        return layer_interval(layer, *input_set.interval())
    centre, spread = layer(input_set.center), input_set.radius[:, None] * layer.row_norms()
    interval = (centre - spread, centre + spread)
    if input_set.has_domain:
        box_lower, box_upper = layer_interval(layer, *input_set.bounding_box().interval())
        interval = (torch.maximum(interval[0], box_lower), torch.minimum(interval[1], box_upper))
    return interval


def affine_interval(weight: torch.Tensor, bias: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> Interval:
    """Interval image of ``[lower, upper]`` (B, m) under ``x -> W x + b``; W (K, m) or (B, K, m)."""
    mid, rad = (upper + lower) / 2, (upper - lower) / 2
    centre, spread = batched_matvec(weight, mid) + bias, batched_matvec(weight.abs(), rad)
    return centre - spread, centre + spread

