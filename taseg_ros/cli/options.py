"""Command-line options shared by several `taseg` commands: one definition, one help text.

Each ``add_*_option(s)(parser)`` adds one option or group; the matching ``*_from_args(args)``
turns the parsed values into the object the library takes.
"""
from __future__ import annotations

import argparse
import sys

from taseg_ros.devices import BACKEND_CHOICES, DEVICE_CHOICES_HINT, PRECISIONS, resolve_device
from taseg_ros.errors import InputError
from taseg_ros.frames.sizes import parse_size
from taseg_ros.frames.render import DEFAULT_OVERLAY_ALPHA
from taseg_ros.model.config import DEFAULT_MAX_INPUT_SIZE, max_input_size_problem
from taseg_ros.outputs import FORCE_HELP


def frame_size(text: str) -> tuple[int, int]:
    """argparse type of a frame size: WIDTHxHEIGHT -> (width, height) (frames.sizes, the one notation)."""
    try:
        return parse_size(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_force_option(parser) -> None:
    """--force: the overwrite policy of taseg_ros.outputs (refuse an existing output without it)."""
    parser.add_argument("--force", action="store_true", help=FORCE_HELP)


# --- the model ----------------------------------------------------------------------------------
# Every command that runs a model takes it the same way (segmenter_from_args opens any model file).

MODEL_FILE_HELP = ("a TASeg checkpoint (.safetensors) or an export of one (.onnx, .xml, .engine: "
                   "`taseg export`)")
SAM_CHECKPOINT_HELP = "official SAM weights (.pth) a checkpoint refers to (default: models/<official name>)"


def add_model_options(parser, purpose: str) -> None:
    """--checkpoint (required; `purpose`: what the command uses the model for) and --sam-checkpoint."""
    parser.add_argument("--checkpoint", required=True, metavar="MODEL", help=f"{purpose}: {MODEL_FILE_HELP}")
    add_sam_checkpoint_option(parser)


def add_sam_checkpoint_option(parser) -> None:
    parser.add_argument("--sam-checkpoint", metavar="PTH", help=SAM_CHECKPOINT_HELP)


# --- device and precision ---------------------------------------------------------------------


def add_device_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("device")
    group.add_argument("--device", default="auto", help=f"{DEVICE_CHOICES_HINT} (default auto)")
    group.add_argument("--precision", default="fp32", choices=tuple(PRECISIONS),
                       help="compute precision (default fp32; fp16 needs CUDA)")


def device_from_args(args: argparse.Namespace) -> str:
    """The device the command runs on ('auto' resolved)."""
    return resolve_device(args.device)


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    """--backend/--merge-lora: which runtime runs the network forward (taseg_ros.runtime)."""
    group = parser.add_argument_group("runtime")
    group.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                       help="runtime of the network (default auto: from the model file type: .safetensors torch, "
                       ".onnx onnxruntime, .xml openvino, .engine tensorrt; `taseg export --format` writes them). "
                       "--device then names the runtime's device: cpu/cuda[:N] (torch), cpu/cuda/tensorrt (onnxruntime "
                       "execution providers), cpu/gpu/npu (openvino)")
    group.add_argument("--merge-lora", action="store_true",
                       help="torch: merge the LoRA factors into the frozen weights at load (same outputs, less work)")
    group.add_argument("--max-input-size", type=int, default=DEFAULT_MAX_INPUT_SIZE, metavar="PX",
                       help="longest side of the network's input (the node's max_input_size): larger frames are "
                       "resized down before the network and the labels back up to the frame, so a huge frame "
                       f"cannot exhaust memory; 0: no limit (default {DEFAULT_MAX_INPUT_SIZE}; an export's fixed "
                       "input size is its own limit)")


def segmenter_from_args(args: argparse.Namespace):
    """A Segmenter from --checkpoint (any model file), --sam-checkpoint, the device and the backend options."""
    segmenter = model_spec_from_args(args).load()
    if segmenter.backend.precision_note:  # another precision runs than was asked: one line says which and why
        print(f"note: {segmenter.backend.precision_note}", file=sys.stderr)
    return segmenter


def model_spec_from_args(args: argparse.Namespace, checkpoint=None, threads: int | None = None):
    """The model the options name (``checkpoint``: another file with the same options, e.g. a
    --baseline model), as a ModelSpec a worker loads; the device is resolved where it loads."""
    from pathlib import Path

    from taseg_ros.inference.spec import ModelSpec

    max_input_size = getattr(args, "max_input_size", DEFAULT_MAX_INPUT_SIZE)
    problem = max_input_size_problem(max_input_size)
    if problem:
        raise InputError(f"--max-input-size {max_input_size}: {problem}")
    sam = args.sam_checkpoint
    return ModelSpec(
        Path(checkpoint or args.checkpoint), sam_checkpoint=None if sam is None else Path(sam), device=args.device,
        precision=args.precision, backend=getattr(args, "backend", None), merge_lora=getattr(args, "merge_lora", False),
        max_input_size=max_input_size, threads=threads,
    )


# --- thermal normalisation --------------------------------------------------------------------
# The node's parameter names (thermal_normalization, thermal_range, thermal_percentiles), spelled
# as options: a recording evaluated with the same values the node runs with gives the same labels.


