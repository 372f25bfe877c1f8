"""How unsure the model is about one frame (no labels needed): the label-free figures of
``evaluation.quality`` that `taseg bag select` ranks by.

    entropy         mean over pixels of the normalised entropy -sum_k p_k log p_k / log K:
                    0 = one class has all the probability everywhere, 1 = uniform over the K classes
    low_confidence  share of pixels whose chosen class has probability below a threshold
                    (default 0.5: the model gives the winner less than even odds)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from taseg_ros.evaluation.quality import DEFAULT_LOW_CONFIDENCE, confidence_figures

if TYPE_CHECKING:  # the type only: this module's figures need no model
    from taseg_ros.inference.segmenter import Prediction


@dataclass(frozen=True)
class FrameUncertainty:
    entropy: float  # mean normalised entropy, 0..1
    low_confidence: float  # share of pixels below the threshold, 0..1

    def score(self, name: str) -> float:
        """The figure named by --score (one of labelling.settings.SCORES)."""
        return self.entropy if name == "entropy" else self.low_confidence


def frame_uncertainty(prediction: Prediction, low_confidence: float = DEFAULT_LOW_CONFIDENCE) -> FrameUncertainty:
    """A frame's uncertainty from its Prediction, made with ``return_entropy=True``: the figures
    `taseg bag eval` reports (``evaluation.quality``), from the same maps."""
    if prediction.entropy is None:
        raise ValueError("frame_uncertainty needs a Prediction made with return_entropy=True")
    share = confidence_figures(prediction.confidence, low_confidence, percentile=False)["low_confidence_share"]
    return FrameUncertainty(float(prediction.entropy.mean(dtype=np.float64)), share)
