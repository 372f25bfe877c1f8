"""Scoring segmentation against ground truth with the published protocols (metrics.py) and
presenting the result (report.py)."""
from taseg_ros.evaluation.metrics import (
    ConfusionMatrix,
    EvaluationResult,
    Scores,
    SegmentationEvaluator,
    compute_scores,
    pst900_official_iou,
)

__all__ = [
    "ConfusionMatrix",
    "EvaluationResult",
    "Scores",
    "SegmentationEvaluator",
    "compute_scores",
    "pst900_official_iou",
]
