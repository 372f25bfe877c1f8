"""`taseg bag`: rosbag2 tools for your own RGB-T recordings (sqlite3 or mcap).

info     topics, rates, gaps, and how many RGB/thermal pairs match (with the stamp offsets)
extract  matched pairs -> the plain folder dataset (rgb/ thermal/ [labels/] classes.yaml splits)
select   the K frames most worth labelling (uncertain, spread out), written as extract writes them
eval     run a checkpoint on every pair (or at the real rate): label-free quality (confidence,
         entropy, flicker, worst segments), scores against labels when given, timing; compare
         with a baseline model or report and gate the change (exit 1); write a report and an
         output recording with labels/colorized/overlay/confidence and per-frame figure topics
replay   publish the recording over DDS to a running taseg_node and record what it publishes
calibrate  thermal -> RGB homography from a recording of a calibration target -> node parameters file
refine   refine a registration (or check the plain resize) on ordinary frames, no target needed
"""

from __future__ import annotations

import argparse
import sys

from taseg_ros.frames.pairing import DEFAULT_SLOP_S

EPILOG = """\
examples:
  taseg bag info run1
  taseg bag extract run1 -o data/mine --hz 2
  taseg bag select run1 run2 --checkpoint model.safetensors -k 50 -o data/to_label
  taseg bag eval run1 --checkpoint model.safetensors --labels data/mine -o eval_run1
  taseg bag eval run1 --checkpoint model.safetensors --mode realtime --no-output-bag
  taseg bag eval run1 --checkpoint new.safetensors --baseline old.safetensors \
      --gate mean_confidence:change_min=-0.02 --gate baseline_agreement:min=0.9 -o eval_new
  taseg bag eval run1 --checkpoint new.safetensors --baseline eval_old/report.json --gates gates.yaml
  taseg bag replay run1 --rate 1.0 -o run1_replay
  taseg bag calibrate board_run --board 9x6 --square 0.04 -o registration.yaml
  taseg bag refine run1 --thermal-homography registration.yaml -o registration_refined.yaml
The RGB and thermal topics are guessed from the recording's image topics when not given
(thermal: a name with thermal/lwir/ir/flir, or a 16-bit/float encoding).
"""


def _bag_and_topics(p: argparse.ArgumentParser) -> None:
    """The recording and which of its topics to pair: every sub-command starts with these."""
    p.add_argument("bag", metavar="BAG", help="rosbag2 folder (sqlite3 or mcap), or a bare .mcap / .db3 file")
    p.add_argument("--rgb-topic", metavar="TOPIC", help="sensor_msgs/Image or CompressedImage topic of the RGB camera")
    p.add_argument("--thermal-topic", metavar="TOPIC", help="... of the thermal camera")
    p.add_argument(
        "--slop",
        type=float,
        default=DEFAULT_SLOP_S,
        metavar="S",
        help=f"max stamp difference of a pair in seconds, as the node's `slop` parameter (default {DEFAULT_SLOP_S:g})",
    )


