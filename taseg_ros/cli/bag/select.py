"""`taseg bag select`: the K frames most worth labelling."""
from __future__ import annotations

import argparse
import sys

from taseg_ros.bag import DEFAULT_VAL_FRACTION
from taseg_ros.cli.bag.common import engine_from_args, fleet_options, slop_option
from taseg_ros.cli.options import (
    add_backend_options,
    add_device_options,
    add_model_options,
    add_thermal_options,
    registration_from_args,
    model_spec_from_args,
    thermal_norm_from_args,
)
from taseg_ros.errors import MissingInputError
from taseg_ros.labelling import settings as selection
from taseg_ros.outputs import check_not_overlapping


def add_select(sub) -> None:
    se = sub.add_parser(
        "select",
        help="the K frames most worth labelling: uncertain for the model, not near-duplicates",
        description=selection.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    se.add_argument("bag", metavar="REC", nargs="+", help="rosbag2 recordings (folders, or bare .mcap / .db3 files)")
    se.add_argument("--rgb-topic", metavar="TOPIC", help="RGB topic of every recording (default: guessed per recording)")
    se.add_argument("--thermal-topic", metavar="TOPIC", help="... thermal topic")
    slop_option(se)
    add_model_options(se, "the model whose uncertainty ranks the frames")
    se.add_argument("-k", type=int, required=True, metavar="K", help="how many frames to choose")
    se.add_argument("-o", "--output", required=True, metavar="DIR",
                    help="dataset folder (created or added to; frames already in it are not chosen again)")
    se.add_argument("--score", choices=selection.SCORES, default=selection.DEFAULT_SCORE,
                    help="uncertainty figure: mean normalised entropy, or the share of low-confidence pixels "
                    "(default entropy)")
    se.add_argument("--low-confidence", type=float, default=selection.DEFAULT_LOW_CONFIDENCE, metavar="P",
                    help=f"a pixel is low-confidence below this probability of its class (default {selection.DEFAULT_LOW_CONFIDENCE})")
    se.add_argument("--min-gap", type=float, default=selection.DEFAULT_MIN_GAP_S, metavar="S",
                    help=f"chosen frames of one recording lie at least S seconds apart (default {selection.DEFAULT_MIN_GAP_S:g})")
    se.add_argument("--min-distance", type=float, default=selection.DEFAULT_MIN_DISTANCE, metavar="D",
                    help="a frame whose thumbnail lies closer than D (RMS, 0..1) to a chosen one is a near-duplicate "
                    f"and never chosen (default {selection.DEFAULT_MIN_DISTANCE:g})")
    rate = se.add_mutually_exclusive_group()
    rate.add_argument("--every", type=int, metavar="N", help="score only every N-th pair (long recordings)")
    rate.add_argument("--hz", type=float, metavar="F", help="score at most F pairs per second")
    se.add_argument("--prefix", default="", help="prefix of the file names, as bag extract's")
    se.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION, metavar="F",
                    help=f"last fraction of each recording's chosen frames listed in val.txt (default {DEFAULT_VAL_FRACTION:g})")
    add_device_options(se)
    add_backend_options(se)
    add_thermal_options(se, default_help="auto, as the node's parameter; recorded in classes.yaml", homography=True)
    fleet_options(se)
    se.set_defaults(func=run_select)


def run_select(args) -> int:
    from taseg_ros.labelling.select import SelectSettings, format_select, select_frames  # the model, OpenCV, rosbags

    engine = engine_from_args(args)  # first: without Ray, one line and nothing else done
    homography, homography_size = registration_from_args(args)
    settings = SelectSettings(
        recordings=tuple(args.bag), output=args.output, k=args.k, rgb_topic=args.rgb_topic,
        thermal_topic=args.thermal_topic, slop_s=args.slop, score=args.score, low_confidence=args.low_confidence,
        min_gap_s=args.min_gap, min_distance=args.min_distance, every=args.every, hz=args.hz, prefix=args.prefix,
        val_fraction=args.val_fraction, thermal_norm=thermal_norm_from_args(args),
        homography=homography, homography_size=homography_size,
    )
    check_not_overlapping(settings.output, {"--checkpoint": args.checkpoint, **{f"REC {r}": r for r in args.bag}})
    model = model_spec_from_args(args, threads=args.threads_per_worker)
    if not model.checkpoint.is_file():
        raise MissingInputError(f"--checkpoint {model.checkpoint}: no such model file")
    result = select_frames(settings, engine=engine, model=model, threads=args.threads_per_worker,
                           on_event=_progress_line)
    print(format_select(result, settings))
    return 0


def _progress_line(event) -> None:
    """One line per recording scored (stderr: stdout holds the choice)."""
    if event.kind == "finished":
        outcome = event.result
        what = outcome.error or f"{outcome.scored} pairs scored"
        print(f"recording {outcome.index + 1}: {what}", file=sys.stderr)
    elif event.kind in ("retry", "lost", "waiting"):
        print(f"recording {int(event.key) + 1 if event.key else ''}: {event.kind}: {event.reason}", file=sys.stderr)
