"""The stage runner: one place that owns caching, timing and progress for every pipeline stage.

A :class:`Stage` is a top-level function ``compute(setup, *needs) -> Output`` (``Output`` a small
frozen dataclass), the names of the earlier stages whose outputs it takes, and — declared beside
it — the function that builds its cache key from the same arguments (None: never cached). A
guarantee mode is a tuple of stages; :meth:`Runner.run` executes them in order and returns every
output by stage name. Outputs are stored in ``OUT/.pacverify-cache`` (:mod:`.cache`): numpy-array
fields as arrays, every other field as JSON.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pacverify.pipeline.cache import StageCache

Progress = Callable[[str, str], None]
SECONDS_KEY = "__seconds__"  # beside a cached output: the seconds its computation took


def quiet(stage: str, message: str) -> None:
    """A progress callback that prints nothing."""
    return None


@dataclass(frozen=True)
class Stage:
    """One step of a guarantee mode (see the module docstring)."""

    name: str
    compute: Callable[..., Any]
    output: type
    needs: tuple[str, ...] = ()
    key: Callable[..., dict] | None = None
    describe: Callable[..., str] | None = None


def encode(output: Any) -> tuple[dict[str, np.ndarray], dict]:
    """Split a stage output into its numpy arrays and its JSON-able rest."""
    arrays, meta = {}, {}
    for f in dataclasses.fields(output):
        value = getattr(output, f.name)
        if isinstance(value, np.ndarray):
            arrays[f.name] = value
        else:
            meta[f.name] = value
    return arrays, meta


def decode(output_type: type, arrays: dict[str, np.ndarray], meta: dict) -> Any:
    """The inverse of :func:`encode`; a missing field raises KeyError (the cache entry is then recomputed)."""
    values = {}
    for f in dataclasses.fields(output_type):
        values[f.name] = arrays[f.name] if f.name in arrays else meta[f.name]
    return output_type(**values)


class Runner:
    """Runs stages against one run-wide ``setup``; records ``timings`` (seconds per stage) and which were reused."""

    def __init__(self, setup: Any, cache: StageCache, say: Progress = quiet) -> None:
        self.setup = setup
        self.cache = cache
        self.say = say
        self.timings: dict[str, float] = {}
        self.reused: list[str] = []

    def run(self, stages: Sequence[Stage], results: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run ``stages`` in order; each receives the outputs of the stages it ``needs``. Returns all outputs."""
        results = dict(results or {})
        for stage in stages:
            missing = [n for n in stage.needs if n not in results]
            if missing:
                raise RuntimeError(f"stage {stage.name} needs {missing}, which no earlier stage produced")
            results[stage.name] = self.run_one(stage, *[results[n] for n in stage.needs])
        return results

    def run_one(self, stage: Stage, *inputs: Any) -> Any:
        message = "" if stage.describe is None else stage.describe(self.setup, *inputs)
        if message:  # an empty description: a stage with nothing to do in this run says nothing
            self.say(stage.name, message)
        start = time.perf_counter()
        output, reused, original = None, False, None
        key = None if stage.key is None else stage.key(self.setup, *inputs)
        if key is not None:
            hit = self.cache.load(stage.name, key)
            if hit is not None:
                try:
                    output, reused = decode(stage.output, *hit), True
                    original = hit[1].get(SECONDS_KEY)
                except (KeyError, TypeError):
                    output = None
        if output is None:
            output = stage.compute(self.setup, *inputs)
            original = round(time.perf_counter() - start, 3)
            if key is not None:
                arrays, meta = encode(output)
                self.cache.store(stage.name, key, arrays, {**meta, SECONDS_KEY: original})
        elapsed = time.perf_counter() - start
        # a reused stage records what it cost when it was computed (what a rerun without the cache would pay)
        self.timings[stage.name] = round(float(original) if isinstance(original, (int, float)) else elapsed, 3)
        if reused:
            self.reused.append(stage.name)
        if message:
            self.say(stage.name, f"done in {elapsed:.1f} s" + (f" (reused; computing it took "
                                                              f"{self.timings[stage.name]:.1f} s)" if reused else ""))
        return output
