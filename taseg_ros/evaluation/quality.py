"""Label-free quality of a segmentation over a recording: what can be said about a model's output
without ground truth. Torch-free (numpy + OpenCV): ``taseg bag eval`` and the node share it.

Per frame (``FrameQuality``):
  - ``mean_confidence``, ``p5_confidence``: mean and 5th percentile over the pixels of the chosen
    class's probability (``Prediction.confidence``);
  - ``low_confidence_share``: share of pixels whose confidence is below a threshold (default 0.5);
  - ``entropy``: mean per-pixel entropy of the class probabilities divided by log K (0: one class
    certain everywhere, 1: all K classes equally likely); the map is the Segmenter's
    (``Prediction.entropy``, computed from the softmax it already holds);
  - ``class_shares``: share of the frame's pixels per class (class distribution over time);
  - temporal consistency with the previous processed frame: ``flicker`` (share of pixels whose label
    changed), ``flicker_compensated`` (the same after warping the previous labels along the dense
    optical flow between the two RGB frames, over the pixels whose flow stays inside the frame),
    and ``class_flicker`` (per class, 1 - IoU of that class's masks, previous warped vs current;
    None where the class is in neither frame). None on the first frame;
  - ``thermal_reliance`` (optional): share of pixels whose label changes when the thermal input is
    blanked (a second forward, done by the caller);
  - ``baseline_agreement`` (optional): share of pixels where a baseline model chose the same class.

Over a recording (``RecordingQuality``): the mean of each figure, per-class flicker and class
shares, and the worst segments (time ranges) of the figures where high is bad.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from taseg_ros.evaluation.figures import (
    DEFAULT_LOW_CONFIDENCE,
    DEFAULT_SEGMENT_WINDOW_S,
    DEFAULT_WORST_SEGMENTS,
    FIGURES,
    LOW_PERCENTILE,
    WORST_SEGMENT_FIGURES,
)


def confidence_figures(confidence: np.ndarray, low_confidence: float = DEFAULT_LOW_CONFIDENCE,
                       percentile: bool = True) -> dict[str, float | None]:
    """Mean, 5th percentile (with ``percentile``: a partial sort, the costly part) and the share
    below ``low_confidence`` of a (H, W) confidence map."""
    values = confidence.reshape(-1)
    return {
        "mean_confidence": float(values.mean(dtype=np.float64)),
        "p5_confidence": float(np.percentile(values, LOW_PERCENTILE)) if percentile else None,
        "low_confidence_share": float(np.count_nonzero(values < low_confidence)) / values.size,
    }


def disagreement(labels_a: np.ndarray, labels_b: np.ndarray) -> float:
    """Share of pixels whose labels differ (thermal reliance, model agreement, raw flicker)."""
    return float(np.count_nonzero(labels_a != labels_b)) / labels_a.size


def class_shares(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Share of the pixels per class id 0..K-1."""
    return np.bincount(labels.reshape(-1), minlength=num_classes)[:num_classes] / labels.size


