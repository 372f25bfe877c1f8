"""What the `taseg bag` sub-commands share: the recording and topic options, progress, names."""
from __future__ import annotations

import argparse

from taseg_ros.bag.pairs import PairSource
from taseg_ros.formatting import progress_bar
from taseg_ros.frames.pairing import DEFAULT_SLOP_S


def bag_and_topics(p: argparse.ArgumentParser, many: str | None = None) -> None:
    """The recording and which of its topics to pair: every sub-command starts with these. ``many``:
    the help of a BAG argument that takes several recordings (or folders holding them)."""
    if many:
        p.add_argument("bag", metavar="BAG", nargs="+", help=many)
    else:
        p.add_argument("bag", metavar="BAG", help="rosbag2 folder (sqlite3 or mcap), or a bare .mcap / .db3 file")
    p.add_argument("--rgb-topic", metavar="TOPIC", help="sensor_msgs/Image or CompressedImage topic of the RGB camera")
    p.add_argument("--thermal-topic", metavar="TOPIC", help="... of the thermal camera")
    slop_option(p)


def slop_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--slop",
        type=float,
        default=DEFAULT_SLOP_S,
        metavar="S",
        help=f"max stamp difference of a pair in seconds, as the node's `slop` parameter (default {DEFAULT_SLOP_S:g})",
    )


def max_pairs_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--max-pairs", type=int, metavar="N", help=what)


def force_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing output recording (only a rosbag2 recording is ever replaced) and write into "
        "an existing report folder; an output that is or overlaps an input is refused even so",
    )


def fleet_options(p: argparse.ArgumentParser):
    """Where the recordings' work runs (taseg_ros.bag.fleet): one task per recording. Returns the group."""
    group = p.add_argument_group("many recordings: engine and workers (one recording is one task)")
    group.add_argument("--engine", choices=("local", "ray"), default=None,
                       help="local: worker processes on this machine (default); ray: the actors of a Ray cluster "
                       "(--ray-address or RAY_ADDRESS; without either a local Ray instance; needs "
                       "pip install 'taseg_ros[cluster]')")
    group.add_argument("--workers", type=int, default=None, metavar="N",
                       help="workers, each loading the model once and taking one recording at a time (default 1)")
    group.add_argument("--ray-address", metavar="ADDR", help="the Ray cluster to use (default: RAY_ADDRESS)")
    group.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="G",
                       help="GPUs Ray reserves for each worker (e.g. 1, or 0.5 to share one; default 0: CPU)")
    group.add_argument("--threads-per-worker", type=int, default=1, metavar="T",
                       help="CPU threads of each worker's model (default 1). Figures are bit-identical between runs "
                       "with the same T, whatever the engine and number of workers")
    return group


def fleet_options_given(args) -> bool:
    return args.engine is not None or args.workers is not None or args.ray_address is not None \
        or bool(args.gpus_per_worker)


def engine_from_args(args):
    """The engine the fleet options ask for; Ray is imported here only, when asked for (exit 2 without it)."""
    from taseg_ros.bag.fleet.engines import make_engine
    from taseg_ros.errors import InputError

    if args.threads_per_worker < 1:
        raise InputError(f"--threads-per-worker must be >= 1, got {args.threads_per_worker}")
    return make_engine(args.engine or "local", args.workers or 1, address=args.ray_address,
                       gpus_per_worker=args.gpus_per_worker, threads_per_worker=args.threads_per_worker)


def gates_from_args(args, model_baseline: bool | None = None):
    """--gate and --gates, checked against what this run computes (before the model loads);
    ``model_baseline``: whether --baseline is a model (default: whether it is not a report)."""
    from taseg_ros.bag.evaluate.compare import check_gates_available, is_report
    from taseg_ros.errors import InputError
    from taseg_ros.evaluation.gates import load_gates, parse_gate

    if not 0 < args.low_confidence <= 1:
        raise InputError(f"--low-confidence must be in (0, 1], got {args.low_confidence}")
    if not args.segment_window > 0 or args.worst_segments < 0:
        raise InputError("--segment-window must be > 0 and --worst-segments >= 0")
    gates = [parse_gate(text) for text in args.gate] + (load_gates(args.gates) if args.gates else [])
    if model_baseline is None:
        model_baseline = args.baseline is not None and not is_report(args.baseline)
    check_gates_available(gates, args.baseline, model_baseline, args.thermal_reliance)
    return gates


def json_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--json", action="store_true", help=what)


def progress(total: int | None, unit: str):
    """A progress bar on a terminal, nothing otherwise (logs, CI), and its update(count) function."""
    bar = progress_bar(total=total, unit=unit)
    return bar, (lambda n: bar.update(n - bar.n))


def bag_name(path) -> str:
    """The recording's name for default output names: the folder's, or the bare file's without suffix."""
    from pathlib import Path

    return Path(path).resolve().name.removesuffix(".mcap").removesuffix(".db3")


def source_from_args(args):
    return PairSource(args.bag, args.rgb_topic, args.thermal_topic, args.slop, getattr(args, "max_pairs", None))
