"""`taseg bag calibrate` and `taseg bag refine`: the thermal -> RGB registration from a recording.

calibrate: a recording of a calibration target both cameras see (``frames/calibration.py``): detect
it in every N-th pair, refuse with the reason when too few frames have both detections or the poses
cover too little of the thermal frame, fit the homography, report its errors and coverage, write it
as the node's parameters file.
refine: ordinary frames (no target): refine a given homography (or the plain resize) on sampled pairs
with ``frames/registration.py`` and report the score and the shift before/after. A separate command
rather than an option of calibrate: it needs no target and no board options, works on any recording
(the one you want to label or evaluate), and is what you rerun when a camera was knocked.

Both write nothing when they refuse; the file is written atomically (taseg_ros.outputs).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from taseg_ros.bag.io.reader import BagError, open_bag
from taseg_ros.bag.io.topics import resolve_image_topics
from taseg_ros.bag.pairs import BagPairing, PairSource
from taseg_ros.errors import InputError, safe_lines
from taseg_ros.frames import calibration as cal
from taseg_ros.frames import registration as reg
from taseg_ros.frames.codec import ImageDecodeError, decode_rgb, decode_thermal
from taseg_ros.frames.targets import DEFAULT_HFOV_DEG
from taseg_ros.frames.thermal import homography_coverage
from taseg_ros.frames.thermal import check_registration_size, describe_sizes
from taseg_ros.outputs import check_output_file, output_file, write_text_atomic
from taseg_ros.ros.params import homography_params_text

CAVEAT = ("a homography is exact only for points on one plane or for co-axial optics; "
          "nearer or farther objects keep a parallax error")


@dataclass(frozen=True)
class CalibrateSettings:
    """Everything `taseg bag calibrate` is asked to do, checked before the recording is opened."""

    source: PairSource
    output: Path
    target: cal.Target
    invert_thermal: str = "auto"
    every: int = 1
    baseline_m: float | None = None
    distance_m: tuple[float, float] | None = None
    rgb_hfov_deg: float = DEFAULT_HFOV_DEG
    force: bool = False

    def __post_init__(self) -> None:
        if self.invert_thermal not in cal.INVERT_CHOICES:
            raise InputError(f"--invert-thermal must be one of {cal.INVERT_CHOICES}, got {self.invert_thermal!r}")
        if self.every < 1:
            raise InputError(f"--every must be >= 1, got {self.every}")
        if (self.baseline_m is None) != (self.distance_m is None):
            raise InputError("--baseline and --distance go together (the parallax estimate needs both)")
        if self.baseline_m is not None:
            cal.check_parallax_inputs(self.baseline_m, *self.distance_m, self.rgb_hfov_deg)
        object.__setattr__(self, "output", Path(self.output))
        check_output_file(self.output, force=self.force, inputs={"BAG": self.source.bag})


@dataclass
class CalibrationResult:
    rgb_topic: str
    thermal_topic: str
    pairs: int = 0  # pairs looked at
    rgb_found: int = 0
    thermal_found: int = 0
    both: int = 0
    inverted: int = 0  # thermal detections made on the inverted image
    poses: int = 0
    pose_coverage: float = 0.0  # share of the thermal frame inside the hull of the detections
    fit: cal.Fit | None = None
    roll: int = 0  # the thermal camera's roll relative to the RGB camera, quarter turns (cal.fit_rig)
    coverage: float = 0.0  # share of the RGB frame the warped thermal frame covers
    rgb_hw: tuple[int, int] = (0, 0)
    thermal_hw: tuple[int, int] = (0, 0)
    parallax: cal.Parallax | None = None
    lines: list[str] = field(default_factory=list)
    sample_rgb: np.ndarray | None = field(default=None, repr=False)  # one RGB grey frame, for the board hint


def calibrate(settings: CalibrateSettings) -> CalibrationResult:
    """Detect, check, fit and write (see the module docstring); InputError/BagError with the reason
    when the recording cannot give a registration, and then nothing is written. Every pair of the
    recording is looked at (or --max-pairs): there is no early stop that would leave a partial one."""
    source, target = settings.source, settings.target
    thermal_pts, rgb_pts = [], []
    with open_bag(source.bag) as bag:
        rgb_topic, thermal_topic = resolve_image_topics(bag, source.rgb_topic, source.thermal_topic)
        result = CalibrationResult(rgb_topic.name, thermal_topic.name)
        for rgb, thermal in _sampled_pairs(bag, rgb_topic.name, thermal_topic.name, source, settings.every):
            result.pairs += 1
            if result.pairs > 1:  # one registration is for one pair of frame sizes
                _check_same_sizes(source.bag, (result.thermal_hw, result.rgb_hw), (thermal.shape[:2], rgb.shape[:2]),
                                  result.pairs)
            result.rgb_hw, result.thermal_hw = rgb.shape[:2], thermal.shape[:2]
            result.sample_rgb = grey = cal.rgb_for_detection(rgb)
            in_rgb = cal.detect(grey, target)
            in_thermal, inverted = cal.detect_thermal(thermal, target, settings.invert_thermal)
            result.rgb_found += in_rgb is not None
            result.thermal_found += in_thermal is not None
            if in_rgb is not None and in_thermal is not None:
                result.both += 1
                result.inverted += inverted
                rgb_pts.append(in_rgb)
                thermal_pts.append(in_thermal)  # numbered to match once the rig's roll is known (fit_rig)
    _check_detections(result, settings)
    result.poses = cal.distinct_poses(rgb_pts, result.rgb_hw[1])
    result.pose_coverage = cal.hull_coverage(thermal_pts, result.thermal_hw)
    _check_poses(result)
    result.fit, result.roll = cal.fit_rig(rgb_pts, thermal_pts, target)
    result.coverage = homography_coverage(result.fit.homography, result.thermal_hw, result.rgb_hw)
    if settings.baseline_m is not None:
        focal = cal.focal_px(result.rgb_hw[1], settings.rgb_hfov_deg)
        result.parallax = cal.Parallax(settings.baseline_m, *settings.distance_m, focal,
                                       cal.board_distance_m(rgb_pts, target, focal))
    result.lines = _report_lines(result, settings)
    with output_file(settings.output, force=settings.force, inputs={"BAG": source.bag}) as out:
        write_text_atomic(out, homography_params_text(result.fit.homography, result.lines,
                                                      _made_for(result.thermal_hw, result.rgb_hw)))
    return result


def _made_for(thermal_hw, rgb_hw) -> tuple[int, int, int, int]:
    """The frame sizes a registration is made for, as the parameters file records them (W, H)."""
    return thermal_hw[1], thermal_hw[0], rgb_hw[1], rgb_hw[0]


def _check_same_sizes(bag, first, this, index: int) -> None:
    """A camera that changed resolution mid-recording cannot be registered as one size."""
    if tuple(map(tuple, first)) != tuple(map(tuple, this)):
        raise InputError(f"{bag}: the cameras change resolution within the recording ({describe_sizes(_made_for(*first))} "
                         f"at first, {describe_sizes(_made_for(*this))} at pair {index}); a registration is for one "
                         "size: use the part of one size (--max-pairs) or record again")


def _sampled_pairs(bag, rgb_topic: str, thermal_topic: str, source: PairSource, every: int):
    """Decoded (rgb, thermal) of every ``every``-th pair, up to ``source.max_pairs`` of them."""
    index = taken = 0
    for arrival in BagPairing(bag, rgb_topic, thermal_topic, source.slop_s):
        if arrival.pair is None:
            continue
        index += 1
        if (index - 1) % every:
            continue
        try:
            yield decode_rgb(arrival.pair.rgb.msg), decode_thermal(arrival.pair.thermal.msg)
        except ImageDecodeError:
            continue  # `bag info` / `bag extract` say why; a calibration just uses the frames it can read
        taken += 1
        if source.max_pairs is not None and taken >= source.max_pairs:
            return


def _check_detections(result: CalibrationResult, settings: CalibrateSettings) -> None:
    board = settings.target.describe()
    where = f"{settings.source.bag} ({result.rgb_topic} + {result.thermal_topic})"
    if result.pairs == 0:
        raise BagError(f"{where}: no RGB/thermal pair to calibrate on (`taseg bag info` says why)")
    other = cal.other_board_in_view(result.sample_rgb, settings.target) if result.rgb_found == 0 else None
    if other is not None:
        raise InputError(
            f"{where}: the {board} target was found in none of the {result.pairs} pairs, but a {other.cols}x"
            f"{other.rows} one is in view: --board {other.cols}x{other.rows}? (a chessboard of 10x7 squares has 9x6 "
            "inner corners)")
    if result.rgb_found == 0 and result.thermal_found == 0:
        raise InputError(
            f"{where}: the {board} target was found in none of the {result.pairs} pairs, in either camera: "
            "is it in view, and does --board count what the detector counts (a chessboard of 10x7 squares is 9x6)?")
    if result.both < cal.MIN_FRAMES:
        missing = "thermal" if result.thermal_found < result.rgb_found else "RGB"
        hint = ""
        if missing == "thermal":
            hint = " (heat the board or use a holed one" + (
                ")" if settings.invert_thermal == "auto" else "; try --invert-thermal auto)")
        raise InputError(
            f"{where}: the {board} target was found in both cameras in {result.both} of {result.pairs} pairs "
            f"(RGB {result.rgb_found}, thermal {result.thermal_found}); at least {cal.MIN_FRAMES} are needed: "
            f"the {missing} camera does not see it{hint}")


def _check_poses(result: CalibrationResult) -> None:
    if result.poses < cal.MIN_POSES:
        raise InputError(
            f"the target was found in {result.both} pairs but in only {result.poses} distinct pose(s); move it "
            f"between at least {cal.MIN_POSES} places (corners moving > {100 * cal.POSE_MOVE:g}% of the width)")
    if result.pose_coverage < cal.MIN_POSE_COVERAGE:
        raise InputError(
            f"the target poses cover {100 * result.pose_coverage:.0f}% of the thermal frame; at least "
            f"{100 * cal.MIN_POSE_COVERAGE:.0f}% is needed (the homography is extrapolated elsewhere): move the "
            "board across the whole image, corners included")


def _report_lines(result: CalibrationResult, settings: CalibrateSettings) -> list[str]:
    fit = result.fit
    (rh, rw), (th, tw) = result.rgb_hw, result.thermal_hw
    lines = [
        f"thermal -> RGB homography from {settings.source.bag} ({result.rgb_topic} {rw}x{rh} + "
        f"{result.thermal_topic} {tw}x{th}), target {settings.target.describe()}",
        f"frames: {result.pairs} pairs looked at; target found in RGB {result.rgb_found}, thermal "
        f"{result.thermal_found} ({result.inverted} inverted), both {result.both}; {result.poses} distinct poses "
        f"covering {100 * result.pose_coverage:.0f}% of the thermal frame; the thermal camera is "
        f"{cal.describe_roll(result.roll)}",
        f"reprojection error (RGB px): RMS {fit.rms_px:.3f}, worst {fit.worst_px:.3f} over {fit.inliers} of "
        f"{fit.points} corners (inliers within {cal.RANSAC_THRESHOLD_PX:g} px)",
        f"the thermal image covers {100 * result.coverage:.1f}% of the RGB frame",
        "homography: [" + ", ".join(f"{v:.6g}" for v in fit.homography.ravel()) + "]",
        f"note: {CAVEAT} (here: the board's plane)",
    ]
    if result.parallax is not None:
        lines.append(result.parallax.describe())
    return lines


# --- refine ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RefineSettings:
    source: PairSource
    output: Path | None
    homography: np.ndarray | None = None  # None: the node's plain resize (identity for same-size cameras)
    samples: int = 8
    force: bool = False
    homography_file: Path | None = None  # where ``homography`` was read: an input, never overwritten
    homography_size: tuple[int, int, int, int] | None = None  # the sizes ``homography`` was made for

    @property
    def inputs(self) -> dict:
        return {"BAG": self.source.bag, "--thermal-homography": self.homography_file}

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise InputError(f"--samples must be >= 1, got {self.samples}")
        if self.output is not None:
            object.__setattr__(self, "output", Path(self.output))
            check_output_file(self.output, force=self.force, inputs=self.inputs)


@dataclass
class RefineResult:
    rgb_topic: str
    thermal_topic: str
    initial: np.ndarray
    homography: np.ndarray
    thermal_hw: tuple[int, int]
    refinements: list[reg.Refinement] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    score_before: float = float("nan")  # median alignment score over the pairs, at the start
    score_after: float = float("nan")  # ... at the result

    @property
    def converged(self) -> list[reg.Refinement]:
        return [r for r in self.refinements if r.converged]

    @property
    def shift_px(self) -> float:
        return reg.mean_shift(self.initial, self.homography, self.thermal_hw)


def sample_pairs(
    source: PairSource, count: int, total: int | None = None
) -> tuple[str, str, list[tuple[np.ndarray, np.ndarray]]]:
    """(rgb topic, thermal topic, ``count`` decoded pairs spread evenly over the recording). ``total``:
    the recording's pair count when known (`bag info` has it), else a first pass counts them; only
    the picked pairs are kept and decoded, so a long recording costs a read, not its size in memory."""
    with open_bag(source.bag) as bag:
        rgb_topic, thermal_topic = resolve_image_topics(bag, source.rgb_topic, source.thermal_topic)

        def pairs():
            pairing = BagPairing(bag, rgb_topic.name, thermal_topic.name, source.slop_s)
            return (a.pair for a in pairing if a.pair is not None)

        total = sum(1 for _ in pairs()) if total is None else total
        wanted = set(np.linspace(0, total - 1, min(count, total)).round().astype(int).tolist()) if total else set()
        decoded = []
        for index, pair in enumerate(pairs()):
            if index not in wanted:
                continue
            try:
                decoded.append((decode_rgb(pair.rgb.msg), decode_thermal(pair.thermal.msg)))
            except ImageDecodeError:
                continue
            first, this = decoded[0], decoded[-1]
            _check_same_sizes(source.bag, (first[1].shape[:2], first[0].shape[:2]),
                              (this[1].shape[:2], this[0].shape[:2]), index + 1)
            if index >= max(wanted):
                break
    if not decoded:
        raise BagError(f"{source.bag}: no decodable RGB/thermal pair on {rgb_topic.name} + {thermal_topic.name}")
    return rgb_topic.name, thermal_topic.name, decoded


def refine_recording(settings: RefineSettings) -> RefineResult:
    """Refine on ``settings.samples`` pairs; the per-pair results are combined by the median of where
    they put the thermal frame's corners (``registration.combine_homographies``)."""
    rgb_topic, thermal_topic, pairs = sample_pairs(settings.source, settings.samples)
    rgb_hw, thermal_hw = pairs[0][0].shape[:2], pairs[0][1].shape[:2]
    if settings.homography is not None:
        try:
            check_registration_size(settings.homography_size, thermal_hw, rgb_hw)
        except InputError as exc:
            raise InputError(f"--thermal-homography: {str(exc).removeprefix('thermal homography: ')}") from None
    initial = reg.resize_homography(thermal_hw, rgb_hw) if settings.homography is None else settings.homography
    refinements = [reg.refine_homography(rgb, thermal, initial) for rgb, thermal in pairs]
    good = [r.homography for r in refinements if r.converged]
    if not good:
        raise InputError(f"{settings.source.bag}: the refinement converged on none of the {len(pairs)} sampled pairs "
                         f"({refinements[0].reason}); frames with more shared structure are needed")
    result = RefineResult(rgb_topic, thermal_topic, reg.normalized(initial),
                          reg.combine_homographies(good, thermal_hw), thermal_hw, refinements)
    result.score_before = float(np.nanmedian([reg.alignment_score(rgb, thermal, result.initial) for rgb, thermal in pairs]))
    result.score_after = float(np.nanmedian([reg.alignment_score(rgb, thermal, result.homography) for rgb, thermal in pairs]))
    _check_refined(result, settings, len(pairs))
    result.lines = _refine_lines(result, settings, pairs)
    if settings.output is not None:
        with output_file(settings.output, force=settings.force, inputs=settings.inputs) as out:
            write_text_atomic(out, homography_params_text(result.homography, result.lines, _made_for(thermal_hw, rgb_hw)))
    return result


