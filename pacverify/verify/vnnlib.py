"""VNN-LIB reader for the VNN-COMP subset: input boxes and linear output constraints.

A VNN-LIB file states an UNSAFE set: the instance is ``sat`` when some input satisfying the
input constraints produces an output satisfying the output constraints, ``unsat`` when none
does. Supported (everything the VNN-COMP 2021/2022 mnistfc and ACAS Xu files use, and a little
more):

- ``(declare-const X_i Real)`` / ``(declare-const Y_j Real)``; indices 0..m−1 and 0..n−1.
- ``(assert F)`` where F is ``(and F ...)``, ``(or F ...)`` or a comparison ``(<= a b)``,
  ``(>= a b)``, ``(< a b)``, ``(> a b)``, ``(= a b)``. Strict comparisons are read as non-strict
  (the unsafe set only grows, so an ``unsat`` answer stays sound; VNN-COMP checks counterexamples
  with a tolerance anyway). Terms are numbers, variables, ``(+ t ...)``, ``(- t ...)`` and
  ``(* c t)`` with at least one constant factor: only linear terms.
- A comparison mentions only X variables (then it must bound one variable by a constant) or only
  Y variables (any linear constraint). Mixing X and Y in one comparison is refused.

The conjunction of all asserts is put in disjunctive normal form; its disjuncts are grouped by
their input box, giving a list of :class:`VnnlibRegion` — an input box and the unsafe output set
over it (an :class:`~pacverify.verify.property.OutputProperty`), held by a :class:`VnnlibProperty`
(the whole file). The instance is ``unsat`` exactly when every region's unsafe set is unreachable
from its box.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import numpy as np
import torch

from pacverify.errors import InputError
from pacverify.verify.property import OutputProperty

_TOKEN = re.compile(r"\(|\)|[^\s()]+")
_VAR = re.compile(r"([XY])_(\d+)\Z")
MAX_DISJUNCTS = 100_000


@dataclass(frozen=True)
class VnnlibRegion:
    """One input box (``lower``, ``upper``: (m,) float64, flattened C order of the model input)
    and the unsafe output set over it (``prop``, batch size 1)."""

    lower: np.ndarray
    upper: np.ndarray
    prop: OutputProperty


@dataclass(frozen=True)
class VnnlibProperty:
    """A parsed VNN-LIB file: ``n_inputs`` X variables, ``n_outputs`` Y variables, and the regions
    whose unsafe sets must all be unreachable for ``unsat``. No regions means every disjunct had an
    empty input box: trivially ``unsat``."""

    n_inputs: int
    n_outputs: int
    regions: tuple[VnnlibRegion, ...]


# A linear term: ({("X"|"Y", index): coefficient}, constant).
_Linear = tuple[dict[tuple[str, int], float], float]
# An atom, normalised to  sum coef·var ≤ bound.
_Atom = tuple[tuple[tuple[tuple[str, int], float], ...], float]


class _Reader:
    """Turns the token stream into nested tuples (a minimal s-expression reader)."""

    def __init__(self, text: str, source: str) -> None:
        text = re.sub(r";[^\n]*", "", text)
        self.tokens = _TOKEN.findall(text)
        self.source = source

    def forms(self) -> list:
        stack: list[list] = [[]]
        for tok in self.tokens:
            if tok == "(":
                stack.append([])
            elif tok == ")":
                if len(stack) == 1:
                    raise InputError(f"{self.source}: unbalanced ')' in the VNN-LIB file")
                done = tuple(stack.pop())
                stack[-1].append(done)
            else:
                stack[-1].append(tok)
        if len(stack) != 1:
            raise InputError(f"{self.source}: unbalanced '(' in the VNN-LIB file (truncated?)")
        return stack[0]


def _number(tok: str, source: str) -> float:
    try:
        return float(tok)
    except ValueError:
        raise InputError(f"{source}: expected a number or a declared X_i / Y_j variable, got {tok!r}") from None


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.declared: set[tuple[str, int]] = set()

    def fail(self, what: str) -> InputError:
        return InputError(f"{self.source}: {what}")

    def declare(self, form: tuple) -> None:
        if len(form) != 3 or not isinstance(form[1], str) or form[2] != "Real":
            raise self.fail(f"unsupported declaration {_show(form)} (only '(declare-const X_i Real)' and Y_j)")
        match = _VAR.match(form[1])
        if not match:
            raise self.fail(f"unsupported variable name {form[1]!r} (VNN-LIB uses X_i for inputs, Y_j for outputs)")
        self.declared.add((match[1], int(match[2])))

    def term(self, t) -> _Linear:
        if isinstance(t, str):
            match = _VAR.match(t)
            if match:
                key = (match[1], int(match[2]))
                if key not in self.declared:
                    raise self.fail(f"variable {t} is used before it is declared")
                return {key: 1.0}, 0.0
            return {}, _number(t, self.source)
        if not t or t[0] not in ("+", "-", "*"):
            raise self.fail(f"unsupported term {_show(t)} (only numbers, variables, +, - and * are read)")
        parts = [self.term(x) for x in t[1:]]
        if not parts:
            raise self.fail(f"empty term {_show(t)}")
        if t[0] == "*":
            coefs, const = parts[0]
            for c2, k2 in parts[1:]:
                if coefs and c2:
                    raise self.fail(f"non-linear term {_show(t)} (a product of variables)")
                coefs, const = ({v: a * k2 for v, a in coefs.items()} if coefs else
                                {v: a * const for v, a in c2.items()}), const * k2
            return coefs, const
        sign = -1.0 if t[0] == "-" else 1.0
        if t[0] == "-" and len(parts) == 1:
            coefs, const = parts[0]
            return {v: -a for v, a in coefs.items()}, -const
        coefs, const = dict(parts[0][0]), parts[0][1]
        for c2, k2 in parts[1:]:
            for v, a in c2.items():
                coefs[v] = coefs.get(v, 0.0) + sign * a
            const += sign * k2
        return coefs, const

    def atoms(self, form) -> list[_Atom]:
        """A comparison as one or two atoms ``sum coef·var ≤ bound``."""
        if len(form) != 3:
            raise self.fail(f"a comparison needs two operands: {_show(form)}")
        (ca, ka), (cb, kb) = self.term(form[1]), self.term(form[2])
        diff = dict(ca)
        for v, a in cb.items():
            diff[v] = diff.get(v, 0.0) - a
        diff = {v: a for v, a in diff.items() if a != 0.0}
        le = (tuple(sorted(diff.items())), kb - ka)                      # a − b ≤ 0
        ge = (tuple(sorted((v, -a) for v, a in diff.items())), ka - kb)  # b − a ≤ 0
        if {k for k, _ in diff} == {"X", "Y"}:
            raise self.fail(f"a comparison mixes inputs and outputs: {_show(form)} (not supported)")
        return {"<=": [le], "<": [le], ">=": [ge], ">": [ge], "=": [le, ge]}[form[0]]

    def dnf(self, form) -> list[tuple[_Atom, ...]]:
        """Disjunctive normal form: a list of conjunctions of atoms."""
        if isinstance(form, str) or not form:
            raise self.fail(f"expected a formula, got {_show(form)}")
        head = form[0]
        if head in ("<=", ">=", "<", ">", "="):
            return [tuple(self.atoms(form))]
        if head == "and":
            out: list[tuple[_Atom, ...]] = [()]
            for sub in form[1:]:
                parts = self.dnf(sub)
                if len(out) * len(parts) > MAX_DISJUNCTS:
                    raise self.fail(f"the formula expands to more than {MAX_DISJUNCTS} disjuncts (not supported)")
                out = [a + b for a, b in product(out, parts)]
            return out
        if head == "or":
            return [conj for sub in form[1:] for conj in self.dnf(sub)]
        raise self.fail(f"unsupported operator {head!r} in {_show(form)} (only and, or, <=, >=, <, >, =)")


def _show(form, limit: int = 80) -> str:
    text = form if isinstance(form, str) else "(" + " ".join(_show(f, limit) for f in form) + ")"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_vnnlib(text: str, *, source: str = "<vnnlib>") -> VnnlibProperty:
    """Parse VNN-LIB ``text`` (the subset in the module doc) into input boxes and unsafe sets.

    Raises :class:`InputError` naming the construct when the file uses something unsupported,
    declares no X or Y variables, or leaves an input unbounded.
    """
    parser = _Parser(source)
    common: list[_Atom] = []       # atoms of asserts with no `or`: shared by every disjunct
    branching: list[list[tuple[_Atom, ...]]] = []
    for form in _Reader(text, source).forms():
        if isinstance(form, str) or not form:
            raise parser.fail(f"unexpected top-level token {_show(form)}")
        if form[0] == "declare-const":
            parser.declare(form)
        elif form[0] == "assert":
            if len(form) != 2:
                raise parser.fail(f"assert takes one formula: {_show(form)}")
            disjuncts = parser.dnf(form[1])
            if len(disjuncts) == 1:
                common.extend(disjuncts[0])
            else:
                branching.append(disjuncts)
        else:
            raise parser.fail(f"unsupported command {form[0]!r} (only declare-const and assert)")
    n_inputs = _count(parser.declared, "X", parser)
    n_outputs = _count(parser.declared, "Y", parser)
    n_disjuncts = int(np.prod([len(b) for b in branching])) if branching else 1
    if n_disjuncts > MAX_DISJUNCTS:
        raise parser.fail(f"the asserts expand to {n_disjuncts} disjuncts, more than {MAX_DISJUNCTS} (not supported)")
    base_lo, base_hi = _box(common, n_inputs, np.full(n_inputs, -np.inf), np.full(n_inputs, np.inf), parser)
    base_out = [a for a in common if a[0] and a[0][0][0][0] == "Y"] + [a for a in common if not a[0]]
    groups: dict[tuple[bytes, bytes], tuple[np.ndarray, np.ndarray, list[list[_Atom]]]] = {}
    for choice in product(*branching):
        atoms = [a for conj in choice for a in conj]
        lo, hi = _box(atoms, n_inputs, base_lo.copy(), base_hi.copy(), parser)
        if np.any(lo > hi):
            continue                                    # an empty input box holds no counterexample
        out = base_out + [a for a in atoms if (a[0] and a[0][0][0][0] == "Y") or not a[0]]
        key = (lo.tobytes(), hi.tobytes())
        groups.setdefault(key, (lo, hi, []))[2].append(out)
    for lo, hi, _ in groups.values():
        unbounded = np.flatnonzero(~np.isfinite(lo) | ~np.isfinite(hi))
        if unbounded.size:
            raise parser.fail(f"input X_{unbounded[0]} has no finite lower and upper bound "
                              "(VNN-LIB inputs must lie in a box)")
    regions = tuple(VnnlibRegion(lo, hi, _output_property(clauses, n_outputs)) for lo, hi, clauses in groups.values())
    return VnnlibProperty(n_inputs, n_outputs, regions)


def read_vnnlib(path: str | os.PathLike) -> VnnlibProperty:
    """Read and parse a ``.vnnlib`` file (see :func:`parse_vnnlib`); a missing or unreadable file is an InputError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"VNN-LIB file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read VNN-LIB file {str(path)!r}: {exc}") from None
    return parse_vnnlib(text, source=str(path))


