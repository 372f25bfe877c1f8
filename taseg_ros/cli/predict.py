"""`taseg predict`: segment single RGB-T image pairs or folders of them."""
from __future__ import annotations

from taseg_ros.cli import counted_input_warnings
from taseg_ros.cli.options import (
    add_backend_options,
    add_device_options,
    add_force_option,
    add_model_options,
    add_overlay_option,
    add_thermal_options,
    frame_settings_from_args,
    segmenter_from_args,
)
from taseg_ros.errors import InputError, InputWarning, MissingInputError
from taseg_ros.frames.render import COLOUR_OUTPUTS
from taseg_ros.outputs import check_output_dir, output_dir


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="segment RGB-T images (files or folders)",
        description="Segment one RGB + thermal pair, or two folders of pairs matched by file stem. Without "
        "--thermal, RGB files must be 4-channel PNGs with thermal in the alpha channel (MFNet). Each pair "
        "goes through the node's per-frame pipeline (thermal normalised on its own pixels, then registered "
        "or resized onto the RGB grid). Writes labels/ (class-id PNGs), colorized/ and overlay/ into the "
        "output folder (refused when it is not empty, unless --force).",
    )
    add_model_options(p, "the model")
    p.add_argument("--rgb", required=True, help="RGB image or folder")
    p.add_argument("--thermal", help="thermal image or folder (8/16-bit PNG, float TIFF)")
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    add_force_option(p)
    add_overlay_option(p)
    add_thermal_options(p, default_help="auto", homography=True)
    add_device_options(p)
    add_backend_options(p)
    p.set_defaults(func=run)


def _pairs(rgb_arg: str, thermal_arg: str | None):
    from pathlib import Path

    from taseg_ros.datasets.io import index_by_stem

    rgb_path = Path(rgb_arg)
    if rgb_path.is_dir():
        rgb_files = index_by_stem(rgb_path)
        if not rgb_files:
            raise InputError(f"{rgb_path}: no images")
        if thermal_arg is None:
            return [(stem, f, None) for stem, f in sorted(rgb_files.items())]
        thermal_files = index_by_stem(Path(thermal_arg))
        missing = sorted(set(rgb_files) - set(thermal_files))
        if missing:
            raise MissingInputError(f"{thermal_arg}: no thermal image for {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
        return [(stem, f, thermal_files[stem]) for stem, f in sorted(rgb_files.items())]
    if not rgb_path.is_file():
        raise MissingInputError(f"RGB image not found: {rgb_path}")
    return [(rgb_path.stem, rgb_path, Path(thermal_arg) if thermal_arg else None)]


def run(args) -> int:
    import sys

    pairs = _pairs(args.rgb, args.thermal)
    settings = frame_settings_from_args(args)
    inputs = {"--rgb": args.rgb, "--thermal": args.thermal}
    check_output_dir(args.output, force=args.force, inputs=inputs)  # before the slow model load
    seg = segmenter_from_args(args)
    with output_dir(args.output, force=args.force, inputs=inputs) as out, counted_input_warnings() as counts:
        _predict_pairs(seg, settings, pairs, out)
    if counts["blank_thermal"]:
        print(f"warning: {counts['blank_thermal']} of {len(pairs)} thermal image(s) had no finite pixel "
              "(all NaN/inf); they were segmented from RGB alone", file=sys.stderr)
    print(f"wrote {len(pairs)} prediction(s) to {args.output} (labels/, colorized/, overlay/)")
    return 0


def _alpha_thermal(image, rgb_file):
    """The MFNet layout: thermal in the alpha channel. A constant alpha is an ordinary RGBA image."""
    if image.ndim != 3 or image.shape[2] != 4:
        raise InputError(f"{rgb_file}: no --thermal given and the image has no alpha channel to read thermal from")
    thermal = image[:, :, 3]
    if thermal.min() == thermal.max():
        raise InputError(
            f"{rgb_file}: no --thermal given and the alpha channel is constant ({thermal.flat[0]}), so it holds "
            "no thermal image (MFNet stores thermal there); pass the thermal image with --thermal"
        )
    return thermal


def _predict_pairs(seg, settings, pairs, out) -> None:
    """Each pair through the node's FramePipeline; its notes are warnings naming the file."""
    import warnings

    from taseg_ros.frames.files import read_image, read_thermal, to_rgb8, write_output
    from taseg_ros.inference.pipeline import FramePipeline

    pipeline = FramePipeline(seg, settings)
    outputs = COLOUR_OUTPUTS
    for stem, rgb_file, thermal_file in pairs:
        image = read_image(rgb_file)
        thermal = _alpha_thermal(image, rgb_file) if thermal_file is None else read_thermal(thermal_file)
        result = pipeline.process(to_rgb8(image, rgb_file), thermal, outputs=outputs)
        for note in result.notes:
            warnings.warn(InputWarning(f"{thermal_file or rgb_file}: {note.text}", note.kind), stacklevel=2)
        if not result.ok:
            raise InputError(f"{thermal_file or rgb_file}: {result.error.text}")
        for name in ("labels", *outputs):
            write_output(out / name / f"{stem}.png", name, result.output(name))
