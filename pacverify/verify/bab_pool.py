"""The open subdomains of a branch-and-bound search, kept in preallocated slots.

A search takes the lowest-priority subdomains each round and adds their children. Kept as tensors that are
re-concatenated every round, the open list costs O(open · row size) a round, so a long search becomes
quadratic: on ACAS Xu's input splitting, half of the time went to copying the open boxes' inherited bounds.
Here a round costs O(batch · row size) for the rows taken and added, plus O(capacity) on the priority vector
and the slot mask; the capacity doubles when the open subdomains outgrow it.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


class SubdomainPool:
    """Open subdomains: per subdomain one row of each tensor in ``fields`` (any shapes, first dimension the
    subdomain) and a priority (lower: taken first). The order in which rows are taken depends only on the
    priorities and the history of takes and puts (a stable sort), so a search stays reproducible."""

    def __init__(self, fields: Sequence[torch.Tensor], priority: torch.Tensor) -> None:
        n = priority.shape[0]
        if any(f.shape[0] != n for f in fields):
            raise ValueError("every field needs one row per subdomain")
        self.fields = [f.clone() for f in fields]
        self.priority = priority.clone()
        self.used = torch.ones(n, dtype=torch.bool, device=priority.device)
        self.count = n

    def __len__(self) -> int:
        return self.count

    @property
    def capacity(self) -> int:
        return int(self.used.shape[0])

    def take(self, n: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Remove the ``n`` open subdomains of lowest priority (ties: lowest slot first); their rows and priorities."""
        n = min(n, self.count)
        key = torch.where(self.used, self.priority, torch.full_like(self.priority, float("inf")))
        order = torch.sort(key, stable=True).indices
        order = order[self.used[order]][:n]
        rows = [f[order] for f in self.fields]
        priority = self.priority[order]
        self.used[order] = False
        self.count -= n
        return rows, priority

    def put(self, fields: Sequence[torch.Tensor], priority: torch.Tensor) -> None:
        """Add subdomains: one row of each field per entry of ``priority``, fields in the pool's order."""
        m = priority.shape[0]
        if len(fields) != len(self.fields) or any(f.shape[0] != m for f in fields):
            raise ValueError("put needs one row of every field per subdomain")
        if m == 0:
            return
        free = torch.nonzero(~self.used).reshape(-1)
        if free.shape[0] < m:
            self._grow(max(2 * self.capacity, self.count + m))
            free = torch.nonzero(~self.used).reshape(-1)
        slots = free[:m]
        for field, rows in zip(self.fields, fields, strict=True):
            field[slots] = rows
        self.priority[slots] = priority
        self.used[slots] = True
        self.count += m

    def add_fields(self, templates: Sequence[torch.Tensor]) -> None:
        """New fields shaped like ``templates`` (rows ignored); only while the pool is empty."""
        if self.count:
            raise ValueError("fields can only be added to an empty pool")
        self.fields += [t.new_zeros((self.capacity, *t.shape[1:])) for t in templates]

    def drop_fields(self, start: int) -> None:
        """Forget the fields from index ``start`` on (every open subdomain loses them)."""
        del self.fields[start:]

    def field_bytes(self, start: int = 0) -> int:
        """Bytes held by the fields from index ``start`` on (their whole capacity)."""
        return sum(f.numel() * f.element_size() for f in self.fields[start:])

    def _grow(self, capacity: int) -> None:
        extra = capacity - self.capacity
        self.fields = [torch.cat([f, f.new_zeros((extra, *f.shape[1:]))]) for f in self.fields]
        self.priority = torch.cat([self.priority, self.priority.new_zeros(extra)])
        self.used = torch.cat([self.used, self.used.new_zeros(extra)])
