"""One RGB-T frame pair, end to end, without ROS: decode -> prepare thermal (grey, normalise, align to
the RGB grid) -> predict -> colourise/overlay, with per-step timings and notes.

The node (``ros/node.py``), ``taseg bag eval``, ``taseg predict``, the demo and the ROS bench all run
frames through ``FramePipeline``, so they do the same work and report the same timings and the same
notes for the same input. Every step but the network is the frame layer's (``taseg_ros.frames``);
the dataset loaders run the same ``ThermalPreparation``, so training sees what the node serves.

Messages are duck-typed (``frames.codec``): rclpy messages, ``rosbags`` messages and plain objects
with the sensor_msgs fields all decode the same way.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from taseg_ros.frames.blank import blank_rgb, blank_thermal
from taseg_ros.frames.codec import ImageDecodeError, decode_pair
from taseg_ros.frames.render import COLOUR_OUTPUTS, RENDERED_OUTPUTS, check_outputs, colorize, overlay
from taseg_ros.frames.settings import STEPS, FrameSettings
from taseg_ros.frames.thermal import FrameNote
from taseg_ros.inference.segmenter import Segmenter

# Notes the pipeline gives once (per FramePipeline, i.e. per configure of the node): facts about the
# setup, not problems of a frame; the node logs them once and does not count them as errors.
SAID_ONCE = frozenset({"thermal_aligned", "input_resized"})

@dataclass
class FrameResult:
    """What one pair produced. ``error`` is set (and the images are None) when the pair was skipped."""

    labels: np.ndarray | None = None
    confidence: np.ndarray | None = None
    entropy: np.ndarray | None = None  # with process(..., entropy=True): Prediction.entropy
    colorized: np.ndarray | None = None
    overlay: np.ndarray | None = None
    rgb: np.ndarray | None = None
    # seconds per STEPS entry, and "total"; with entropy=True also "entropy" (kept out of "inference"
    # and "total": the node does not compute it, and bag eval's per-pair times are the node's)
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[FrameNote] = field(default_factory=list)
    error: FrameNote | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def output(self, name: str) -> np.ndarray | None:
        """An output of ``frames.render.OUTPUTS`` by name (None when it was not rendered)."""
        return getattr(self, name)


class FramePipeline:
    """Runs pairs through a ``Segmenter`` with one set of ``FrameSettings``."""

    def __init__(self, segmenter: Segmenter, settings: FrameSettings | None = None) -> None:
        self.segmenter = segmenter
        settings = settings or FrameSettings()
        # (settings, thermal preparation), replaced as one: a frame in flight in another thread sees
        # the old pair or the new one, never a mix (the node applies `ros2 param set` this way).
        self._current = (settings, settings.thermal_preparation())
        self._resize_noted = False

    @property
    def settings(self) -> FrameSettings:
        return self._current[0]

    def update(self, settings: FrameSettings) -> None:
        """New settings for the next frame (``ros2 param set``); the once-only notes start over
        only when the registration changes."""
        old_settings, old_thermal = self._current
        thermal = settings.thermal_preparation()
        if settings.same_registration(old_settings):
            thermal.aligner = old_thermal.aligner
        self._current = (settings, thermal)

    def process_messages(self, rgb_msg: Any, thermal_msg: Any, outputs: Iterable[str] = RENDERED_OUTPUTS,
                         entropy: bool = False, rgb_hw: tuple[int, int] | None = None) -> FrameResult:
        """Decode both messages, then ``process``; a message that cannot be decoded skips the pair.
        A missing message (None: the node's fallback for a silent camera) is blanked
        (``frames.blank``): the thermal input as evaluation blanks it, RGB as a black ``rgb_hw`` frame."""
        start = time.perf_counter()
        try:
            rgb, thermal = decode_pair(rgb_msg, thermal_msg)
        except ImageDecodeError as exc:
            return FrameResult(error=FrameNote(f"bad_{exc.stream}", exc.stream, f"{exc}; pair skipped", exc.reason),
                               timings={"decode": time.perf_counter() - start})
        rgb = blank_rgb(rgb_hw) if rgb is None else rgb
        return self.process(rgb, thermal, outputs=outputs, decode_s=time.perf_counter() - start, entropy=entropy)

    def process(
        self, rgb: np.ndarray, thermal: np.ndarray | None, outputs: Iterable[str] = RENDERED_OUTPUTS,
        decode_s: float = 0.0, entropy: bool = False,
    ) -> FrameResult:
        """Decoded rgb (H, W, 3) uint8 and raw thermal (any size and dtype; None: blanked) -> labels
        and the requested ``outputs``; ``entropy``: also the normalised entropy map (timed on its own)."""
        settings, prepare_thermal = self._current
        wanted = check_outputs(outputs)
        result = FrameResult(rgb=rgb, timings={"decode": decode_s})
        start = time.perf_counter()
        try:
            if thermal is None:
                thermal01 = blank_thermal(rgb.shape[:2])
            else:
                thermal01, result.notes = prepare_thermal(thermal, rgb.shape[:2])
        except ValueError as exc:  # e.g. a homography that warps this frame size out of view
            result.error = FrameNote("bad_thermal", "thermal", f"{exc}; pair skipped")
            return result
        prepared = time.perf_counter()
        self._note_input_resize(rgb.shape[:2], result.notes)
        try:
            prediction = self.segmenter.predict_prepared(rgb, thermal01, return_entropy=entropy)
        except Exception as exc:  # noqa: BLE001 - a model failure (e.g. out of memory) skips this pair only
            result.error = FrameNote("model", "model", f"model failed on a {rgb.shape[1]}x{rgb.shape[0]} pair: "
                                     f"{type(exc).__name__}: {exc}")
            return result
        inferred = time.perf_counter()
        result.labels, result.confidence, result.entropy = prediction.labels, prediction.confidence, prediction.entropy
        self._render(result, wanted, settings.overlay_alpha)
        done = time.perf_counter()
        result.timings.update(thermal=prepared - start, inference=inferred - prepared - prediction.entropy_s,
                              render=done - inferred)
        if entropy:
            result.timings["entropy"] = prediction.entropy_s
        result.timings["total"] = sum(result.timings[step] for step in STEPS)
        return result

    def _note_input_resize(self, frame_hw: tuple[int, int], notes: list[FrameNote]) -> None:
        """Say once that frames are larger than the network's input limit (max_input_size)."""
        if self._resize_noted:
            return
        geometry = self.segmenter.transform.geometry(*frame_hw)
        if geometry.capped:
            self._resize_noted = True
            (h, w), (rh, rw) = geometry.original_hw, geometry.resized_hw
            notes.append(FrameNote(
                "input_resized", "model",
                f"{w}x{h} frames are larger than max_input_size ({self.segmenter.transform.max_input_size} px, the "
                f"longest side): the network sees them at {rw}x{rh} and the labels are resized back to {w}x{h}"))

    def _render(self, result: FrameResult, outputs: set[str], alpha: float) -> None:
        if outputs & set(COLOUR_OUTPUTS):
            result.colorized = colorize(result.labels, self.segmenter.class_info.palette)
            if "overlay" in outputs:
                result.overlay = overlay(result.rgb, result.colorized, alpha)
