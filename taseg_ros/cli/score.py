"""`taseg score`: score any method's prediction PNGs against a dataset's label PNGs with the
dataset's published protocol (one confusion matrix over the split, its NaN policy, day/night)."""
from __future__ import annotations

import argparse

from pathlib import Path

from taseg_ros.cli.options import add_force_option, frame_size
from taseg_ros.errors import InputError
from taseg_ros.frames.sizes import format_size
from taseg_ros.outputs import check_output_dir, output_dir

EPILOG = """\
Predictions and labels are matched by file stem; every scored label needs a prediction.
Prediction PNGs: single channel = class ids 0..K-1 of the dataset's class list, 3/4 channels =
colours of the dataset palette (--pred-format to force). Labels are read as the dataset stores
them (FMB raw 0 -> ignored, KP 19 -> ignored).

examples:
  taseg score --pred out/mfnet --gt /data/MFNet/labels --dataset mfnet --ids /data/MFNet/test.txt
  taseg score --pred out/pst --gt /data/PST900/test/labels --dataset pst900 --out report/
  taseg score --pred out/mine --gt /data/mine/labels --dataset /data/mine/classes.yaml
"""


def _resolution(text: str):
    """'native' or WIDTHxHEIGHT -> 'native' or (width, height)."""
    return "native" if text == "native" else frame_size(text)


def _protocol_or(value):
    """None (flag not given) -> the protocol's resolution; 'native' -> None; else (h, w)."""
    if value is None:
        return "protocol"
    return None if value == "native" else (value[1], value[0])


def check_orientation(size: tuple[int, int] | None, gt_dir: str | Path) -> None:
    """--eval-resolution read HEIGHTxWIDTH before it read WIDTHxHEIGHT (as every other size does). Text
    cannot tell the two orders apart, the labels can: a size that turns the labels' frames on their side
    (wider than high where they are higher than wide, or the reverse) is refused with the order named."""
    from taseg_ros.datasets.io import index_by_stem  # OpenCV
    from taseg_ros.frames.files import read_image

    if size is None or not Path(gt_dir).is_dir():
        return  # scoring says what is missing
    labels = index_by_stem(Path(gt_dir), (".png",))
    if not labels:
        return  # scoring says what is missing
    height, width = read_image(next(iter(labels.values()))).shape[:2]
    given_w, given_h = size
    if (given_w - given_h) * (width - height) < 0:
        raise InputError(f"--eval-resolution {format_size(given_w, given_h)} is WIDTHxHEIGHT ({given_w} wide, {given_h} "
                         f"high), but the labels are {format_size(width, height)}; it read HEIGHTxWIDTH before: for "
                         f"the same frame give {format_size(given_h, given_w)}")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "score",
        help="score prediction PNGs against label PNGs with a dataset's protocol",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--pred", required=True, metavar="DIR", help="folder of prediction PNGs")
    p.add_argument("--gt", required=True, metavar="DIR", help="folder of label PNGs as the dataset stores them")
    p.add_argument("--dataset", required=True, metavar="NAME|YAML",
                   help="mfnet | pst900 | fmb | kp | a classes.yaml / dataset yaml")
    p.add_argument("-o", "--output", "--out", dest="out", metavar="DIR",
                   help="write metrics.json, metrics.md and PNG plots here (refused when it is not empty, unless --force)")
    add_force_option(p)
    p.add_argument("--ids", metavar="FILE", help="score only the ids of this split file (e.g. MFNet test.txt)")
    p.add_argument("--pred-format", choices=("auto", "ids", "colour", "raw"), default="auto",
                   help="auto: 1 channel = class ids, 3/4 channels = palette colours; raw: the "
                        "dataset's on-disk label encoding (default auto)")
    p.add_argument("--eval-resolution", type=_resolution, default=None, metavar="native|WIDTHxHEIGHT",
                   help="override the protocol's scoring resolution (labels and predictions resized "
                        "with nearest neighbour), e.g. 640x360 for PSTNet's official script")
    p.add_argument("--resize-pred", action="store_true",
                   help="resize predictions whose size differs from the label (nearest) instead of failing")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from taseg_ros.datasets import load_dataset_config  # OpenCV
    from taseg_ros.evaluation.files import score_directories
    from taseg_ros.evaluation.report import format_table, write_report

    inputs = {"--pred": args.pred, "--gt": args.gt}
    if args.out:
        check_output_dir(args.out, force=args.force, inputs=inputs)  # before scoring, not after
    check_orientation(None if args.eval_resolution in (None, "native") else args.eval_resolution, args.gt)
    config = load_dataset_config(args.dataset)
    result, extra = score_directories(
        args.pred,
        args.gt,
        config,
        ids_file=args.ids,
        pred_format=args.pred_format,
        eval_resolution=_protocol_or(args.eval_resolution),
        resize_predictions=args.resize_pred,
    )
    print(f"{config.name}: {result.num_images} images scored ({args.pred} vs {args.gt})")
    print(format_table(result))
    if extra:
        print(f"note: {len(extra)} prediction file(s) without ground truth were not scored "
              f"(e.g. {', '.join(extra[:3])})", file=sys.stderr)
    if args.out:
        with output_dir(args.out, force=args.force, inputs=inputs) as out:
            files = write_report(result, out)
        print("wrote " + ", ".join(str(p) for p in files.values()))
    return 0
