"""Target-free registration of a thermal camera to an RGB camera: refine a thermal -> RGB homography on
ordinary frames, score how well a homography aligns a pair, and turn that into "looks off by about N
px". The target-based calibration that gives the starting homography is ``frames/calibration.py``.

Why gradient images: a thermal camera sees emitted heat, an RGB camera reflected light, so their raw
intensities are unrelated (a warm black car is bright in thermal and dark in RGB; a cold white wall
the reverse) and can even be inverted from one object to the next. What the two share is *where*
things change: object outlines, the edges between surfaces of different material or temperature.
The magnitude of the image gradient is high on those outlines in both cameras whatever the sign of
the contrast, so correlating gradient magnitudes measures alignment where correlating intensities
(or plain ECC on raw images) measures nothing useful (``structure_image`` says why it is also
normalised locally).

Why ECC (``cv2.findTransformECC``): it maximises the zero-mean normalised correlation of the two
gradient images over the warp parameters directly (gain and offset between the cameras do not
matter), it is in OpenCV, and coarse to fine on an image pyramid it converges from starts 10-20 px
off. It corrects the given homography by a translation and then affine warps (``MOTIONS``), not a
full MOTION_HOMOGRAPHY: on one real frame the two perspective parameters chased texture and drifted
tens of px. Mutual information would also cope with unrelated intensities, but has no maintained
OpenCV implementation and is slower per iteration. A single pair can have too little shared
structure: ``refine_homography`` then says so and keeps the start; ``bag refine`` combines many.

ECC climbs to the nearest correlation peak, so the coarsest level first searches translations
exhaustively (``SEARCH_RADIUS``). Measured (``scripts/bench_registration.py``, 20 real MSRS pairs, a
480x360 camera knocked 10-20 px and up to 1 degree): one pair at a time, 45 of 60 knocks end within
2 px of that pair's own best alignment (median 1.1 px), 9 over 5 px; a recording (one knock,
``bag refine``'s median over 8 sampled pairs) ends within 2 px of their consensus in 10 of 10 knocks
(median 1.1 px; all 20 pairs: 0.9 px).
One pair's own best alignment sits a median 3 px from the consensus of all 20 (its scene's depths
and content): a registration is a property of the rig, so ``bag refine`` combines many pairs.

Coordinates: a homography maps thermal pixels to RGB pixels (the node's ``thermal_homography``).
numpy + OpenCV only: no torch, no ROS.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from taseg_ros.errors import InputError
from taseg_ros.frames.thermal import ThermalNormalization, normalize_thermal, to_single_channel

# Processing widths (RGB pixels) of the scoring and of the finest refinement level. Scoring runs on
# every check of the node: small. Refinement must reach ~1 px at full size: the full width up to 640.
SCORE_WIDTH = 160
REFINE_WIDTH = 640
# Gaussian blur (sigma, in processing pixels) before the gradient: thermal optics blur edges over
# a pixel or two, and the blur widens the correlation peak so ECC converges from further off.
GRADIENT_SIGMA = 1.5
# How far inside the thermal frame's footprint ECC and the score look (share of the RGB width):
# the refinement's margin must exceed how far the warp can move while it converges (~20 px at 640).
REFINE_MARGIN = 0.05
SCORE_MARGIN = 0.04
# The score compares the correlation at the registration with the best one among the translations
# up to SCORE_RADIUS processing px away (32 RGB px at 640) but at least SCORE_RING px (8 RGB px) away.
# Below SCORE_WARN (0: the structure correlates better somewhere else) a pair looks misregistered.
# Measured on the 20 MSRS pairs (scripts/bench_registration.py): each pair's own alignment min
# -0.08 (one pair), median 0.04; knocked 10-40 px: 60 of 60 below 0, median -0.18; the dataset's
# registration as shipped (3-6 px off): median 0.03. One pair decides little: the node warns on the
# median of its last checks.
SCORE_RADIUS = 8
SCORE_RING = 2
SCORE_WARN = 0.0
# Share of the RGB frame the two cameras must both see for a score or a refinement to mean anything.
MIN_OVERLAP = 0.05
# The largest correction (mean px over the thermal frame, as a share of the RGB width: 38 px at
# 640) a refinement may make; the margin of the ECC region and the pyramid reach about this far,
# and beyond it a single frame's correlation has false peaks (one MSRS pair "converged" 66 px away).
MAX_SHIFT = 0.06
# How far the coarse exhaustive translation search looks before ECC (share of the RGB width: 22 px
# at 640). ECC alone climbs to the nearest peak and from 15 px off stopped on a false one or failed
# on 6 of 20 real MSRS pairs (one knock each); searching first, 4 of 20 (scripts/bench_registration.py).
# Beyond the 10-20 px of a knocked camera, short of the false peaks one frame's correlation has
# 40-60 px away.
SEARCH_RADIUS = 0.035
# A registration the refinement of a few pairs moves by less than this (mean RGB px over the thermal
# frame) "looks right": what `bag info`'s check (3 pairs at 320 px, combined) can resolve. Measured on
# a recording of the 20 MSRS pairs: registered at their consensus it reads 2.6 px (their scenes
# disagree by ~3 px: depth, content); knocked 10-20 px it reads 10-22 px.
LOOKS_RIGHT_PX = 4.0
THERMAL_PERCENTILES = ThermalNormalization("percentile")


def grey01(image: np.ndarray, thermal: bool) -> np.ndarray:
    """RGB (H, W, 3) uint8 -> float32 grey in [0, 1]; raw thermal (any dtype/channels) -> float32
    [0, 1] by its 1st..99th percentiles (robust to hot spots, any bit depth). Then CLAHE on both:
    night RGB and flat thermal scenes keep their outlines only in local contrast."""
    if thermal:
        grey = normalize_thermal(to_single_channel(image), THERMAL_PERCENTILES)
    else:
        img = np.asarray(image)
        if img.ndim == 3:
            img = cv2.cvtColor(img[:, :, :3], cv2.COLOR_RGB2GRAY)
        grey = img.astype(np.float32) / (255.0 if img.dtype == np.uint8 else max(float(img.max()), 1e-6))
    u8 = np.clip(grey * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(u8).astype(np.float32) / 255.0


def structure_image(grey: np.ndarray, sigma: float = GRADIENT_SIGMA) -> np.ndarray:
    """Gradient magnitude of a blurred grey image, divided by its local mean (float32): what RGB and
    thermal share (see the module docstring). The local normalisation matters: raw gradient
    magnitude is dominated by a few high-contrast RGB textures the thermal image does not have, and
    ECC on it drifted 30-100 px on real night frames where the normalised one stays within ~2 px."""
    blurred = cv2.GaussianBlur(grey, (0, 0), sigma) if sigma > 0 else grey
    gx = cv2.Sobel(blurred, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(blurred, cv2.CV_32F, 0, 1, ksize=3)
    magnitude = cv2.magnitude(gx, gy)
    local = cv2.GaussianBlur(magnitude, (0, 0), 4.0 * sigma)
    return magnitude / (local + 0.05 * float(magnitude.mean()) + 1e-6)


def resize_homography(thermal_hw: tuple[int, int], rgb_hw: tuple[int, int]) -> np.ndarray:
    """The homography of the node's plain resize (``align_thermal`` without a homography): what a
    recording is registered with when no homography is given (the identity for same-size cameras).
    cv2.resize maps pixel centres: x_rgb + 0.5 = (x_thermal + 0.5) * scale."""
    sx, sy = rgb_hw[1] / thermal_hw[1], rgb_hw[0] / thermal_hw[0]
    return np.array([[sx, 0, 0.5 * (sx - 1)], [0, sy, 0.5 * (sy - 1)], [0, 0, 1]], np.float64)


def scale_homography(h: np.ndarray, thermal_scale: float, rgb_scale: float) -> np.ndarray:
    """``h`` (thermal px -> RGB px) for both images resized by these factors."""
    d_rgb = np.diag([rgb_scale, rgb_scale, 1.0])
    d_thermal_inv = np.diag([1.0 / thermal_scale, 1.0 / thermal_scale, 1.0])
    return d_rgb @ np.asarray(h, np.float64) @ d_thermal_inv


def normalized(h: np.ndarray) -> np.ndarray:
    """A homography scaled so that h[2, 2] = 1 (float64): one form to compare and combine."""
    h = np.asarray(h, np.float64)
    return h / h[2, 2]


def _translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def frame_corners(hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    return np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)


def project(h: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (N, 2) through homography h."""
    pts = np.asarray(points, np.float64).reshape(-1, 1, 2)
    return cv2.perspectiveTransform(pts, np.asarray(h, np.float64)).reshape(-1, 2)


