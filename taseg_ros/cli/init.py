"""`taseg init`: write an untrained but loadable checkpoint."""
from __future__ import annotations

from taseg_ros.cli.options import add_force_option
from taseg_ros.errors import InputError
from taseg_ros.outputs import output_file


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "init",
        help="write an untrained, loadable checkpoint",
        description="Write an untrained TASeg checkpoint. SAM/CLIP weights are taken from the options or from "
        "models/ under their official names; without them the frozen weights and text encoder are RANDOM "
        "(a loud warning says so): fine for tests, demos and node smoke checks.",
    )
    p.add_argument("--config", required=True, help="tiny | vit_b | vit_l | vit_h | config YAML")
    p.add_argument("--classes", required=True, help="mfnet | pst900 | kp | fmb | classes YAML")
    p.add_argument("-o", "--output", required=True, help="checkpoint path (.safetensors; an existing file is refused unless --force)")
    add_force_option(p)
    p.add_argument("--sam-checkpoint", help="official SAM .pth (default: models/<official name> if present)")
    p.add_argument("--clip-weights", help="open_clip weights file (default: models/<name> if present)")
    p.add_argument("--text-embeddings", help="precomputed K x D class text embeddings (.npy or .pt)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def checkpoint_path(output: str) -> str:
    """-o as a checkpoint file name: `.safetensors` added when there is no suffix (and said, the
    loaders tell model files by their suffix); another suffix is refused."""
    from pathlib import Path

    suffix = Path(output).suffix
    if suffix.lower() == ".safetensors" or Path(output).is_dir():  # a folder: the output policy says so
        return output
    if suffix:
        raise InputError(f"{output}: a checkpoint is a .safetensors file (the loaders tell model files by their suffix)")
    print(f"note: writing {output}.safetensors (a checkpoint is a .safetensors file)")
    return output + ".safetensors"


def run(args) -> int:
    import warnings

    from taseg_ros.model.checkpoint import init_checkpoint
    from taseg_ros.model.taseg import parameter_breakdown

    inputs = {"--sam-checkpoint": args.sam_checkpoint, "--clip-weights": args.clip_weights,
              "--text-embeddings": args.text_embeddings}
    args.output = checkpoint_path(args.output)
    with warnings.catch_warnings(record=True) as caught, output_file(args.output, force=args.force, inputs=inputs) as output:
        warnings.simplefilter("always")
        model = init_checkpoint(
            args.config,
            args.classes,
            output,
            sam_checkpoint=args.sam_checkpoint,
            clip_weights=args.clip_weights,
            text_embeddings=args.text_embeddings,
            seed=args.seed,
        )
    for w in caught:  # repeated here, after the noise of model building, so nobody misses them
        print(f"\n*** WARNING: {w.message}")
    counts = parameter_breakdown(model)
    print(
        f"wrote {args.output}: config {model.cfg.name}, {model.num_classes} classes, "
        f"{counts['total_trainable']:,} trainable parameters, frozen weights: {model.frozen_source.kind}"
        + (f" ({model.frozen_source.name})" if model.frozen_source.name else "")
        + f", text: {model.text_source or 'none'}"
    )
    return 0
