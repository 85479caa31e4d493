"""``pacverify verify``: local robustness of points, certified radii, a VNN-LIB instance, or global robustness over
a domain box (``--global``) (DESIGN.md §4)."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pacverify.cli.options import (
    DEFAULT_GLOBAL_BOXES,
    DEFAULT_GLOBAL_TIMEOUT,
    GLOBAL_ONLY,
    add_domain_option,
    add_executor_options,
    add_global_options,
    add_threads_option,
    apply_threads,
    global_domain,
)
from pacverify.data import check_labels, check_points
from pacverify.errors import InputError
from pacverify.fileio import atomic_write_text, dumps_json
from pacverify.names import BACKEND_ALIASES, BACKENDS, BOUND_METHOD_NAMES
from pacverify.progress import ProgressReporter
from pacverify.validation import (
    NORMS,
    check_kappa,
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_radius,
    parse_domain,
)

HELP = ("prove (or refute) robustness of an ONNX ReLU network at points, over a whole domain (--global), or answer "
        "a VNN-LIB property")
DEVICES = ("cpu", "cuda")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help=HELP, description=HELP[0].upper() + HELP[1:] + ".")
    p.add_argument("model", metavar="MODEL.onnx", help="the network, an ONNX file of affine layers and ReLUs")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--points", metavar="FILE.npy", help="points to verify, shape (N, *input_shape) or (N, m)")
    what.add_argument("--vnnlib", metavar="PROP.vnnlib", help="a VNN-LIB property: prints sat / unsat / unknown")
    what.add_argument("--global", dest="global_", action="store_true",
                      help="global robustness over the --domain box: every κ-confident point keeps its class within "
                           "--radius (prints verified / falsified / unknown)")
    p.add_argument("--radius", help="ball radius (> 0), or 'max' for the certified radius of each point")
    p.add_argument("--norm", choices=NORMS, help="ball norm: 2 or inf (with --global: default inf)")
    p.add_argument("--method", choices=BOUND_METHOD_NAMES, help="bound method (default: crown for --points, "
                                                                "alpha-crown for --vnnlib)")
    p.add_argument("--complete", action="store_true", help="branch and bound on points the bounds leave unknown")
    p.add_argument("--timeout", help="seconds per point for the complete search (per instance with --vnnlib; in all "
                                     f"with --global, default {DEFAULT_GLOBAL_TIMEOUT:g})")
    add_domain_option(p, "box every perturbed input must stay in, e.g. 0,1 for pixels; with --global the region "
                         "verified: LO,HI for every input or a .npy file of shape (2, m)")
    p.add_argument("--labels", metavar="FILE.npy", help="classes the points must keep (default: the model's own)")
    p.add_argument("--backend", default="native", choices=BACKENDS + tuple(BACKEND_ALIASES),
                   help="native (built in, default: IBP / CROWN / α-CROWN and branch and bound; 'crown' is its "
                        "former name, still accepted), marabou (complete, L∞ only) or auto_lirpa")
    p.add_argument("--seed", default="0", help="seed of the attacks (default 0)")
    p.add_argument("--cap", default="1.0", help="with --radius max: largest radius tried (default 1.0)")
    p.add_argument("--tol", default="1e-3",
                   help="with --radius max: the search stops within this of a radius not proved (default 1e-3)")
    p.add_argument("--no-attack", action="store_true",
                   help="skip the attack on the points the bounds leave open (it only finds counterexamples)")
    p.add_argument("--attack-budget",
                   help="the attack's work as a multiple of the bounds' (counted in multiply-adds, so that results "
                        "do not depend on the machine; default 1), or 'none' for the full attack on every near miss")
    p.add_argument("--device", default="cpu", choices=DEVICES, help="cpu (default) or cuda")
    add_threads_option(p)
    add_executor_options(p)
    p.add_argument("--json", metavar="OUT", help="write {summary, points} as JSON (written whole)")
    p.add_argument("--cex", metavar="FILE", help="with --vnnlib: write a counterexample in the VNN-COMP format")
    add_global_options(p)
    p.set_defaults(func=run)


def _load_npy(path: str, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{what} file {path!r} does not exist") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {what} file {path!r} as a .npy array: {exc}") from None


def run(args: argparse.Namespace) -> int:
    from pacverify.verify import api

    apply_threads(args.threads)

    if not Path(args.model).is_file():
        raise InputError(f"model file {args.model!r} does not exist")
    given = [option for attr, option in GLOBAL_ONLY if getattr(args, attr) not in (None, False)]
    if given and not args.global_:
        raise InputError(f"{', '.join(given)} only apply with --global")
    if args.ray_address is not None and args.executor != "ray":
        raise InputError("--ray-address only applies with --executor ray")
    if args.executor != "local" and args.points is None:
        raise InputError("--executor ray applies to --points only (--vnnlib and --global run in this process)")
    if args.attack_budget is not None and args.points is None:
        raise InputError("--attack-budget applies to --points only")
    if args.vnnlib is not None:
        return _run_vnnlib(args, api)
    if args.global_:
        return _run_global(args)
    if args.radius is None or args.norm is None:
        raise InputError("--points needs --radius R (or max) and --norm 2|inf")
    points = check_points(_load_npy(args.points, "points"), name=f"points file {args.points}")
    labels = None if args.labels is None else check_labels(_load_npy(args.labels, "labels"),
                                                           name=f"labels file {args.labels}")
    common = dict(labels=labels, method=args.method or "crown", complete=args.complete, timeout=args.timeout,
                  domain=parse_domain(args.domain), attack=not args.no_attack, seed=args.seed, device=args.device,
                  backend=args.backend, executor=args.executor, ray_address=args.ray_address)
    max_radius = args.radius.strip().lower() == "max"
    budget = _attack_budget(args.attack_budget, max_radius)
    bars = ProgressReporter()
    try:
        if max_radius:
            result = api.certified_radius(args.model, points, args.norm, cap=args.cap, tol=args.tol, progress=bars,
                                          **common)
        else:
            result = api.verify_points(args.model, points, check_radius(args.radius, "radius"), args.norm,
                                       progress=bars, attack_budget=budget, **common)
    finally:
        bars.close()
    summary = result.summary()
    if labels is not None:
        summary.update(labelled_accuracy(api.load(args.model), points, labels, summary["verified"]))
    if args.json:
        atomic_write_text(args.json, dumps_json({"summary": summary, "points": result.points()}))
    print(_summary_text(summary, result, certified=args.radius.strip().lower() == "max"))
    return 0



def _attack_budget(text: str | None, max_radius: bool) -> float | None:
    """--attack-budget: a positive number or 'none' (no budget); only for --points with a numeric --radius."""
    from pacverify.verify.api import ATTACK_BUDGET

    if text is None:
        return ATTACK_BUDGET
    if max_radius:
        raise InputError("--attack-budget applies to --points with a numeric --radius, not to --radius max")
    return None if text.strip().lower() == "none" else check_positive(text, "--attack-budget")


def labelled_accuracy(net, points: np.ndarray, labels: np.ndarray, verified: int) -> dict:
    """With true labels: the clean accuracy (the network's class equals the label) and the verified robust accuracy
    (the fraction proven to keep the label on the whole ball: verified points are correctly classified too)."""
    import torch

    x = torch.as_tensor(np.asarray(points, dtype=np.float64).reshape(len(points), -1), dtype=net.dtype)
    with torch.no_grad():
        predicted = net(x).argmax(1).cpu().numpy()
    n = max(len(labels), 1)
    return {"clean_accuracy": float((predicted == np.asarray(labels).astype(np.int64)).sum() / n),
            "verified_robust_accuracy": float(verified / n)}


def _summary_text(summary: dict, result, *, certified: bool) -> str:
    n = summary["points"]
    lines = [f"verified   {summary['verified']:>8} / {n}",
             f"falsified  {summary['falsified']:>8}",
             f"unknown    {summary['unknown']:>8}"]
    if "verified_robust_accuracy" in summary:
        lines.append(f"verified robust accuracy {summary['verified_robust_accuracy']:.4f} "
                     f"(clean accuracy {summary['clean_accuracy']:.4f}) on {n} labelled points")
    if certified:
        radius = np.asarray(result.radius)
        lines.append(f"certified radius: min {radius.min():.6g}, median {np.median(radius):.6g}, max {radius.max():.6g}"
                     f" (cap {summary['cap']:g}, tol {summary['tol']:g})")
        if "search" in summary and n:
            lines.append(f"radius search {summary['search']}: {summary['passes']} passes, "
                         f"{summary['bounded'] / n:.2f} bounds per point")
    lines.append(f"time {summary['time_s']:.3f} s ({_rate(summary['points_per_s'])} points/s); "
                 f"method {summary['method']}, norm {summary['norm']}, backend {summary['backend']}, "
                 f"complete {summary['complete']}")
    if summary.get("executor") == "ray":
        lines.append(f"executor ray: {summary['chunks']} chunks on {summary['cluster_nodes']} node(s), "
                     f"{summary['cluster_cpus']:g} CPUs")
    if "bounds_s" in summary:
        lines.append(f"time by part: bounds {summary['bounds_s']:.3f} s, attack {summary['attack_s']:.3f} s "
                     f"({summary['falsified_by_attack']} falsified), complete search {summary['search_s']:.3f} s")
    if summary.get("bounds_work"):
        lines.append(f"attack work {summary['attack_work'] / summary['bounds_work']:.2f} of the bounds' (modelled "
                     f"multiply-adds): {summary['quick_steps']} quick steps on the open points, "
                     f"{summary['attacked_strongly']} of {summary['near_misses']} near misses attacked strongly")
    return "\n".join(lines)


def _run_vnnlib(args: argparse.Namespace, api) -> int:
    result = api.verify_vnnlib(args.model, args.vnnlib, args.timeout, method=args.method or "alpha-crown",
                               seed=args.seed, device=args.device, backend=args.backend)
    print(result.status.value)
    print(f"time {result.time_s:.3f} s")
    if result.detail:
        print(result.detail)
    from pacverify.verify.vnnlib import format_counterexample

    if args.cex and result.counterexample is not None:
        atomic_write_text(args.cex, format_counterexample(result.counterexample, result.output))
    if args.json:
        atomic_write_text(args.json, dumps_json({"status": result.status.value, "time_s": result.time_s,
                                                 "detail": result.detail, "counterexample": result.counterexample,
                                                 "output": result.output}))
    return 0


def _run_global(args: argparse.Namespace) -> int:
    """``--global``: verify_global on the --domain box; first word verified / falsified / unknown."""
    from pacverify.verify.global_robustness import verify_global

    if args.radius is None or args.kappa is None or args.domain is None:
        raise InputError("--global needs --domain LO,HI (or a (2, m) .npy file), --radius R and --kappa K")
    other = [option for option, given in (("--labels", args.labels is not None), ("--complete", args.complete),
                                          ("--cex", args.cex is not None), ("--backend", args.backend != "native"))
             if given]
    if other:
        raise InputError(f"not used with --global: {', '.join(other)} (--global runs the built-in bounds and its own "
                         "branch and bound over the domain)")
    radius = check_radius(args.radius, "radius")
    kappa = check_kappa(args.kappa, "kappa")
    timeout = DEFAULT_GLOBAL_TIMEOUT if args.timeout is None else check_positive(args.timeout, "timeout")
    max_boxes = DEFAULT_GLOBAL_BOXES if args.max_boxes is None else check_positive_int(args.max_boxes, "max-boxes")
    min_width = None if args.min_width is None else check_nonnegative(args.min_width, "min-width")
    from pacverify.verify.api import load

    net = load(args.model, device=args.device)
    domain = global_domain(args.domain, net.in_features)
    result = verify_global(net, domain, radius, kappa, norm=args.norm or "inf", method=args.method or "crown",
                           inside_domain=not args.outside_domain, max_boxes=max_boxes, timeout=timeout,
                           min_width=min_width, seed=args.seed, attack=not args.no_attack, device=args.device)
    if args.json:
        atomic_write_text(args.json, dumps_json(result.to_json()))
    print(f"{result.verdict} proven_fraction {result.proven_fraction:.6f} boxes_done {result.boxes_done} "
          f"boxes_open {result.boxes_open} time_s {result.time_s:.3f}")
    settings = result.settings
    print(f"radius {settings['radius']:g} ({settings['norm']}), kappa {settings['kappa']:g}, method "
          f"{settings['method']}, x' {'inside the domain' if settings['inside_domain'] else 'anywhere'}; "
          f"items bounded {result.stats['items_bounded']}; stopped by {result.stats['stopped_by'] or 'completion'}")
    if result.pair is not None:
        pair = result.pair
        print(f"counterexample: x = {_vector(pair.x)} (class {pair.class_x}, confidence {pair.confidence:.6f}); "
              f"x' = {_vector(pair.x_prime)} (class {pair.class_x_prime}); distance {pair.distance:.6g}")
    elif result.largest_open:
        lo, hi = result.largest_open[0]
        print(f"largest open box: lower {_vector(lo)}, upper {_vector(hi)}")
    return 0


def _vector(v: np.ndarray) -> str:
    """A vector on one line (long ones summarised; --json has them whole)."""
    return " ".join(np.array2string(v, precision=6, threshold=16).split())


def _rate(points_per_s: float) -> str:
    """Points per second with three significant digits below 100 (a ConvBig-size network runs ~0.05), whole above."""
    return f"{points_per_s:,.0f}" if points_per_s >= 100 else f"{points_per_s:.3g}"