def _max_pairs(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--max-pairs", type=int, metavar="N", help=what)


def _force(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing output recording (only a rosbag2 recording is ever replaced) and write into "
        "an existing report folder; an output that is or overlaps an input is refused even so",
    )


def _json(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--json", action="store_true", help=what)


def _progress(total: int | None, unit: str):
    """A tqdm bar on a terminal, nothing otherwise (logs, CI)."""
    from tqdm import tqdm

    bar = tqdm(total=total, unit=unit, disable=not sys.stderr.isatty(), file=sys.stderr, leave=False)
    return bar, (lambda n: bar.update(n - bar.n))


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bag",
        help="rosbag2 tools: info, extract, select, eval, replay, calibrate, refine",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="bag_command", metavar="ACTION", required=True)
    for add in (_add_info, _add_extract, _add_select, _add_eval, _add_replay, _add_calibrate, _add_refine):
        add(sub)


def _add_info(sub) -> None:
    info = sub.add_parser(
        "info",
        help="is this recording usable? topics, rates, pairs, stamp offsets",
        description="Topics, rates, gaps and how many RGB/thermal pairs match at --slop. "
        "Exit code 0 when pairs match, 1 when the recording is not usable as it is.",
    )
    _bag_and_topics(info)
    _json(info, "print JSON instead of text")
    from taseg_ros.cli.options import add_homography_option

    add_homography_option(info, "registration to check on a few sampled pairs (9 numbers or a parameters file); "
                          "default: the plain resize (the identity for same-size cameras)")
    info.add_argument("--no-registration-check", action="store_true",
                      help="skip the registration check (it refines on 3 downscaled pairs: about a second)")
    info.set_defaults(func=run_info)


def _add_extract(sub) -> None:
    ex = sub.add_parser(
        "extract",
        help="matched pairs -> plain folder dataset for labelling and training",
        description="Write matched RGB/thermal pairs in the plain folder dataset format "
        "(rgb/, thermal/, classes.yaml, train.txt, val.txt, frames.csv); file names are the RGB "
        "stamps (<sec>_<nanosec>). Adds to an existing folder.",
    )
    _bag_and_topics(ex)
    ex.add_argument("-o", "--output", required=True, metavar="DIR", help="dataset folder (created or added to)")
    rate = ex.add_mutually_exclusive_group()
    rate.add_argument("--every", type=int, metavar="N", help="keep every N-th pair")
    rate.add_argument("--hz", type=float, metavar="F", help="keep at most F pairs per second")
    ex.add_argument(
        "--classes",
        metavar="NAME|YAML",
        help="class list for classes.yaml (mfnet | pst900 | kp | fmb | a YAML); default: keep the "
        "folder's classes.yaml, else mfnet's",
    )
    ex.add_argument("--label-topic", metavar="TOPIC", help="also write labels/ from this topic (class-id images)")
    ex.add_argument("--prefix", default="", help="prefix of the file names, e.g. the run's name ('run1_')")
    ex.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        metavar="F",
        help="last fraction of the recording's pairs listed in val.txt (default 0.2; 0: none)",
    )
    _max_pairs(ex, "stop after writing N pairs")
    from taseg_ros.cli.options import add_thermal_options

    add_thermal_options(ex, default_help="auto, as the node's parameter; recorded in classes.yaml", homography=True)
    ex.set_defaults(func=run_extract)


