"""``pacverify distill``: distill a teacher into a verified-ready ReLU student (DESIGN.md §3).

Writes ``student.onnx`` (checked against onnxruntime), ``student.pt`` (spec + state dict, loadable
with ``weights_only=True``) and ``distill.json`` (markers, losses, settings, time) into ``--out``,
each whole; if anything fails, none is left behind. Before any point is drawn the teacher is run on a
probe batch and the memory the run needs is estimated (a run that cannot fit is refused).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

from pacverify.cli.options import add_domain_option
from pacverify.data import ArraySampler, count_duplicates, make_sampler
from pacverify.distill import METHODS, DistillConfig, distill, make_config
from pacverify.distill.fit import OPTIMIZERS, SCHEDULES
from pacverify.errors import InputError
from pacverify.fileio import atomic_write_json, ensure_dir, remove_new, sha256_file, snapshot
from pacverify.models import DEVICES, load_teacher, resolve_device, save_student, teacher_logits
from pacverify.onnx_io.export import export_onnx
from pacverify.validation import NORMS, check_memory, check_samples, error_line, parse_domain

HELP = "distill a teacher into a small ReLU student with input-gradient alignment, export it to ONNX"
DEFAULT_FRESH = 1000
_SETTINGS = ("student", "method", "isd_loops", "dropout", "epochs", "batch_size", "lr", "lambda_ce", "lambda_kl",
             "lambda_g", "tau", "grad_warmup", "optimizer", "schedule", "norm", "early_stop", "seed")


def add_source_arguments(p: argparse.ArgumentParser) -> None:
    """``--data`` / ``--sampler`` / ``--synthetic`` (exactly one), ``--domain``: shared with other commands."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="FILE", help="array file of i.i.d. points (.npy .npz .csv .pt), one row each")
    src.add_argument("--sampler", metavar="MODULE:FUNCTION", help="function(n, rng) returning n i.i.d. points")
    src.add_argument("--synthetic", metavar="NAME", help="built-in distribution: gaussians[:M] (004 §5, m = M)")
    add_domain_option(p, "the box [LO, HI]^m every point must lie in (a point outside is refused, never clipped)")
    p.add_argument("--allow-duplicates", action="store_true",
                   help="accept a sample in which more than 1%% of the points repeat an earlier one exactly")


def sampler_from_args(args: argparse.Namespace):
    """The sampler the source arguments name."""
    domain = parse_domain(args.domain)
    for kind in ("data", "sampler", "synthetic"):
        if getattr(args, kind):
            return make_sampler(getattr(args, kind), seed=args.seed, domain=domain, kind=kind,
                                allow_duplicates=bool(getattr(args, "allow_duplicates", False)))
    raise InputError("give one of --data, --sampler or --synthetic")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distill", help=HELP, description=HELP[0].upper() + HELP[1:] + ".")
    p.add_argument("teacher", metavar="TEACHER", help="TorchScript, torch.export (.pt2), ONNX, state dict (with --arch) "
                   "or student.pt file")
    add_source_arguments(p)
    p.add_argument("--samples", required=True, help="number N of points to draw and distill on")
    p.add_argument("--fresh", help=f"held-out points for the quality markers (default {DEFAULT_FRESH}; for --data at "
                   "most the rows left after the sample)")
    d = DistillConfig()
    p.add_argument("--student", help=f"student spec: linear, mlp:2x64, mlp:64-32, cnn:16-32-fc64 (default {d.student})")
    p.add_argument("--method", choices=METHODS, help=f"distillation loss (default {d.method})")
    p.add_argument("--isd", dest="isd_loops", metavar="L", help="iterative self-distillation loops (001 §2.2); 0 = off")
    p.add_argument("--dropout", help="last-layer dropout rate while training (for ISD); default 0")
    for name, what in (("epochs", "epochs"), ("batch_size", "mini-batch size"), ("lr", "learning rate"),
                       ("lambda_ce", "weight λ_CE of the cross-entropy"), ("lambda_kl", "weight λ_KL of the KL term"),
                       ("lambda_g", "weight λ_G of the input-gradient term (kdiga)"), ("tau", "temperature τ"),
                       ("grad_warmup", "fraction of the epochs over which the gradient terms ramp up from 0")):
        p.add_argument("--" + name.replace("_", "-"), dest=name, help=f"{what} (default {getattr(d, name)})")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help=f"default {d.optimizer}")
    p.add_argument("--schedule", choices=SCHEDULES, help=f"learning-rate schedule (default {d.schedule})")
    p.add_argument("--norm", choices=NORMS, help="perturbation norm for rho and IGDM (default 2)")
    p.add_argument("--no-early-stop", dest="early_stop", action="store_false", default=None,
                   help="always train all epochs")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--seed", default="0", help="seed of every random draw (default 0)")
    p.add_argument("--arch", metavar="MODULE:FACTORY", help="builds the teacher's architecture for a state dict")
    p.add_argument("--trust-pickle", action="store_true", help="allow a full pickled teacher (runs code from the file)")
    p.add_argument("--checkpoint-dir", metavar="DIR", help="write checkpoint.pt here after every epoch")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for student.onnx, student.pt, distill.json")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = {name: getattr(args, name) for name in _SETTINGS if getattr(args, name) is not None}
    config = make_config(**overrides)
    n = check_samples(args.samples, "samples")
    sampler = sampler_from_args(args)
    if isinstance(sampler, ArraySampler) and sampler.available_fresh(0) < n:
        sampler.draw(n)  # raises the sampler's own message: how many rows, how many needed, what to do
    teacher = load_teacher(args.teacher, arch=args.arch, trust_pickle=args.trust_pickle, device=args.device)
    probe = sampler.preview(_PROBE_POINTS)
    n_classes = int(_teacher_on(teacher, probe, args.device).shape[1])  # a teacher that fails on batches: here
    k = _fresh_count(sampler, n, args.fresh)
    dim = int(np.prod(probe.shape[1:]))
    check_memory((n + k) * (dim * _BYTES_PER_VALUE + 16 * n_classes),
                 f"distilling on {n} points (and {k} fresh ones) of dimension m = {dim}",
                 "use fewer points (a smaller --samples or --fresh) or a machine with more memory")
    x = sampler.draw(n)
    x_fresh = sampler.fresh(k, after=n) if k else None
    result = distill(teacher, x, config=config, device=args.device, progress=not args.quiet,
                     checkpoint_dir=args.checkpoint_dir, x_fresh=x_fresh)
    target = Path(args.out)
    created = not target.exists()
    out = ensure_dir(target)
    before = set() if created else snapshot(out)
    try:
        report = export_onnx(result.student, out / "student.onnx", tuple(x.shape[1:]), sample=x, seed=config.seed)
        save_student(result.student, out / "student.pt")
        summary = result.as_dict()
        summary["data"] = {"source": sampler.description, "samples": n,
                           "fresh": 0 if x_fresh is None else len(x_fresh), "seed": config.seed,
                           "duplicates": count_duplicates(x)}
        summary["teacher"] = {"path": str(args.teacher), "sha256": sha256_file(args.teacher)}
        summary["export"] = report.as_dict()
        atomic_write_json(out / "distill.json", summary)
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            remove_new(out, before)
        raise
    print(_summary(result, report, out))
    for note in result.notes:
        print(f"warning: {note}", file=sys.stderr)
    return 0