def check_counterexample(onnx_path: str | Path, vnnlib_property: VnnlibProperty, x: np.ndarray, *,
                         tol: float = 1e-4) -> bool:
    """VNN-COMP-style validation with onnxruntime (independent of pacverify's ONNX reader): ``x`` (flattened
    input) lies in some region's input box and the float32 onnxruntime output there is in that region's
    unsafe set, up to ``tol`` (the tolerance the VNN-COMP organisers used)."""
    import onnxruntime as ort

    x = np.asarray(x, dtype=np.float64).reshape(-1)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in feed.shape]
    y = session.run(None, {feed.name: x.astype(np.float32).reshape(shape)})[0].reshape(1, -1).astype(np.float64)
    for region in vnnlib_property.regions:
        if np.all(x >= region.lower - tol) and np.all(x <= region.upper + tol):
            if bool(region.prop.violation(torch.from_numpy(y))[0] <= tol):
                return True
    return False


def format_counterexample(x: np.ndarray, y: np.ndarray) -> str:
    """A counterexample in the VNN-COMP format: ``((X_0 v) ... (Y_0 v) ...)``, one pair per line,
    ``x`` the (flattened) input and ``y`` the network's output there."""
    pairs = [f"(X_{i} {float(v)!r})" for i, v in enumerate(np.ravel(x))]
    pairs += [f"(Y_{j} {float(v)!r})" for j, v in enumerate(np.ravel(y))]
    return "(" + "\n ".join(pairs) + ")\n"


