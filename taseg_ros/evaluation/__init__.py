"""Scoring segmentation against ground truth with the published protocols (metrics.py), the
label-free quality figures (figures.py, quality.py), gates on them (gates.py) and presenting the
result (report.py).

The scoring names below load on first use: the command-line parsers read ``figures`` and ``gates``
without loading the dataset code (OpenCV) that ``metrics`` needs."""
from __future__ import annotations

import importlib

__all__ = [
    "ConfusionMatrix",
    "EvaluationResult",
    "Scores",
    "SegmentationEvaluator",
    "compute_scores",
    "pst900_official_iou",
]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module("taseg_ros.evaluation.metrics"), name)
    raise AttributeError(f"module 'taseg_ros.evaluation' has no attribute '{name}'")
