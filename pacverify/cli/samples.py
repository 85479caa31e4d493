"""``pacverify samples``: the PAC sample-size calculator (Thm 3.8 / 4.4, Obs 4.5 of 004; the tight ε-net bound and
mass mode's d = 2 of docs/theory.md). Every number comes from :mod:`pacverify.pac`."""
from __future__ import annotations

import argparse
import json
import sys

from pacverify import pac
from pacverify.errors import InputError
from pacverify.names import BOUNDS, GUARANTEES
from pacverify.validation import (
    NORMS,
    check_choice,
    check_dim,
    check_eps,
    check_eta,
    check_norm,
    check_samples,
    check_tv,
)

HELP = "how many sample points the ε-net theorem needs (or which ε / η a given number buys)"

GUARANTEE_HELP = {
    "ball": "every δ-ball (any δ) of mass >= ε holds a sample point; d = m + 1 (L2) or 2m (L-inf)",
    "mass": "every range {conf_T >= κ, rob_T < ρ} of mass >= ε holds a sample point; d = 2 whatever m",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("samples", help=HELP, description=HELP[0].upper() + HELP[1:] + ".")
    p.add_argument("--dim", required=True, metavar="M[,M...]",
                   help="input dimension m; a comma list gives one row each")
    p.add_argument("--eps", help="mass ε of the balls the sample must hit, 0 < ε <= 0.5")
    p.add_argument("--eta", help="failure probability η, 0 < η <= 0.5")
    p.add_argument("--samples", help="a sample size s: solve for the smallest ε (give --eta) or η (give --eps)")
    p.add_argument("--tv", default="0", help="total-variation distance Λ to a shifted distribution (Obs 4.5)")
    p.add_argument("--norm", default="2", choices=NORMS, help="ball norm: 2 (d = m+1) or inf (d = 2m); default 2")
    p.add_argument("--guarantee", choices=GUARANTEES,
                   help="ball: δ-balls of mass >= ε (d = m + 1); mass: the dimension-free map M(κ) (d = 2). "
                        "Default: show both")
    p.add_argument("--bound", choices=BOUNDS,
                   help="thm38: Thm 3.8 of 004 (the default of ball mode); tight: the double-sampling ε-net bound "
                        "with Sauer's lemma (the default of mass mode; docs/theory.md). Default: show both")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    p.set_defaults(func=run)


def _dims(text: str) -> list[int]:
    parts = [part for part in text.split(",") if part.strip()]
    if not parts:
        raise InputError(f"dim (m) must be a positive integer or a comma list of them, got {text!r}")
    return [check_dim(part) for part in parts]


def _combinations(guarantee: str | None, bound: str | None) -> list[tuple[str, str]]:
    """The (guarantee, bound) rows to show: all four when neither is given, else those matching what is given."""
    guarantees = GUARANTEES if guarantee is None else (check_choice(guarantee, GUARANTEES, "guarantee"),)
    bounds = BOUNDS if bound is None else (check_choice(bound, BOUNDS, "bound"),)
    return [(g, b) for g in guarantees for b in bounds]


def _vc_text(guarantee: str, norm: str) -> str:
    if guarantee == "mass":
        return "d = 2 (ranges {conf_T >= kappa, rob_T < rho}: pre-images of quadrants of the plane, whatever m)"
    return "d = m + 1 (L2 balls)" if norm == "2" else "d = 2m (L-inf balls are boxes)"


def compute(dims: list[int], *, eps: str | None, eta: str | None, samples: str | None,
            tv: str, norm: str, guarantee: str | None = None, bound: str | None = None) -> dict:
    """The rows the command prints, as plain data (also the --json payload).

    ``table`` holds one row per (m, guarantee, bound) shown: every combination when neither ``guarantee`` nor
    ``bound`` is given, else the matching ones. ``rows`` is ``table`` when either is given; when neither is, it
    keeps the ball-mode Thm 3.8 rows alone (what it held before the two options existed). Each row has the keys
    ``guarantee``, ``bound`` and ``default`` (whether ``bound`` is the guarantee's default). When solving for ε
    or η, a row whose bound needs more than ``samples`` even at 1/2 has ``too_few: true``, the value ``needs``
    and ``None`` for the solved value; an :class:`InputError` only when every row is like that.
    """
    norm = check_norm(norm)
    combos = _combinations(guarantee, bound)
    given = [name for name, value in (("eps", eps), ("eta", eta), ("samples", samples)) if value is not None]
    if len(given) != 2:
        raise InputError("give exactly two of --eps, --eta and --samples (the third is computed)")
    table = []
    for dim in dims:
        for mode, name in combos:
            kw = {"norm": norm, "bound": name, "guarantee": mode}
            row: dict = {"dim": dim, "guarantee": mode, "bound": name, "default": pac.DEFAULT_BOUND[mode] == name,
                         "d": pac.vc_dimension(dim, norm, mode)}
            # check_* turn the strings into numbers (a non-number is an InputError), in the order pac checks them
            if samples is None:
                row["eps"], row["eta"] = check_eps(eps), check_eta(eta)
                row["samples"] = pac.sample_size(dim, row["eps"], row["eta"], **kw)
                row["solved_for"] = "samples"
            elif eps is None:
                row["samples"], row["eta"] = check_samples(samples), check_eta(eta)
                row["solved_for"] = "eps"
                need = pac.sample_size(dim, 0.5, row["eta"], **kw)
                row["eps"] = None if need > row["samples"] else pac.min_eps(row["samples"], dim, row["eta"], **kw)
            else:
                row["samples"], row["eps"] = check_samples(samples), check_eps(eps)
                row["solved_for"] = "eta"
                need = pac.sample_size(dim, row["eps"], 0.5, **kw)
                row["eta"] = None if need > row["samples"] else pac.min_eta(row["samples"], dim, row["eps"], **kw)
            row["tv"] = check_tv(tv)
            if row["solved_for"] != "samples" and row[row["solved_for"]] is None:
                row.update(too_few=True, needs=need, shifted_eps=None)
            else:
                row["shifted_eps"] = pac.shifted_eps(row["eps"], row["tv"])
            table.append(row)
    short = [row for row in table if row.get("too_few")]
    if short and len(short) == len(table):
        least = min(short, key=lambda row: row["needs"])
        raise InputError(
            f"samples = {least['samples']} is too few for any {least['solved_for']} in (0, 0.5] with every "
            f"guarantee and bound shown: the least demanding ({least['guarantee']}/{least['bound']}, "
            f"m = {least['dim']}) needs at least {least['needs']}")
    warnings = []
    for dim in dims:  # one line per m, naming the rows it concerns
        big = [row for row in table if row["dim"] == dim and not row.get("too_few")
               and row["samples"] > pac.TYPICAL_DATASET_ROWS]
        if big:
            which = ", ".join(f"{row['guarantee']}/{row['bound']}" for row in big)
            sizes = sorted({row["samples"] for row in big})
            size = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]} to {sizes[-1]}"
            warnings.append(f"m = {dim}: s = {size} ({which}) exceeds what a typical dataset holds "
                            f"({pac.TYPICAL_DATASET_ROWS:,} rows); a sampler (--sampler) or larger ε or η lowers it")
        few = [row for row in short if row["dim"] == dim]
        if few:
            which = ", ".join(f"{row['guarantee']}/{row['bound']} needs at least {row['needs']}" for row in few)
            warnings.append(f"m = {dim}: samples = {few[0]['samples']} is too few for any {few[0]['solved_for']} "
                            f"in (0, 0.5] with {which}")
    modes = list(dict.fromkeys(row["guarantee"] for row in table))
    bounds = list(dict.fromkeys(row["bound"] for row in table))
    selected = guarantee is not None or bound is not None
    return {
        "theorem": "; ".join(pac.BOUND_FORMULAS[name] for name in bounds),
        "bounds": {name: pac.BOUND_FORMULAS[name] for name in bounds},
        "default_bounds": {mode: pac.DEFAULT_BOUND[mode] for mode in modes},
        "guarantees": {mode: GUARANTEE_HELP[mode] for mode in modes},
        "norm": norm,
        "vc_dimension": "; ".join(f"{mode}: {_vc_text(mode, norm)}" for mode in modes)
        if len(modes) > 1 else _vc_text(modes[0], norm),
        "depends_on": _depends_on(modes),
        "rows": table if selected else [row for row in table if (row["guarantee"], row["bound"]) == ("ball", "thm38")],
        "table": table,
        "warnings": warnings,
    }


