"""Parameters of the segmentation node: names, defaults, validation. ROS-free.

``config/taseg.yaml`` documents the same names and values (a test keeps them equal); the node
declares every field of ``NodeParams`` as a ROS parameter with these defaults, so each one can be
overridden with ``--ros-args -p name:=value`` or a params file.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from taseg_ros.preprocessing import THERMAL_MODES, ThermalNormalization

DEVICES_HINT = "cpu, cuda or cuda:N"
PRECISIONS = ("fp32", "fp16", "bf16")
TRANSPORTS = ("raw", "compressed")
QOS_PRESETS = ("sensor_data", "reliable", "best_effort")

# Topic names relative to the node's namespace (remap them); "compressed" transport
# subscribes to "<name>/compressed" as image_transport does.
RGB_TOPIC = "rgb/image"
THERMAL_TOPIC = "thermal/image"


@dataclass
class NodeParams:
    checkpoint: str = ""
    sam_checkpoint: str = ""
    device: str = "cpu"
    precision: str = "fp32"
    autostart: bool = True
    rgb_transport: str = "raw"
    thermal_transport: str = "raw"
    slop: float = 0.02
    pairing_queue_size: int = 5
    time_reset: float = 2.0
    thermal_normalization: str = "auto"
    thermal_range: list[float] = field(default_factory=lambda: [0.0, 255.0])
    thermal_percentiles: list[float] = field(default_factory=lambda: [1.0, 99.0])
    thermal_homography: list[float] = field(default_factory=list)
    overlay_alpha: float = 0.5
    publish_confidence: bool = False
    input_qos: str = "sensor_data"
    input_depth: int = 1
    output_qos: str = "reliable"
    output_depth: int = 1
    diagnostics_period: float = 1.0
    no_pair_warning: float = 3.0
    clock_offset_warning: float = 2.0
    log_throttle: float = 5.0

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def defaults(cls) -> dict:
        return dataclasses.asdict(cls())

    def validate(self) -> None:
        """Raise ValueError naming the first bad parameter."""
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"parameter '{name}' = {getattr(self, name)!r}: {why}")

        if not self.checkpoint:
            raise bad("checkpoint", "required: the path of a TASeg checkpoint (taseg init/train writes one)")
        device = self.device.strip().lower()
        if not (device == "cpu" or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
            raise bad("device", f"expected {DEVICES_HINT}")
        if self.precision not in PRECISIONS:
            raise bad("precision", f"expected one of {PRECISIONS}")
        for name in ("rgb_transport", "thermal_transport"):
            if getattr(self, name) not in TRANSPORTS:
                raise bad(name, f"expected one of {TRANSPORTS}")
        for name in ("input_qos", "output_qos"):
            if getattr(self, name) not in QOS_PRESETS:
                raise bad(name, f"expected one of {QOS_PRESETS}")
        for name in ("input_depth", "output_depth", "pairing_queue_size"):
            if getattr(self, name) < 1:
                raise bad(name, "must be >= 1")
        if not self.slop >= 0.0:
            raise bad("slop", "must be >= 0 seconds")
        if not self.time_reset > self.slop:
            raise bad("time_reset", f"must be larger than slop ({self.slop} s)")
        if self.thermal_normalization not in THERMAL_MODES:
            raise bad("thermal_normalization", f"expected one of {THERMAL_MODES}")
        if len(self.thermal_range) != 2:
            raise bad("thermal_range", "expected [low, high]")
        if len(self.thermal_percentiles) != 2:
            raise bad("thermal_percentiles", "expected [low, high]")
        try:
            self.thermal_norm()
        except ValueError as exc:
            raise ValueError(f"thermal normalisation parameters: {exc}") from exc
        if len(self.thermal_homography) not in (0, 9):
            raise bad("thermal_homography", "expected 9 numbers (3x3 row-major, thermal px -> RGB px) or []")
        if self.thermal_homography and not np.all(np.isfinite(self.thermal_homography)):
            raise bad("thermal_homography", "contains NaN/inf")
        if not 0.0 <= self.overlay_alpha <= 1.0:
            raise bad("overlay_alpha", "must be in [0, 1]")
        for name in ("diagnostics_period", "no_pair_warning", "clock_offset_warning"):
            if not getattr(self, name) > 0.0:
                raise bad(name, "must be > 0 seconds")
        if not self.log_throttle >= 0.0:
            raise bad("log_throttle", "must be >= 0 seconds")

    def thermal_norm(self) -> ThermalNormalization:
        low, high = self.thermal_range
        return ThermalNormalization(
            mode=self.thermal_normalization,
            low=float(low),
            high=float(high),
            percentiles=(float(self.thermal_percentiles[0]), float(self.thermal_percentiles[1])),
        )

    def homography(self) -> np.ndarray | None:
        if not self.thermal_homography:
            return None
        return np.asarray(self.thermal_homography, dtype=np.float64).reshape(3, 3)


def resolve_checkpoint(path: str) -> Path:
    """A checkpoint path as given, or relative to the models folder (``TASEG_MODELS_DIR``)."""
    from taseg_ros.resources import models_dir

    candidate = Path(path).expanduser()
    if candidate.is_file() or candidate.is_absolute():
        return candidate
    in_models = models_dir() / candidate
    return in_models if in_models.is_file() else candidate
