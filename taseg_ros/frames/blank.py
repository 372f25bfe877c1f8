"""A missing input, blanked the one way every path blanks it.

The thermal input blanked is zeros after normalisation (the coldest value) on the RGB grid: what
``taseg eval --blank-thermal`` scores (``evaluation.run.evaluate``), what training's blank-thermal
ablation trains on (``train.loop``), what ``taseg bag eval`` compares against for its thermal
reliance, and what the node feeds the model when the thermal camera is silent with
``input_fallback: blank``. One function, so the node's degraded frames are exactly the frames the
published accuracy-with-thermal-blanked figures were measured on.

The RGB input blanked (the node's fallback when the RGB camera is silent) is a black frame.
"""
from __future__ import annotations

import numpy as np


def blank_thermal(hw: tuple[int, int]) -> np.ndarray:
    """The normalised thermal input of an (H, W) RGB frame with the thermal camera missing."""
    return np.zeros(tuple(hw), np.float32)


def blank_rgb(hw: tuple[int, int]) -> np.ndarray:
    """An (H, W) RGB frame with the RGB camera missing."""
    return np.zeros((*hw, 3), np.uint8)
