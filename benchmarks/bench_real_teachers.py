"""Which real teacher shapes the engine reads, and how fast it bounds them (issue 13): ConvBig (PAGR's MNIST network
shape) and ResNet20 (CIFAR-10) with random weights, exported with torch.onnx.export and given to pacverify's reader,
and scaled-down versions of the same shapes. Each readable one is bounded by CROWN (the 9 margins at the network's
class, L∞ radius 1/255 in [0, 1]) at random points, checked against points sampled in the boxes (onnxruntime), and,
with ``--python``, compared with auto_LiRPA's CROWN on the same model, points and specification, float32 and float64
(a fetched copy installed by hand in a throwaway virtual environment; never a dependency):

    OMP_NUM_THREADS=1 python benchmarks/bench_real_teachers.py --python /tmp/alirpa-venv/bin/python
    OMP_NUM_THREADS=1 python benchmarks/bench_real_teachers.py --out -

Every measurement runs in a fresh process (peak memory is that process's), with one torch thread.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def convbig(channels: tuple[int, int] = (32, 64), hidden: int = 512, side: int = 28):
    """DiffAI's ConvBig shape: conv 3×3 s1, conv 4×4 s2, conv 3×3 s1, conv 4×4 s2 (c1, c1, c2, c2 channels), two
    fully connected layers of ``hidden``, 10 logits; input 1×side×side."""
    import torch
    from torch import nn

    c1, c2 = channels
    body = nn.Sequential(nn.Conv2d(1, c1, 3, 1, 1), nn.ReLU(), nn.Conv2d(c1, c1, 4, 2, 1), nn.ReLU(),
                         nn.Conv2d(c1, c2, 3, 1, 1), nn.ReLU(), nn.Conv2d(c2, c2, 4, 2, 1), nn.ReLU(), nn.Flatten())
    flat = body(torch.zeros(1, 1, side, side)).shape[1]
    return nn.Sequential(body, nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, 10)), (1, side, side)


def resnet(blocks: int = 3, widths: tuple[int, ...] = (16, 32, 64), side: int = 32):
    """A ResNet20-shaped network (He et al. 2016, CIFAR: 3 stages of ``blocks`` basic blocks, ``widths`` channels,
    stride 2 between stages with a 1×1 projection), global average pool, 10 logits; input 3×side×side."""
    import torch
    from torch import nn

    class Basic(nn.Module):
        def __init__(self, c_in: int, c_out: int, stride: int) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out),
                                      nn.ReLU(), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
            self.skip = (nn.Identity() if stride == 1 and c_in == c_out else
                         nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.body(x) + self.skip(x))

    layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()]
    c = widths[0]
    for stage, width in enumerate(widths):
        for b in range(blocks):
            layers.append(Basic(c, width, 2 if stage > 0 and b == 0 else 1))
            c = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10)]
    return nn.Sequential(*layers), (3, side, side)


def _export(model, shape) -> bytes:
    """BatchNorm statistics drawn (seeded), then pacverify's own ONNX serialisation (the teacher oracle's)."""
    import torch

    from pacverify.onnx_io.export import onnx_bytes

    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            with torch.no_grad():
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return onnx_bytes(model.eval(), shape)


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _seeded(build):
    """``build`` with torch's generator seeded first, so that every process builds the same weights (torch seeds its
    default generator at random in each process: before 2026-12-04 each run of these benchmarks drew new weights)."""
    def seeded():
        import torch

        torch.manual_seed(0)
        return build()
    return seeded


CASES = {
    "convbig": ("ConvBig (MNIST, PAGR's shape)", _seeded(lambda: convbig())),
    "resnet20": ("ResNet20 (CIFAR-10 shape)", _seeded(lambda: resnet())),
    "convbig-small": ("ConvBig at 14×14, 8/16 channels, 128 hidden", _seeded(lambda: convbig((8, 16), 128, 14))),
    "resnet8-small": ("ResNet8-shaped (1 block per stage) at 8×8, 4/8/16 channels",
                      _seeded(lambda: resnet(1, (4, 8, 16), 8))),
    "resnet8-16": ("ResNet8-shaped (1 block per stage) at 16×16, 16/32/64 channels",
                   _seeded(lambda: resnet(1, (16, 32, 64), 16))),
}

AUTO_LIRPA = r'''
import json, resource, sys, time
import numpy as np
import torch
cfg = json.loads(sys.argv[1])
torch.set_num_threads(1)
sys.path.insert(0, cfg["bench_dir"])
from bench_real_teachers import CASES
from auto_LiRPA import BoundedModule, BoundedTensor, PerturbationLpNorm
dtype = getattr(torch, cfg["dtype"])
model, shape = CASES[cfg["case"]][1]()
model.load_state_dict(torch.load(cfg["state"]))
model = model.eval().to(dtype)
data = np.load(cfg["data"])
x = torch.tensor(data["x"], dtype=dtype).reshape(-1, *shape)
C = torch.tensor(data["C"], dtype=dtype)
bm = BoundedModule(model, x[:1], device="cpu", verbose=0)
eps = cfg["radius"]
def run(lo, hi):
    ptb = PerturbationLpNorm(norm=np.inf, eps=eps, x_L=(x[lo:hi] - eps).clamp(0, 1), x_U=(x[lo:hi] + eps).clamp(0, 1))
    lb, _ = bm.compute_bounds(x=(BoundedTensor(x[lo:hi], ptb),), C=C[lo:hi], method="CROWN", bound_upper=False)
    return lb.detach()
if cfg["warm_up"]:
    run(0, 1)
start = time.perf_counter()
lower = torch.cat([run(i, i + 1) for i in range(x.shape[0])])
wall = time.perf_counter() - start
np.save(cfg["out"], lower.double().numpy())
print(json.dumps({"points_per_s": x.shape[0] / wall, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


NOTES = "## What these say"
SLOW = ("resnet20",)   # one point, no warm-up call (minutes per point on this CPU)


def run_one(case: str, points: int, workdir: str, native: bool) -> dict:
    warm_up = case not in SLOW
    """Read, bound and check one case in this process; saves the model, points and rows for auto_LiRPA."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from pacverify.errors import InputError
    from pacverify.network import Affine, Block, Conv, maps_of
    from pacverify.onnx_io import load_network, onnx_input
    from pacverify.verify.bounds import crown, crown_f32
    from pacverify.verify.output_rows import margin_rows
    from pacverify.verify.sets import perturbation_set

    torch.set_num_threads(1)
    name, build = CASES[case]
    model, shape = build()
    data = _export(model, shape)
    torch.save(model.state_dict(), f"{workdir}/{case}.pt")
    row: dict = {"case": case, "name": name, "params": sum(p.numel() for p in model.parameters()),
                 "input": "×".join(map(str, shape)), "native": native}
    start = time.perf_counter()
    try:
        net = load_network(data, **({} if native else {"native_conv_entries": 2**62}))
    except InputError as exc:
        row.update(read="no", why=str(exc).splitlines()[0][:200], read_s=time.perf_counter() - start)
        return row
    maps = [op for layer in net.affine_layers() for op in maps_of(layer)]
    row.update(read="yes", read_s=time.perf_counter() - start, layers=len(net.layers),
               blocks=sum(isinstance(layer, Block) for layer in net.layers),
               native_convs=sum(isinstance(op, Conv) for op in maps), relus=sum(net.relu_widths()),
               stored=sum(op.bias.numel() for op in net.affine_layers()) + sum(
                   op.kernel.numel() if isinstance(op, Conv) else op.weight.numel() if isinstance(op, Affine)
                   else op.scale.numel() for op in maps))
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(points, net.in_features, generator=gen, dtype=torch.float64)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    reference = torch.as_tensor(session.run(None, {net.input_name: onnx_input(net, x.numpy())})[0], dtype=torch.float64)
    row["max_abs_vs_onnxruntime"] = float((net(x) - reference).abs().max())
    radius = 1 / 255
    s = perturbation_set(x, radius, "inf", domain=(0.0, 1.0))
    C = margin_rows(reference.argmax(1), net.out_features)
    np.savez(f"{workdir}/{case}.npz", x=x.numpy(), C=C.numpy())
    if warm_up:
        crown(net, s.select(torch.arange(1)), C[:1], upper=False)
    start = time.perf_counter()
    bounds = crown(net, s, C, upper=False)
    elapsed = time.perf_counter() - start
    np.save(f"{workdir}/{case}-pacverify.npy", bounds.lower.numpy())
    row.update(points_per_s=points / elapsed, verified=float((bounds.lower > 0).all(1).float().mean()),
               peak_mib=_peak_mib(), radius=radius)
    if warm_up:   # method "crown-f32": convolutions pulled back in float32 (pacverify.verify.bounds.conv32)
        crown_f32(net, s.select(torch.arange(1)), C[:1], upper=False)
        start = time.perf_counter()
        fast = crown_f32(net, s, C, upper=False)
        row.update(f32_points_per_s=points / (time.perf_counter() - start),
                   f32_gap=float((bounds.lower - fast.lower).max()),
                   f32_verified=float((fast.lower > 0).all(1).float().mean()))
    # soundness spot check: sampled points (corners and uniform) of the boxes, evaluated by onnxruntime
    lo, hi = s.interval()
    u = torch.rand((64,) + tuple(lo.shape), generator=gen, dtype=torch.float64)
    u[:16] = u[:16].round()
    samples = (lo + u * (hi - lo)).reshape(-1, net.in_features)
    outs = torch.as_tensor(session.run(None, {net.input_name: onnx_input(net, samples.numpy())})[0], dtype=torch.float64)
    values = torch.einsum("bko,pbo->pbk", C, outs.reshape(64, points, -1))
    row["sampled_inside"] = bool((values >= bounds.lower - 1e-5 * (1 + values.abs())).all())
    return row


