"""`taseg label`: the round trip to a labelling tool (CVAT's "Segmentation mask 1.1" format).

export  the frames of a dataset folder (e.g. from `taseg bag select`) with the model's predictions
        as pre-annotations: a zip CVAT imports (labelmap.txt, SegmentationClass/, ImageSets/, JPEGImages/)
import  a CVAT export of the corrected masks -> DIR/labels/<id>.png (class ids, ready for taseg train)
"""
from __future__ import annotations

import argparse

from taseg_ros.cli.options import (
    add_backend_options,
    add_device_options,
    add_force_option,
    add_model_options,
    segmenter_from_args,
)
from taseg_ros.outputs import check_output_file

EPILOG = """\
the loop:
  taseg bag select run1 run2 --checkpoint model.safetensors -k 50 -o data/round1
  taseg label export data/round1 --checkpoint model.safetensors -o round1_prelabels.zip
  (CVAT: create a task from data/round1/rgb/ with the dataset's classes, in order; Actions > Upload
   annotations > Segmentation mask 1.1 > round1_prelabels.zip; correct; Export task dataset >
   Segmentation mask 1.1)
  taseg label import round1_corrected.zip data/round1
  taseg train ... data.root=data/round1
See docs/own_recordings.md (Labelling) and taseg_ros/labelling/cvat.py for the format details.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "label",
        help="pre-labels to CVAT and corrected masks back (Segmentation mask 1.1)",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="label_command", metavar="ACTION", required=True)
    _add_export(sub)
    _add_import(sub)


def _add_export(sub) -> None:
    ex = sub.add_parser(
        "export",
        help="the dataset folder's frames with the model's predictions, as a CVAT-importable zip",
        description="Write the frames of a dataset folder (bag extract / bag select format) with the model's "
        "predictions as a CVAT 'Segmentation mask 1.1' zip: labelmap.txt (every class of classes.yaml in id "
        "order, name:r,g,b::), SegmentationClass/<id>.png colour masks, ImageSets/Segmentation/default.txt and "
        "the RGB frames in JPEGImages/. The thermal frames are prepared as classes.yaml records, as for training.",
    )
    ex.add_argument("dataset", metavar="DIR", help="dataset folder (rgb/, thermal/, classes.yaml)")
    add_model_options(ex, "the model whose predictions pre-label the frames")
    ex.add_argument("-o", "--output", required=True, metavar="ZIP", help="the zip to write (e.g. prelabels.zip)")
    ex.add_argument("--split", default="all",
                    help="which frames: all (every frame in rgb/, default) or a split file's name (train, val, ...)")
    add_force_option(ex)
    add_device_options(ex)
    add_backend_options(ex)
    ex.set_defaults(func=run_export)


def _add_import(sub) -> None:
    im = sub.add_parser(
        "import",
        help="a CVAT export of the corrected masks -> DIR/labels/<id>.png",
        description="Read a CVAT 'Segmentation mask 1.1' export and write DIR/labels/<id>.png (class ids). Colours "
        "become ids through the export's labelmap.txt, matched by class name to DIR/classes.yaml; CVAT's "
        "'background' (unlabelled pixels) becomes classes.yaml's ignore_index. An undeclared colour, a labelmap "
        "without one of the classes, a mask of the wrong size or for a frame DIR does not hold is refused with "
        "the file named, and nothing is written.",
    )
    im.add_argument("archive", metavar="EXPORT.zip", help="the zip CVAT exported")
    im.add_argument("dataset", metavar="DIR", help="the dataset folder the frames came from")
    add_force_option(im)
    im.set_defaults(func=run_import)


def run_export(args) -> int:
    import warnings

    from taseg_ros.labelling.cvat import export_prelabels, format_export

    inputs = {"DIR": args.dataset, "--checkpoint": args.checkpoint}
    check_output_file(args.output, force=args.force, inputs=inputs)  # before the model loads
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # model-building noise; checkpoint problems raise
        segmenter = segmenter_from_args(args)
    result = export_prelabels(args.dataset, segmenter, args.output, split=args.split, force=args.force,
                              inputs={"--checkpoint": args.checkpoint})
    print(format_export(result))
    return 0


def run_import(args) -> int:
    from taseg_ros.labelling.cvat import format_import, import_masks

    print(format_import(import_masks(args.archive, args.dataset, force=args.force)))
    return 0
