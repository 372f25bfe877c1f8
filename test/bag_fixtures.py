"""Test frames for recordings: generated frames with known labels and real MSRS pairs; the recording
writer itself is the demo's (taseg_ros.demo.recording), re-exported here."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dataset_fixtures import FixtureFrame, synthetic_frame
from taseg_ros.demo.recording import (  # noqa: F401 - re-exported for the tests
    DEFAULT_RGB_TOPIC,
    DEFAULT_THERMAL_TOPIC,
    FrameRecord,
    RecordedBag,
    thermal_counts,
    write_rgbt_bag,
)
from taseg_ros.errors import MissingInputError


def synthetic_frames(
    count: int, height: int = 48, width: int = 64, num_classes: int = 9, seed: int = 0
) -> list[FixtureFrame]:
    """Generated frames with known labels (a few rectangles of random classes; RGB and thermal depend
    on the label, plus noise)."""
    rng = np.random.default_rng(seed)
    return [synthetic_frame(rng, height, width, num_classes) for _ in range(count)]


def msrs_frames(root: str | Path, limit: int | None = None, size: tuple[int, int] | None = None) -> list[FixtureFrame]:
    """Real aligned RGB-T pairs from an MSRS-style folder (``vi/`` RGB, ``ir/`` 8-bit thermal, same
    names), sorted by name, optionally resized to ``size`` = (height, width). No labels."""
    import cv2

    from taseg_ros.frames.files import read_rgb, read_thermal

    root = Path(root)
    names = sorted(p.name for p in (root / "vi").glob("*.png"))
    if not names:
        raise MissingInputError(f"no MSRS pairs in {root} (expected vi/*.png and ir/*.png)")
    frames = []
    for name in names[:limit]:
        rgb = read_rgb(root / "vi" / name)
        thermal = read_thermal(root / "ir" / name)
        if thermal.dtype != np.uint8:
            thermal = np.clip(thermal, 0, 255).astype(np.uint8)
        if size is not None:
            h, w = size
            rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
            thermal = cv2.resize(thermal, (w, h), interpolation=cv2.INTER_AREA)
        frames.append(FixtureFrame(rgb=rgb, thermal=thermal))
    return frames
