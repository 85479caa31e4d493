"""Progress of long parts of a run, for people: a tqdm bar with ETA on a terminal, a line per ~10% in a log.

Library code reports progress through a :data:`Ticker`, ``tick(part, done, total)``, and never prints; the CLI
passes a :class:`ProgressReporter`. A part that ends within :data:`BAR_DELAY` seconds shows nothing, so quick
runs stay quiet.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

Ticker = Callable[[str, int, int], None]
"""``tick(part, done, total)``: ``done`` of ``total`` units of ``part`` are finished."""

BAR_DELAY = 2.0  # seconds a part runs before its bar (or its first log line) appears
LOG_STEP = 0.1   # in a log: one line each time another tenth of a part is done


def prefixed(tick: Ticker | None, prefix: str) -> Ticker | None:
    """``tick`` with every part named ``"prefix: part"`` (None stays None)."""
    if tick is None:
        return None
    return lambda part, done, total: tick(f"{prefix}: {part}" if part else prefix, done, total)


def counter(tick: Ticker | None, part: str) -> Callable[[int, int], None] | None:
    """``tick`` bound to one part: ``count(done, total)`` (None stays None)."""
    if tick is None:
        return None
    return lambda done, total: tick(part, done, total)


class ProgressReporter:
    """A :data:`Ticker` that shows progress on ``stream`` (stderr by default).

    On a terminal each part gets a tqdm bar (rate and ETA) once it has run for ``delay`` seconds. Elsewhere (a CI
    log, a file) a part that has run for ``delay`` seconds prints ``[part] 40% (400/1000), 12 s, about 18 s left``
    each time another ``step`` of it is done, and a last line when it ends.
    """

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None, delay: float = BAR_DELAY,
                 step: float = LOG_STEP, unit: str = "pt") -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.delay, self.step, self.unit = delay, step, unit
        self.bars: dict = {}
        self.started: dict[str, float] = {}
        self.logged: dict[str, int] = {}

    def __call__(self, part: str, done: int, total: int) -> None:
        self.update(part, done, total)

    def update(self, part: str, done: int, total: int) -> None:
        now = time.perf_counter()
        self.started.setdefault(part, now)
        if self.tty:
            self._bar(part, done, total)
        else:
            self._log(part, done, total, now)
        if done >= total:  # the part ended: a later call with the same name is a new run of it
            self.started.pop(part, None)
            self.logged.pop(part, None)

    def _bar(self, part: str, done: int, total: int) -> None:
        from tqdm import tqdm

        bar = self.bars.get(part)
        if bar is None or bar.total != total:
            if bar is not None:
                bar.close()
            bar = self.bars[part] = tqdm(total=total, desc=part, unit=self.unit, file=self.stream, leave=False,
                                         delay=self.delay)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
            del self.bars[part]

    def _log(self, part: str, done: int, total: int, now: float) -> None:
        elapsed = now - self.started[part]
        if total <= 0 or done <= 0 or elapsed < self.delay:
            return
        tenth = done * max(1, round(1 / self.step)) // total
        last = self.logged.get(part, -1)
        if done >= total:
            if last >= 0:
                print(f"[{part}] done: {total} in {duration(elapsed)}", file=self.stream, flush=True)
            return
        if tenth <= last:
            return
        self.logged[part] = tenth
        left = elapsed * (total - done) / done
        print(f"[{part}] {100 * done / total:.0f}% ({done}/{total}), {duration(elapsed)}, about {duration(left)} left",
              file=self.stream, flush=True)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()
        self.started.clear()
        self.logged.clear()


def duration(seconds: float) -> str:
    """Seconds as a short human figure (s, min or h)."""
    if seconds < 60:
        return f"{seconds:.2g} s"
    if seconds < 3600:
        return f"{seconds / 60:.2g} min"
    return f"{seconds / 3600:.3g} h"
