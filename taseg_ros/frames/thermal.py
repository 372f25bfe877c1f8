"""Thermal frames: from what a camera topic or a file holds to the [0, 1] image on the RGB grid that
the model sees. The one implementation for every path: the node and ``taseg bag eval`` (through
``inference.pipeline.FramePipeline``), the dataset loaders (training, validation, ``taseg eval``),
``taseg predict``, export verification and the benchmarks.

The steps, in this order (``ThermalPreparation``):
  1. grey: a thermal image stored with 3 or 4 channels becomes one (``to_single_channel``, the same
     rule for topics and files);
  2. normalise on the camera's own pixels (``ThermalNormalization``), NaN/inf counted and treated as
     the coldest value;
  3. align onto the RGB pixel grid: the registration homography when there is one, else a plain
     resize when the sizes differ (``ThermalAligner``), said once.

Why normalise before aligning: a registration warp invents a border where the thermal camera saw
nothing (a narrower thermal field of view leaves part of the RGB frame uncovered). Statistics taken
after the warp would include that border: with percentile normalisation its zeros become the 1st
percentile and squeeze the real scene into the top of the range.

Why datasets keep the camera's raw thermal: ``taseg bag extract`` writes each thermal frame as the
camera sent it (its own size and bit depth, grey rule applied) and records the registration and the
normalisation in the dataset's ``classes.yaml`` (``thermal: {normalization, homography}``). The
loader then runs this same ``ThermalPreparation`` on the same pixels, so a training sample's network
input is bit-identical to what the node computes from the recorded messages (the parity tests in
``test/test_parity.py`` check it for every encoding, geometry and normalisation mode). Warping at
extraction time cannot give that: the warp would have to come before the normalisation. Public
datasets ship thermal already on the RGB grid, so for them step 3 does nothing.

numpy + OpenCV only: no torch, no ROS.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from taseg_ros.errors import InputError

THERMAL_MODES = ("auto", "fixed", "minmax", "percentile")


@dataclass(frozen=True)
class ThermalNormalization:
    """How raw thermal values (8/16-bit counts, or float temperatures) become [0, 1].

    - fixed: (x - low) / (high - low), clipped; stable over time, needs a known range.
    - minmax: per-frame min/max; always uses the full range, flickers with scene content.
    - percentile: per-frame low/high percentiles; like minmax but robust to hot spots.
    - auto: uint8 -> fixed 0..255 (the public datasets are 8-bit AGC images);
      anything else -> percentile 1..99.
    The defaults here are the node's, ``taseg bag extract``'s and every command's defaults.
    """

    mode: str = "auto"
    low: float = 0.0
    high: float = 255.0
    percentiles: tuple[float, float] = (1.0, 99.0)

    def __post_init__(self) -> None:
        if self.mode not in THERMAL_MODES:
            raise InputError(f"thermal normalization mode '{self.mode}' is not one of {THERMAL_MODES}")
        if not all(np.isfinite((self.low, self.high, *self.percentiles))):
            raise InputError(f"thermal normalization: values must be finite numbers, got range ({self.low}, {self.high}), "
                             f"percentiles {tuple(self.percentiles)}")
        if self.mode == "fixed" and not self.high > self.low:
            raise InputError(f"thermal normalization: fixed range needs high > low (got {self.low}, {self.high})")
        lo, hi = self.percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise InputError(f"thermal normalization: percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}")

    def __call__(self, thermal: np.ndarray) -> np.ndarray:
        return normalize_thermal(thermal, self)

    def to_mapping(self) -> dict:
        """The form a dataset's classes.yaml (``thermal.normalization``) and reports store."""
        return {"mode": self.mode, "low": float(self.low), "high": float(self.high),
                "percentiles": [float(p) for p in self.percentiles]}


