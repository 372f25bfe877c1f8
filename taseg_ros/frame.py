"""One RGB-T frame pair, end to end, without ROS: decode -> normalise thermal -> align it to the RGB
grid -> predict -> colourise/overlay, with per-step timings and notes.

The node (``ros/node.py``), ``taseg bag eval``, the demo and the ROS bench all run frames through
``FramePipeline``, so they do the same work and report the same timings and the same notes for the
same input. ``ThermalPreparation`` is the one place where camera thermal frames are normalised and
registered; ``Segmenter.predict`` uses it too.

Messages are duck-typed (``ros.image_codec``): rclpy messages, ``rosbags`` messages and plain
objects with the sensor_msgs fields all decode the same way.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from taseg_ros.errors import InputError
from taseg_ros.preprocessing import ThermalAligner, ThermalNormalization, colorize, normalize_thermal, overlay

# Outputs a caller can ask for besides the labels (the node asks for the ones somebody subscribes to).
RENDERED_OUTPUTS = ("colorized", "overlay", "confidence")
# Step names of ``FrameResult.timings``, in order; "total" is their sum.
STEPS = ("decode", "thermal", "inference", "render")


@dataclass(frozen=True)
class FrameNote:
    """Something worth telling the user about a frame. ``kind`` groups notes for log throttling
    and counting: ``nonfinite_thermal``, ``thermal_aligned``, ``bad_rgb``, ``bad_thermal``, ``model``."""

    kind: str
    stream: str  # "rgb", "thermal" or "model"
    text: str
    detail: str = ""  # finer kind for log throttling, e.g. the ImageDecodeError reason


@dataclass
class FrameSettings:
    """What the per-frame work depends on besides the model (node parameters, bag eval options)."""

    thermal_norm: ThermalNormalization = field(default_factory=ThermalNormalization)
    homography: np.ndarray | None = None  # 3x3, thermal -> RGB pixel coordinates
    overlay_alpha: float = 0.5


class ThermalPreparation:
    """Raw thermal (any dtype, any size) -> float32 [0, 1] on the RGB grid, plus notes.

    Normalises before any resize or warp (so statistics come from the camera's own pixels), counts
    non-finite pixels, and says once that frames are being resized or warped."""

    def __init__(
        self, norm: ThermalNormalization | None = None, homography: np.ndarray | None = None,
        aligner: ThermalAligner | None = None,
    ) -> None:
        self.norm = norm or ThermalNormalization()
        self.aligner = aligner or ThermalAligner(homography)

    def __call__(self, thermal: np.ndarray, rgb_hw: tuple[int, int]) -> tuple[np.ndarray, list[FrameNote]]:
        notes = []
        if thermal.dtype.kind == "f":
            finite = np.isfinite(thermal)
            if not finite.all():
                bad = int(finite.size - np.count_nonzero(finite))
                notes.append(FrameNote(
                    "nonfinite_thermal", "thermal",
                    f"{bad} of {finite.size} pixels are NaN/inf; they are excluded from normalisation "
                    "and treated as the coldest value",
                ))
        thermal01, aligned = self.aligner(normalize_thermal(thermal, self.norm), rgb_hw)
        if aligned is not None:
            notes.append(FrameNote("thermal_aligned", "thermal", aligned))
        return thermal01, notes


@dataclass
class FrameResult:
    """What one pair produced. ``error`` is set (and the images are None) when the pair was skipped."""

    labels: np.ndarray | None = None
    confidence: np.ndarray | None = None
    colorized: np.ndarray | None = None
    overlay: np.ndarray | None = None
    rgb: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds per STEPS entry, and "total"
    notes: list[FrameNote] = field(default_factory=list)
    error: FrameNote | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class FramePipeline:
    """Runs pairs through a ``Segmenter`` with one set of ``FrameSettings``."""

    def __init__(self, segmenter: Any, settings: FrameSettings | None = None) -> None:
        self.segmenter = segmenter
        settings = settings or FrameSettings()
        # (settings, thermal preparation), replaced as one: a frame in flight in another thread sees
        # the old pair or the new one, never a mix (the node applies `ros2 param set` this way).
        self._current = (settings, ThermalPreparation(settings.thermal_norm, settings.homography))

    @property
    def settings(self) -> FrameSettings:
        return self._current[0]

    def update(self, settings: FrameSettings) -> None:
        """New settings for the next frame (``ros2 param set``); the once-only notes start over
        only when the registration changes."""
        old_settings, old_thermal = self._current
        same_registration = _same_matrix(settings.homography, old_settings.homography)
        aligner = old_thermal.aligner if same_registration else None
        self._current = (settings, ThermalPreparation(settings.thermal_norm, settings.homography, aligner))

    def process_messages(self, rgb_msg: Any, thermal_msg: Any, outputs: Iterable[str] = RENDERED_OUTPUTS) -> FrameResult:
        """Decode both messages, then ``process``; a message that cannot be decoded skips the pair."""
        from taseg_ros.ros.image_codec import ImageDecodeError, decode_rgb, decode_thermal

        start = time.perf_counter()
        images = []
        for stream, decode, msg in (("rgb", decode_rgb, rgb_msg), ("thermal", decode_thermal, thermal_msg)):
            try:
                images.append(decode(msg))
            except ImageDecodeError as exc:
                return FrameResult(error=FrameNote(f"bad_{stream}", stream, f"{exc}; pair skipped", exc.reason),
                                   timings={"decode": time.perf_counter() - start})
        return self.process(*images, outputs=outputs, decode_s=time.perf_counter() - start)

    def process(
        self, rgb: np.ndarray, thermal: np.ndarray, outputs: Iterable[str] = RENDERED_OUTPUTS, decode_s: float = 0.0
    ) -> FrameResult:
        """Decoded rgb (H, W, 3) uint8 and raw thermal (any size and dtype) -> labels and the
        requested ``outputs``."""
        settings, prepare_thermal = self._current
        result = FrameResult(rgb=rgb, timings={"decode": decode_s})
        start = time.perf_counter()
        try:
            thermal01, result.notes = prepare_thermal(thermal, rgb.shape[:2])
        except ValueError as exc:  # e.g. a homography that warps this frame size out of view
            result.error = FrameNote("bad_thermal", "thermal", f"{exc}; pair skipped")
            return result
        prepared = time.perf_counter()
        try:
            prediction = self.segmenter.predict_prepared(rgb, thermal01)
        except Exception as exc:  # noqa: BLE001 - a model failure (e.g. out of memory) skips this pair only
            result.error = FrameNote("model", "model", f"model failed on a {rgb.shape[1]}x{rgb.shape[0]} pair: "
                                     f"{type(exc).__name__}: {exc}")
            return result
        inferred = time.perf_counter()
        result.labels, result.confidence = prediction.labels, prediction.confidence
        self._render(result, set(outputs), settings.overlay_alpha)
        done = time.perf_counter()
        result.timings.update(thermal=prepared - start, inference=inferred - prepared, render=done - inferred)
        result.timings["total"] = sum(result.timings[step] for step in STEPS)
        return result

    def _render(self, result: FrameResult, outputs: set[str], alpha: float) -> None:
        unknown = outputs - set(RENDERED_OUTPUTS)
        if unknown:
            raise InputError(f"unknown outputs {sorted(unknown)}; choose from {RENDERED_OUTPUTS}")
        if outputs & {"colorized", "overlay"}:
            result.colorized = colorize(result.labels, self.segmenter.class_info.palette)
            if "overlay" in outputs:
                result.overlay = overlay(result.rgb, result.colorized, alpha)


def _same_matrix(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return np.array_equal(np.asarray(a), np.asarray(b))
