"""Target-based RGB-thermal registration: find a calibration target (a heated or holed checkerboard,
or a circle grid) in both cameras and fit the thermal -> RGB pixel homography over many frames.

Detection: OpenCV's detectors (``findChessboardCornersSB``, ``findCirclesGrid``) on the RGB grey
image and on the thermal image made 8-bit by its percentiles and contrast-enhanced with CLAHE (a
heated board is low-contrast and blurred), optionally inverted: on a heated board the warm squares
are bright in thermal where the black squares are dark in RGB. ``auto`` tries both polarities.

Correspondence: both detectors number the corners row by row, but on a board whose colours swap
under a half turn (and on any inverted image) the two cameras may start at opposite corners. The
thermal numbering is turned (half turn; quarter turns too on a square board) so that the first row
points the way it points in RGB once turned by the rig's relative roll. That roll is not assumed
(a thermal camera mounted upside down is common): ``fit_rig`` tries every quarter turn and keeps the
one whose correspondences one homography explains (most inliers over all frames; a wrong roll pairs
each pose's corners point-mirrored, which no single homography fits across poses). A fit that still
leaves more than a tenth of the corners outside its threshold is refused (``MIN_INLIER_SHARE``).

Fitting: ``cv2.findHomography`` with USAC_MAGSAC over all frames' correspondences, then a
least-squares refit on the inliers; reprojection RMS and worst in RGB px.

A homography is exact only for points on one plane (or for co-axial optics): ``parallax_px`` says
what it leaves at other distances. numpy + OpenCV only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from taseg_ros.errors import InputError
# The target and the refusal thresholds live in frames/targets.py (light: the command line reads them);
# named here too, as bag.calibrate reads them (cal.MIN_FRAMES, ...).
from taseg_ros.frames.targets import (
    INVERT_CHOICES as INVERT_CHOICES,
    MIN_FRAMES as MIN_FRAMES,
    MIN_POSE_COVERAGE as MIN_POSE_COVERAGE,
    MIN_POSES as MIN_POSES,
    POSE_MOVE,
    TARGETS as TARGETS,
    Target,
)
from taseg_ros.frames.thermal import ThermalNormalization, normalize_thermal, to_single_channel

RANSAC_THRESHOLD_PX = 3.0  # inlier distance in RGB px
# Share of all detected corners the fitted homography must explain: the synthetic rig's fits keep all
# of them; a wrong correspondence (an upside-down camera paired the same way up) kept 54 of 324.
MIN_INLIER_SHARE = 0.9
ROLLS = (0, 1, 2, 3)  # the rig's relative roll tried by fit_rig, in quarter turns
PERCENTILES = ThermalNormalization("percentile", percentiles=(0.5, 99.5))


def thermal_for_detection(thermal: np.ndarray, invert: bool) -> np.ndarray:
    """Raw thermal (any dtype, channels) -> uint8 for the detectors: percentiles, CLAHE, inverted."""
    grey = normalize_thermal(to_single_channel(thermal), PERCENTILES)
    u8 = np.clip(grey * 255.0 + 0.5, 0, 255).astype(np.uint8)
    u8 = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(u8)
    return 255 - u8 if invert else u8


def rgb_for_detection(rgb: np.ndarray) -> np.ndarray:
    img = np.asarray(rgb)
    return cv2.cvtColor(img[:, :, :3], cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img


def detect(grey: np.ndarray, target: Target) -> np.ndarray | None:
    """(cols * rows, 2) float64 target points in the detector's row-by-row order, or None."""
    if target.kind == "chessboard":
        # No CALIB_CB_NORMALIZE_IMAGE (a global histogram equalisation): on CLAHE-enhanced thermal
        # frames it lost the board in 9 of 21 synthetic poses that plain SB found in all 21. No
        # CALIB_CB_EXHAUSTIVE: it found an 8x6 board inside a 9x6 one (a wrong --board must fail).
        found, corners = cv2.findChessboardCornersSB(grey, target.size, flags=0)
    else:
        found, corners = cv2.findCirclesGrid(grey, target.size, flags=cv2.CALIB_CB_SYMMETRIC_GRID)
    return corners.reshape(-1, 2).astype(np.float64) if found else None


def other_board_in_view(grey: np.ndarray, target: Target) -> Target | None:
    """A board of a neighbouring size (one more or fewer corners per side, or the sides swapped) that
    this image shows, for the hint when the given size is never found: counting squares instead of
    inner corners is the usual slip."""
    c, r = target.cols, target.rows
    for cols, rows in ((c - 1, r - 1), (c + 1, r + 1), (c - 1, r), (c, r - 1), (c + 1, r), (c, r + 1)):
        if min(cols, rows) >= 3 and detect(grey, Target(cols, rows, target.kind)) is not None:
            return Target(cols, rows, target.kind)
    return None


