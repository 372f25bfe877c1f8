"""Parameters of the segmentation node: names, defaults, validation. ROS-free.

``config/taseg.yaml`` documents the same names and values (a test keeps them equal); the node
declares every field of ``NodeParams`` as a ROS parameter with these defaults, so each one can be
overridden with ``--ros-args -p name:=value`` or a params file. ``from_parameters`` reads the ROS
values through taseg_ros.config_io (as every other config); the limits stand beside the fields.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from taseg_ros.config_io import check_fields, from_mapping, setting
from taseg_ros.devices import PRECISIONS
from taseg_ros.errors import InputError
from taseg_ros.model.config import DEFAULT_MAX_INPUT_SIZE, max_input_size_problem
from taseg_ros.frames.thermal import THERMAL_MODES, ThermalNormalization, validate_homography

DEVICES_HINT = "cpu, cuda or cuda:N (torch, onnxruntime), tensorrt (onnxruntime's TensorRT provider), gpu or npu (openvino)"
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
    backend: str = setting("auto", choices=("auto", "torch", "onnxruntime", "openvino", "tensorrt"))
    merge_lora: bool = False
    device: str = "cpu"
    precision: str = setting("fp32", choices=tuple(PRECISIONS))
    # Longest side (px) of the network's input: larger frames are resized down before the network
    # and the labels back up to the frame (said once in the log), so one huge frame cannot exhaust
    # memory; 0: no limit. An export's fixed input size is its own limit.
    max_input_size: int = setting(DEFAULT_MAX_INPUT_SIZE, ge=0)
    autostart: bool = True
    rgb_transport: str = setting("raw", choices=TRANSPORTS)
    thermal_transport: str = setting("raw", choices=TRANSPORTS)
    slop: float = setting(0.02, ge=0, unit="seconds")
    pairing_queue_size: int = setting(5, ge=1)
    time_reset: float = 2.0
    thermal_normalization: str = setting("auto", choices=THERMAL_MODES)
    thermal_range: list[float] = field(default_factory=lambda: [0.0, 255.0])
    thermal_percentiles: list[float] = field(default_factory=lambda: [1.0, 99.0])
    thermal_homography: list[float] = field(default_factory=list)
    overlay_alpha: float = setting(0.5, ge=0, le=1)
    publish_confidence: bool = False
    input_qos: str = setting("sensor_data", choices=QOS_PRESETS)
    input_depth: int = setting(1, ge=1)
    output_qos: str = setting("reliable", choices=QOS_PRESETS)
    output_depth: int = setting(1, ge=1)
    diagnostics_period: float = setting(1.0, gt=0, unit="seconds")
    # The diagnostics describe the last this-many seconds (timings, failures, stamp offsets).
    diagnostics_window: float = setting(10.0, gt=0, unit="seconds")
    no_pair_warning: float = setting(3.0, gt=0, unit="seconds")
    clock_offset_warning: float = setting(2.0, gt=0, unit="seconds")
    log_throttle: float = setting(5.0, ge=0, unit="seconds")

    @classmethod
    def from_parameters(cls, values: Mapping[str, Any], base: "NodeParams | None" = None) -> "NodeParams":
        """NodeParams (or `base` changed) from ROS parameter values: ints pass where doubles are
        expected, arrays come as array.array, an empty array as None (it has no declared type).
        Types and limits are checked here; validate() adds the checks across parameters."""
        lists = {name for name, default in cls.defaults().items() if isinstance(default, list)}
        values = {name: [] if value is None and name in lists else value for name, value in values.items()}
        return from_mapping(cls, values, base=base, style="parameter")

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
        # gpu/npu (OpenVINO) and tensorrt (ONNX Runtime's TensorRT provider): the runtime checks the pairing.
        if not (device in ("cpu", "cuda", "gpu", "npu", "tensorrt") or (device.startswith("cuda:") and device[5:].isdigit())):
            raise bad("device", f"expected {DEVICES_HINT}")
        check_fields(self, style="parameter")
        problem = max_input_size_problem(self.max_input_size)
        if problem:
            raise bad("max_input_size", problem)
        if not self.time_reset > self.slop:
            raise bad("time_reset", f"must be larger than slop ({self.slop} s)")
        if len(self.thermal_range) != 2:
            raise bad("thermal_range", "expected [low, high]")
        if len(self.thermal_percentiles) != 2:
            raise bad("thermal_percentiles", "expected [low, high]")
        try:
            self.thermal_norm()
        except ValueError as exc:
            raise InputError(f"thermal normalisation parameters: {exc}") from exc
        if len(self.thermal_homography) not in (0, 9):
            raise bad("thermal_homography", "expected 9 numbers (3x3 row-major, thermal px -> RGB px) or []")
        if self.thermal_homography:
            try:
                validate_homography(self.thermal_homography)  # finite, h33 != 0, invertible
            except ValueError as exc:
                raise bad("thermal_homography", str(exc).removeprefix("thermal homography: ")) from None

    def thermal_norm(self) -> ThermalNormalization:
        low, high = self.thermal_range
        return ThermalNormalization(
            mode=self.thermal_normalization,
            low=float(low),
            high=float(high),
            percentiles=(float(self.thermal_percentiles[0]), float(self.thermal_percentiles[1])),
        )

    def frame_settings(self):
        """The per-frame pipeline's settings (``taseg_ros.frame``) from these parameters."""
        from taseg_ros.frames.settings import FrameSettings

        return FrameSettings(self.thermal_norm(), self.homography(), self.overlay_alpha)

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
