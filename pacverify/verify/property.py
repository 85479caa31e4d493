"""Output properties as unsafe sets: a disjunction of conjunctions of linear constraints.

Every question the verifier answers has one form. For an input set X and a network f, the
*unsafe set* is

    U = ⋃_k ⋂_{r ∈ clause k} { y : C_r · y ≤ d_r }        (``<`` instead of ``≤`` when ``strict``)

and the question is whether some x ∈ X has f(x) ∈ U (a counterexample; VNN-LIB ``sat``) or
none does (``unsat`` / VERIFIED).

- Local robustness at a point with class y (DESIGN.md §2, Def 3.1 of 004): one single-row
  clause per other class j, ``(e_y − e_j) · z < 0`` (strict: a tie is not a counterexample).
- A VNN-LIB output assertion (VNN-COMP): the parser normalises every ``(<= a b)`` /
  ``(>= a b)`` to ``c · y ≤ d`` and keeps the and/or structure as clauses.

Proof rule implemented (:func:`proven`): a clause is empty over X if ONE of its rows is
violated everywhere, i.e. a sound lower bound of ``C_r · f(x)`` over X exceeds ``d_r``; U is
empty if every clause is. :meth:`OutputProperty.with_implied_rows` adds uniform averages of a
clause's rows (implied by the clause), which lets the same rule use fixed non-negative combinations
of rows; optimised combinations are not searched for.

Shapes: ``C`` (B, R, n), ``d`` (B, R) with one batch entry per point or region; ``clause``
(R,) assigns each row to a clause 0..K-1 and is shared by the batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import torch

from pacverify.verify.output_rows import margin_rows


@dataclass(frozen=True)
class OutputProperty:
    """The unsafe set ``⋃_k ⋂_{r∈k} {C_r y ≤ d_r}`` for a batch of B problems (see module doc).

    ``C``: (B, R, n); ``d``: (B, R); ``clause``: (R,) int64 with every value in 0..K-1 used.
    """

    C: torch.Tensor
    d: torch.Tensor
    clause: torch.Tensor
    strict: bool = False

    def __post_init__(self) -> None:
        if self.C.dim() != 3 or self.d.shape != self.C.shape[:2] or self.clause.shape != self.C.shape[1:2]:
            raise ValueError(f"OutputProperty needs C (B, R, n), d (B, R), clause (R,); got {tuple(self.C.shape)}, "
                             f"{tuple(self.d.shape)}, {tuple(self.clause.shape)}")
        if self.clause.numel() and set(self.clause.tolist()) != set(range(int(self.clause.max()) + 1)):
            raise ValueError("clause indices must be 0..K-1 with none missing")

    @property
    def batch(self) -> int:
        return self.C.shape[0]

    @property
    def n_outputs(self) -> int:
        return self.C.shape[2]

    @property
    def n_clauses(self) -> int:
        return int(self.clause.max()) + 1 if self.clause.numel() else 0

    def select(self, index: torch.Tensor) -> "OutputProperty":
        """The problems ``index`` (a (B',) index tensor) of this batch."""
        return OutputProperty(self.C[index], self.d[index], self.clause, self.strict)

    def to(self, device=None, dtype=None) -> "OutputProperty":
        return OutputProperty(self.C.to(device=device, dtype=dtype), self.d.to(device=device, dtype=dtype),
                              self.clause.to(device=device), self.strict)

    def clause_property(self, k: int) -> "OutputProperty":
        """The unsafe set made of clause k alone (same batch)."""
        rows = torch.nonzero(self.clause == k).reshape(-1)
        return OutputProperty(self.C[:, rows], self.d[:, rows], torch.zeros(rows.shape[0], dtype=torch.int64),
                              self.strict)

    def some_clauses(self, pick: torch.Tensor) -> "OutputProperty":
        """Per problem b the clauses ``pick[b]`` ((B, k) indices) alone, for a property whose clauses are single
        rows (as robustness's): its unsafe set lies inside this one's, so its counterexamples are this one's."""
        if self.clause.numel() != self.n_clauses:
            raise ValueError("some_clauses needs a property whose clauses are single rows")
        order = self.clause.argsort()                     # the row of each clause
        rows = order[pick]
        C = self.C.gather(1, rows[:, :, None].expand(-1, -1, self.C.shape[2]))
        return OutputProperty(C, self.d.gather(1, rows), torch.arange(pick.shape[1]), self.strict)

    def best_rows(self, lower: torch.Tensor) -> "OutputProperty":
        """Per problem b, the row of each clause whose lower bound ``lower[b]`` (B, R) is furthest above its d (ties: the
        first), as a property of one row per clause. Each of its clauses keeps one of the original clause's rows, so its
        unsafe set contains this one's: a proof for it is a proof for this property (one bound per clause instead of
        R, e.g. for a costlier bound routine)."""
        margin = lower - self.d.to(lower.dtype)
        K = self.n_clauses
        member = self.clause.to(lower.device) == torch.arange(K, device=lower.device)[:, None]      # (K, R)
        rows = torch.where(member[:, None, :], margin[None], -torch.inf).argmax(dim=2).T            # (B, K)
        C = self.C.gather(1, rows[:, :, None].to(self.C.device).expand(-1, -1, self.C.shape[2]))
        return OutputProperty(C, self.d.gather(1, rows.to(self.d.device)), torch.arange(K), self.strict)

    def with_implied_rows(self, max_subset_rows: int = 6) -> "OutputProperty":
        """The same unsafe set with implied rows added to its conjunctions.

        Every y of clause k satisfies ``mean_{r∈S} C_r·y ≤ mean_{r∈S} d_r`` for any subset S of its rows,
        so adding that row changes no clause; but its lower bound may prove the clause empty where no
        single row's does (a fixed non-negative combination; the weights are uniform, not optimised).
        Added: the mean of every subset of >= 2 rows for clauses of at most ``max_subset_rows`` rows, the
        pairwise means and the overall mean for larger ones. ``violation`` and ``is_unsafe`` are unchanged
        (a mean never exceeds the maximum).
        """
        C, d, clause = [self.C], [self.d], [self.clause]
        for k in range(self.n_clauses):
            rows = torch.nonzero(self.clause == k).reshape(-1).tolist()
            if len(rows) <= max_subset_rows:
                subsets = [g for size in range(2, len(rows) + 1) for g in combinations(rows, size)]
            else:
                subsets = list(combinations(rows, 2)) + [tuple(rows)]
            for subset in subsets:
                index = torch.tensor(subset)
                C.append(self.C[:, index].mean(dim=1, keepdim=True))
                d.append(self.d[:, index].mean(dim=1, keepdim=True))
                clause.append(torch.tensor([k]))
        return OutputProperty(torch.cat(C, dim=1), torch.cat(d, dim=1), torch.cat(clause), self.strict)

    def clause_values(self, rows: torch.Tensor) -> torch.Tensor:
        """``max_{r∈k} rows_r`` per clause k: (B, R) → (B, K)."""
        out = rows.new_full((rows.shape[0], self.n_clauses), -torch.inf)
        return out.scatter_reduce(1, self.clause.expand_as(rows), rows, reduce="amax")

    def clause_violation(self, y: torch.Tensor) -> torch.Tensor:
        """``max_{r∈k} (C_r·y − d_r)`` per clause k for outputs ``y`` (B, n) → (B, K);
        clause k holds when ≤ 0."""
        rows = torch.einsum("brn,bn->br", self.C.to(y.dtype), y) - self.d.to(y.dtype)
        return self.clause_values(rows)

    def violation(self, y: torch.Tensor) -> torch.Tensor:
        """``min_k max_{r∈k} (C_r·y − d_r)`` for outputs ``y`` (B, n) → (B,).

        ``y`` lies in the unsafe set exactly when this is ≤ 0 (< 0 when ``strict``); it is the loss
        the attacks minimise (for robustness it is the usual margin ``min_j z_y − z_j``).
        """
        return self.clause_violation(y).amin(dim=1)

    def is_unsafe(self, y: torch.Tensor) -> torch.Tensor:
        """Whether each output ``y`` (B, n) lies in the unsafe set: (B,) bool."""
        v = self.violation(y)
        return v < 0 if self.strict else v <= 0

    def proof_margin(self, lower: torch.Tensor) -> torch.Tensor:
        """``min_k max_{r∈k} (lower_r − d_r)``: (B, R) lower bounds of ``C_r·y`` → (B,); > 0 proves U empty."""
        return self.clause_values(lower - self.d.to(lower.dtype)).amin(dim=1)

    def proven(self, lower: torch.Tensor) -> torch.Tensor:
        """(B,) bool: sound lower bounds ``lower`` (B, R) of ``C·f(x)`` over the set prove that no x
        reaches the unsafe set (every clause has a row whose lower bound exceeds its ``d``)."""
        return self.proof_margin(lower) > 0


def robustness_property(labels: torch.Tensor, n_classes: int, *, dtype: torch.dtype = torch.float64
                        ) -> OutputProperty:
    """Unsafe set of local robustness (Def 3.1 of 004) for classes ``labels`` (B,).

    Rows ``C_j = e_y − e_j`` for the n − 1 classes j ≠ y (:func:`~pacverify.verify.output_rows.margin_rows`,
    increasing j), ``d = 0``, one clause per row, strict: the class changes when some ``z_j > z_y``.
    """
    C = margin_rows(labels, n_classes, dtype=dtype)
    return OutputProperty(C, torch.zeros(C.shape[:2], dtype=dtype), torch.arange(n_classes - 1), strict=True)