def normalize_thermal(thermal: np.ndarray, norm: ThermalNormalization | None = None) -> np.ndarray:
    """Raw single-channel thermal (H, W) -> float32 (H, W) in [0, 1].

    Non-finite values (NaN/inf from float cameras) are excluded from the statistics
    and set to 0 in the output.
    """
    norm = norm or ThermalNormalization()
    t = np.asarray(thermal)
    if t.ndim == 3 and t.shape[2] == 1:
        t = t[:, :, 0]
    if t.ndim != 2:
        raise InputError(f"thermal image must be single-channel (H, W), got shape {t.shape}")
    mode = norm.mode
    if mode == "auto":
        mode = "fixed" if t.dtype == np.uint8 else "percentile"
    x = t.astype(np.float32, copy=False)
    finite = np.isfinite(x)
    all_finite = bool(finite.all())
    if mode == "fixed":
        low, high = (0.0, 255.0) if norm.mode == "auto" else (norm.low, norm.high)
    else:
        values = x if all_finite else x[finite]
        if values.size == 0:
            return np.zeros(t.shape, np.float32)
        if mode == "minmax":
            low, high = float(values.min()), float(values.max())
        else:
            low, high = (float(v) for v in np.percentile(values, norm.percentiles))
    scale = 1.0 / (high - low) if high > low else 0.0
    if not all_finite:
        x = np.where(finite, x, np.float32(low))  # NaN/inf -> the coldest value, without NaN arithmetic
    return np.clip((x - low) * scale, 0.0, 1.0).astype(np.float32, copy=False)


def to_single_channel(image: np.ndarray, source: str = "thermal image") -> np.ndarray:
    """The one grey rule, for topics (bgr8/rgb8 thermal) and files (KAIST lwir JPEGs) alike: a thermal
    image with 3 or 4 channels -> (H, W) = the mean of its first three channels, rounded back to the
    image's own dtype (float images stay float32).

    Keeping the dtype keeps ``auto`` normalisation meaning one thing: an 8-bit image is fixed 0..255
    however it was stored. For grey replicated into the channels (the case this rule exists for) the
    mean is exact; for JPEG channel noise rounding moves a value by at most half a count.
    ``source`` names the file or topic in the error."""
    t = np.asarray(image)
    if t.ndim == 2:
        return t
    if t.ndim == 3 and t.shape[2] == 1:
        return t[:, :, 0]
    if t.ndim == 3 and t.shape[2] in (3, 4):
        mean = t[:, :, :3].mean(axis=2, dtype=np.float32)
        if t.dtype.kind == "f":
            return mean
        return np.rint(mean).astype(t.dtype)
    raise InputError(f"{source}: cannot read a thermal image of shape {t.shape}")


# Fraction of the RGB frame the warped thermal frame must cover; below it every thermal input is
# (nearly) black and the model silently runs on RGB alone.
MIN_HOMOGRAPHY_COVERAGE = 0.01
# |det(H / h33)| below this: a 1e6-pixel thermal frame would cover under a thousandth of a pixel.
MIN_HOMOGRAPHY_DETERMINANT = 1e-9


def validate_homography(matrix, thermal_hw: tuple[int, int] | None = None, rgb_hw: tuple[int, int] | None = None) -> np.ndarray:
    """A thermal -> RGB pixel homography as a (3, 3) float64 array, or InputError with the reason:
    not 9 finite numbers, h33 = 0 (the thermal origin maps to infinity), not invertible, or (when
    both frame sizes are given) the warped thermal frame covers (almost) none of the RGB frame."""
    h = np.asarray(matrix, dtype=np.float64)
    if h.size != 9:
        raise InputError(f"thermal homography: expected 9 numbers (3x3 row-major, thermal px -> RGB px), got {h.size}")
    h = h.reshape(3, 3)
    if not np.isfinite(h).all():
        raise InputError("thermal homography: contains NaN/inf")
    if not h.any():
        raise InputError("thermal homography: all zeros (the identity is 1 0 0 0 1 0 0 0 1)")
    if h[2, 2] == 0.0:
        raise InputError("thermal homography: h33 is 0 (the thermal origin maps to infinity); a registration "
                         "homography has h33 = 1")
    # Invertible means det(H) != 0. The condition number is no test of that in pixel units: a pure
    # translation by 1e6 px has cond ~1e12 and is exactly invertible (it is an off-frame problem,
    # which the coverage test below names). det(H / h33) is unit-free: the factor by which the map
    # scales areas at the thermal origin; ~0 means the thermal plane collapses onto a line or a point.
    det = float(np.linalg.det(h / h[2, 2]))
    if not abs(det) > MIN_HOMOGRAPHY_DETERMINANT:
        raise InputError(f"thermal homography: not invertible (determinant {det:.3g}: it maps the thermal frame onto "
                         f"a line or a point) {h.ravel().tolist()}")
    if thermal_hw is not None and rgb_hw is not None:
        (th, tw), (rh, rw) = thermal_hw, rgb_hw
        coverage = homography_coverage(h, thermal_hw, rgb_hw)
        if coverage < MIN_HOMOGRAPHY_COVERAGE:
            raise InputError(
                f"thermal homography: maps the {tw}x{th} thermal frame onto {100 * coverage:.2g}% of the {rw}x{rh} RGB "
                "frame, so every thermal input would be black; check its translation and direction (thermal px -> RGB px)"
            )
    return h


