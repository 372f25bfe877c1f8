"""`taseg export`: one self-contained checkpoint file for deployment."""
from __future__ import annotations

from taseg_ros.cli.options import add_force_option


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="merge a checkpoint with its frozen SAM weights into one file for deployment",
        description="Write one self-contained checkpoint: the trained tensors plus the frozen SAM weights they "
        "were trained on (checked by sha256), so the robot needs no SAM file. The node, `taseg predict` and "
        "`taseg eval` load it like any checkpoint. --frozen-storage fp16 or bf16 halves the file; the "
        "weights are widened to float32 when loaded.",
    )
    p.add_argument("checkpoint", metavar="CKPT", help="TASeg checkpoint (.safetensors)")
    p.add_argument("-o", "--output", required=True, help="exported checkpoint path (.safetensors; an existing file is refused unless --force)")
    add_force_option(p)
    p.add_argument("--sam-checkpoint", help="official SAM .pth the checkpoint refers to (default: models/<name>)")
    p.add_argument("--frozen-storage", default="fp32", choices=("fp32", "fp16", "bf16"),
                   help="dtype of the stored frozen SAM weights (default fp32: bit-identical model)")
    p.set_defaults(func=run)


def run(args) -> int:
    import warnings

    from taseg_ros.model.checkpoint import export_checkpoint
    from taseg_ros.outputs import output_file

    inputs = {"CKPT": args.checkpoint, "--sam-checkpoint": args.sam_checkpoint}
    with warnings.catch_warnings(), output_file(args.output, force=args.force, inputs=inputs) as output:
        warnings.simplefilter("ignore")  # model-building noise; checkpoint problems raise
        result = export_checkpoint(
            args.checkpoint, output, sam_checkpoint=args.sam_checkpoint, frozen_storage=args.frozen_storage
        )
    change = "bit-identical" if result["max_abs_change"] == 0.0 else f"max |weight change| {result['max_abs_change']:.3g}"
    print(
        f"wrote {result['output']}: {result['bytes'] / 2**20:.1f} MiB, {result['tensors']} tensors, "
        f"frozen weights {args.frozen_storage} ({change}); no SAM file needed to load it"
    )
    return 0