def _check_refined(result: RefineResult, settings: RefineSettings, pairs: int) -> None:
    """A refinement must pass its own test before it is written: when the combined result does not
    look aligned by the score either, it stopped on false peaks (45-80 px knocks of the real MSRS rig
    ended 43-83 px off while saying they moved 5-25 px, each with a median score after at most
    -0.02; every knock it recovered, up to 35 px, scored 0.037 or more: 18 knocks, 8 pairs each)."""
    if not result.score_after > reg.SCORE_WARN:
        raise InputError(
            f"{settings.source.bag}: the refined registration does not look aligned either (alignment score "
            f"{result.score_after:.3f}, not above {reg.SCORE_WARN:g}; converged on {len(result.converged)} of {pairs} "
            f"pairs): the start is further off than a refinement reaches (~{reg.MAX_SHIFT * 640:.0f} px at 640 wide: "
            "calibrate with a target, `taseg bag calibrate`), or these frames share too little structure (more "
            "--samples, or a recording with more in view). Nothing written")


def _refine_lines(result: RefineResult, settings: RefineSettings, pairs) -> list[str]:
    start = "the given homography" if settings.homography is not None else "the plain resize (no homography given)"
    return [
        f"thermal -> RGB homography refined on {len(pairs)} pairs of {settings.source.bag} "
        f"({result.rgb_topic} + {result.thermal_topic}), from {start}",
        f"converged on {len(result.converged)} of {len(pairs)} pairs; moved {result.shift_px:.1f} px (mean over the "
        f"thermal frame; corners {reg.corner_shift(result.initial, result.homography, result.thermal_hw):.1f} px): "
        f"{reg.describe_offset(result.shift_px)} before refining",
        f"alignment score (median over the pairs; > {reg.SCORE_WARN:g} looks aligned): before "
        f"{result.score_before:.3f}, after {result.score_after:.3f}",
        "homography: [" + ", ".join(f"{v:.6g}" for v in result.homography.ravel()) + "]",
        f"note: {CAVEAT}",
    ]