def transition_counts(previous: np.ndarray, current: np.ndarray, num_classes: int, valid: np.ndarray | None = None):
    """(K, K) counts of (previous label, current label) over the valid pixels: the flicker and the
    per-class flicker both come from it (one pass over the pixels)."""
    prev = previous.reshape(-1).astype(np.int64)
    cur = current.reshape(-1).astype(np.int64)
    if valid is not None:
        keep = valid.reshape(-1)
        prev, cur = prev[keep], cur[keep]
    return np.bincount(prev * num_classes + cur, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def class_flicker(counts: np.ndarray) -> list[float | None]:
    """Per class, 1 - IoU between its previous (warped) and current masks; None where it is in neither."""
    inter = np.diag(counts).astype(np.float64)
    union = counts.sum(axis=0) + counts.sum(axis=1) - inter
    return [None if u == 0 else float(1.0 - i / u) for i, u in zip(inter, union)]


class MotionCompensation:
    """Warps the previous frame's labels onto the current frame along the dense optical flow of the
    RGB frames (current -> previous, so each current pixel looks up where it came from).

    Method: OpenCV's DIS optical flow (Kroeger et al. 2016), preset FAST. Measured on a real
    640x480 MSRS frame translated by 4 px, one CPU thread: DIS FAST 4.9 ms with a mean flow error
    of 0.005 px, DIS MEDIUM 22.5 ms (0.004 px), Farneback (pyramid 3 levels, window 15) 54 ms with
    1.1 px mean error (it smears the flow at borders and in flat regions). DIS FAST is ten times
    faster at a fraction of the error, so it is the one used here.
    Labels are warped with nearest-neighbour remapping (a class id is never blended); pixels whose
    flow points outside the previous frame are left out of the comparison."""

    MIN_SIZE = 12  # DIS refuses frames with a side below 12 px (its patches and pyramid)

    def __init__(self) -> None:
        self._flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
        self._grid: tuple[np.ndarray, np.ndarray] | None = None

    def warp(self, previous_labels: np.ndarray, previous_gray: np.ndarray, gray: np.ndarray):
        """(previous labels on the current frame's grid, mask of the pixels that have a source)."""
        h, w = gray.shape
        flow = self._flow.calc(gray, previous_gray, None)
        if self._grid is None or self._grid[0].shape != (h, w):
            xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
            self._grid = (xs, ys)
        map_x = self._grid[0] + flow[..., 0]
        map_y = self._grid[1] + flow[..., 1]
        warped = cv2.remap(previous_labels, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
        # Nearest remapping rounds: a source within half a pixel of the border is inside the frame.
        valid = (map_x > -0.5) & (map_x < w - 0.5) & (map_y > -0.5) & (map_y < h - 0.5)
        return warped, valid


@dataclass
class FrameQuality:
    """The label-free figures of one frame (see the module docstring); None: not computed."""

    mean_confidence: float
    p5_confidence: float | None
    low_confidence_share: float
    class_shares: list[float] | None = None
    entropy: float | None = None
    flicker: float | None = None
    flicker_compensated: float | None = None
    class_flicker: list[float | None] | None = None
    thermal_reliance: float | None = None
    baseline_agreement: float | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class QualityTracker:
    """Per-frame figures of a stream of predictions, keeping the previous frame for the flicker.

    ``motion``: also the motion-compensated flicker (needs the RGB frames; DIS flow, ~5 ms at
    640x480 on one CPU core); ``detailed``: also the 5th percentile confidence, the class shares and
    the per-class flicker. The node runs it with neither (mean confidence, low-confidence share and
    raw flicker: three passes over the pixels, about a millisecond at 640x480)."""

    def __init__(self, num_classes: int, low_confidence: float = DEFAULT_LOW_CONFIDENCE, *, motion: bool = True,
                 detailed: bool = True) -> None:
        if not 0.0 < low_confidence <= 1.0:
            raise ValueError(f"low-confidence threshold must be in (0, 1], got {low_confidence}")
        self.num_classes, self.low_confidence = num_classes, low_confidence
        self.detailed = detailed
        self.motion = MotionCompensation() if motion else None
        self._previous: tuple[np.ndarray, np.ndarray | None] | None = None  # (labels, grey RGB)

    def reset(self) -> None:
        """Forget the previous frame (the next one has no flicker)."""
        self._previous = None

    def update(self, labels: np.ndarray, confidence: np.ndarray, entropy: np.ndarray | None = None,
               rgb: np.ndarray | None = None) -> FrameQuality:
        quality = FrameQuality(**confidence_figures(confidence, self.low_confidence, percentile=self.detailed))
        if self.detailed:
            quality.class_shares = class_shares(labels, self.num_classes).tolist()
        if entropy is not None:
            quality.entropy = float(entropy.mean(dtype=np.float64))
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if self.motion is not None and rgb is not None else None
        previous = self._previous
        if previous is not None and previous[0].shape == labels.shape:
            self._flicker(quality, previous, labels, gray)
        self._previous = (labels, gray)
        return quality

    def _flicker(self, quality: FrameQuality, previous, labels: np.ndarray, gray: np.ndarray | None) -> None:
        prev_labels, prev_gray = previous
        quality.flicker = disagreement(prev_labels, labels)
        if gray is None or prev_gray is None or min(gray.shape) < MotionCompensation.MIN_SIZE:
            return
        warped, valid = self.motion.warp(prev_labels, prev_gray, gray)
        if not self.detailed:
            kept = np.count_nonzero(valid)
            quality.flicker_compensated = float(np.count_nonzero((warped != labels) & valid)) / kept if kept else None
            return
        counts = transition_counts(warped, labels, self.num_classes, valid)
        total = counts.sum()
        quality.flicker_compensated = float(1.0 - np.trace(counts) / total) if total else None
        quality.class_flicker = class_flicker(counts)


def worst_segments(times_s: np.ndarray, badness: np.ndarray, window_s: float = DEFAULT_SEGMENT_WINDOW_S,
                   top: int = DEFAULT_WORST_SEGMENTS) -> list[dict]:
    """The ``top`` non-overlapping time windows of length ``window_s`` with the highest mean badness.

    Every frame starts a candidate window [t, t + window_s) holding the frames in it (NaN frames are
    skipped); only windows that fit in the recording are candidates (a window of the last few frames
    would rank a single bad frame as a segment), unless the recording is shorter than one window.
    Candidates are taken greedily, highest mean first, skipping those overlapping a taken one.
    Returns [{start_s, end_s, mean, frames}] (end_s: the last frame's time in the window)."""
    times = np.asarray(times_s, dtype=np.float64)
    values = np.asarray(badness, dtype=np.float64)
    known = ~np.isnan(values)
    times, values = times[known], values[known]
    if not times.size or top <= 0:
        return []
    ends = np.searchsorted(times, times + window_s, side="left")  # exclusive index of each window's end
    sums = np.concatenate([[0.0], np.cumsum(values)])
    counts = ends - np.arange(times.size)
    means = (sums[ends] - sums[: times.size]) / counts
    period = float(np.median(np.diff(times))) if times.size > 1 else 0.0
    fits = np.flatnonzero(times + window_s <= times[-1] + period + 1e-9)
    candidates = fits if fits.size else np.array([0])
    taken: list[dict] = []
    for start in candidates[np.argsort(-means[candidates], kind="stable")]:
        lo, hi = times[start], times[ends[start] - 1]
        if any(lo <= seg["end_s"] and seg["start_s"] <= hi for seg in taken):
            continue
        taken.append({"start_s": float(lo), "end_s": float(hi), "mean": float(means[start]),
                      "frames": int(counts[start])})
        if len(taken) == top:
            break
    return taken


@dataclass
class RecordingQuality:
    """The per-frame figures of a recording with their times (seconds from the start), summarised."""

    class_names: tuple[str, ...]
    low_confidence: float = DEFAULT_LOW_CONFIDENCE
    times_s: list[float] = field(default_factory=list)
    frames: list[FrameQuality] = field(default_factory=list)

    def add(self, time_s: float, quality: FrameQuality) -> None:
        self.times_s.append(float(time_s))
        self.frames.append(quality)

    def series(self, figure: str) -> np.ndarray:
        """One figure over the frames (NaN where it was not computed)."""
        return np.array([_nan(getattr(q, figure)) for q in self.frames], dtype=np.float64)

    def summary(self) -> dict[str, float | None]:
        """The mean of every figure over the frames that have it (None: no frame has it)."""
        return {name: _mean(self.series(name)) for name in FIGURES}

    def class_summary(self) -> dict[str, dict[str, float | None]]:
        """Per class: mean share of the pixels and mean flicker (1 - IoU after motion compensation)."""
        k = len(self.class_names)
        shares = np.array([q.class_shares for q in self.frames if q.class_shares is not None],
                          dtype=np.float64).reshape(-1, k)
        flicker = np.array([[_nan(v) for v in q.class_flicker] for q in self.frames if q.class_flicker is not None],
                           dtype=np.float64).reshape(-1, k)
        return {
            name: {"share": _mean(shares[:, i]), "flicker_compensated": _mean(flicker[:, i])}
            for i, name in enumerate(self.class_names)
        }

    def worst(self, window_s: float = DEFAULT_SEGMENT_WINDOW_S, top: int = DEFAULT_WORST_SEGMENTS) -> dict[str, list]:
        """Worst segments per figure of ``WORST_SEGMENT_FIGURES`` that some frame has."""
        out = {}
        for name, sign in WORST_SEGMENT_FIGURES:
            values = self.series(name)
            if not np.isnan(values).all():
                segments = worst_segments(np.array(self.times_s), sign * values, window_s, top)
                for segment in segments:
                    segment["mean"] *= sign  # the figure's own value, not the badness
                out[name] = segments
        return out

    def to_dict(self, window_s: float = DEFAULT_SEGMENT_WINDOW_S, top: int = DEFAULT_WORST_SEGMENTS) -> dict:
        return {
            "frames": len(self.frames),
            "low_confidence_threshold": self.low_confidence,
            "summary": self.summary(),
            "classes": self.class_summary(),
            "worst_segments": self.worst(window_s, top),
            "segment_window_s": window_s,
        }


def _nan(value) -> float:
    return math.nan if value is None else float(value)


def _mean(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else None