def corner_shift(h_a: np.ndarray, h_b: np.ndarray, thermal_hw: tuple[int, int]) -> float:
    """How far apart two registrations put the thermal frame: the largest displacement (RGB px) of
    its four corners between ``h_a`` and ``h_b``."""
    corners = frame_corners(thermal_hw)
    return float(np.linalg.norm(project(h_a, corners) - project(h_b, corners), axis=1).max())


def mean_shift(h_a: np.ndarray, h_b: np.ndarray, thermal_hw: tuple[int, int]) -> float:
    """The mean displacement (RGB px) between two registrations over a 9x7 grid of the thermal frame:
    the typical misregistration a pixel sees (the corners are where a homography extrapolates most)."""
    h, w = thermal_hw
    xs, ys = np.meshgrid(np.linspace(0, w - 1, 9), np.linspace(0, h - 1, 7))
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
    return float(np.linalg.norm(project(h_a, grid) - project(h_b, grid), axis=1).mean())


def inner_region(
    h: np.ndarray, thermal_hw: tuple[int, int], rgb_hw: tuple[int, int], margin: float
) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1): an axis-aligned RGB rectangle inside the thermal frame's footprint under
    ``h``, ``margin`` x width in from its edges, or None when that leaves (almost) nothing. ECC and
    the score look only here: a fixed region that stays inside the thermal frame while the warp
    moves, so the correlation cannot rise by shrinking the overlap to its best-matching part."""
    q = project(h, frame_corners(thermal_hw))
    m = margin * rgb_hw[1]
    # the two inner x (and y) of the four corners: whichever way up the thermal camera is mounted
    xs, ys = np.sort(q[:, 0]), np.sort(q[:, 1])
    x0 = int(np.ceil(max(xs[1], 0) + m))
    x1 = int(np.floor(min(xs[2], rgb_hw[1]) - m))
    y0 = int(np.ceil(max(ys[1], 0) + m))
    y1 = int(np.floor(min(ys[2], rgb_hw[0]) - m))
    if x1 - x0 < 16 or y1 - y0 < 16 or (x1 - x0) * (y1 - y0) < MIN_OVERLAP * rgb_hw[0] * rgb_hw[1]:
        return None
    return x0, y0, x1, y1


@dataclass
class _Level:
    """One pyramid level: both structure images and their scale factors."""

    rgb: np.ndarray
    thermal: np.ndarray
    rgb_scale: float
    thermal_scale: float

    def local(self, h: np.ndarray) -> np.ndarray:
        return scale_homography(h, self.thermal_scale, self.rgb_scale)

    def full(self, h_level: np.ndarray) -> np.ndarray:
        return normalized(scale_homography(h_level, 1.0 / self.thermal_scale, 1.0 / self.rgb_scale))


def _level(rgb01: np.ndarray, thermal01: np.ndarray, h: np.ndarray, rgb_width: int) -> _Level:
    """Both images resized so that the RGB image is ``rgb_width`` wide and the thermal image shows
    the scene at about the same pixel size (its scale in ``h``), as structure images."""
    rgb_scale, thermal_scale = _scales(rgb01.shape[1], h, rgb_width)
    return _Level(structure_image(_resize(rgb01, rgb_scale)), structure_image(_resize(thermal01, thermal_scale)),
                  rgb_scale, thermal_scale)


def _scales(rgb_width_px: int, h: np.ndarray, rgb_width: int) -> tuple[float, float]:
    """(RGB, thermal) resize factors for an RGB image ``rgb_width`` wide at a similar scene scale."""
    rgb_scale = min(1.0, rgb_width / rgb_width_px)
    h_scale = float(np.sqrt(abs(np.linalg.det(normalized(h)[:2, :2]))))  # RGB px per thermal px
    return rgb_scale, min(1.0, rgb_scale * h_scale)


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    if scale >= 1.0:
        return image
    size = (max(8, int(round(image.shape[1] * scale))), max(8, int(round(image.shape[0] * scale))))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _correlations(level: _Level, h_level: np.ndarray, region, radius: int) -> tuple[np.ndarray, int]:
    """The normalised correlation of the RGB structure in ``region`` with the thermal structure warped
    by ``h_level`` and then translated by every whole-pixel (dx, dy) up to +-r: an array (2r+1, 2r+1),
    zero shift at [r, r]. One ``cv2.matchTemplate`` over the region (the thermal side shrunk by r,
    so every shift compares the same pixels); r = ``radius`` or less in a small region."""
    x0, y0, x1, y1 = region
    r = max(1, min(radius, (x1 - x0) // 4, (y1 - y0) // 4))
    to_inner = _translation(-(x0 + r), -(y0 + r))
    warped = cv2.warpPerspective(level.thermal, to_inner @ h_level, (x1 - x0 - 2 * r, y1 - y0 - 2 * r),
                                 flags=cv2.INTER_LINEAR)
    return cv2.matchTemplate(np.ascontiguousarray(level.rgb[y0:y1, x0:x1]), warped, cv2.TM_CCOEFF_NORMED), r


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / norm) if norm > 1e-12 else float("nan")


def _score_level(level: _Level, h_level: np.ndarray, region) -> float:
    if region is None:
        return float("nan")
    x0, y0, x1, y1 = region
    to_region = _translation(-x0, -y0) @ h_level
    warped = cv2.warpPerspective(level.thermal, to_region, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR)
    return _ncc(level.rgb[y0:y1, x0:x1], warped)


def alignment_score(
    rgb: np.ndarray, thermal: np.ndarray, homography: np.ndarray | None = None, width: int = SCORE_WIDTH
) -> float:
    """How well ``homography`` (thermal px -> RGB px; None: the node's plain resize) aligns this pair,
    as a peak margin: the correlation of the two structure images (inside the thermal frame's
    footprint, at ``width`` RGB pixels) at ``homography`` minus the best correlation over the
    translations ``SCORE_RING``..``SCORE_RADIUS`` px away. Raw correlation depends on the scene (0.1
    at night, 0.4 by day for the same good registration); whether the registration is the best
    place nearby does not: > 0 when it is, < 0 when the structure lines up better several px away
    (``SCORE_WARN``). NaN when the footprint is too small. ``rgb`` uint8 (H, W, 3); ``thermal`` raw
    (any size/dtype)."""
    thermal = to_single_channel(thermal)
    h = resize_homography(thermal.shape[:2], rgb.shape[:2]) if homography is None else np.asarray(homography, np.float64)
    # Downscale the raw frames first: the node runs this on full frames, and CLAHE and percentiles
    # on a 160 px image cost a tenth of what they cost at 640.
    rgb_scale, thermal_scale = _scales(rgb.shape[1], h, width)
    small_rgb, small_thermal = _resize(np.asarray(rgb), rgb_scale), _resize(thermal, thermal_scale)
    level = _Level(structure_image(grey01(small_rgb, thermal=False)), structure_image(grey01(small_thermal, thermal=True)),
                   rgb_scale, thermal_scale)
    h_level = level.local(h)
    region = inner_region(h_level, level.thermal.shape, level.rgb.shape, SCORE_MARGIN)
    if region is None:
        return float("nan")
    correlations, r = _correlations(level, h_level, region, SCORE_RADIUS)
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    elsewhere = np.maximum(abs(dx), abs(dy)) >= min(SCORE_RING, r)
    return float(correlations[r, r] - correlations[elsewhere].max())


@dataclass(frozen=True)
class Refinement:
    """The outcome of ``refine_homography`` on one pair."""

    initial: np.ndarray  # thermal px -> RGB px, as given
    homography: np.ndarray  # refined (the initial one when ECC did not converge)
    score_before: float  # correlation of the structure images at the finest level, same region
    score_after: float
    shift_px: float  # mean_shift(initial, refined): how far off the initial registration was (typical px)
    converged: bool
    reason: str = ""  # why not, when not


# Coarse to fine: a translation first (the big part of a knock), then affine corrections. Not a full
# homography per pair: on one real frame its 2 extra (perspective) parameters chase texture and
# drifted tens of px; the perspective part comes from the target calibration, and a camera that
# moved a little changes it little.
MOTIONS = (cv2.MOTION_TRANSLATION, cv2.MOTION_AFFINE, cv2.MOTION_AFFINE)


def refine_homography(
    rgb: np.ndarray,
    thermal: np.ndarray,
    initial: np.ndarray | None = None,
    *,
    width: int = REFINE_WIDTH,
    iterations: int = 100,
) -> Refinement:
    """Refine a thermal -> RGB homography on one ordinary pair (see the module docstring): ECC on
    structure images, coarse to fine over ``MOTIONS`` (one pyramid level each, the finest at ``width``
    RGB pixels), each level correcting the thermal image already warped by the current estimate,
    inside a fixed region of the RGB frame (``inner_region``). ``initial`` None: the node's plain
    resize (the identity for same-size cameras)."""
    rgb01, thermal01 = grey01(rgb, thermal=False), grey01(thermal, thermal=True)
    if initial is None:
        h0 = resize_homography(thermal01.shape, rgb01.shape)
    else:
        h0 = normalized(initial)
    h, reason, steps = h0.copy(), "", 0
    for k, motion in zip(reversed(range(len(MOTIONS))), MOTIONS):
        level = _level(rgb01, thermal01, h, max(32, width >> k))
        h_level = level.local(h)
        region = inner_region(h_level, level.thermal.shape, level.rgb.shape, REFINE_MARGIN)
        if region is None:
            reason = "the thermal frame covers too little of the RGB frame"
            break
        if k == len(MOTIONS) - 1:  # coarsest level: find ECC's basin first
            h_level = _search_translation(level, h_level, region, int(round(SEARCH_RADIUS * level.rgb.shape[1])))
            h = level.full(h_level)
        try:
            h = level.full(_ecc_step(level, h_level, region, motion, iterations))
            steps += 1
        except cv2.error as exc:  # this level's correlation starts negative or falls: the next may not
            reason = "ECC did not converge: " + str(exc).strip().splitlines()[-1].split(")", 1)[-1].strip()[:60]
    final = _level(rgb01, thermal01, h0, width)
    region = inner_region(final.local(h0), final.thermal.shape, final.rgb.shape, REFINE_MARGIN)
    before = _score_level(final, final.local(h0), region)
    after = _score_level(final, final.local(h), region)
    shift = mean_shift(h0, h, thermal01.shape)
    if shift > MAX_SHIFT * rgb01.shape[1]:
        reason = f"it moved {shift:.0f} px, more than a refinement corrects (calibrate again with a target)"
    if reason.startswith("it moved") or not steps or not np.isfinite(after) or not after > before:
        return Refinement(h0, h0, before, before, 0.0, False, reason or "the correlation did not rise")
    return Refinement(h0, h, before, after, shift, True)


def _search_translation(level: _Level, h_level: np.ndarray, region, radius: int) -> np.ndarray:
    """``h_level`` moved by the whole-pixel translation (within +-``radius``) that best correlates the
    thermal structure with the RGB structure in ``region``: an exhaustive search, so ECC starts
    inside its basin (see ``SEARCH_RADIUS``)."""
    correlations, r = _correlations(level, h_level, region, radius)
    dy, dx = np.unravel_index(int(np.argmax(correlations)), correlations.shape)
    return _translation(dx - r, dy - r) @ h_level


def _ecc_step(level: _Level, h_level: np.ndarray, region, motion: int, iterations: int) -> np.ndarray:
    """One level: ECC of the RGB structure in ``region`` against the thermal structure warped there
    by ``h_level``; returns the corrected ``h_level``. ECC finds C with warped(C x) ~ rgb(x), so
    rgb(x) ~ thermal(h^-1 C x): the new homography is C^-1 h."""
    x0, y0, x1, y1 = region
    to_region = _translation(-x0, -y0)
    warped = cv2.warpPerspective(level.thermal, to_region @ h_level, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR)
    template = np.ascontiguousarray(level.rgb[y0:y1, x0:x1])
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, iterations, 1e-6)
    _, c = cv2.findTransformECC(template, warped, np.eye(2, 3, dtype=np.float32), motion, criteria, None, 5)
    correction = np.vstack([c.astype(np.float64), [0.0, 0.0, 1.0]])
    return normalized(np.linalg.inv(to_region) @ np.linalg.inv(correction) @ to_region @ h_level)


def combine_homographies(homographies: list[np.ndarray], thermal_hw: tuple[int, int]) -> np.ndarray:
    """One homography from several per-pair estimates: the per-corner median of where each puts the
    thermal frame's corners (robust to a pair that refined badly), through those four corners."""
    corners = frame_corners(thermal_hw)
    placed = np.stack([project(h, corners) for h in homographies])
    median = np.median(placed, axis=0)
    h = cv2.getPerspectiveTransform(corners.astype(np.float32), median.astype(np.float32))
    return normalized(h)


# --- the one rule of `bag info` and the node: does a registration look right on these pairs? ---------

CHECK_WIDTH = 320  # the check refines at this width: 3 pairs resolve LOOKS_RIGHT_PX
CHECK_PAIRS = 3


@dataclass(frozen=True)
class RegistrationVerdict:
    """What refining a registration on a few pairs says about it (``judge_registration``)."""

    pairs: int
    converged: int  # pairs whose refinement converged (0: too little shared structure to tell)
    shift_px: float = float("nan")  # how far the combined refinement moved it (mean RGB px over the thermal frame)
    score: float = float("nan")  # median alignment score at the registration
    refined_score: float = float("nan")  # ... at the combined refinement

    @property
    def known(self) -> bool:
        return self.converged > 0

    @property
    def looks_off(self) -> bool:
        return self.known and self.shift_px >= LOOKS_RIGHT_PX

    def describe(self) -> str:
        text = describe_offset(self.shift_px, converged=self.known)
        # Off, and the refinement's own result does not look aligned either: it may have stopped on
        # a false peak short of the truth (knocks of 45-80 px did). Not a test of its own: weak
        # frames of a correct registration score down to -0.04 at 3 pairs.
        if self.looks_off and not self.refined_score > SCORE_WARN:
            text += " or more (the refined result does not look aligned either)"
        return text


def judge_registration(pairs: list[tuple[np.ndarray, np.ndarray]], homography: np.ndarray | None = None,
                       width: int = CHECK_WIDTH) -> RegistrationVerdict:
    """The one rule `taseg bag info` and the node's registration watch apply: refine ``homography``
    (None: the plain resize) on each pair at ``width`` px, combine the converged ones as ``bag
    refine`` does, and measure how far that moved it: right below LOOKS_RIGHT_PX, off above it.
    Measured on triples of the 20 real MSRS pairs (scripts/bench_registration.py's frames): at their
    consensus 1.4-3.2 px with 2-3 pairs converged (6.6 px once, with 1), knocked 8 px 6.7-10.8 px,
    20 px 19-23 px. Every pair must have the sizes of the first."""
    rgb_hw, thermal_hw = pairs[0][0].shape[:2], pairs[0][1].shape[:2]
    if any((rgb.shape[:2], thermal.shape[:2]) != (rgb_hw, thermal_hw) for rgb, thermal in pairs):
        raise InputError("registration check: the pairs are of different sizes; one registration is for one size")
    initial = resize_homography(thermal_hw, rgb_hw) if homography is None else normalized(homography)
    score = float(np.nanmedian([alignment_score(rgb, thermal, initial) for rgb, thermal in pairs]))
    good = [r.homography for r in (refine_homography(rgb, thermal, initial, width=width) for rgb, thermal in pairs)
            if r.converged]
    if not good:
        return RegistrationVerdict(len(pairs), 0, score=score)
    combined = combine_homographies(good, thermal_hw)
    refined = float(np.nanmedian([alignment_score(rgb, thermal, combined) for rgb, thermal in pairs]))
    return RegistrationVerdict(len(pairs), len(good), mean_shift(initial, combined, thermal_hw), score, refined)


class RegistrationMonitor:
    """The node's registration check, by ``judge_registration`` (the rule of `bag info`) and paid for
    only when needed. Every check scores its pair (``alignment_score``: a few ms) and keeps it; once
    ``window`` pairs are kept, a median score above SCORE_WARN clears them (knocked cameras scored
    below it in 60 of 60 real cases), anything else has them judged by refinement (~0.2 s a pair at
    CHECK_WIDTH, only then) and the verdict kept until the next judgement. The score alone raised
    false alarms: correctly registered real MSRS pairs score down to -0.08. Thread-safe: one thread
    checks, another reads."""

    def __init__(self, window: int = CHECK_PAIRS) -> None:
        self._lock = threading.Lock()
        self._pairs: deque[tuple[np.ndarray, np.ndarray]] = deque(maxlen=window)
        self.scores: deque[float] = deque(maxlen=window)
        self.verdict: RegistrationVerdict | None = None
        self.checks = 0
        self.seconds: deque[float] = deque(maxlen=50)  # what each check cost

    def check(self, rgb: np.ndarray, thermal: np.ndarray, homography: np.ndarray | None) -> None:
        start = time.perf_counter()
        score = alignment_score(rgb, thermal, homography)
        with self._lock:
            if self._pairs and (self._pairs[-1][0].shape, self._pairs[-1][1].shape) != (rgb.shape, thermal.shape):
                self._pairs.clear()  # the cameras changed resolution: their pairs are not combined
                self.scores.clear()
            if np.isfinite(score):
                self.scores.append(float(score))
                self._pairs.append((rgb, thermal))
            pairs = list(self._pairs) if len(self._pairs) == self._pairs.maxlen else []
            if pairs:
                self._pairs.clear()
            suspicious = bool(pairs) and not float(np.median(self.scores)) > SCORE_WARN
        verdict = judge_registration(pairs, homography) if suspicious else None  # unlocked: the reader never waits
        with self._lock:  # counted once judged: a reader that sees a check sees its verdict
            if pairs:
                self.verdict = verdict
            self.checks += 1
            self.seconds.append(time.perf_counter() - start)

    def snapshot(self) -> tuple[int, float, float, RegistrationVerdict | None]:
        """(checks, median of the last scores, mean seconds a check cost, the last verdict), consistent."""
        with self._lock:
            median = float(np.median(self.scores)) if self.scores else float("nan")
            cost = float(np.mean(self.seconds)) if self.seconds else float("nan")
            return self.checks, median, cost, self.verdict


def describe_offset(shift_px: float, converged: bool = True) -> str:
    """A refinement's corner shift as words for `bag info` and `bag refine`."""
    if not converged:
        return "cannot tell (too little shared structure in the sampled frames)"
    if shift_px < LOOKS_RIGHT_PX:
        return f"looks right (within {LOOKS_RIGHT_PX:g} px)"
    return f"looks off by about {shift_px:.0f} px"