def _count(declared: set[tuple[str, int]], kind: str, parser: _Parser) -> int:
    idx = sorted(i for k, i in declared if k == kind)
    if not idx:
        raise parser.fail(f"no {kind}_i variables are declared")
    if idx != list(range(len(idx))):
        raise parser.fail(f"{kind} variables must be numbered 0..{len(idx) - 1} with none missing")
    return len(idx)


def _box(atoms: list[_Atom], n_inputs: int, lo: np.ndarray, hi: np.ndarray, parser: _Parser
         ) -> tuple[np.ndarray, np.ndarray]:
    """Tighten ``lo``/``hi`` (in place) by the input atoms among ``atoms``."""
    for coefs, bound in atoms:
        if not coefs or coefs[0][0][0] != "X":
            continue
        if len(coefs) != 1:
            raise parser.fail("an input constraint involves several inputs (only bounds on single X_i are supported)")
        (_, i), a = coefs[0]
        if a > 0:
            hi[i] = min(hi[i], bound / a)
        else:
            lo[i] = max(lo[i], bound / a + 0.0)        # + 0.0 turns -0.0 into 0.0
    return lo, hi


def _output_property(clauses: list[list[_Atom]], n_outputs: int) -> OutputProperty:
    rows, d, clause = [], [], []
    for k, atoms in enumerate(clauses):
        if not atoms:                              # no output constraint: every output is unsafe
            atoms = [((), 0.0)]
        for coefs, bound in atoms:
            row = np.zeros(n_outputs)
            for (_, j), a in coefs:
                row[j] = a
            rows.append(row)
            d.append(bound)
            clause.append(k)
    return OutputProperty(torch.as_tensor(np.array(rows))[None], torch.tensor([d], dtype=torch.float64),
                          torch.tensor(clause, dtype=torch.int64))
