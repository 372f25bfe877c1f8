"""What the `taseg bag` sub-commands share: the recording and topic options, progress, names."""
from __future__ import annotations

import argparse

from taseg_ros.bag.pairs import PairSource
from taseg_ros.formatting import progress_bar
from taseg_ros.frames.pairing import DEFAULT_SLOP_S


def bag_and_topics(p: argparse.ArgumentParser) -> None:
    """The recording and which of its topics to pair: every sub-command starts with these."""
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
