"""The per-frame work's settings besides the model (the node's parameters, `taseg bag eval`'s and
`taseg predict`'s options all become a FrameSettings) and the names of its timed steps."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from taseg_ros.frames.render import DEFAULT_OVERLAY_ALPHA, check_alpha
from taseg_ros.frames.thermal import ThermalNormalization, ThermalPreparation, validate_homography

# Steps of inference.pipeline.FramePipeline, in order, as its timings, the node's diagnostics
# (step_<name>_mean_ms) and the bag eval report name them; "total" is their sum.
STEPS = ("decode", "thermal", "inference", "render")


@dataclass(frozen=True)
class FrameSettings:
    thermal_norm: ThermalNormalization = field(default_factory=ThermalNormalization)
    homography: np.ndarray | None = None  # 3x3, thermal -> RGB pixel coordinates; None: resize
    overlay_alpha: float = DEFAULT_OVERLAY_ALPHA
    homography_size: tuple[int, int, int, int] | None = None  # thermal W, H, RGB W, H it was made for

    def __post_init__(self) -> None:
        if self.homography is not None:
            object.__setattr__(self, "homography", validate_homography(self.homography))
        if self.homography_size is not None:
            object.__setattr__(self, "homography_size", tuple(int(v) for v in self.homography_size))
        check_alpha(self.overlay_alpha)

    def thermal_preparation(self) -> ThermalPreparation:
        return ThermalPreparation(self.thermal_norm, self.homography, made_for=self.homography_size)

    def same_registration(self, other: "FrameSettings") -> bool:
        a, b = self.homography, other.homography
        if a is None or b is None:
            return a is None and b is None
        return bool(np.array_equal(a, b)) and self.homography_size == other.homography_size