_PROBE_POINTS = 64
_BYTES_PER_VALUE = 48  # per coordinate: the float32 points, their tensors and input gradients, transient copies


def _teacher_on(teacher, points, device):
    """The teacher's logits on a probe batch; any failure of the teacher's own code is an :class:`InputError`."""
    try:
        return teacher_logits(teacher, points, device=resolve_device(device))
    except (InputError, MemoryError):
        raise
    except Exception as exc:  # e.g. torch.jit.Error from a TorchScript teacher, which is no RuntimeError
        raise InputError(f"the teacher failed on a probe batch of {len(points)} points of shape "
                         f"{tuple(points.shape[1:])}: {error_line(exc)}") from None


def _fresh_count(sampler, n: int, requested: str | None) -> int:
    """How many fresh points to draw: ``--fresh`` (0 = none), else up to the default (for --data: the rows left)."""
    if requested is not None:
        return 0 if str(requested).strip() == "0" else check_samples(requested, "fresh")
    k = DEFAULT_FRESH
    if isinstance(sampler, ArraySampler):
        k = min(k, sampler.available_fresh(n))
    return k


def _summary(result, report, out: Path) -> str:
    m = result.markers
    fresh = "" if m.agreement_fresh is None else f", fresh sample {m.agreement_fresh:.4f} (n = {m.n_fresh})"
    rho = m.rho_quantiles
    lines = [
        f"student {result.student.spec} distilled with {result.config.method} on {result.n_train} points: "
        f"{result.epochs_run} epochs in {result.seconds:.1f} s on {result.device}",
        f"agreement with the teacher: sample {m.agreement:.4f}{fresh}",
        f"Eq 13 (student at least as confident): {m.eq13_fraction:.4f}",
        f"gradient distance GD {m.gd_mean:.4g}, cosine GC {m.gc_mean:.4f}",
        f"rho (norm {m.norm}): min {rho.get('0', float('nan')):.3g}, median {rho.get('0.5', float('nan')):.3g}, "
        f"max {rho.get('1', float('nan')):.3g}; {m.rho_inf} point(s) with a flat teacher margin (rho = inf)",
        f"ONNX parity: max |onnxruntime - torch| {report.max_abs_diff_random:.2g} (random), "
        f"{report.max_abs_diff_sample:.2g} (sample)",
        f"wrote {out / 'student.onnx'}, {out / 'student.pt'}, {out / 'distill.json'}",
    ]
    return "\n".join(lines)
