"""`taseg bench`: time the model (and the node) on this machine; prints a table, writes JSON."""
from __future__ import annotations

import argparse
import math

from taseg_ros.cli.options import add_device_options, add_force_option, device_from_args
from taseg_ros.outputs import check_output_file, write_text_atomic


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="benchmark the model and the ROS node on this machine",
        description="Measure, in one process and in interleaved rounds: predict() latency and throughput at "
        "640x480 in SAM-1024 and native resolution; TASeg's cost over the plain segment_anything encoder; "
        "each stage's share; achieved FLOP/s against a dense matmul; peak memory; the ROS node's throughput "
        "over DDS against the model alone; on CUDA also every precision, torch.compile and ViT-H. Uses RANDOM "
        "frozen weights (timing only; no SAM/CLIP files needed).",
    )
    p.add_argument("--config", default="tiny", help="tiny | vit_b | vit_l | vit_h | config YAML (default tiny)")
    p.add_argument("--height", type=_positive_int, default=480)
    p.add_argument("--width", type=_positive_int, default=640)
    p.add_argument("--resolution", choices=("both", "sam1024", "native"), default="both",
                   help="resolution modes to time (default both)")
    p.add_argument("--repeats", type=_positive_int, help="timed rounds per mode (default: as many as fit in --budget, 3..50)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    p.add_argument("--budget", type=_positive_seconds, default=30.0, metavar="SECONDS",
                   help="time for the timed rounds of each mode when --repeats is not given (default 30)")
    add_device_options(p)
    p.add_argument("--batch", type=_positive_int, help="batch size for the throughput figure (default 1 on CPU, 8 on CUDA)")
    p.add_argument("--compile", action="store_true", help="also time predict() through torch.compile")
    p.add_argument("--skip-node", action="store_true", help="skip the ROS node run (needed where rclpy is missing)")
    p.add_argument("--node-frames", type=_positive_int, help="frames through the node (default: as many as fit in --budget)")
    p.add_argument("--no-vit-h", action="store_true", help="on CUDA, skip the extra ViT-H run")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 rounds, 3 node frames, small matmul, no ViT-H")
    p.add_argument("--backends", type=_names, default=(), metavar="LIST",
                   help="also time these runtimes against eager PyTorch, e.g. torch,onnxruntime,openvino[,tensorrt]: "
                   "each exported and verified, timed in the same interleaved rounds, argmax agreement with eager fp32, "
                   "the node over DDS with each (torch adds eager bf16 and LoRA-merged variants)")
    p.add_argument("--backend-precisions", type=_names, metavar="LIST",
                   help="precisions for --backends (default fp32,bf16; on CUDA also fp16); each runtime states what ran")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.add_argument("--json", metavar="PATH", help="write every figure to this JSON file (an existing file is "
                   "refused unless --force)")
    add_force_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from taseg_ros.bench import BenchOptions, format_report, run_benchmark

    options = BenchOptions(
        config=args.config,
        height=args.height,
        width=args.width,
        device=device_from_args(args),
        precision=args.precision,
        resolutions=("sam1024", "native") if args.resolution == "both" else (args.resolution,),
        warmup=args.warmup,
        repeats=args.repeats,
        budget_s=args.budget,
        batch=args.batch,
        compile=args.compile,
        node=not args.skip_node,
        node_frames=args.node_frames,
        vit_h=not args.no_vit_h,
        seed=args.seed,
        quick=args.quick,
        backends=args.backends,
        backend_precisions=args.backend_precisions,
    )
    if args.json:
        json_path = check_output_file(args.json, force=args.force)  # before minutes of timing, not after
    result = run_benchmark(options)
    print(format_report(result))
    if args.json:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(json_path, json.dumps(_finite(result), indent=2, allow_nan=False))
        print(f"\nwrote {json_path}")
    return 0


def _finite(value):
    """NaN/inf (a figure that could not be taken) -> null: strict JSON readers reject NaN."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