def detect_thermal(thermal: np.ndarray, target: Target, invert: str = "auto") -> tuple[np.ndarray | None, bool]:
    """Points in the thermal image and whether it was inverted to find them (``invert``: auto/yes/no)."""
    tries = {"auto": (False, True), "yes": (True,), "no": (False,)}[invert]
    for inverted in tries:
        points = detect(thermal_for_detection(thermal, inverted), target)
        if points is not None:
            return points, inverted
    return None, False


def match_order(rgb_points: np.ndarray, thermal_points: np.ndarray, target: Target, roll: int = 0) -> np.ndarray:
    """The thermal points renumbered to correspond to the RGB points (see the module docstring):
    of the grid's turns that keep its shape, the one whose first-row direction, turned by ``roll``
    quarter turns (the rig's relative roll), is closest to RGB's."""
    grid = thermal_points.reshape(target.rows, target.cols, 2)
    turns = (0, 1, 2, 3) if target.cols == target.rows else (0, 2)
    rgb_dir = _row_direction(rgb_points.reshape(target.rows, target.cols, 2))
    a = roll * np.pi / 2
    turn = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    best = max((np.rot90(grid, k) for k in turns), key=lambda g: float(np.dot(turn @ _row_direction(g), rgb_dir)))
    return best.reshape(-1, 2)


def _row_direction(grid: np.ndarray) -> np.ndarray:
    d = grid[:, -1].mean(axis=0) - grid[:, 0].mean(axis=0)
    return d / (np.linalg.norm(d) + 1e-12)


@dataclass
class Fit:
    """A fitted thermal -> RGB homography and how well it fits."""

    homography: np.ndarray
    rms_px: float  # reprojection error of the inliers, RGB px
    worst_px: float
    inliers: int
    points: int
    errors_px: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))


def fit_homography(thermal_points: list[np.ndarray], rgb_points: list[np.ndarray]) -> Fit:
    """Robust fit over all frames' correspondences (USAC_MAGSAC, threshold RANSAC_THRESHOLD_PX),
    then least squares on the inliers."""
    src = np.concatenate(thermal_points).astype(np.float64)
    dst = np.concatenate(rgb_points).astype(np.float64)
    h, mask = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, RANSAC_THRESHOLD_PX, maxIters=5000, confidence=0.9999)
    if h is None:
        raise InputError("the target points of the two cameras fit no homography "
                         "(are both cameras looking at the same board?)")
    inliers = mask.ravel().astype(bool)
    refit, _ = cv2.findHomography(src[inliers], dst[inliers], 0)
    h = (refit if refit is not None else h) / (refit if refit is not None else h)[2, 2]
    projected = cv2.perspectiveTransform(src.reshape(-1, 1, 2), h).reshape(-1, 2)
    errors = np.linalg.norm(projected - dst, axis=1)
    inlier_errors = errors[inliers]
    return Fit(h, float(np.sqrt(np.mean(inlier_errors ** 2))), float(inlier_errors.max()), int(inliers.sum()),
               len(src), errors)


def fit_rig(rgb_points: list[np.ndarray], thermal_points: list[np.ndarray], target: Target) -> tuple[Fit, int]:
    """(fit, the rig's relative roll in quarter turns): the thermal detections renumbered for each
    roll of ``ROLLS`` and fitted; the roll whose fit explains the most corners (then the lowest RMS)
    wins. InputError when even that one leaves over a tenth of the corners unexplained."""
    fits = []
    for roll in ROLLS:
        ordered = [match_order(r, t, target, roll) for r, t in zip(rgb_points, thermal_points)]
        try:
            fit = fit_homography(ordered, rgb_points)
        except InputError:
            continue
        fits.append(((fit.inliers, -fit.rms_px), roll, fit))
    if not fits:
        raise InputError("the target points of the two cameras fit no homography "
                         "(are both cameras looking at the same board?)")
    _, roll, fit = max(fits, key=lambda f: f[0])
    if fit.inliers < MIN_INLIER_SHARE * fit.points:
        raise InputError(f"the detections fit no single homography: the best leaves {fit.points - fit.inliers} of "
                         f"{fit.points} target points more than {RANSAC_THRESHOLD_PX:g} px off (do both cameras see "
                         "the same board at the same time? is one of them distorted?)")
    return fit, roll


