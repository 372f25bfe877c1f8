"""`taseg bag extract`: matched pairs -> the plain folder dataset."""
from __future__ import annotations

from taseg_ros.bag import DEFAULT_VAL_FRACTION
from taseg_ros.bag.io.stop import stop_on_sigint
from taseg_ros.cli.bag.common import bag_and_topics, max_pairs_option, progress, source_from_args
from taseg_ros.cli.options import add_thermal_options, registration_from_args, thermal_norm_from_args


def add_extract(sub) -> None:
    ex = sub.add_parser(
        "extract",
        help="matched pairs -> plain folder dataset for labelling and training",
        description="Write matched RGB/thermal pairs in the plain folder dataset format "
        "(rgb/, thermal/, classes.yaml, train.txt, val.txt, frames.csv); file names are the RGB "
        "stamps (<sec>_<nanosec>). Adds to an existing folder.",
    )
    bag_and_topics(ex)
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
        default=DEFAULT_VAL_FRACTION,
        metavar="F",
        help=f"last fraction of the recording's pairs listed in val.txt (default {DEFAULT_VAL_FRACTION:g}; 0: none)",
    )
    max_pairs_option(ex, "stop after writing N pairs")

    add_thermal_options(ex, default_help="auto, as the node's parameter; recorded in classes.yaml", homography=True)
    ex.set_defaults(func=run_extract)


def run_extract(args) -> int:
    from taseg_ros.bag.extract import ExtractSettings, extract_pairs, format_extract
    from taseg_ros.frames.thermal import ThermalNormalization

    homography, homography_size = registration_from_args(args)
    settings = ExtractSettings(
        source=source_from_args(args),
        output=args.output,
        every=args.every,
        hz=args.hz,
        classes=args.classes,
        label_topic=args.label_topic,
        prefix=args.prefix,
        val_fraction=args.val_fraction,
        thermal_norm=thermal_norm_from_args(args) or ThermalNormalization(),
        homography=homography,
        homography_size=homography_size,
    )
    bar, update = progress(None, "pair")
    with stop_on_sigint() as stop, bar:
        result = extract_pairs(settings, stop=lambda: bool(stop), on_pair=update)
    print(format_extract(result))
    return 130 if result.interrupted else 0
