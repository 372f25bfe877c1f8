"""The names and defaults of the label-free quality figures (``evaluation.quality`` computes them):
the vocabulary that gates, reports and the command-line options share. Standard library only, so
the parsers of `taseg bag eval` and `taseg bag select` read it without loading OpenCV."""
from __future__ import annotations

DEFAULT_LOW_CONFIDENCE = 0.5  # a pixel whose chosen class has less than even odds is low-confidence
LOW_PERCENTILE = 5
DEFAULT_SEGMENT_WINDOW_S = 2.0
DEFAULT_WORST_SEGMENTS = 3

# Recording-level figures (means of the per-frame ones), the names gates and reports use.
FIGURES = (
    "mean_confidence",
    "p5_confidence",
    "low_confidence_share",
    "entropy",
    "flicker",
    "flicker_compensated",
    "thermal_reliance",
    "baseline_agreement",
)
# Figures whose worst segments are reported, as (figure, sign): +1 when high is bad, -1 when low is bad.
WORST_SEGMENT_FIGURES = (
    ("low_confidence_share", 1),
    ("entropy", 1),
    ("flicker_compensated", 1),
    ("baseline_agreement", -1),
)
