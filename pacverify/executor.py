"""Where the stages that scale with the number of points run: in this process, or as Ray tasks.

An :class:`Executor` maps a top-level function over *chunks* of work: ``map_chunks(fn, payload, chunks)`` returns
``[fn(payload, chunk) for chunk in chunks]``, in chunk order, whatever order the chunks finish in. The callers
(:func:`pacverify.verify.api.verify_points`, :func:`~pacverify.verify.api.certified_radius`) cut the points into
chunks of a fixed size that does not depend on the number of workers, and derive each chunk's seed from the seed
and the chunk's index (:func:`chunk_seed`), so both executors return the same result for the same seed.

* ``local`` (:class:`LocalExecutor`, the default): a plain loop; needs no Ray.
* ``ray`` (:class:`RayExecutor`): the payload (the network and the points) is put once into Ray's object store
  (``ray.put``) and every chunk is one Ray task (``max_retries``: a task whose worker dies is run again; the chunk
  is a pure function of its inputs, so the retry returns the same values). ``address=None`` starts a local Ray
  instance (or uses the one this process already started); ``"auto"`` joins the cluster running on this machine;
  ``"HOST:PORT"`` joins that cluster's head. An address that does not answer is an
  :class:`~pacverify.errors.InputError` within :data:`CONNECT_TIMEOUT_S` seconds, not a hang (Ray itself retries a
  wrong address for minutes). A process that already called ``ray.init`` keeps its connection (and its
  instance stays up when the executor closes). ``ray`` is imported only here, only when this executor is asked for
  (``pip install pacverify[ray]``). The payload is pickled by :func:`dumps_payload`, which sends a TorchScript
  module as its TorchScript archive (a ``torch.export`` teacher pickles as its program's bytes,
  :class:`pacverify.models.ExportedModule`); a worker unpickles it once per map (:func:`_payload`). A chunk whose
  work runs on a GPU (``map_chunks(..., gpu=True)``: the teacher's stages under ``--device cuda``) asks Ray for
  ``gpus_per_task`` GPUs; a cluster without GPUs is an :class:`~pacverify.errors.InputError`.
"""
from __future__ import annotations

import io
import os
import socket
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from pacverify.errors import InputError

EXECUTORS = ("local", "ray")
CONNECT_TIMEOUT_S = 5.0   # seconds to reach a Ray head before the address counts as wrong
MAX_RETRIES = 3           # Ray retries of a task whose worker died
CHUNK_POINTS = 2048       # points per chunk: fixed, independent of the worker count (results must not depend on it)


@dataclass(frozen=True)
class ClusterInfo:
    """What an executor ran on: ``executor`` ("local" or "ray"), ``address`` (None: this process / a local Ray
    instance), ``nodes`` and ``cpus`` (the cluster's size; 1 node and the CPUs of this machine for local)."""

    executor: str
    address: str | None
    nodes: int
    cpus: float

    def to_json(self) -> dict:
        return {"executor": self.executor, "address": self.address, "nodes": self.nodes, "cpus": self.cpus}


def chunk_ranges(n: int, size: int = CHUNK_POINTS) -> list[tuple[int, int, int]]:
    """``(index, start, stop)`` of the chunks of ``n`` points, ``size`` each (the last one shorter); one chunk when
    ``n <= size``. Depends on ``n`` and ``size`` only, never on the executor or its workers."""
    if size < 1:
        raise InputError(f"chunk size must be a positive integer, got {size!r}")
    return [(k, start, min(n, start + size)) for k, start in enumerate(range(0, n, size))]


def chunk_seed(seed: int, index: int) -> int:
    """The seed of chunk ``index``: ``seed`` itself for chunk 0 (so a run of one chunk is the unchunked run), else a
    value in [0, 2**63) drawn by numpy's SeedSequence from (seed, index): a function of the two only."""
    if index == 0:
        return seed
    state = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) % 2**63


