"""The calibration target and the refusal thresholds of `taseg bag calibrate`: what its options and
--help state. Standard library only, so building the command line loads no OpenCV
(``frames.calibration`` does the detection and fitting)."""
from __future__ import annotations

from dataclasses import dataclass

from taseg_ros.errors import InputError
from taseg_ros.frames.sizes import parse_size

TARGETS = ("chessboard", "circles")
INVERT_CHOICES = ("auto", "yes", "no")
# Refusal thresholds (stated in `taseg bag calibrate --help` and the docs):
MIN_FRAMES = 3  # frames with the target found in both cameras
MIN_POSES = 3  # of them, poses that differ (mean corner move > POSE_MOVE of the RGB width)
POSE_MOVE = 0.03
MIN_POSE_COVERAGE = 0.25  # share of the thermal frame inside the hull of all detected corners
DEFAULT_HFOV_DEG = 69.0  # a typical RGB camera (RealSense D435 colour); --rgb-hfov for yours


@dataclass(frozen=True)
class Target:
    """The calibration target: ``cols`` x ``rows`` inner corners (chessboard) or circles."""

    cols: int
    rows: int
    kind: str = "chessboard"
    square_m: float | None = None  # square side / circle spacing, for the distance estimate

    def __post_init__(self) -> None:
        if self.kind not in TARGETS:
            raise InputError(f"--target must be one of {TARGETS}, got {self.kind!r}")
        if self.cols < 3 or self.rows < 3:
            raise InputError(f"--board {self.cols}x{self.rows}: needs at least 3x3 "
                             "(inner corners of a chessboard, or circles)")
        if self.square_m is not None and not self.square_m > 0:
            raise InputError(f"--square must be > 0 metres, got {self.square_m}")

    @classmethod
    def parse(cls, text: str, kind: str = "chessboard", square_m: float | None = None) -> "Target":
        try:
            cols, rows = parse_size(text, "COLSxROWS", "9x6 inner corners")
        except InputError as exc:
            raise InputError(f"--board: {exc}") from None
        return cls(cols, rows, kind, square_m)

    @property
    def size(self) -> tuple[int, int]:
        return self.cols, self.rows

    def describe(self) -> str:
        what = "inner corners" if self.kind == "chessboard" else "circles"
        return f"{self.cols}x{self.rows} {self.kind} ({what})"
