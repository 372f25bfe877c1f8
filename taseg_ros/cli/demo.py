"""`taseg demo`: the zero-download end-to-end demo (see taseg_ros/demo/pipeline.py)."""
from __future__ import annotations

from taseg_ros.cli.options import add_force_option
from taseg_ros.errors import InputError
from taseg_ros.outputs import output_dir


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="end-to-end demo with nothing downloaded (data, training, evaluation, node over DDS)",
        description="Generate procedural day/night RGB-T street scenes, train the tiny model on them, evaluate it "
        "(all/day/night, and with thermal blanked), play a recorded bag through the real node over DDS, and save "
        "overlays and plots. With --checkpoint and --data-root (or --bag) the same runs on your model and data.",
    )
    p.add_argument("-o", "--output", default="demo_out",
                   help="output folder (default demo_out; refused when it is not empty, unless --force)")
    add_force_option(p)
    p.add_argument("--checkpoint", help="use this model instead of training the tiny one")
    p.add_argument("--data-root", help="evaluate on this dataset (with --checkpoint)")
    p.add_argument("--dataset", default="folder", help="dataset of --data-root: folder | mfnet | pst900 | fmb | kp")
    p.add_argument("--split", default="test")
    p.add_argument("--bag", help="replay this rosbag through the node instead of a generated one")
    p.add_argument("--steps", type=int, default=900, help="training steps of the tiny model (default 900, about 2 min on 2 cores)")
    p.add_argument("--no-node", action="store_true", help="skip the ROS 2 node step")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from taseg_ros.demo.pipeline import DemoOptions, run_demo

    if args.data_root and not args.checkpoint:
        raise InputError("--data-root needs --checkpoint (without them the demo makes its own data and model)")
    opts = DemoOptions(
        output=Path(args.output),
        checkpoint=Path(args.checkpoint) if args.checkpoint else None,
        data_root=Path(args.data_root) if args.data_root else None,
        dataset=args.dataset,
        split=args.split,
        bag=Path(args.bag) if args.bag else None,
        steps=args.steps,
        node=not args.no_node,
        progress=not args.no_progress,
    )
    inputs = {"--checkpoint": args.checkpoint, "--data-root": args.data_root, "--bag": args.bag}
    with output_dir(opts.output, force=args.force, inputs=inputs):
        summary = run_demo(opts)
    return 1 if "error" in (summary.get("node") or {}) else 0