class Executor(ABC):
    """Runs ``fn(payload, chunk)`` for every chunk; subclasses say where. Use as a context manager (``close``)."""

    name = "local"

    @abstractmethod
    def map_chunks(self, fn: Callable[[Any, Any], Any], payload: Any, chunks: Sequence[Any],
                   on_done: Callable[[int, int], None] | None = None, *, gpu: bool = False) -> list:
        """``[fn(payload, c) for c in chunks]`` in chunk order; ``on_done(done, total)`` after each chunk finishes.
        ``gpu``: the chunks' work runs on a GPU (a Ray task then asks for one)."""

    @abstractmethod
    def info(self) -> ClusterInfo:
        """The executor's name and the size of what it runs on."""

    def close(self) -> None:
        """Release what the executor started (nothing for local)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LocalExecutor(Executor):
    """A plain loop in this process."""

    name = "local"

    def map_chunks(self, fn, payload, chunks, on_done=None, *, gpu=False) -> list:
        out = []
        for chunk in chunks:
            out.append(fn(payload, chunk))
            if on_done is not None:
                on_done(len(out), len(chunks))
        return out

    def info(self) -> ClusterInfo:
        return ClusterInfo("local", None, 1, float(os.cpu_count() or 1))


def _import_ray():
    try:
        import ray
    except ImportError:
        raise InputError("executor 'ray' needs the ray package: pip install 'pacverify[ray]' (or use --executor "
                         "local)") from None
    return ray


def _check_reachable(address: str, timeout: float) -> None:
    """InputError unless a TCP connection to ``HOST:PORT`` opens within ``timeout`` seconds."""
    host, sep, port = address.rpartition(":")
    if address.startswith("ray://"):
        host, sep, port = address[len("ray://"):].rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(f"ray address {address!r} must be 'auto' or HOST:PORT (the Ray head's GCS port, e.g. "
                         f"10.0.0.1:6379)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise InputError(f"cannot reach a Ray cluster at {address} within {timeout:g} s ({exc}); check the head's "
                         f"address and port, or omit --ray-address to start a local Ray instance") from None


def _script_from_bytes(blob: bytes, training: bool):
    """A TorchScript module back from its archive (:func:`dumps_payload`), in the mode it was sent in, frozen."""
    import torch

    module = torch.jit.load(io.BytesIO(blob))
    module.train(training)
    for param in module.parameters():
        param.requires_grad_(False)
    return module


def dumps_payload(payload: Any) -> bytes:
    """``payload`` pickled for another process (Ray's cloudpickle: functions and classes by value where needed), a
    TorchScript module as its TorchScript archive (it has no pickle of its own). Something that cannot be pickled is
    an :class:`~pacverify.errors.InputError` saying so, before any task starts."""
    import torch
    from ray import cloudpickle

    class _Pickler(cloudpickle.CloudPickler):
        def reducer_override(self, obj):
            if isinstance(obj, torch.jit.ScriptModule):
                buffer = io.BytesIO()
                torch.jit.save(obj, buffer)
                return _script_from_bytes, (buffer.getvalue(), bool(obj.training))
            return super().reducer_override(obj)

    buffer = io.BytesIO()
    try:
        _Pickler(buffer, protocol=5).dump(payload)
    except Exception as exc:  # pickling fails with many types (TypeError, PicklingError, RuntimeError, ...)
        raise InputError(f"the model or data of this stage cannot be sent to Ray workers ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}); save the teacher as ONNX, TorchScript "
                         f"or torch.export, or use --executor local") from None
    return buffer.getvalue()


_PAYLOADS: dict[str, Any] = {}  # in a worker: the payloads unpickled so far, by the map's token (the last few)


def _payload(token: str, box: list):
    """The payload of map ``token`` in this worker: unpickled from the object store on the worker's first chunk of
    that map, reused by its next chunks."""
    import pickle

    if token not in _PAYLOADS:
        import ray

        while len(_PAYLOADS) >= 2:
            _PAYLOADS.pop(next(iter(_PAYLOADS)))
        _PAYLOADS[token] = pickle.loads(ray.get(box[0]))
    return _PAYLOADS[token]


def _run_chunk(fn, threads: int, token: str, box: list, chunk):
    """One Ray task: ``fn(payload, chunk)`` with torch's threads set as in the driver (same floating-point sums).
    ``box`` = [the ObjectRef of the pickled payload]: a ref inside a list is not fetched unless needed."""
    import torch

    torch.set_num_threads(threads)
    return fn(_payload(token, box), chunk)


class RayExecutor(Executor):
    """Every chunk a Ray task; the payload put once into the object store (module docstring)."""

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT_S, max_retries: int = MAX_RETRIES,
                 gpus_per_task: float = 1.0) -> None:
        ray = _import_ray()
        self._ray = ray
        self.address = address
        self.max_retries = max_retries
        if not 0 < gpus_per_task <= 1 and not (gpus_per_task > 1 and float(gpus_per_task).is_integer()):
            raise InputError(f"gpus_per_task must be a fraction in (0, 1] or a whole number, got {gpus_per_task!r}")
        self.gpus_per_task = float(gpus_per_task)
        self._owned = False
        if address is not None and address != "auto":
            _check_reachable(address, connect_timeout)
        if ray.is_initialized():
            return  # this process is already connected (ray.init by the caller): use that connection, leave it open
        if address == "auto":
            found = _auto_address()
            if found is None:
                raise InputError("--ray-address auto found no Ray cluster running on this machine; start one with "
                                 "'ray start --head', give its HOST:PORT, or omit --ray-address for a local instance")
            _check_reachable(found, connect_timeout)
        try:
            if address is None:
                ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise InputError(f"cannot connect to the Ray cluster at {address or 'a new local instance'}: {exc}; check "
                             f"the address, or omit --ray-address to start a local Ray instance") from None
        self._owned = True

    def map_chunks(self, fn, payload, chunks, on_done=None, *, gpu=False) -> list:
        import torch

        ray = self._ray
        gpus = self.gpus_per_task if gpu else 0.0
        if gpus and not ray.cluster_resources().get("GPU", 0.0):
            raise InputError("the Ray cluster has no GPUs, and this stage runs on the GPU (--device cuda); add GPU "
                             "nodes to the cluster or use --device cpu")
        task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=self.max_retries)(_run_chunk)
        box = [ray.put(dumps_payload(payload))]
        token = uuid.uuid4().hex
        threads = torch.get_num_threads()
        pending = [task.remote(fn, threads, token, box, chunk) for chunk in chunks]
        position = {r: i for i, r in enumerate(pending)}
        results: list = [None] * len(pending)
        left, done = list(pending), 0
        while left:
            finished, left = ray.wait(left, num_returns=1)
            for r in finished:
                results[position[r]] = _result(ray, r)
                done += 1
                if on_done is not None:
                    on_done(done, len(pending))
        return results

    def info(self) -> ClusterInfo:
        nodes = [n for n in self._ray.nodes() if n.get("Alive")]
        cpus = float(self._ray.cluster_resources().get("CPU", 0.0))
        return ClusterInfo("ray", self.address, len(nodes), cpus)

    def close(self) -> None:
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()
        self._owned = False


def _result(ray, ref):
    """``ray.get(ref)``; a task that raised :class:`~pacverify.errors.InputError` (bad input the worker found) raises
    it here as the same one-line error, not as Ray's wrapped traceback."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, InputError):
            raise InputError(str(cause)) from None
        raise


def _auto_address() -> str | None:
    """The HOST:PORT that ``address='auto'`` joins (RAY_ADDRESS, or the address file of a head running on this
    machine), or None when there is none."""
    try:
        from ray._private.services import get_ray_address_from_environment

        found = get_ray_address_from_environment("auto", None)
    except Exception:  # any failure to find one means there is none to join
        return None
    return str(found) if found else None


def map_points(runner: Executor, fn: Callable[[Any, tuple[int, int, int]], Any], payload: Any, n: int, *,
               size: int = CHUNK_POINTS, progress: Callable[[int, int], None] | None = None,
               gpu: bool = False) -> list:
    """``fn(payload, (index, start, stop))`` over :func:`chunk_ranges` ``(n, size)`` on ``runner``, in chunk order;
    ``progress(points done, n)`` as chunks finish (the points of the chunks before the last one finished: chunks
    finish out of order on Ray, so this is an estimate until the end, where it is n)."""
    chunks = chunk_ranges(n, size)
    tick = None if progress is None else (
        lambda done, total: progress(n if done == total else min(n, done * size), n))
    return runner.map_chunks(fn, payload, chunks, on_done=tick, gpu=gpu)


def get_executor(executor: str | Executor | None = "local", address: str | None = None) -> Executor:
    """An executor by name ("local" or "ray"), or the one given. ``address`` only with "ray" (InputError otherwise).
    The caller closes it (it is a context manager)."""
    if isinstance(executor, Executor):
        if address is not None:
            raise InputError("give a Ray address to the RayExecutor itself, not beside an executor object")
        return executor
    name = "local" if executor is None else str(executor).strip().lower()
    if name not in EXECUTORS:
        raise InputError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if name == "local":
        if address is not None:
            raise InputError("a Ray address only applies with executor 'ray'")
        return LocalExecutor()
    return RayExecutor(address)