def add_thermal_options(parser: argparse.ArgumentParser, default_help: str, homography: bool = False) -> None:
    """--thermal-normalization/--thermal-range/--thermal-percentiles (and with `homography`
    --thermal-homography); `default_help` says what happens when no normalisation is given."""
    group = parser.add_argument_group("thermal preparation (as the node's thermal_* parameters)")
    if homography:
        add_homography_option(group)
    group.add_argument("--thermal-normalization", type=_thermal_mode, metavar="MODE",
                       help=f"{THERMAL_MODES_HELP}; default: {default_help}")
    group.add_argument("--thermal-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                       help="raw values mapped to 0 and 1 (mode fixed; implies it when no mode is given)")
    group.add_argument("--thermal-percentiles", type=float, nargs=2, metavar=("LOW", "HIGH"),
                       help="per-frame percentiles mapped to 0 and 1 (mode percentile; implies it when no mode is given)")
    # Older spelling of `taseg predict`, kept working: auto | minmax | fixed:LOW:HIGH | percentile:P1:P2.
    group.add_argument("--thermal-norm", type=_compact_thermal_norm, dest="thermal_norm_compact", help=argparse.SUPPRESS)


# The modes of frames.thermal.THERMAL_MODES, written out: importing frames.thermal (cv2) here would
# slow every `taseg --help`; _thermal_mode checks a given mode against the real tuple.
THERMAL_MODES_HELP = "auto (8-bit: fixed 0..255, else percentiles), fixed, minmax or percentile"


def _thermal_mode(text: str) -> str:
    from taseg_ros.frames.thermal import THERMAL_MODES

    if text not in THERMAL_MODES:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(THERMAL_MODES)}, got {text!r}")
    return text


def add_overlay_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overlay-alpha", "--alpha", type=float, default=DEFAULT_OVERLAY_ALPHA, metavar="A",
                        help=f"weight of the class colours in the overlay, 0..1 (the node's overlay_alpha; "
                        f"default {DEFAULT_OVERLAY_ALPHA})")


HOMOGRAPHY_HELP = (
    "the registration, thermal px -> RGB px (the node's thermal_homography): 9 numbers (3x3 row-major) or a "
    "parameters file that sets it (what `taseg bag calibrate`/`refine` write); applied after normalisation; "
    "default: resize thermal to the RGB size when they differ")


def add_homography_option(parser, help_text: str = HOMOGRAPHY_HELP) -> None:
    """--thermal-homography H|FILE: one option, two spellings (homography_from_args reads both)."""
    parser.add_argument("--thermal-homography", nargs="+", metavar="H|FILE", help=help_text)


def homography_from_args(args: argparse.Namespace):
    """--thermal-homography (9 numbers, or one parameters file) as a checked 3x3 array, or None."""
    return registration_from_args(args)[0]


def registration_from_args(args: argparse.Namespace):
    """(--thermal-homography as a checked 3x3 array or None, the frame sizes it was made for or None:
    thermal W, H, RGB W, H, as `bag calibrate`/`refine` record them in the parameters file)."""
    from taseg_ros.frames.thermal import validate_homography

    values = getattr(args, "thermal_homography", None)
    if values is None:
        return None, None
    if len(values) == 1 and not _is_number(values[0]):
        from taseg_ros.ros.params import registration_from_params_file

        return registration_from_params_file(values[0])
    if not all(_is_number(v) for v in values):
        raise InputError(f"--thermal-homography: expected 9 numbers or one parameters file, got {' '.join(values)}")
    try:
        return validate_homography([float(v) for v in values]), None
    except ValueError as exc:
        raise InputError(f"--thermal-homography: {exc}") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def frame_settings_from_args(args: argparse.Namespace):
    """The per-frame settings (frames.settings.FrameSettings) the thermal, homography and overlay
    options ask for; the node's defaults for what is not given."""
    from taseg_ros.frames.settings import FrameSettings
    from taseg_ros.frames.thermal import ThermalNormalization

    alpha = getattr(args, "overlay_alpha", DEFAULT_OVERLAY_ALPHA)
    homography, size = registration_from_args(args)
    try:
        return FrameSettings(thermal_norm_from_args(args) or ThermalNormalization(), homography, alpha, size)
    except ValueError as exc:
        raise InputError(f"--overlay-alpha: {exc}") from None


def thermal_norm_from_args(args: argparse.Namespace):
    """The ThermalNormalization the options ask for, or None when none was given."""
    from taseg_ros.frames.thermal import ThermalNormalization

    if args.thermal_norm_compact is not None:
        if args.thermal_normalization or args.thermal_range or args.thermal_percentiles:
            raise InputError("--thermal-norm is the old spelling of --thermal-normalization/-range/-percentiles: use one")
        return args.thermal_norm_compact
    mode = args.thermal_normalization
    if mode is None:
        mode = "fixed" if args.thermal_range else "percentile" if args.thermal_percentiles else None
    if mode is None:
        return None
    defaults = ThermalNormalization()
    low, high = args.thermal_range or (defaults.low, defaults.high)
    try:
        return ThermalNormalization(mode, low, high, tuple(args.thermal_percentiles or defaults.percentiles))
    except ValueError as exc:
        raise InputError(f"--thermal-*: {exc}") from None


def _compact_thermal_norm(text: str):
    from taseg_ros.frames.thermal import ThermalNormalization

    mode, *values = text.split(":")
    try:
        numbers = [float(v) for v in values]
        if mode == "fixed" and len(numbers) == 2:
            return ThermalNormalization("fixed", low=numbers[0], high=numbers[1])
        if mode == "percentile" and len(numbers) == 2:
            return ThermalNormalization("percentile", percentiles=(numbers[0], numbers[1]))
        if mode in ("auto", "minmax") and not numbers:
            return ThermalNormalization(mode)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    raise argparse.ArgumentTypeError(f"expected auto, minmax, fixed:LOW:HIGH or percentile:P1:P2, got {text!r}")