def homography_coverage(h: np.ndarray, thermal_hw: tuple[int, int], rgb_hw: tuple[int, int]) -> float:
    """Share of the RGB frame the thermal frame covers once warped by ``h`` (thermal px -> RGB px)."""
    (th, tw), (rh, rw) = thermal_hw, rgb_hw
    covered = cv2.warpPerspective(np.ones((th, tw), np.uint8), np.asarray(h, np.float64), (rw, rh), flags=cv2.INTER_NEAREST)
    return float(np.count_nonzero(covered)) / covered.size


def describe_sizes(size: tuple[int, int, int, int]) -> str:
    """(thermal W, H, RGB W, H) as words."""
    tw, th, rw, rh = size
    return f"thermal {tw}x{th} -> RGB {rw}x{rh}"


def check_registration_size(made_for, thermal_hw: tuple[int, int], rgb_hw: tuple[int, int]) -> None:
    """A registration applies only to the frame sizes it was made for (``made_for``: thermal W, H,
    RGB W, H, as `taseg bag calibrate`/`refine` record it; None: not recorded, not checked)."""
    if made_for is None:
        return
    here = (thermal_hw[1], thermal_hw[0], rgb_hw[1], rgb_hw[0])
    if tuple(made_for) != here:
        raise InputError(f"thermal homography: made for {describe_sizes(made_for)}, but these frames are "
                         f"{describe_sizes(here)}; calibrate (or refine) the registration for these cameras")


