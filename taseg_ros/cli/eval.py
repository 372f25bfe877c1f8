"""`taseg eval`: score a checkpoint on a dataset split with the dataset's protocol."""
from __future__ import annotations

from taseg_ros.cli import counted_input_warnings
from taseg_ros.cli.options import (
    add_backend_options,
    add_device_options,
    add_force_option,
    add_model_options,
    add_thermal_options,
    segmenter_from_args,
    thermal_norm_from_args,
)
from taseg_ros.errors import InputError
from taseg_ros.frames.render import IMAGE_OUTPUTS
from taseg_ros.outputs import check_output_dir, output_dir


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="score a checkpoint on a dataset split",
        description="Predict every image of a split and score it with the dataset's protocol: one confusion "
        "matrix over the split, per-class IoU/accuracy, mIoU/mAcc with both NaN conventions, day and night "
        "from their own matrices. Writes metrics.json, metrics.md and plots.",
    )
    add_model_options(p, "the model to score")
    p.add_argument("--data-root", required=True, metavar="DIR")
    p.add_argument("--dataset", help="mfnet | pst900 | fmb | kp | folder | dataset YAML (default: the one the checkpoint was trained on)")
    p.add_argument("--split", default="test")
    p.add_argument("-o", "--output", "--out", dest="out", metavar="DIR", help="report folder (default: eval_<split> beside the checkpoint; "
                   "refused when it is not empty, unless --force)")
    add_force_option(p)
    p.add_argument("--save-predictions", nargs="*", choices=IMAGE_OUTPUTS, metavar="OUTPUT",
                   help="also write prediction PNGs into predictions/<OUTPUT>/: labels (class ids), colorized, "
                   "overlay (all three when given alone)")
    p.add_argument("--blank-thermal", action="store_true", help="ablation: zero the thermal input")
    add_thermal_options(p, default_help="the dataset's protocol (thermal.normalization of its YAML)")
    add_device_options(p)
    add_backend_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import sys
    from pathlib import Path

    from taseg_ros.datasets import build_dataset
    from taseg_ros.datasets.transforms import eval_transform
    from taseg_ros.evaluation.report import format_table, write_report
    from taseg_ros.evaluation.run import PredictionWriter, evaluate
    from taseg_ros.runtime import describe_model_file

    thermal_norm = thermal_norm_from_args(args)
    metadata = describe_model_file(args.checkpoint)
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / f"eval_{args.split}"
    inputs = {"--data-root": args.data_root}  # beside or around the checkpoint is fine: nothing is removed
    check_output_dir(out, force=args.force, inputs=inputs)  # before the slow model load
    dataset_name = args.dataset or metadata.get("dataset")
    if not dataset_name:
        raise InputError(f"{args.checkpoint} does not record its dataset; pass --dataset")
    seg = segmenter_from_args(args)
    probe = build_dataset(dataset_name, args.data_root, args.split, thermal_normalization=thermal_norm)
    resolution = probe.config.metric.eval_resolution
    if resolution:
        dataset = build_dataset(
            dataset_name, args.data_root, args.split, transform=eval_transform(resolution), thermal_normalization=thermal_norm
        )
    else:
        dataset = probe
    if tuple(dataset.class_info.names) != tuple(seg.class_info.names):
        raise InputError(
            f"{args.checkpoint} predicts {list(seg.class_info.names)}, the dataset has {list(dataset.class_info.names)}"
        )
    with output_dir(out, force=args.force, inputs=inputs):
        writer = None
        if args.save_predictions is not None:
            outputs = args.save_predictions or PredictionWriter.OUTPUTS
            writer = PredictionWriter(out / "predictions", dataset.class_info.palette, outputs)
        with counted_input_warnings() as counts:
            evaluator = evaluate(
                seg, dataset,  # the Segmenter's own runtime, device and precision
                blank_thermal=args.blank_thermal, on_prediction=writer, progress=True,
            )
        result = evaluator.result()
        files = write_report(result, out)
    title = f"{Path(args.checkpoint).name} on {dataset.config.name} {args.split}"
    if args.blank_thermal:
        title += " (thermal blanked)"
    print(title)
    print(format_table(result))
    if counts["blank_thermal"]:
        print(f"warning: {counts['blank_thermal']} of {len(dataset)} thermal image(s) had no finite pixel "
              "(all NaN/inf); they were scored with a blank thermal image", file=sys.stderr)
    print(f"report: {files['json']}, {files['markdown']}, {files['iou_bars'].name}, {files['confusion'].name}")
    return 0