def describe_roll(roll: int) -> str:
    """The rig's relative roll for the report."""
    return {0: "mounted the same way up as the RGB camera", 2: "mounted upside down relative to the RGB camera"}.get(
        roll % 4, "turned by a quarter turn relative to the RGB camera")


def distinct_poses(rgb_points: list[np.ndarray], width: int) -> int:
    """How many of the detections differ from every earlier kept one by a mean corner move above
    POSE_MOVE x ``width``: holding the board still for a minute gives one pose, not hundreds."""
    kept: list[np.ndarray] = []
    for points in rgb_points:
        if all(np.linalg.norm(points - other, axis=1).mean() > POSE_MOVE * width for other in kept):
            kept.append(points)
    return len(kept)


def hull_coverage(points: list[np.ndarray], hw: tuple[int, int]) -> float:
    """Share of an image (``hw``) inside the convex hull of all these points: where the fitted
    homography is measured rather than extrapolated."""
    hull = cv2.convexHull(np.concatenate(points).astype(np.float32))
    return float(cv2.contourArea(hull)) / float(hw[0] * hw[1])


def focal_px(width: int, hfov_deg: float) -> float:
    """Focal length in pixels of a camera ``width`` px wide with this horizontal field of view."""
    return 0.5 * width / np.tan(np.deg2rad(hfov_deg) / 2.0)


def board_distance_m(rgb_points: list[np.ndarray], target: Target, focal: float) -> float | None:
    """Median distance (m) of the board from the RGB camera, from its apparent square size
    (pinhole: distance = focal * square / square in px); None without --square."""
    if target.square_m is None:
        return None
    sizes = []
    for points in rgb_points:
        grid = points.reshape(target.rows, target.cols, 2)
        step = np.concatenate([np.linalg.norm(np.diff(grid, axis=1), axis=2).ravel(),
                               np.linalg.norm(np.diff(grid, axis=0), axis=2).ravel()])
        sizes.append(float(np.median(step)))
    return focal * target.square_m / float(np.median(sizes))


@dataclass(frozen=True)
class Parallax:
    """What a homography leaves at other distances: a point at distance d appears shifted between
    the cameras by focal * baseline / d px; the homography corrects the shift of one distance
    (where it was fitted), so the residual is focal * baseline * |1/d - 1/d_fit|."""

    baseline_m: float
    near_m: float
    far_m: float
    focal_px: float
    fitted_m: float | None  # where the homography was fitted (the board's distance), if known

    def residual_px(self, fitted_m: float) -> float:
        """The worst residual over near..far for a homography fitted at ``fitted_m``."""
        inv = lambda d: 0.0 if np.isinf(d) else 1.0 / d  # noqa: E731
        return float(self.focal_px * self.baseline_m * max(abs(inv(self.near_m) - inv(fitted_m)),
                                                            abs(inv(self.far_m) - inv(fitted_m))))

    @property
    def best_fit_m(self) -> float:
        """The fitting distance that minimises the worst residual over near..far (1/d halfway)."""
        inv_far = 0.0 if np.isinf(self.far_m) else 1.0 / self.far_m
        return 2.0 / (1.0 / self.near_m + inv_far)

    def describe(self) -> str:
        best = f"fitted at {self.best_fit_m:.1f} m it would leave {self.residual_px(self.best_fit_m):.1f} px"
        range_ = f"{self.near_m:g}..{self.far_m:g} m"
        if self.fitted_m is None:
            return (f"parallax over {range_} (baseline {self.baseline_m:g} m, focal {self.focal_px:.0f} px): at best "
                    f"{self.residual_px(self.best_fit_m):.1f} px (a homography {best.split(' it would')[0]}); "
                    "give --square to know where this one was fitted")
        return (f"parallax over {range_} (baseline {self.baseline_m:g} m, focal {self.focal_px:.0f} px): up to "
                f"{self.residual_px(self.fitted_m):.1f} px for this homography, fitted at ~{self.fitted_m:.1f} m "
                f"(the board's distance); {best}")


def check_parallax_inputs(baseline_m: float, near_m: float, far_m: float, hfov_deg: float) -> None:
    if not baseline_m > 0:
        raise InputError(f"--baseline must be > 0 metres, got {baseline_m}")
    if not 0 < near_m < far_m:
        raise InputError(f"--distance NEAR FAR: needs 0 < NEAR < FAR (FAR may be inf), got {near_m} {far_m}")
    if not 0 < hfov_deg < 180:
        raise InputError(f"--rgb-hfov must be between 0 and 180 degrees, got {hfov_deg}")
