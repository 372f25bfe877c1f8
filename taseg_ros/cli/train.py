"""`taseg train RECIPE [section.key=value ...]`: fine-tune TASeg (torchrun for several GPUs)."""
from __future__ import annotations

import json

from taseg_ros.errors import InputError
from taseg_ros.train.recipe import load_recipe
from taseg_ros.train.run_dir import run_folder


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train TASeg from a recipe",
        description="Train from a recipe YAML (training/recipes/*.yaml or a path) with key=value overrides, "
        "e.g. `taseg train mfnet data.root=/data/MFNet train.steps=20000`. Several GPUs or machines: "
        "`torchrun --nproc-per-node 4 -m taseg_ros.cli train ...`.",
    )
    p.add_argument("recipe", help="recipe name (training/recipes/<name>.yaml) or YAML path")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="recipe overrides")
    p.add_argument("--data-root", help="shorthand for data.root=DIR")
    p.add_argument("--output", help="shorthand for train.output=DIR")
    p.add_argument("--resume", action="store_true", help="continue the run in the output folder from its last state")
    p.add_argument("--force", action="store_true",
                   help="replace a run already in the output folder (without --resume or --force it is refused)")
    p.add_argument("--allow-recipe-change", action="store_true",
                   help="with --resume: continue with a changed recipe (refused otherwise; both recipes are "
                   "recorded in recipe_history.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs still written)")
    p.add_argument("--plan", action="store_true",
                   help="print the predicted GPU memory of one optimiser step per micro-batch size, the largest that "
                   "fits and the images/s of one timed step, then exit (no data needed)")
    p.add_argument("--gpu-memory", metavar="SIZE",
                   help="with --plan: the GPU memory to plan for, e.g. 24GiB (default: the visible GPU's, else 24GiB)")
    p.set_defaults(func=run)


def run(args) -> int:
    overrides = list(args.overrides)
    # `is not None`: an empty --output is a value (refused by the recipe), not the recipe's default
    # folder; json.dumps: the path as a YAML string, never read as a number, a bool or a mapping.
    if args.data_root is not None:
        overrides.append(f"data.root={json.dumps(args.data_root)}")
    if args.output is not None:
        overrides.append(f"train.output={json.dumps(args.output)}")
    recipe = load_recipe(args.recipe, overrides)
    if args.plan:
        from taseg_ros.train.memory import plan_report

        print(plan_report(recipe, args.gpu_memory)[1])
        return 0
    if not recipe.data.root:
        raise InputError("no dataset folder: set data.root in the recipe or pass --data-root DIR")
    with run_folder(recipe.train.output, recipe.to_dict(), resume=args.resume, force=args.force,
                    allow_recipe_change=args.allow_recipe_change):  # checked, cleared with --force, locked
        from taseg_ros.train.loop import train  # torch: after the refusals, which then come at once

        summary = train(recipe, resume=args.resume, progress=not args.no_progress)
    print(
        f"done: {summary['steps']} steps, best val mIoU {100 * summary['best_val_miou']:.2f} at step "
        f"{summary['best_step']}; checkpoints in {summary['output']} (best.safetensors, last.safetensors)"
    )
    return 0
