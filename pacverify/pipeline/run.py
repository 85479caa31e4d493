"""``pacverify certify``: Algorithm 1 of 004 end to end (DESIGN.md §1–2), composed from the pipeline's parts.

validate every setting → load the teacher and the data source → s = sample_size(m, ε, η) → run the
ball-mode stages (:data:`pacverify.pipeline.ball.BALL_MODE`: sample, label, distill, export, verify at
3δ, radii, ρ and δ_T, teacher check, coverage) → assemble and write the certificate → report.
Stages are cached in ``OUT/.pacverify-cache`` under content-hash keys (:mod:`pacverify.pipeline.cache`),
so a rerun with the same inputs and seed reuses finished stages.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from pacverify import pac
from pacverify.certificate.io import Certificate, write_certificate
from pacverify.data import Sampler, make_sampler
from pacverify.errors import InputError
from pacverify.fileio import ensure_dir, sha256_arrays, sha256_file
from pacverify.models import load_teacher, resolve_device, teacher_logits
from pacverify.pipeline.ball import BALL_MODE, assemble
from pacverify.pipeline.cache import StageCache
from pacverify.pipeline.runner import Progress, Runner, quiet
from pacverify.pipeline.settings import CertifySettings
from pacverify.pipeline.stages import Setup
from pacverify.report.render import write_report

__all__ = ["CertifySettings", "certify"]


def certify(teacher: str | os.PathLike | torch.nn.Module, *, out: str | os.PathLike | None = None,
            progress: Progress | None = None, show_bars: bool = False, cache: bool = True,
            **settings) -> Certificate:
    """Run Algorithm 1 of 004 on ``teacher`` and write the certificate into ``out``.

    ``settings`` are the fields of :class:`CertifySettings` (``delta``, ``eps``, ``eta`` required);
    all are validated before the teacher is loaded or anything is sampled. ``out`` defaults to a new
    temporary directory. ``progress(stage, message)`` is called as stages start and end. ``cache=False``
    retrains the student instead of reusing the one cached in ``OUT/.pacverify-cache`` (the only stage cached:
    evidence is always recomputed, :mod:`pacverify.pipeline.stages`). Returns the
    :class:`~pacverify.certificate.io.Certificate`; its verdict is CERTIFIED only if every κ-confident
    sample point was proven 3δ-robust for the student, the student agrees with the teacher there, and
    the teacher attack found no counterexample in a claimed ball. Bad input raises :class:`InputError`
    before anything is written.
    """
    try:
        cfg = CertifySettings(**settings).validated()
    except TypeError as exc:
        raise InputError(f"certify: {exc}") from None
    say = progress or quiet
    device = resolve_device(cfg.device)
    # everything that can be checked is checked before anything is written
    if isinstance(teacher, torch.nn.Module):
        teacher_model, teacher_path = teacher.eval(), None
        teacher_hash = sha256_arrays(*[t.detach().cpu().numpy() for t in teacher.state_dict().values()])
    else:
        teacher_path = Path(teacher).resolve()
        teacher_model = load_teacher(teacher_path, arch=cfg.arch, trust_pickle=cfg.trust_pickle, device=device)
        teacher_hash = sha256_file(teacher_path)
    sampler = cfg.sampler if isinstance(cfg.sampler, Sampler) else make_sampler(
        str(cfg.data or cfg.sampler or cfg.synthetic), seed=cfg.seed, domain=cfg.domain,
        kind="data" if cfg.data else "sampler" if cfg.sampler else "synthetic")
    probe = sampler.draw(1)
    teacher_logits(teacher_model, probe, device=device)  # a teacher of another input shape fails here
    input_shape = tuple(probe.shape[1:])
    dim = int(np.prod(input_shape))
    required_s = pac.sample_size(dim, cfg.eps, cfg.eta, norm=cfg.norm)
    if cfg.samples is not None and cfg.samples < required_s:
        raise InputError(f"samples = {cfg.samples} is below the {required_s} that Thm 3.8 needs for m = {dim}, "
                         f"eps = {cfg.eps:g}, eta = {cfg.eta:g}")
    s = cfg.samples or required_s
    available = getattr(sampler, "available_fresh", None)
    if available is not None and available(0) < s:
        sampler.draw(s)  # raises the sampler's own message: how many rows, how many needed, what to do
    target = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="pacverify-"))
    created = not target.exists()
    out_dir = ensure_dir(target)
    setup = Setup(cfg=cfg, teacher=teacher_model, teacher_path=teacher_path, teacher_hash=teacher_hash,
                  sampler=sampler, source=cfg.source_description(), input_shape=input_shape, dim=dim, samples=s,
                  samples_required=required_s, out_dir=out_dir, device=device, show_bars=show_bars)
    try:
        runner = Runner(setup, StageCache(out_dir if cache else None), say)
        results = runner.run(BALL_MODE)
        record, arrays = assemble(setup, results, runner.timings)
        cert = write_certificate(record, arrays, out_dir)
        write_report(cert, html_path=out_dir / "report.html", markdown_path=out_dir / "report.md")
        return cert
    except InputError:
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