def auto_lirpa(python: str, case: str, workdir: str, dtype: str, radius: float, timeout: int) -> dict:
    import numpy as np

    cfg = {"bench_dir": str(REPO / "benchmarks"), "case": case, "state": f"{workdir}/{case}.pt", "dtype": dtype,
           "data": f"{workdir}/{case}.npz", "out": f"{workdir}/{case}-{dtype}.npy", "radius": radius,
           "warm_up": case not in SLOW}
    try:
        res = subprocess.run([python, "-c", AUTO_LIRPA, json.dumps(cfg)], capture_output=True, text=True,
                             timeout=timeout, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout} s"}
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or ["failed"])[-1][:120]}
    out = json.loads(res.stdout.strip().splitlines()[-1])
    ours, theirs = np.load(f"{workdir}/{case}-pacverify.npy"), np.load(cfg["out"])
    out["max_lower_delta"] = float((theirs - ours).max())    # > 0: auto_LiRPA's lower bound is tighter somewhere
    return out


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def main(argv=None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--points", type=int, default=4, help="points per full-size network (scaled-down ones: 5×)")
    p.add_argument("--python", default=None, help="an interpreter with auto_LiRPA installed, for the comparison")
    p.add_argument("--timeout", type=int, default=900, help="seconds per auto_LiRPA measurement")
    p.add_argument("--out", default=str(REPO / "benchmarks/results/real_teachers.md"))
    p.add_argument("--cases", default=None, help="comma list of the native-read cases to run alone (e.g. convbig); "
                   "the table is then printed, not written")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    p.add_argument("--dense", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.points, args.workdir, not args.dense)))
        return 0
    runs = [(case, False) for case in ("convbig-small", "resnet8-small")] + \
           [(case, True) for case in ("convbig", "resnet20", "convbig-small", "resnet8-small")]
    if args.cases:
        runs = [(case, True) for case in args.cases.split(",")]
        args.out = "-"
    rows = []
    with tempfile.TemporaryDirectory(prefix="pacverify-teachers-") as workdir:
        for case, native in runs:
            points = 1 if case in SLOW else args.points * (5 if case.endswith("small") else 1)
            cmd = [sys.executable, __file__, "--one", case, "--points", str(points), "--workdir", workdir]
            res = subprocess.run(cmd + ([] if native else ["--dense"]), capture_output=True, text=True)
            if res.returncode != 0:
                raise SystemExit(res.stderr)
            row = json.loads(res.stdout.strip().splitlines()[-1])
            if native and row["read"] == "yes" and args.python:
                for dtype in ("float32",) if case in SLOW else ("float32", "float64"):   # f64: ~3× its f32's time
                    row[dtype] = auto_lirpa(args.python, case, workdir, dtype, row["radius"], args.timeout)
            rows.append(row)
            print(row, flush=True)
    lines = ["# Real teacher shapes (issue 13)", "",
             f"Machine: {platform.machine()}, 1 torch thread per process; torch {torch.__version__}. Command: "
             f"`OMP_NUM_THREADS=1 python benchmarks/bench_real_teachers.py --points {args.points}"
             f"{' --python <auto_LiRPA venv>' if args.python else ''}`. Random weights (BatchNorm statistics drawn), "
             "exported by `pacverify.onnx_io.export.onnx_bytes` (torch's legacy exporter, as the teacher oracle "
             "does), read by `load_network`: with its defaults (convolutions whose dense matrix would exceed 2^22 "
             "entries kept native, residual blocks as Block layers; others dense up to 2^26 entries), and, for the "
             "scaled-down shapes, with every convolution dense (the reader before native convolutions). CROWN lower "
             f"bounds on the 9 margins at the network's class, L∞ radius 1/255 in [0, 1], {args.points} random points "
             f"for ConvBig, one for ResNet20 (no warm-up call: minutes per point), {5 * args.points} for the "
             "scaled-down ones, one point per call for auto_LiRPA (its batches of several "
             "points were no faster per point and multiply its memory). `max lower Δ`: the largest "
             "auto_LiRPA lower bound minus pacverify's (≤ 0: pacverify's are at least as tight everywhere).", "",
             "| network | parameters | input | convolutions | read | layers (native conv, Block) | ReLU neurons | stored "
             "entries | max \|Δ\| vs onnxruntime | CROWN points/s | verified | sampled points inside | peak RSS MiB | "
             "crown-f32 points/s, verified, max lower Δ to CROWN | "
             "auto_LiRPA f32 points/s, peak MiB, max lower Δ | auto_LiRPA f64 points/s, peak MiB, max lower Δ |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        how = "native where large" if r["native"] else "all dense"
        if r["read"] == "no":
            lines.append(f"| {r['name']} | {r['params']:,} | {r['input']} | {how} | no: {r['why']} "
                         "| | | | | | | | | | | |")
            continue
        f32 = (f"{r['f32_points_per_s']:.3g}, {r['f32_verified']:.2f}, {r['f32_gap']:.1e}"
               if "f32_points_per_s" in r else "")
        cells = []
        for dtype in ("float32", "float64"):
            a = r.get(dtype)
            cells.append("" if a is None else a["error"] if "error" in a else
                         f"{a['points_per_s']:.3g}, {a['peak_mib']:.0f}, {a['max_lower_delta']:.1e}")
        lines.append(f"| {r['name']} | {r['params']:,} | {r['input']} | {how} | yes | {r['layers']} "
                     f"({r['native_convs']}, {r.get('blocks', 0)}) | {r['relus']:,} | {r['stored']:,} | {r['max_abs_vs_onnxruntime']:.1e} | "
                     f"{r['points_per_s']:.3g} | {r['verified']:.2f} | {r['sampled_inside']} | {r['peak_mib']:.0f} | "
                     f"{f32} | {cells[0]} | {cells[1]} |")
    text = "\n".join(lines) + "\n"
    if args.out == "-":
        print(text)
    else:
        # the reading of the figures, written by hand below the table, is kept when the table is regenerated
        old = Path(args.out).read_text() if Path(args.out).exists() else ""
        notes = old[old.index(NOTES):] if NOTES in old else ""
        Path(args.out).write_text(text + ("\n" + notes if notes else ""))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
