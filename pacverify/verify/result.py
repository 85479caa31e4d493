"""What the verifier returns: verdicts as an Enum, results as frozen dataclasses.

Guarantee carried by every result here (DESIGN.md §2): a point is VERIFIED only when sound
lower bounds on every margin are > 0 over its whole perturbation set (or, for complete search,
every subdomain was proved or shown empty); FALSIFIED only with a counterexample that lies in
the set and that a plain float64 forward pass confirms; UNKNOWN otherwise. UNKNOWN is never
counted as verified.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np


class PointVerdict(Enum):
    """Per-point outcome of local robustness verification."""

    VERIFIED = "verified"
    FALSIFIED = "falsified"
    UNKNOWN = "unknown"


class VnnlibStatus(Enum):
    """VNN-COMP answers: ``sat`` = a counterexample exists (given), ``unsat`` = proved none exists."""

    SAT = "sat"
    UNSAT = "unsat"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Decision:
    """A complete search's answer for one problem (one input set and one unsafe set).

    ``verdict`` VERIFIED (the unsafe set is unreachable), FALSIFIED (``counterexample``, a
    flattened float64 input in the set whose float64 forward pass is unsafe) or UNKNOWN (budget
    spent). ``domains``: how many subproblems were examined; ``detail``: a short account.
    """

    verdict: PointVerdict
    counterexample: np.ndarray | None = None
    domains: int = 0
    detail: str = ""


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


@dataclass(frozen=True)
class VerificationResult:
    """Local robustness verdicts for N points.

    - ``verdicts``: N verdicts, in the order of the points.
    - ``labels``: (N,) the class each point must keep.
    - ``radius``: (N,) the radius of each point's ball (for a certified-radius run: the proven radius).
    - ``lower_bounds``: (N, n − 1) sound lower bounds on the margins ``z_y − z_j`` (j ≠ y, increasing j)
      from the incomplete bound pass (``-inf`` where no bound was computed).
    - ``counterexamples``: point index → input-shaped array, FALSIFIED points only; each lies in the
      point's set and changes the class in a float64 forward pass.
    - ``norm`` ("2" or "inf"), ``method`` (bound method), ``backend``, ``complete`` (branch and bound
      ran on the points the bounds left unknown), ``time_s`` (wall-clock seconds in total).
    - ``stats``: counts per stage (falsified by the attack, verified by the bounds, by the search ...).
    - ``radius_upper``: certified-radius runs only, (N,) a radius at which PGD found a counterexample
      (an upper bound on the true robust radius; inf where none was found).
    """

    verdicts: tuple[PointVerdict, ...]
    labels: np.ndarray
    radius: np.ndarray
    lower_bounds: np.ndarray
    counterexamples: dict[int, np.ndarray]
    norm: str
    method: str
    backend: str
    complete: bool
    time_s: float
    stats: dict = field(default_factory=dict, compare=False)
    radius_upper: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.verdicts)

    def count(self, verdict: PointVerdict) -> int:
        return sum(v is verdict for v in self.verdicts)

    def summary(self) -> dict:
        """Counts per verdict, the time and the throughput, as plain JSON-ready values."""
        n = len(self.verdicts)
        out = {
            "points": n,
            "verified": self.count(PointVerdict.VERIFIED),
            "falsified": self.count(PointVerdict.FALSIFIED),
            "unknown": self.count(PointVerdict.UNKNOWN),
            "norm": self.norm,
            "method": self.method,
            "backend": self.backend,
            "complete": self.complete,
            "time_s": self.time_s,
            "points_per_s": _rate(n, self.time_s),
        }
        out.update(self.stats)
        return out

    def points(self) -> list[dict]:
        """One JSON-ready record per point: index, verdict, radius, counterexample (falsified only)."""
        rows = []
        for i, verdict in enumerate(self.verdicts):
            row = {"index": i, "verdict": verdict.value, "radius": float(self.radius[i])}
            if i in self.counterexamples:
                row["counterexample"] = self.counterexamples[i].tolist()
            rows.append(row)
        return rows


@dataclass(frozen=True)
class VnnlibResult:
    """Answer to one VNN-LIB instance.

    ``counterexample`` (flattened input, float64) and ``output`` (the network's float64 output
    there) are set only for SAT, after a forward pass confirmed that the input satisfies the
    input constraints and the output lies in the unsafe set. ``time_s``: wall-clock seconds.
    ``detail``: how the answer was reached (e.g. "attack", "bounds", "bab: 812 domains").
    """

    status: VnnlibStatus
    time_s: float
    counterexample: np.ndarray | None = None
    output: np.ndarray | None = None
    detail: str = ""
