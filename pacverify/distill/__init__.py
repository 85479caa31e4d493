"""Gradient-aligned distillation of a teacher into a small ReLU student (DESIGN.md §3).

Public surface: :func:`distill` (the trainer), :class:`DistillConfig`, :class:`DistillResult`,
:func:`distill_auto` (``--student auto``: grow the student along a ladder until it reaches the targets
or a time budget ends; :class:`AutoResult`, :class:`AutoTry`, :class:`SkippedTry`), the quality markers
(:func:`quality_markers`, :func:`margin_gradient_ratio`) and the loss names :data:`METHODS`. The losses
themselves are in :mod:`pacverify.distill.losses`.
"""
from __future__ import annotations

from pacverify.distill.auto import (
    DEFAULT_BUDGET_S,
    IMAGE_LADDER,
    MLP_LADDER,
    AutoResult,
    AutoTry,
    SkippedTry,
    default_ladder,
    distill_auto,
)
from pacverify.distill.fit import DistillConfig, EpochRecord, make_config
from pacverify.distill.losses import METHODS
from pacverify.distill.quality import QualityMarkers, margin_gradient_ratio, quality_markers
from pacverify.distill.trainer import DistillResult, distill

__all__ = ["DEFAULT_BUDGET_S", "IMAGE_LADDER", "METHODS", "MLP_LADDER", "AutoResult", "AutoTry", "DistillConfig",
           "DistillResult", "EpochRecord", "QualityMarkers", "SkippedTry", "default_ladder", "distill",
           "distill_auto", "make_config", "margin_gradient_ratio", "quality_markers"]
