"""How unsure the model is about one frame, from its softmax (no labels needed).

    entropy         mean over pixels of the normalised entropy -sum_k p_k log p_k / log K:
                    0 = one class has all the probability everywhere, 1 = uniform over the K classes
    low_confidence  share of pixels whose chosen class has probability below a threshold
                    (default 0.5: the model gives the winner less than even odds)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from taseg_ros.evaluation.quality import DEFAULT_LOW_CONFIDENCE  # noqa: F401 - one threshold for select and bag eval

SCORES = ("entropy", "low-confidence")


@dataclass(frozen=True)
class FrameUncertainty:
    entropy: float  # mean normalised entropy, 0..1
    low_confidence: float  # share of pixels below the threshold, 0..1

    def score(self, name: str) -> float:
        """The figure named by --score (one of SCORES)."""
        return self.entropy if name == "entropy" else self.low_confidence


def frame_uncertainty(probabilities: np.ndarray, low_confidence: float = DEFAULT_LOW_CONFIDENCE) -> FrameUncertainty:
    """probabilities: (K, H, W) softmax of one frame (``Segmenter.predict_prepared(...,
    return_probabilities=True).probabilities``)."""
    p = np.asarray(probabilities, dtype=np.float32)
    k = p.shape[0]
    if k < 2:  # one class: nothing to be unsure about
        return FrameUncertainty(0.0, 0.0)
    # 0 * log 0 = 0: the log of a clipped value is multiplied by the exact 0.
    plogp = p * np.log(np.clip(p, np.finfo(np.float32).tiny, None))
    entropy = float(-plogp.sum(axis=0).mean() / np.log(k))
    share = float((p.max(axis=0) < low_confidence).mean())
    return FrameUncertainty(min(max(entropy, 0.0), 1.0), share)
