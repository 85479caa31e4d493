"""Teacher cross-check (DESIGN.md §2): attack the *teacher* in every ball the certificate claims.

The certificate's claims rest on transfer assumptions (perfect student, local linearity) that
no proof covers; a counterexample found on the teacher inside a claimed ball contradicts them
and turns the verdict into REFUTED. Finding none proves nothing, and the report says so.

Three searches, all on the teacher directly (it only has to be an :class:`~pacverify.attacks.Attackable` on
flat inputs, which :class:`TeacherModel` makes of a torch module):

* **PGD** (:func:`pacverify.attacks.attack`, margin loss) in each claimed ball, from the centre and from
  ``restarts − 1`` starts spread over the ball (``starts="spread"``: stratified radii, antithetic orthogonal
  directions; ``"box"``: uniform in the bounding box, the behaviour before spread starts);
* **dense random sampling** (:func:`pacverify.attacks.random_search`): ``random_samples`` uniform points in each
  claimed ball, forward passes only — it finds small regions of another class that no gradient leads to;
* **fresh points** (:func:`attack_fresh`): the δ-ball around a held-out κ-confident draw x within 2δ of a
  required point x_i lies inside x_i's claimed 3δ-ball, so PGD and sampling there look for counterexamples to
  x_i's claim at points where the data actually is.

Every candidate is **confirmed**: rounded to the teacher's own dtype, checked in float64 to lie in the ball
(and the domain), and classified by a forward pass of the teacher — the function the user deploys — on exactly
that point; its class must differ from the claimed one (a tie is no change). A confirmed counterexample refutes
every claimed ball that holds it and whose label differs from its class, so all of them are pooled and checked
against every claimed ball (:func:`assign_counterexamples`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from pacverify.attacks import Attackable, attack, in_set, margin_loss, random_search
from pacverify.norms import vector_norm
from pacverify.validation import check_choice

STARTS = ("spread", "box")
_PGD_STARTS = {"spread": "spread", "box": "centre+box"}
POOL_CAP = 1024          # pooled counterexamples checked against every claimed ball


def default_random_samples(dim: int) -> int:
    """Uniform draws per claimed ball when none are given: 2000 in dimension m ≤ 16, where a region of another
    class filling 0.25 % of the ball is missed with probability (1 − 0.0025)^2000 < 0.7 %; else 250 (about the
    forward passes of the PGD budget), since a small region fills a vanishing fraction of a ball in high
    dimension while every draw costs a forward pass of the teacher."""
    return 2000 if dim <= 16 else 250


class TeacherModel:
    """A torch module taking inputs of ``input_shape`` as an :class:`~pacverify.attacks.Attackable` on flat
    (B, m) inputs.

    A call reshapes the batch, runs the module in its own dtype (``module_dtype``) on its own ``device``,
    and returns the logits in the dtype and on the device of the call's input, so float64 points are
    attacked and checked on exactly what the teacher computes.
    """

    def __init__(self, module: torch.nn.Module, input_shape: tuple[int, ...], *,
                 device: torch.device | str = "cpu", module_dtype: torch.dtype = torch.float32):
        self.module = module
        self.input_shape = tuple(input_shape)
        self.module_device = torch.device(device)
        self.module_dtype = module_dtype

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shaped = x.reshape(x.shape[0], *self.input_shape).to(self.module_device, self.module_dtype)
        return self.module(shaped).to(x.device, x.dtype)


@dataclass(frozen=True)
class TeacherCheck:
    """Per claimed ball i (N of them): ``found`` (N,) bool and, where found, the counterexample (N, m) (NaN
    elsewhere) and the teacher's class there, ``cex_class`` (N,) (−1 elsewhere). The budget: ``steps`` ×
    ``restarts`` PGD placed by ``starts``, ``random_samples`` draws per ball; ``attacked`` the number of balls
    searched (for :func:`attack_fresh`, the fresh points' δ-balls)."""

    found: np.ndarray
    counterexamples: np.ndarray
    cex_class: np.ndarray
    radius: float
    steps: int
    restarts: int
    starts: str = "spread"
    random_samples: int = 0
    attacked: int = 0


def _empty(n: int, m: int, radius: float, steps: int, restarts: int, starts: str, random_samples: int,
           attacked: int = 0) -> TeacherCheck:
    return TeacherCheck(np.zeros(n, dtype=bool), np.full((n, m), np.nan), np.full(n, -1, dtype=np.int64),
                        float(radius), steps, restarts, starts, random_samples, attacked)


def _domain_box(x: torch.Tensor, domain: tuple[float, float] | None):
    if domain is None:
        return None, None
    return torch.full_like(x, domain[0]), torch.full_like(x, domain[1])


def confirm(teacher: Attackable, candidates: torch.Tensor, centers: torch.Tensor, labels: torch.Tensor,
            radius: float, norm: str, domain: tuple[float, float] | None = None,
            dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Confirm candidate counterexamples (B, m) float64 for the balls (``centers`` (B, m), ``radius``, ``norm``)
    ∩ ``domain``: ``(found (B,), points (B, m), classes (B,))``.

    Each candidate is rounded to ``dtype`` (the teacher's own; None: kept), pulled a few units of that
    precision toward its centre if rounding left the ball, checked in float64 to lie in ball ∩ domain, and
    classified by one forward pass of ``teacher`` on exactly that point; ``found`` where it lies in the set
    and some logit exceeds the one of ``labels`` (a tie is no change).
    """
    x = candidates.detach().double()
    c = centers.detach().double()
    lower, upper = _domain_box(x, domain)
    r = torch.full((x.shape[0],), float(radius), dtype=torch.float64)
    if dtype is not None and dtype != torch.float64:
        rounded = x.to(dtype).double()
        outside = ~in_set(rounded, lower, upper, c, r, norm=norm)
        if bool(outside.any()):
            pulled = c + (x - c) * (1 - 16 * torch.finfo(dtype).eps)
            if domain is not None:
                pulled = pulled.clamp(domain[0], domain[1])
            rounded[outside] = pulled[outside].to(dtype).double()
        x = rounded
    with torch.no_grad():
        z = teacher(x)
    margin = margin_loss(z.double(), labels.long()).amin(dim=1)
    found = (margin < 0) & in_set(x, lower, upper, c, r, norm=norm)
    return found, x, z.argmax(dim=1)


def assign_counterexamples(points: np.ndarray, classes: np.ndarray, centers: np.ndarray, labels: np.ndarray,
                           radius: float, norm: str, domain: tuple[float, float] | None = None, *,
                           chunk: int = 1 << 22) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each claimed ball (``centers`` (N, m), ``labels`` (N,), ``radius``), the first confirmed counterexample
    among ``points`` (K, m) with teacher ``classes`` (K,) that refutes it: inside the ball and the domain (float64)
    and of a class other than the ball's label. Returns ``(found (N,), cex (N, m), cex_class (N,))``.
    """
    centers = np.asarray(centers, dtype=np.float64).reshape(len(centers), -1)
    n, m = centers.shape
    found = np.zeros(n, dtype=bool)
    cex = np.full((n, m), np.nan)
    cls = np.full(n, -1, dtype=np.int64)
    points = np.asarray(points, dtype=np.float64).reshape(-1, m)
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    if domain is not None:
        keep = ((points >= domain[0]) & (points <= domain[1])).all(axis=1)
        points, classes = points[keep], classes[keep]
    if n == 0 or len(points) == 0 or radius <= 0:
        return found, cex, cls
    p = torch.as_tensor(points)
    rows = max(1, chunk // max(1, len(points) * m))
    for start in range(0, n, rows):
        c = torch.as_tensor(centers[start:start + rows])
        dist = vector_norm(c[:, None, :] - p[None, :, :], norm, axis=2)             # (rows, K)
        hit = (dist <= radius) & (torch.as_tensor(classes)[None, :] != torch.as_tensor(labels[start:start + rows])[:, None])
        any_hit = hit.any(dim=1)
        first = hit.to(torch.int8).argmax(dim=1)
        idx = np.nonzero(any_hit.numpy())[0]
        found[start + idx] = True
        cex[start + idx] = points[first.numpy()[idx]]
        cls[start + idx] = classes[first.numpy()[idx]]
    return found, cex, cls


def _pool(checks: tuple[TeacherCheck, ...], seed: int, cap: int = POOL_CAP) -> tuple[np.ndarray, np.ndarray]:
    points = np.concatenate([c.counterexamples[c.found] for c in checks]) if checks else np.zeros((0, 0))
    classes = np.concatenate([c.cex_class[c.found] for c in checks]) if checks else np.zeros(0, np.int64)
    if len(points) > cap:
        pick = np.random.default_rng(seed).choice(len(points), cap, replace=False)
        points, classes = points[pick], classes[pick]
    return points, classes


def merge_checks(primary: TeacherCheck, *others: TeacherCheck, centers: np.ndarray, labels: np.ndarray, norm: str,
                 domain: tuple[float, float] | None = None, seed: int = 0,
                 same: tuple[TeacherCheck, ...] = ()) -> TeacherCheck:
    """``primary`` (a check of the claimed balls around ``centers``) completed with the counterexamples of
    other checks: those in ``same`` test the same claims (same centres, labels and radius, e.g. the
    :func:`attack_fresh` of them) and add their refutations as they are; then each claimed ball still unrefuted
    gets any counterexample of any check (``others`` and ``same``: other radii, other balls) that lies in it with
    another class (:func:`assign_counterexamples`, at most :data:`POOL_CAP` pooled points)."""
    points, classes = _pool((primary, *others, *same), seed)
    found, cex, cls = primary.found.copy(), primary.counterexamples.copy(), primary.cex_class.copy()
    for other in same:
        add = other.found & ~found
        found[add], cex[add], cls[add] = True, other.counterexamples[add], other.cex_class[add]
    open_ = ~found
    if open_.any() and len(points):
        f, x, c = assign_counterexamples(points, classes, np.asarray(centers)[open_], np.asarray(labels)[open_],
                                         primary.radius, norm, domain)
        where = np.nonzero(open_)[0][f]
        found[where], cex[where], cls[where] = True, x[f], c[f]
    return TeacherCheck(found, cex, cls, primary.radius, primary.steps, primary.restarts, primary.starts,
                        primary.random_samples, primary.attacked)


def attack_teacher(teacher: Attackable, centers: np.ndarray, labels: np.ndarray, radius: float, norm: str, *,
                   n_classes: int, domain: tuple[float, float] | None = None, steps: int = 50, restarts: int = 5,
                   seed: int = 0, batch_size: int = 1024, starts: str = "spread",
                   random_samples: int = 2000, progress: Callable[[int, int], None] | None = None,
                   executor=None) -> TeacherCheck:
    """Search the teacher for a class change in the ``norm``-ball of ``radius`` around each centre (flat, (N, m)).

    ``teacher`` maps flat float64 (B, m) points to logits (e.g. a :class:`TeacherModel`); ``labels`` (N,) are
    the claimed classes; ``domain`` (lo, hi) clips the balls to the input domain; ``n_classes`` is the number
    of logits the teacher returns. Per ball: PGD (``steps`` × ``restarts``, placed by ``starts``: "spread" or
    "box") and ``random_samples`` uniform draws (0: none), in batches of ``batch_size`` balls; then every
    counterexample found is checked against every other ball too (:func:`merge_checks`). Returns confirmed
    counterexamples only (:func:`confirm`). Cost: ≈ steps·restarts forward and backward passes plus
    random_samples forward passes per ball. ``progress(done, N)`` after each batch of balls. ``executor``
    (:mod:`pacverify.executor`; None: this process) runs the batches: each batch is seeded by its first ball's
    index, so the result does not depend on where it ran.
    """
    from pacverify.executor import LocalExecutor, chunk_ranges, map_points

    starts = check_choice(starts, STARTS, "starts")
    random_samples = int(random_samples)
    centers = np.asarray(centers, dtype=np.float64).reshape(len(centers), -1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    n, m = centers.shape
    result = _empty(n, m, radius, steps, restarts, starts, random_samples, attacked=n if radius > 0 else 0)
    if n == 0 or radius <= 0:
        return result
    job = _AttackJob(teacher, centers, labels, float(radius), norm, n_classes, domain, steps, restarts, seed, starts,
                     random_samples)
    device = getattr(teacher, "module_device", None)
    parts = map_points(executor if executor is not None else LocalExecutor(), _attack_batch, job, n, size=batch_size,
                       progress=progress, gpu=isinstance(device, torch.device) and device.type == "cuda")
    found, cex, cls = result.found, result.counterexamples, result.cex_class
    for (_, lo, _), (hit, points, classes) in zip(chunk_ranges(n, batch_size), parts, strict=True):
        idx = lo + np.nonzero(hit)[0]
        found[idx], cex[idx], cls[idx] = True, points[hit], classes[hit]
    return merge_checks(result, centers=centers, labels=labels, norm=norm, domain=domain, seed=seed)


@dataclass(frozen=True)
class _AttackJob:
    """What every batch of :func:`attack_teacher` shares (put once into Ray's object store on that executor)."""

    teacher: Attackable
    centers: np.ndarray
    labels: np.ndarray
    radius: float
    norm: str
    n_classes: int
    domain: tuple[float, float] | None
    steps: int
    restarts: int
    seed: int
    starts: str
    random_samples: int


def _attack_batch(job: _AttackJob, batch: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PGD and random draws in the balls ``batch`` = (index, start, stop): (found (B,), counterexamples (B, m),
    classes (B,)), each counterexample confirmed; the first confirmed one of PGD, then of the draws, is kept. Seeded
    by ``start`` (the results of earlier versions, which cut the same batches)."""
    _, start, stop = batch
    teacher = job.teacher
    dtype = getattr(teacher, "module_dtype", None)
    c, y = torch.as_tensor(job.centers[start:stop]), torch.as_tensor(job.labels[start:stop])
    found = np.zeros(stop - start, bool)
    cex = np.full((stop - start, job.centers.shape[1]), np.nan)
    cls = np.full(stop - start, -1, dtype=np.int64)
    pgd = attack(teacher, c, y, job.radius, norm=job.norm, loss="margin", domain=job.domain, steps=job.steps,
                 restarts=job.restarts, seed=job.seed + start, starts=_PGD_STARTS[job.starts])
    if pgd.outputs.shape[1] != job.n_classes:
        raise ValueError(f"the teacher returns {pgd.outputs.shape[1]} logits, expected n_classes={job.n_classes}")
    candidates = [pgd.inputs]
    if job.random_samples > 0:
        candidates.append(random_search(teacher, c, y, job.radius, norm=job.norm, domain=job.domain,
                                        samples=job.random_samples, seed=job.seed + start + 1_000_003).inputs)
    for cand in candidates:
        ok, x, k = confirm(teacher, cand, c, y, job.radius, job.norm, job.domain, dtype)
        new = ok.numpy() & ~found
        found[new], cex[new], cls[new] = True, x.numpy()[new], k.numpy()[new]
    return found, cex, cls


def near_claims(points: np.ndarray, centers: np.ndarray, reach: float, norm: str, *,
                chunk: int = 1 << 22) -> np.ndarray:
    """(F,) bool: which ``points`` (F, m) lie within ``reach`` (float64, ``norm``) of some centre (N, m)."""
    points = np.asarray(points, dtype=np.float64).reshape(len(points), -1)
    ctr = torch.as_tensor(np.asarray(centers, dtype=np.float64).reshape(len(centers), -1))
    near = np.zeros(len(points), dtype=bool)
    if len(points) == 0 or len(ctr) == 0 or reach <= 0:
        return near
    rows = max(1, chunk // max(1, ctr.numel()))
    for start in range(0, len(points), rows):
        p = torch.as_tensor(points[start:start + rows])
        dist = vector_norm(p[:, None, :] - ctr[None, :, :], norm, axis=2)
        near[start:start + len(p)] = (dist <= reach).any(dim=1).numpy()
    return near


def attack_fresh(teacher: Attackable, fresh: np.ndarray | None, centers: np.ndarray, labels: np.ndarray, radius: float,
                 norm: str, *, n_classes: int, kappa: float | None = None,
                 domain: tuple[float, float] | None = None, steps: int = 50, restarts: int = 5, seed: int = 0,
                 batch_size: int = 1024, starts: str = "spread", random_samples: int = 2000) -> TeacherCheck:
    """Attack the teacher around fresh points to test the claims of radius ``radius`` (= 3δ) around ``centers``.

    A fresh point x (a held-out draw, (F, m); None: none) that is κ-confident for the teacher (``kappa``; None: every x)
    and lies within 2δ = ``2·radius/3`` of a required point x_i has its δ-ball inside x_i's claimed 3δ-ball
    (triangle inequality). Each such δ-ball is searched as in :func:`attack_teacher` for a point of another
    class than x's; the counterexamples found, and the fresh points themselves, are then matched to the claimed
    balls (:func:`assign_counterexamples`): a claim is refuted by a point inside its ball whose class differs
    from its label (the δ-ball's counterexamples lie in the claimed ball of every x_i within 2δ of x; a fresh
    point of another class than x_i's within 2δ is itself one). Returns a :class:`TeacherCheck` over the
    claimed balls; ``attacked`` is the number of fresh δ-balls searched.
    """
    centers = np.asarray(centers, dtype=np.float64).reshape(len(centers), -1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    fresh = np.asarray(fresh, dtype=np.float64).reshape(len(fresh), -1) if fresh is not None else np.zeros((0, 0))
    n, m = centers.shape
    starts = check_choice(starts, STARTS, "starts")
    empty = _empty(n, m, radius, steps, restarts, starts, int(random_samples))
    if n == 0 or len(fresh) == 0 or radius <= 0:
        return empty
    with torch.no_grad():
        logits = torch.cat([teacher(torch.as_tensor(fresh[i:i + 65536])) for i in range(0, len(fresh), 65536)])
    fresh_class = logits.argmax(dim=1).numpy()
    keep = near_claims(fresh, centers, 2 * radius / 3, norm)
    if kappa is not None:
        keep &= torch.softmax(logits.double(), dim=1).amax(dim=1).numpy() >= kappa
    if domain is not None:
        keep &= ((fresh >= domain[0]) & (fresh <= domain[1])).all(axis=1)
    points, classes = fresh, fresh_class      # a fresh point of another class inside a claimed ball refutes it
    if keep.any():
        around = attack_teacher(teacher, fresh[keep], fresh_class[keep], radius / 3, norm, n_classes=n_classes,
                                domain=domain, steps=steps, restarts=restarts, seed=seed, batch_size=batch_size,
                                starts=starts, random_samples=random_samples)
        points = np.concatenate([around.counterexamples[around.found], fresh])
        classes = np.concatenate([around.cex_class[around.found], fresh_class])
    found, cex, cls = assign_counterexamples(points, classes, centers, labels, radius, norm, domain)
    return TeacherCheck(found, cex, cls, float(radius), steps, restarts, starts, int(random_samples),
                        int(keep.sum()))
