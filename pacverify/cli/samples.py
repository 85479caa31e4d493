"""``pacverify samples``: the PAC sample-size calculator (Thm 3.8 / 4.4, Obs 4.5 of 004)."""
from __future__ import annotations

import argparse
import json
import sys

from pacverify import pac
from pacverify.errors import InputError
from pacverify.validation import NORMS, check_dim, check_eps, check_eta, check_norm, check_samples, check_tv

HELP = "how many sample points the ε-net theorem needs (or which ε / η a given number buys)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("samples", help=HELP, description=HELP[0].upper() + HELP[1:] + ".")
    p.add_argument("--dim", required=True, metavar="M[,M...]",
                   help="input dimension m; a comma list gives one row each")
    p.add_argument("--eps", help="mass ε of the balls the sample must hit, 0 < ε <= 0.5")
    p.add_argument("--eta", help="failure probability η, 0 < η <= 0.5")
    p.add_argument("--samples", help="a sample size s: solve for the smallest ε (give --eta) or η (give --eps)")
    p.add_argument("--tv", default="0", help="total-variation distance Λ to a shifted distribution (Obs 4.5)")
    p.add_argument("--norm", default="2", choices=NORMS, help="ball norm: 2 (d = m+1) or inf (d = 2m); default 2")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    p.set_defaults(func=run)


def _dims(text: str) -> list[int]:
    parts = [part for part in text.split(",") if part.strip()]
    if not parts:
        raise InputError(f"dim (m) must be a positive integer or a comma list of them, got {text!r}")
    return [check_dim(part) for part in parts]


def compute(dims: list[int], *, eps: str | None, eta: str | None, samples: str | None,
            tv: str, norm: str) -> dict:
    """The rows the command prints, as plain data (also the --json payload)."""
    norm = check_norm(norm)
    given = [name for name, value in (("eps", eps), ("eta", eta), ("samples", samples)) if value is not None]
    if len(given) != 2:
        raise InputError("give exactly two of --eps, --eta and --samples (the third is computed)")
    rows = []
    for dim in dims:
        row: dict = {"dim": dim, "d": pac.vc_dimension(dim, norm)}
        # check_* turn the strings into numbers (a non-number is an InputError), in the order pac checks them
        if samples is None:
            row["eps"], row["eta"] = check_eps(eps), check_eta(eta)
            row["samples"] = pac.sample_size(dim, row["eps"], row["eta"], norm=norm)
            row["solved_for"] = "samples"
        elif eps is None:
            row["samples"], row["eta"] = check_samples(samples), check_eta(eta)
            row["eps"] = pac.min_eps(row["samples"], dim, row["eta"], norm=norm)
            row["solved_for"] = "eps"
        else:
            row["samples"], row["eps"] = check_samples(samples), check_eps(eps)
            row["eta"] = pac.min_eta(row["samples"], dim, row["eps"], norm=norm)
            row["solved_for"] = "eta"
        row["tv"] = check_tv(tv)
        row["shifted_eps"] = pac.shifted_eps(row["eps"], row["tv"])
        rows.append(row)
    warnings = [
        f"m = {row['dim']}: s = {row['samples']} exceeds what a typical dataset holds "
        f"({pac.TYPICAL_DATASET_ROWS:,} rows); a sampler (--sampler) or larger ε or η lowers it"
        for row in rows if row["samples"] > pac.TYPICAL_DATASET_ROWS
    ]
    return {
        "theorem": "Thm 3.8 / Eq 10 of 004: s >= 8d/eps*ln(16d/eps) + 4/eps*ln(2/eta)",
        "norm": norm,
        "vc_dimension": "d = m + 1 (L2 balls)" if norm == "2" else "d = 2m (L-inf balls are boxes)",
        "depends_on": "only m (through d), eps and eta: not on the network, delta or the number of classes",
        "rows": rows,
        "warnings": warnings,
    }


def _table(result: dict) -> str:
    shifted = any(row["tv"] > 0 for row in result["rows"])
    head = ["m", "d", "eps", "eta", "samples"] + (["tv", "eps+tv"] if shifted else [])
    lines = []
    for row in result["rows"]:
        cells = [str(row["dim"]), str(row["d"]), f"{row['eps']:.6g}", f"{row['eta']:.6g}", str(row["samples"])]
        if shifted:
            cells += [f"{row['tv']:.6g}", f"{row['shifted_eps']:.6g}"]
        lines.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    out = [f"PAC sample size, {result['theorem']}", f"VC dimension: {result['vc_dimension']}",
           "", fmt.format(*head)]
    out += [fmt.format(*cells) for cells in lines]
    solved = result["rows"][0]["solved_for"]
    if solved != "samples":
        out += ["", f"{solved} is the smallest value that the given sample size reaches."]
    out += ["", f"s depends on {result['depends_on']}."]
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    result = compute(_dims(args.dim), eps=args.eps, eta=args.eta, samples=args.samples,
                     tv=args.tv, norm=args.norm)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(_table(result))
    for warning in result["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    return 0