def _add_select(sub) -> None:
    from taseg_ros.labelling import select

    se = sub.add_parser(
        "select",
        help="the K frames most worth labelling: uncertain for the model, not near-duplicates",
        description=select.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    se.add_argument("bag", metavar="REC", nargs="+", help="rosbag2 recordings (folders, or bare .mcap / .db3 files)")
    se.add_argument("--rgb-topic", metavar="TOPIC", help="RGB topic of every recording (default: guessed per recording)")
    se.add_argument("--thermal-topic", metavar="TOPIC", help="... thermal topic")
    se.add_argument("--slop", type=float, default=0.02, metavar="S",
                    help="max stamp difference of a pair in seconds, as the node's `slop` parameter (default 0.02)")
    se.add_argument("--checkpoint", required=True, metavar="CKPT", help="the model whose uncertainty ranks the frames")
    se.add_argument("--sam-checkpoint", metavar="PTH", help="official SAM weights the checkpoint refers to (default: models/)")
    se.add_argument("-k", type=int, required=True, metavar="K", help="how many frames to choose")
    se.add_argument("-o", "--output", required=True, metavar="DIR",
                    help="dataset folder (created or added to; frames already in it are not chosen again)")
    se.add_argument("--score", choices=select.SCORES, default="entropy",
                    help="uncertainty figure: mean normalised entropy, or the share of low-confidence pixels "
                    "(default entropy)")
    se.add_argument("--low-confidence", type=float, default=select.DEFAULT_LOW_CONFIDENCE, metavar="P",
                    help=f"a pixel is low-confidence below this probability of its class (default {select.DEFAULT_LOW_CONFIDENCE})")
    se.add_argument("--min-gap", type=float, default=select.DEFAULT_MIN_GAP_S, metavar="S",
                    help=f"chosen frames of one recording lie at least S seconds apart (default {select.DEFAULT_MIN_GAP_S:g})")
    se.add_argument("--min-distance", type=float, default=select.DEFAULT_MIN_DISTANCE, metavar="D",
                    help="a frame whose thumbnail lies closer than D (RMS, 0..1) to a chosen one is a near-duplicate "
                    f"and never chosen (default {select.DEFAULT_MIN_DISTANCE:g})")
    rate = se.add_mutually_exclusive_group()
    rate.add_argument("--every", type=int, metavar="N", help="score only every N-th pair (long recordings)")
    rate.add_argument("--hz", type=float, metavar="F", help="score at most F pairs per second")
    se.add_argument("--prefix", default="", help="prefix of the file names, as bag extract's")
    se.add_argument("--val-fraction", type=float, default=0.2, metavar="F",
                    help="last fraction of each recording's chosen frames listed in val.txt (default 0.2)")
    from taseg_ros.cli.options import add_backend_options, add_device_options, add_thermal_options

    add_device_options(se)
    add_backend_options(se)
    add_thermal_options(se, default_help="auto, as the node's parameter; recorded in classes.yaml", homography=True)
    se.set_defaults(func=run_select)


def _add_eval(sub) -> None:
    ev = sub.add_parser(
        "eval",
        help="run a checkpoint on the recording: scores, latency, drops, output bag",
        description="Run a checkpoint on every matched pair (--mode offline) or at the recording's "
        "rate with the node's newest-pair-wins policy (--mode realtime). Reports, without labels, the "
        "label-free quality of every pair (confidence, entropy, flicker against the previous pair raw "
        "and motion compensated, class shares, the worst segments of the recording), and with labels "
        "per-class IoU and mIoU as well; latency statistics and the share of pairs a real-time node "
        "would drop; writes report.json, report.md, plots and an mcap recording with the inputs plus "
        "<ns>/labels, colorized, overlay, confidence and <ns>/quality/<figure> topics. With --baseline "
        "(a previous model, run on the same pairs, or a previous report.json of this recording) it "
        "reports the change of every figure; --gate/--gates set pass ranges: exit code 1 when one "
        "fails (2: bad input, nothing written).",
    )
    _bag_and_topics(ev)
    ev.add_argument("--checkpoint", required=True, metavar="CKPT", help="TASeg checkpoint (.safetensors)")
    ev.add_argument(
        "--sam-checkpoint", metavar="PTH", help="official SAM weights the checkpoint refers to (default: models/)"
    )
    labels = ev.add_mutually_exclusive_group()
    labels.add_argument(
        "--labels",
        metavar="DIR",
        help="label PNGs named <sec>_<nanosec>.png (a dataset folder from `bag extract`, or its labels/)",
    )
    labels.add_argument("--label-topic", metavar="TOPIC", help="class-id label images recorded in the bag")
    ev.add_argument(
        "--label-tolerance",
        type=float,
        default=0.001,
        metavar="S",
        help="max difference between a label's stamp and the RGB stamp (default 0.001 s)",
    )
    ev.add_argument(
        "--mode",
        choices=("offline", "realtime"),
        default="offline",
        help="offline: every pair, as fast as possible (drops simulated); realtime: only the pairs a "
        "live node would process (default offline)",
    )
    ev.add_argument("-o", "--output", metavar="DIR", help="report folder (default ./<bag name>_eval)")
    out_bag = ev.add_mutually_exclusive_group()
    out_bag.add_argument("--output-bag", metavar="PATH", help="output recording (default <output>/<bag name>_taseg)")
    out_bag.add_argument("--no-output-bag", action="store_true", help="write the report only")
    _force(ev)
    ev.add_argument(
        "--namespace", default="/taseg", help="namespace of the output topics (default /taseg, as the node's)"
    )
    from taseg_ros.cli.options import add_backend_options, add_device_options, add_overlay_option, add_thermal_options

    add_device_options(ev)
    add_backend_options(ev)
    add_thermal_options(ev, default_help="auto, as the node's parameter", homography=True)
    add_overlay_option(ev)
    _max_pairs(ev, "stop after N pairs")
    _quality_options(ev)
    ev.set_defaults(func=run_eval)


def _quality_options(ev: argparse.ArgumentParser) -> None:
    from taseg_ros.evaluation.gates import GATE_SYNTAX
    from taseg_ros.evaluation.quality import DEFAULT_LOW_CONFIDENCE, DEFAULT_SEGMENT_WINDOW_S, DEFAULT_WORST_SEGMENTS, FIGURES

    group = ev.add_argument_group("label-free quality and regression against a baseline")
    group.add_argument("--low-confidence", type=float, default=DEFAULT_LOW_CONFIDENCE, metavar="T",
                       help=f"a pixel whose chosen class has probability below T counts as low-confidence "
                       f"(default {DEFAULT_LOW_CONFIDENCE})")
    group.add_argument("--thermal-reliance", action="store_true",
                       help="also measure the share of pixels whose label changes with the thermal input blanked: "
                       "costs a second forward per pair (two more with a model --baseline)")
    group.add_argument("--segment-window", type=float, default=DEFAULT_SEGMENT_WINDOW_S, metavar="S",
                       help=f"length of the worst segments reported (default {DEFAULT_SEGMENT_WINDOW_S:g} s)")
    group.add_argument("--worst-segments", type=int, default=DEFAULT_WORST_SEGMENTS, metavar="N",
                       help=f"how many non-overlapping worst segments per figure (default {DEFAULT_WORST_SEGMENTS})")
    group.add_argument("--baseline", metavar="MODEL|REPORT",
                       help="a previous model (any file --checkpoint takes; it runs on the same pairs: a second "
                       "forward per pair, and the per-frame agreement of the two models) or a previous report.json "
                       "of bag eval on this recording (or its folder; figures only); same class list required")
    group.add_argument("--gate", action="append", default=[], metavar="FIGURE:BOUND=VALUE",
                       help=f"pass range of a figure, repeatable: {GATE_SYNTAX} (change: new - baseline); "
                       f"figures: {', '.join(FIGURES)}; e.g. mean_confidence:change_min=-0.02. Exit code 1 "
                       "when a gate fails")
    group.add_argument("--gates", metavar="YAML",
                       help="gates from a YAML file: 'gates: {FIGURE: {BOUND: VALUE}}' (added to --gate)")


def _add_replay(sub) -> None:
    rp = sub.add_parser(
        "replay",
        help="publish the recording to a running taseg_node; record its outputs",
        description="Publish the RGB and thermal topics over DDS at --rate to a running taseg_node, "
        "record what the node publishes (labels, colorized, overlay, class_info, diagnostics) into an "
        "output recording, and report end-to-end latency and dropped pairs.",
    )
    _bag_and_topics(rp)
    rp.add_argument("--rate", type=float, default=1.0, help="playback speed (1.0 = as recorded)")
    rp.add_argument(
        "--node",
        default="/taseg",
        metavar="NAME",
        help="fully qualified name of the node whose outputs are recorded (default /taseg)",
    )
    rp.add_argument("--publish-rgb-topic", metavar="TOPIC", help="publish RGB here (default: the recorded topic name)")
    rp.add_argument(
        "--publish-thermal-topic", metavar="TOPIC", help="publish thermal here (default: the recorded name)"
    )
    rp.add_argument("-o", "--output-bag", metavar="PATH", help="output recording (default ./<bag name>_replay)")
    rp.add_argument("--no-output-bag", action="store_true", help="measure only")
    _force(rp)
    rp.add_argument("--report", metavar="DIR", help="also write replay.json there")
    rp.add_argument(
        "--wait",
        type=float,
        default=30.0,
        metavar="S",
        help="how long to wait for the node's subscriptions and publishers (default 30 s)",
    )
    rp.add_argument(
        "--drain",
        type=float,
        default=3.0,
        metavar="S",
        help="after the last message, wait this long without new outputs before stopping (default 3 s)",
    )
    rp.add_argument(
        "--keep-stamps",
        action="store_true",
        help="publish the recorded header stamps; default: shift them to now (as a live camera)",
    )
    _max_pairs(rp, "stop publishing after the frames of N pairs")
    _json(rp, "print the report as JSON")
    rp.set_defaults(func=run_replay)


def _add_calibrate(sub) -> None:
    from taseg_ros.bag.calibrate import DEFAULT_HFOV_DEG
    from taseg_ros.cli.options import add_force_option
    from taseg_ros.frames import calibration as cal

    cb = sub.add_parser(
        "calibrate",
        help="thermal -> RGB homography from a recording of a calibration target",
        description="Find a calibration target (a heated or holed chessboard, or a circle grid) in both cameras "
        "of a recording, fit the thermal -> RGB pixel homography over all frames (RANSAC), report the "
        "reprojection error (RMS and worst, RGB px) and how much of the RGB frame the thermal image covers, "
        "and write a node parameters file (thermal_homography) that the node and `bag extract/eval/info "
        "--thermal-homography FILE` take. Refused, with the reason and nothing written, when fewer than "
        f"{cal.MIN_FRAMES} pairs show the target in both cameras, when they hold fewer than {cal.MIN_POSES} "
        f"distinct poses, or when the poses cover less than {100 * cal.MIN_POSE_COVERAGE:.0f}% of the thermal "
        "frame. A homography is exact only for a plane or co-axial optics: give --baseline and --distance for "
        "the parallax it leaves.",
    )
    _bag_and_topics(cb)
    cb.add_argument("--board", required=True, metavar="COLSxROWS",
                    help="target size: inner corners of a chessboard (10x7 squares -> 9x6), or circles of a grid")
    cb.add_argument("--square", type=float, metavar="M", help="square side (circle spacing) in metres: gives the "
                    "board's distance, i.e. where the homography is exact")
    cb.add_argument("--target", choices=cal.TARGETS, default="chessboard", help="default chessboard")
    cb.add_argument("--invert-thermal", choices=cal.INVERT_CHOICES, default="auto",
                    help="look for the target in the inverted thermal image (a heated board's warm squares are "
                    "bright); auto tries both (default)")
    cb.add_argument("--every", type=int, default=1, metavar="N", help="use every N-th pair (default 1)")
    cb.add_argument("--baseline", type=float, metavar="M", help="distance between the two cameras' centres (m)")
    cb.add_argument("--distance", type=float, nargs=2, metavar=("NEAR", "FAR"),
                    help="working distance range (m; FAR may be inf) for the parallax estimate")
    cb.add_argument("--rgb-hfov", type=float, default=DEFAULT_HFOV_DEG, metavar="DEG",
                    help=f"the RGB camera's horizontal field of view, for its focal length (default {DEFAULT_HFOV_DEG:g})")
    _max_pairs(cb, "look at N pairs at most")
    cb.add_argument("-o", "--output", required=True, metavar="YAML", help="parameters file to write")
    add_force_option(cb)
    cb.set_defaults(func=run_calibrate)


def _add_refine(sub) -> None:
    from taseg_ros.cli.options import add_force_option, add_homography_option

    rf = sub.add_parser(
        "refine",
        help="refine a registration on ordinary frames (no target); report its score",
        description="Refine the thermal -> RGB registration on ordinary frames of a recording: align the thermal "
        "image's edges to the RGB image's (ECC on normalised gradient images, coarse to fine) on --samples pairs "
        "spread over the recording, combine them, and report the alignment score before and after and how far "
        "the registration moved. Writes a node parameters file with -o.",
    )
    _bag_and_topics(rf)
    add_homography_option(rf, "the registration to refine (9 numbers or a parameters file); default: the plain "
                          "resize (the identity for same-size cameras)")
    rf.add_argument("--samples", type=int, default=8, metavar="N", help="pairs to refine on (default 8)")
    rf.add_argument("-o", "--output", metavar="YAML", help="parameters file to write (default: report only)")
    add_force_option(rf)
    rf.set_defaults(func=run_refine)


def _bag_name(path) -> str:
    """The recording's name for default output names: the folder's, or the bare file's without suffix."""
    from pathlib import Path

    return Path(path).resolve().name.removesuffix(".mcap").removesuffix(".db3")


def run_info(args) -> int:
    import json

    from taseg_ros.bag.info import format_info, inspect_bag

    from taseg_ros.cli.options import homography_from_args

    homography = homography_from_args(args)
    info = inspect_bag(args.bag, args.rgb_topic, args.thermal_topic, args.slop)
    if info.usable and not args.no_registration_check:
        from taseg_ros.bag.calibrate import registration_check

        info.registration = registration_check(_source_from_args(args), homography, info.pairs)
    text = format_info(info) + (f"\n{info.registration}" if info.registration else "")
    print(json.dumps(info.to_dict(), indent=2) if args.json else text)
    return 0 if info.usable else 1


def run_calibrate(args) -> int:
    from taseg_ros.bag.calibrate import CalibrateSettings, calibrate, format_calibration
    from taseg_ros.bag.io.stop import stop_on_sigint
    from taseg_ros.frames.calibration import Target

    settings = CalibrateSettings(
        source=_source_from_args(args),
        output=args.output,
        target=Target.parse(args.board, args.target, args.square),
        invert_thermal=args.invert_thermal,
        every=args.every,
        baseline_m=args.baseline,
        distance_m=None if args.distance is None else tuple(args.distance),
        rgb_hfov_deg=args.rgb_hfov,
        force=args.force,
    )
    with stop_on_sigint() as stop:
        result = calibrate(settings, stop=lambda: bool(stop))
    print(format_calibration(result, settings.output))
    return 0


def run_refine(args) -> int:
    from taseg_ros.bag.calibrate import RefineSettings, format_refine, refine_recording
    from taseg_ros.cli.options import homography_from_args

    given = args.thermal_homography or []
    homography_file = given[0] if len(given) == 1 else None  # a file, not numbers: an input never overwritten
    settings = RefineSettings(_source_from_args(args), args.output, homography_from_args(args), args.samples,
                              args.force, homography_file)
    result = refine_recording(settings)
    print(format_refine(result, settings.output))
    return 0


def run_extract(args) -> int:
    from taseg_ros.bag.extract import ExtractSettings, extract_pairs, format_extract
    from taseg_ros.bag.io.stop import stop_on_sigint
    from taseg_ros.cli.options import homography_from_args, thermal_norm_from_args
    from taseg_ros.frames.thermal import ThermalNormalization

    settings = ExtractSettings(
        source=_source_from_args(args),
        output=args.output,
        every=args.every,
        hz=args.hz,
        classes=args.classes,
        label_topic=args.label_topic,
        prefix=args.prefix,
        val_fraction=args.val_fraction,
        thermal_norm=thermal_norm_from_args(args) or ThermalNormalization(),
        homography=homography_from_args(args),
    )
    bar, update = _progress(None, "pair")
    with stop_on_sigint() as stop, bar:
        result = extract_pairs(settings, stop=lambda: bool(stop), on_pair=update)
    print(format_extract(result))
    return 130 if result.interrupted else 0


def run_select(args) -> int:
    import warnings

    from taseg_ros.cli.options import homography_from_args, segmenter_from_args, thermal_norm_from_args
    from taseg_ros.labelling.select import SelectSettings, format_select, select_frames
    from taseg_ros.outputs import check_not_overlapping

    settings = SelectSettings(
        recordings=tuple(args.bag), output=args.output, k=args.k, rgb_topic=args.rgb_topic,
        thermal_topic=args.thermal_topic, slop_s=args.slop, score=args.score, low_confidence=args.low_confidence,
        min_gap_s=args.min_gap, min_distance=args.min_distance, every=args.every, hz=args.hz, prefix=args.prefix,
        val_fraction=args.val_fraction, thermal_norm=thermal_norm_from_args(args),
        homography=homography_from_args(args),
    )
    check_not_overlapping(settings.output, {"--checkpoint": args.checkpoint, **{f"REC {r}": r for r in args.bag}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # model-building noise; checkpoint problems raise
        segmenter = segmenter_from_args(args)
    bar, update = _progress(None, "pair")
    with bar:
        result = select_frames(settings, segmenter, on_pair=update)
    print(format_select(result, settings))
    return 0


def _source_from_args(args):
    from taseg_ros.bag.pairs import PairSource

    return PairSource(args.bag, args.rgb_topic, args.thermal_topic, args.slop, getattr(args, "max_pairs", None))


def _eval_outputs(args):
    """(report folder, output recording or None, the inputs), checked before the model is loaded:
    an output that is or overlaps an input is refused even with --force."""
    from pathlib import Path

    from taseg_ros.bag.io.writer import check_output_recording
    from taseg_ros.outputs import check_output_dir

    inputs = {"BAG": args.bag, "--checkpoint": args.checkpoint, "--sam-checkpoint": args.sam_checkpoint}
    inputs["--labels"] = args.labels
    inputs["--baseline"] = args.baseline
    inputs["--gates"] = args.gates
    bag_name = _bag_name(args.bag)
    out_dir = Path(args.output or f"{bag_name}_eval")
    output_bag = None
    if not args.no_output_bag:
        output_bag = args.output_bag or out_dir / f"{bag_name}_taseg"
        check_output_recording(output_bag, force=args.force, inputs=inputs)
    check_output_dir(out_dir, force=args.force, inputs=inputs)
    return out_dir, output_bag, inputs


def run_eval(args) -> int:
    import warnings

    from taseg_ros.bag.evaluate.compare import compare
    from taseg_ros.bag.evaluate.report import format_summary, write_eval_report
    from taseg_ros.bag.evaluate.run import EvalSettings, evaluate_bag
    from taseg_ros.bag.io.stop import stop_on_sigint
    from taseg_ros.bag.io.writer import output_recording
    from taseg_ros.cli.options import frame_settings_from_args, segmenter_from_args
    from taseg_ros.outputs import output_dir

    out_dir, output_bag, inputs = _eval_outputs(args)
    settings = EvalSettings(
        _source_from_args(args), frame=frame_settings_from_args(args), mode=args.mode, labels_dir=args.labels,
        label_topic=args.label_topic, label_tolerance_s=args.label_tolerance, output_namespace=args.namespace,
        checkpoint_name=str(args.checkpoint), low_confidence=args.low_confidence,
        thermal_reliance=args.thermal_reliance, segment_window_s=args.segment_window, worst_segments=args.worst_segments,
    )
    gates = _gates_from_args(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # model-building noise; checkpoint problems raise
        segmenter = segmenter_from_args(args)
        baseline_model, baseline_report = _baseline_from_args(args, segmenter)
    bar, update = _progress(None, "pair")
    with (
        output_dir(out_dir, force=args.force, inputs=inputs) as out,
        output_recording(output_bag, force=args.force, inputs=inputs) as bag_out,
        stop_on_sigint() as stop,
        bar,
    ):
        result = evaluate_bag(settings, segmenter, output_bag=bag_out, baseline=baseline_model,
                              stop=lambda: bool(stop), on_pair=update)
        comparison = compare(result, gates, args.baseline, baseline_report)
        files = write_eval_report(result, out)
    print(format_summary(result))
    print(f"  report: {files['markdown']} (+ report.json, plots)")
    if result.interrupted:
        return 130
    return 0 if comparison["passed"] else 1


def _gates_from_args(args):
    """--gate and --gates, checked against what this run computes (before the model loads)."""
    from taseg_ros.bag.evaluate.compare import check_gates_available, is_report
    from taseg_ros.errors import InputError
    from taseg_ros.evaluation.gates import load_gates, parse_gate

    if not 0 < args.low_confidence <= 1:
        raise InputError(f"--low-confidence must be in (0, 1], got {args.low_confidence}")
    if not args.segment_window > 0 or args.worst_segments < 0:
        raise InputError("--segment-window must be > 0 and --worst-segments >= 0")
    gates = [parse_gate(text) for text in args.gate] + (load_gates(args.gates) if args.gates else [])
    model_baseline = args.baseline is not None and not is_report(args.baseline)
    check_gates_available(gates, args.baseline, model_baseline, args.thermal_reliance)
    return gates


def _baseline_from_args(args, segmenter):
    """(baseline Segmenter or None, BaselineReport or None), refused in one line when it cannot be
    compared (another class list, a report of another recording)."""
    from argparse import Namespace

    from taseg_ros.bag.evaluate.compare import check_baseline_model, is_report, load_baseline_report
    from taseg_ros.bag.io.reader import open_bag
    from taseg_ros.bag.io.topics import resolve_image_topics
    from taseg_ros.cli.options import segmenter_from_args

    if args.baseline is None:
        return None, None
    if is_report(args.baseline):
        with open_bag(args.bag) as bag:
            rgb, thermal = resolve_image_topics(bag, args.rgb_topic, args.thermal_topic)
            start = bag.start_ns
        names = segmenter.class_info.names
        return None, load_baseline_report(args.baseline, names, start, (rgb.name, thermal.name))
    baseline = segmenter_from_args(Namespace(**{**vars(args), "checkpoint": args.baseline}))
    check_baseline_model(baseline, segmenter, args.baseline)
    return baseline, None


def run_replay(args) -> int:
    import json
    from pathlib import Path

    from taseg_ros.bag.replay import format_replay
    from taseg_ros.bag.io.writer import output_recording
    from taseg_ros.outputs import check_output_file, write_text_atomic

    inputs = {"BAG": args.bag}
    output_bag = None if args.no_output_bag else args.output_bag or f"{_bag_name(args.bag)}_replay"
    report = None if args.report is None else check_output_file(
        Path(args.report) / "replay.json", force=args.force, inputs=inputs
    )
    with output_recording(output_bag, force=args.force, inputs=inputs) as bag_out:
        result = _replay(args, bag_out)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(report, json.dumps(result.to_dict(), indent=2) + "\n")
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_replay(result))
    return 130 if result.interrupted else 0


def _replay(args, output_bag):
    from taseg_ros.bag.replay import ReplaySettings, replay_bag

    settings = ReplaySettings(
        _source_from_args(args), rate=args.rate, node=args.node, publish_rgb_topic=args.publish_rgb_topic,
        publish_thermal_topic=args.publish_thermal_topic, wait_s=args.wait, drain_s=args.drain,
        restamp=not args.keep_stamps,
    )
    return replay_bag(settings, output_bag, handle_sigint=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m taseg_ros.cli.bag ...`: the same as `taseg bag ...`, through the one entry point
    (its error handling: one line for a user mistake, exit code 2)."""
    from taseg_ros.cli import main as taseg_main

    return taseg_main(["bag", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