def registration_check(source: PairSource, homography: np.ndarray | None, total_pairs: int | None = None,
                       samples: int = reg.CHECK_PAIRS, made_for: tuple[int, int, int, int] | None = None) -> str:
    """`bag info`'s one line: how far off the registration (or the plain resize) looks on a few
    pairs, by the rule the node's registration watch applies (``registration.judge_registration``);
    a registration made for other frame sizes (``made_for``) is not applied but named."""
    _, _, pairs = sample_pairs(source, samples, total_pairs)
    what = "the thermal homography" if homography is not None else "the plain resize (no --thermal-homography)"
    try:
        check_registration_size(made_for if homography is not None else None, pairs[0][1].shape[:2],
                                pairs[0][0].shape[:2])
    except InputError as exc:
        return f"registration ({what}): WRONG CAMERAS: {str(exc).removeprefix('thermal homography: ')}"
    verdict = reg.judge_registration(pairs, homography)
    if not verdict.known:
        return f"registration ({what}): {verdict.describe()}"
    return (f"registration ({what}): {verdict.describe()} ({verdict.converged} sampled pairs combined; "
            f"score {verdict.score:.3f}); `taseg bag refine` refines it")


def format_calibration(result: CalibrationResult, output: Path) -> str:
    return safe_lines([*result.lines, f"wrote {output}"])  # the lines name the recording's topics


def format_refine(result: RefineResult, output: Path | None) -> str:
    return safe_lines([*result.lines, *([f"wrote {output}"] if output is not None else [])])