def _depends_on(modes: list[str]) -> str:
    tail = ": not on the network, delta or the number of classes"
    if modes == ["mass"]:
        return "only eps and eta (d = 2 whatever m)" + tail
    return "only m (through d), eps and eta" + tail + ("; in mass mode not even on m" if "mass" in modes else "")


def _cell(row: dict, key: str) -> str:
    if row.get("too_few") and key == row["solved_for"]:
        return f"too few (needs {row['needs']} at {key} = 0.5)"
    value = row[key]
    return "-" if value is None else f"{value:.6g}"


def _table(result: dict) -> str:
    rows = result["table"]
    shifted = any(row["tv"] > 0 for row in rows)
    head = ["m", "guarantee", "bound", "d", "eps", "eta", "samples"] + (["tv", "eps+tv"] if shifted else [])
    lines = []
    for row in rows:
        cells = [str(row["dim"]), row["guarantee"], row["bound"] + ("*" if row["default"] else " "), str(row["d"]),
                 _cell(row, "eps"), _cell(row, "eta"), str(row["samples"])]
        if shifted:
            cells += [f"{row['tv']:.6g}", _cell(row, "shifted_eps")]
        lines.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:{'<' if i in (1, 2) else '>'}{w}}}" for i, w in enumerate(widths))
    bounds = result["bounds"]
    out = ["PAC sample size for an ε-net (the sample hits every range of mass >= eps with probability >= 1 - eta)"]
    out += [f"{'bound: ' if len(bounds) == 1 else 'bounds: ' if i == 0 else '        '}{name} = {text}"
            for i, (name, text) in enumerate(bounds.items())]
    out += [f"VC dimension: {result['vc_dimension']}", "", fmt.format(*head).rstrip()]
    out += [fmt.format(*cells).rstrip() for cells in lines]
    defaults = ", ".join(f"{mode}: {name}" for mode, name in result["default_bounds"].items())
    out += ["", f"* the default bound of each guarantee ({defaults})."]
    solved = rows[0]["solved_for"]
    if solved != "samples":
        out += [f"{solved} is the smallest value that the given sample size reaches."]
    out += [f"s depends on {result['depends_on']}."]
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    result = compute(_dims(args.dim), eps=args.eps, eta=args.eta, samples=args.samples,
                     tv=args.tv, norm=args.norm, guarantee=args.guarantee, bound=args.bound)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(_table(result))
    for warning in result["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    return 0
