"""Gradient-aligned distillation of a teacher into a small ReLU student (DESIGN.md §3).

Public surface: :func:`distill` (the trainer), :class:`DistillConfig`, :class:`DistillResult`,
the quality markers (:func:`quality_markers`, :func:`margin_gradient_ratio`) and the loss names
:data:`METHODS`. The losses themselves are in :mod:`pacverify.distill.losses`.
"""
from __future__ import annotations

from pacverify.distill.fit import DistillConfig, EpochRecord, make_config
from pacverify.distill.losses import METHODS
from pacverify.distill.quality import QualityMarkers, margin_gradient_ratio, quality_markers
from pacverify.distill.trainer import DistillResult, distill

__all__ = ["METHODS", "DistillConfig", "DistillResult", "EpochRecord", "QualityMarkers", "distill",
           "make_config", "margin_gradient_ratio", "quality_markers"]
