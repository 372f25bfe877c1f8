"""`taseg bag calibrate` (target) and `taseg bag refine` (ordinary frames): the thermal -> RGB registration."""
from __future__ import annotations

from taseg_ros.cli.bag.common import bag_and_topics, max_pairs_option, source_from_args
from taseg_ros.cli.options import add_force_option, add_homography_option, registration_from_args
from taseg_ros.frames import targets
from taseg_ros.frames.targets import DEFAULT_HFOV_DEG, Target


def add_calibrate(sub) -> None:
    cb = sub.add_parser(
        "calibrate",
        help="thermal -> RGB homography from a recording of a calibration target",
        description="Find a calibration target (a heated or holed chessboard, or a circle grid) in both cameras "
        "of a recording, fit the thermal -> RGB pixel homography over all frames (RANSAC), report the "
        "reprojection error (RMS and worst, RGB px) and how much of the RGB frame the thermal image covers, "
        "and write a node parameters file (thermal_homography) that the node and `bag extract/eval/info "
        "--thermal-homography FILE` take. Refused, with the reason and nothing written, when fewer than "
        f"{targets.MIN_FRAMES} pairs show the target in both cameras, when they hold fewer than {targets.MIN_POSES} "
        f"distinct poses, or when the poses cover less than {100 * targets.MIN_POSE_COVERAGE:.0f}% of the thermal "
        "frame. A homography is exact only for a plane or co-axial optics: give --baseline and --distance for "
        "the parallax it leaves.",
    )
    bag_and_topics(cb)
    cb.add_argument("--board", required=True, metavar="COLSxROWS",
                    help="target size: inner corners of a chessboard (10x7 squares -> 9x6), or circles of a grid")
    cb.add_argument("--square", type=float, metavar="M", help="square side (circle spacing) in metres: gives the "
                    "board's distance, i.e. where the homography is exact")
    cb.add_argument("--target", choices=targets.TARGETS, default="chessboard", help="default chessboard")
    cb.add_argument("--invert-thermal", choices=targets.INVERT_CHOICES, default="auto",
                    help="look for the target in the inverted thermal image (a heated board's warm squares are "
                    "bright); auto tries both (default)")
    cb.add_argument("--every", type=int, default=1, metavar="N", help="use every N-th pair (default 1)")
    cb.add_argument("--baseline", type=float, metavar="M", help="distance between the two cameras' centres (m)")
    cb.add_argument("--distance", type=float, nargs=2, metavar=("NEAR", "FAR"),
                    help="working distance range (m; FAR may be inf) for the parallax estimate")
    cb.add_argument("--rgb-hfov", type=float, default=DEFAULT_HFOV_DEG, metavar="DEG",
                    help=f"the RGB camera's horizontal field of view, for its focal length (default {DEFAULT_HFOV_DEG:g})")
    max_pairs_option(cb, "look at N pairs at most")
    cb.add_argument("-o", "--output", required=True, metavar="YAML", help="parameters file to write")
    add_force_option(cb)
    cb.set_defaults(func=run_calibrate)


def add_refine(sub) -> None:
    rf = sub.add_parser(
        "refine",
        help="refine a registration on ordinary frames (no target); report its score",
        description="Refine the thermal -> RGB registration on ordinary frames of a recording: align the thermal "
        "image's edges to the RGB image's (a translation search, then ECC on normalised gradient images, coarse "
        "to fine) on --samples pairs "
        "spread over the recording, combine them, and report the alignment score before and after and how far "
        "the registration moved. Writes a node parameters file with -o.",
    )
    bag_and_topics(rf)
    add_homography_option(rf, "the registration to refine (9 numbers or a parameters file); default: the plain "
                          "resize (the identity for same-size cameras)")
    rf.add_argument("--samples", type=int, default=8, metavar="N", help="pairs to refine on (default 8)")
    rf.add_argument("-o", "--output", metavar="YAML", help="parameters file to write (default: report only)")
    add_force_option(rf)
    rf.set_defaults(func=run_refine)


def run_calibrate(args) -> int:
    from taseg_ros.bag.calibrate import CalibrateSettings, calibrate, format_calibration  # OpenCV, rosbags

    settings = CalibrateSettings(
        source=source_from_args(args),
        output=args.output,
        target=Target.parse(args.board, args.target, args.square),
        invert_thermal=args.invert_thermal,
        every=args.every,
        baseline_m=args.baseline,
        distance_m=None if args.distance is None else tuple(args.distance),
        rgb_hfov_deg=args.rgb_hfov,
        force=args.force,
    )
    # No stop at a safe point (as bag extract/eval have): a registration from part of the recording
    # would claim more than it knows. Ctrl-C / SIGTERM abort, and nothing is written.
    result = calibrate(settings)
    print(format_calibration(result, settings.output))
    return 0


def run_refine(args) -> int:
    from taseg_ros.bag.calibrate import RefineSettings, format_refine, refine_recording  # OpenCV, rosbags

    given = args.thermal_homography or []
    homography_file = given[0] if len(given) == 1 else None  # a file, not numbers: an input never overwritten
    homography, made_for = registration_from_args(args)
    settings = RefineSettings(source_from_args(args), args.output, homography, args.samples, args.force,
                              homography_file, made_for)
    result = refine_recording(settings)
    print(format_refine(result, settings.output))
    return 0