def align_thermal(thermal: np.ndarray, rgb_hw: tuple[int, int], homography: np.ndarray | None = None) -> np.ndarray:
    """Bring a thermal image onto the RGB pixel grid: warp by a 3x3 homography (thermal -> RGB pixel
    coordinates; pixels it does not reach become 0) when given, else a plain (bilinear) resize."""
    h, w = rgb_hw
    if homography is not None:
        hmat = np.asarray(homography, dtype=np.float64).reshape(3, 3)
        return cv2.warpPerspective(thermal, hmat, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    if thermal.shape[:2] == (h, w):
        return thermal
    return cv2.resize(thermal, (w, h), interpolation=cv2.INTER_LINEAR)


class ThermalAligner:
    """Puts thermal frames on the RGB grid (``align_thermal``) and returns a note the first time it
    has to, so the node and the tools say it once, not once per frame."""

    def __init__(self, homography: np.ndarray | None = None, made_for: tuple[int, int, int, int] | None = None) -> None:
        self.homography = None if homography is None else validate_homography(homography)
        self.made_for = None if homography is None or made_for is None else tuple(made_for)  # thermal W, H, RGB W, H
        self.noted = False
        self.checked_sizes = None  # (thermal hw, rgb hw) the homography was last validated for

    def __call__(self, thermal: np.ndarray, rgb_hw: tuple[int, int]) -> tuple[np.ndarray, str | None]:
        if thermal.shape[:2] == tuple(rgb_hw) and self.homography is None:
            return thermal, None
        sizes = (tuple(thermal.shape[:2]), tuple(rgb_hw))
        if self.homography is not None and sizes != self.checked_sizes:
            check_registration_size(self.made_for, *sizes)  # made for other cameras
            validate_homography(self.homography, *sizes)  # raises for a frame warped out of view
            self.checked_sizes = sizes
        note = None
        if not self.noted:
            self.noted = True
            how = "warped by the thermal homography" if self.homography is not None else "resized"
            note = (
                f"thermal frames ({thermal.shape[1]}x{thermal.shape[0]}) are {how} to the RGB frame "
                f"({rgb_hw[1]}x{rgb_hw[0]})"
            )
        return align_thermal(thermal, rgb_hw, self.homography), note


@dataclass(frozen=True)
class FrameNote:
    """Something worth telling the user about a frame. ``kind`` groups notes for log throttling and
    counting: ``nonfinite_thermal`` (some NaN/inf pixels), ``blank_thermal`` (no finite pixel at all),
    ``thermal_out_of_range`` (a fixed range the whole frame lies outside of), ``thermal_aligned``,
    ``input_resized`` (frames over max_input_size), ``bad_rgb``, ``bad_thermal``, ``model``."""

    kind: str
    stream: str  # "rgb", "thermal" or "model"
    text: str
    detail: str = ""  # finer kind for log throttling, e.g. the ImageDecodeError reason


class ThermalPreparation:
    """Raw thermal (any channel count, dtype and size) -> float32 [0, 1] on the RGB grid, plus notes:
    the steps of the module docstring. One instance per stream or dataset: the alignment note is
    said once per instance."""

    def __init__(
        self, norm: ThermalNormalization | None = None, homography: np.ndarray | None = None,
        aligner: ThermalAligner | None = None, made_for: tuple[int, int, int, int] | None = None,
    ) -> None:
        self.norm = norm or ThermalNormalization()
        self.aligner = aligner or ThermalAligner(homography, made_for)

    @property
    def homography(self) -> np.ndarray | None:
        return self.aligner.homography

    def __call__(self, thermal: np.ndarray, rgb_hw: tuple[int, int]) -> tuple[np.ndarray, list[FrameNote]]:
        thermal = to_single_channel(thermal)
        notes = []
        if thermal.dtype.kind == "f":
            notes += _nonfinite_notes(thermal)
        normalized = normalize_thermal(thermal, self.norm)
        if self.norm.mode == "fixed":
            notes += _out_of_range_notes(thermal, normalized, self.norm)
        thermal01, aligned = self.aligner(normalized, rgb_hw)
        if aligned is not None:
            notes.append(FrameNote("thermal_aligned", "thermal", aligned))
        return thermal01, notes


def _out_of_range_notes(thermal: np.ndarray, normalized: np.ndarray, norm: ThermalNormalization) -> list[FrameNote]:
    """A fixed range the whole frame lies outside of (a 0..255 range on 16-bit counts, a range in
    another unit) turns every pixel 0 or every pixel 1: the model then sees no thermal image at all."""
    if normalized.size == 0 or 0.0 < float(normalized.max()) and float(normalized.min()) < 1.0:
        return []
    finite = thermal[np.isfinite(thermal)] if thermal.dtype.kind == "f" else thermal
    if finite.size == 0:
        return []  # no finite pixel: _nonfinite_notes says so
    side = "at or below" if float(normalized.max()) <= 0.0 else "at or above"
    return [FrameNote("thermal_out_of_range", "thermal",
                      f"every thermal pixel ({float(finite.min()):g}..{float(finite.max()):g}) is {side} the fixed range "
                      f"{norm.low:g}..{norm.high:g}: the thermal input is blank, so the frame is segmented from RGB "
                      "alone; give the camera's range (thermal_range, --thermal-range) or percentile normalisation")]


def _nonfinite_notes(thermal: np.ndarray) -> list[FrameNote]:
    finite = np.isfinite(thermal)
    good = int(np.count_nonzero(finite))
    if good == finite.size:
        return []
    if good == 0:
        return [FrameNote("blank_thermal", "thermal", f"no finite thermal pixel (all {finite.size} are NaN/inf): "
                          "used as a blank thermal image, so the frame is segmented from RGB alone")]
    return [FrameNote("nonfinite_thermal", "thermal", f"{finite.size - good} of {finite.size} pixels are NaN/inf; "
                      "they are excluded from normalisation and treated as the coldest value")]
