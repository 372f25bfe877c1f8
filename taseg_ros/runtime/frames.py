"""The frame an export is verified on: a real MFNet RGB-T pair from the shared samples beside a
source checkout when present (random weights still see real image statistics), else a seeded
synthetic pair; resized to the export's frame size."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from taseg_ros.resources import _SOURCE_ROOT

SAMPLE_FRAME = _SOURCE_ROOT.parent / "shared" / "data" / "rgbt_samples" / "mfnet" / "images" / "01234N.png"


def verification_frame(height: int, width: int, sample: Path = SAMPLE_FRAME) -> tuple[np.ndarray, np.ndarray, str]:
    """(rgb uint8 (H,W,3), thermal uint8 (H,W), description)."""
    import cv2

    bgra = cv2.imread(str(sample), cv2.IMREAD_UNCHANGED) if sample.is_file() else None
    if bgra is not None and bgra.ndim == 3 and bgra.shape[2] == 4:  # MFNet: BGR + thermal as alpha
        if bgra.shape[:2] != (height, width):
            bgra = cv2.resize(bgra, (width, height), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(bgra[:, :, 2::-1]), np.ascontiguousarray(bgra[:, :, 3]), f"MFNet {sample.name}"
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    thermal = rng.integers(0, 256, (height, width), dtype=np.uint8)
    return rgb, thermal, "synthetic (seeded random)"
