"""`taseg export`: a checkpoint as one self-contained deployment file (safetensors), or as a
network file for an inference runtime (ONNX, OpenVINO IR, TensorRT engine)."""
from __future__ import annotations

from pathlib import Path

from taseg_ros.cli.options import add_force_option, add_sam_checkpoint_option, frame_size
from taseg_ros.devices import PRECISIONS
from taseg_ros.errors import InputError
from taseg_ros.outputs import check_output_file, output_file
from taseg_ros.runtime.formats import FORMATS


def output_format(output: str, fmt: str | None) -> str:
    """The format to write: --format, or the one the -o suffix names; a mismatch is refused
    (safetensors bytes in a .onnx file would load nowhere)."""
    suffix = Path(output).suffix.lower()
    by_suffix = next((name for name, f in FORMATS.items() if f.suffix == suffix), None)
    if fmt is None:
        if by_suffix is None:
            raise InputError(f"{output}: cannot tell the format from the suffix '{suffix or 'none'}'; name the file "
                             f"{', '.join(f.suffix for f in FORMATS.values())} or pass --format")
        return by_suffix
    if suffix != FORMATS[fmt].suffix:
        raise InputError(f"{output}: --format {fmt} writes a '{FORMATS[fmt].suffix}' file, not '{suffix or 'no suffix'}'")
    return fmt


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="a checkpoint as one deployment file: self-contained checkpoint, ONNX, OpenVINO IR or TensorRT engine",
        description="The format follows the -o suffix (or --format, which must match it). "
        "--format safetensors: one self-contained checkpoint, the trained tensors plus the "
        "frozen SAM weights they were trained on (checked by sha256), so the robot needs no SAM file; "
        "--frozen-storage fp16 or bf16 halves the file. --format onnx|openvino|tensorrt: the network for that "
        "runtime, LoRA merged into the frozen weights, text embeddings folded in, input size fixed (native "
        "resolution: the --size frame padded to a multiple of 16; sam1024: 1024x1024), class names, palette, "
        "config and sources stored in the file (a JSON beside a TensorRT engine). Every export is loaded back "
        "and compared with the checkpoint in eager PyTorch on a frame beside the output, and only then put in place "
        "(a failed export changes nothing); the model file records the sha256 of its weights file. The node, "
        "`taseg predict`, `taseg eval` and `taseg bench` run any of them (--backend).",
    )
    p.add_argument("checkpoint", metavar="CKPT", help="TASeg checkpoint (.safetensors)")
    p.add_argument("-o", "--output", required=True,
                   help="output file: .safetensors, .onnx (+ .onnx.data for models over 2 GiB), .xml (+ .bin beside it) "
                   "or .engine (+ .engine.json); an existing file, or one of those beside it, is refused unless --force")
    p.add_argument("--format", choices=tuple(FORMATS),
                   help="what to write (default: the -o suffix says: .safetensors, .onnx, .xml openvino, .engine "
                   "tensorrt); a suffix that does not match the format is refused")
    add_force_option(p)
    add_sam_checkpoint_option(p)
    p.add_argument("--frozen-storage", default="fp32", choices=tuple(PRECISIONS),
                   help="safetensors: dtype of the stored frozen SAM weights (default fp32: bit-identical model)")
    p.add_argument("--size", type=frame_size, default=(640, 480), metavar="WIDTHxHEIGHT",
                   help="network exports: the camera frame size (default 640x480); frames of another size are refused")
    p.add_argument("--batch", type=int, default=1, help="network exports: fixed batch size (default 1)")
    p.add_argument("--verify-frame", nargs=2, metavar=("RGB", "THERMAL"),
                   help="network exports: verify on this RGB and thermal image pair of your own (resized to --size); "
                   "default: a procedural night street scene that ships with the package")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16"),
                   help="tensorrt: engine precision (default fp32); ONNX/OpenVINO files are fp32, their runtime "
                   "precision is chosen when running them")
    p.set_defaults(func=run)


def run(args) -> int:
    import warnings

    inputs = {"CKPT": args.checkpoint, "--sam-checkpoint": args.sam_checkpoint}
    if args.verify_frame:
        inputs.update(zip(("--verify-frame RGB", "--verify-frame THERMAL"), args.verify_frame))
    check_output_file(args.output, force=args.force, inputs=inputs)  # a folder, or under a file: said first
    args.format = output_format(args.output, args.format)
    if args.format != "safetensors":
        from taseg_ros.runtime.export import check_export_size, outputs_of

        for sibling in outputs_of(Path(args.output), args.format)[1:]:  # the .bin, .onnx.data, .engine.json
            check_output_file(sibling, force=args.force, inputs=inputs)
        check_export_size(args.checkpoint, args.size, args.batch, args.format)
    with warnings.catch_warnings(), output_file(args.output, force=args.force, inputs=inputs) as output:
        warnings.simplefilter("ignore")  # model-building and exporter noise; problems raise
        if args.format == "safetensors":
            _export_checkpoint(args, output)
        else:
            _export_network(args, output)
    return 0


def _export_checkpoint(args, output) -> None:
    from taseg_ros.model.checkpoint import export_checkpoint

    result = export_checkpoint(args.checkpoint, output, sam_checkpoint=args.sam_checkpoint, frozen_storage=args.frozen_storage)
    change = "bit-identical" if result["max_abs_change"] == 0.0 else f"max |weight change| {result['max_abs_change']:.3g}"
    print(
        f"wrote {result['output']}: {result['bytes'] / 2**20:.1f} MiB, {result['tensors']} tensors, "
        f"frozen weights {args.frozen_storage} ({change}); no SAM file needed to load it"
    )


def _export_network(args, output) -> None:
    from taseg_ros.runtime.export import export_model

    frame = None
    if args.verify_frame:
        from taseg_ros.frames.files import read_rgb, read_thermal

        rgb_path, thermal_path = args.verify_frame
        frame = (read_rgb(rgb_path), read_thermal(thermal_path), f"{rgb_path} + {thermal_path}")
    result = export_model(
        args.checkpoint, output, args.format, size=args.size, batch=args.batch, precision=args.precision,
        sam_checkpoint=args.sam_checkpoint, frame=frame, log=print,
    )
    check, meta = result["verification"], result["metadata"]
    size = sum(p.stat().st_size for p in result["files"]) / 2**20
    print(
        f"verified with {check['runtime']} on {result['frame']}: argmax agreement {check['argmax_agreement']:.4%}, "
        f"max |logit difference| {check['max_abs_diff']:.2g}\n"
        f"wrote {', '.join(str(p) for p in result['files'])} ({size:.1f} MiB): {meta.cfg.name} {meta.cfg.resolution}, "
        f"input {meta.input_hw[1]}x{meta.input_hw[0]}, batch {meta.batch}, {meta.class_info.num_classes} classes"
    )
