"""`taseg bag replay`: publish a recording to a running taseg_node; record what it publishes."""
from __future__ import annotations

from taseg_ros.bag.io.writer import output_recording
from taseg_ros.bag.replay import ReplaySettings, format_replay, replay_bag
from taseg_ros.cli.bag.common import (
    bag_and_topics,
    bag_name,
    force_option,
    json_option,
    max_pairs_option,
    source_from_args,
)
from taseg_ros.outputs import check_output_file, write_text_atomic


def add_replay(sub) -> None:
    rp = sub.add_parser(
        "replay",
        help="publish the recording to a running taseg_node; record its outputs",
        description="Publish the RGB and thermal topics over DDS at --rate to a running taseg_node, "
        "record what the node publishes (labels, colorized, overlay, class_info, diagnostics) into an "
        "output recording, and report end-to-end latency and dropped pairs.",
    )
    bag_and_topics(rp)
    rp.add_argument("--rate", type=float, default=1.0, help="playback speed (1.0 = as recorded)")
    rp.add_argument(
        "--node",
        default="/taseg",
        metavar="NAME",
        help="fully qualified name of the node whose outputs are recorded (default /taseg)",
    )
    rp.add_argument("--publish-rgb-topic", metavar="TOPIC", help="publish RGB here (default: the recorded topic name)")
    rp.add_argument(
        "--publish-thermal-topic", metavar="TOPIC", help="publish thermal here (default: the recorded name)"
    )
    rp.add_argument("-o", "--output-bag", metavar="PATH", help="output recording (default ./<bag name>_replay)")
    rp.add_argument("--no-output-bag", action="store_true", help="measure only")
    force_option(rp)
    rp.add_argument("--report", metavar="DIR", help="also write replay.json there")
    rp.add_argument(
        "--wait",
        type=float,
        default=30.0,
        metavar="S",
        help="how long to wait for the node's subscriptions and publishers (default 30 s)",
    )
    rp.add_argument(
        "--drain",
        type=float,
        default=3.0,
        metavar="S",
        help="after the last message, wait this long without new outputs before stopping (default 3 s)",
    )
    rp.add_argument(
        "--keep-stamps",
        action="store_true",
        help="publish the recorded header stamps; default: shift them to now (as a live camera)",
    )
    max_pairs_option(rp, "stop publishing after the frames of N pairs")
    json_option(rp, "print the report as JSON")
    rp.set_defaults(func=run_replay)


def run_replay(args) -> int:
    import json
    from pathlib import Path

    inputs = {"BAG": args.bag}
    output_bag = None if args.no_output_bag else args.output_bag or f"{bag_name(args.bag)}_replay"
    report = None if args.report is None else check_output_file(
        Path(args.report) / "replay.json", force=args.force, inputs=inputs
    )
    with output_recording(output_bag, force=args.force, inputs=inputs) as bag_out:
        result = _replay(args, bag_out)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(report, json.dumps(result.to_dict(), indent=2) + "\n")
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_replay(result))
    return 130 if result.interrupted else 0


def _replay(args, output_bag):
    settings = ReplaySettings(
        source_from_args(args), rate=args.rate, node=args.node, publish_rgb_topic=args.publish_rgb_topic,
        publish_thermal_topic=args.publish_thermal_topic, wait_s=args.wait, drain_s=args.drain,
        restamp=not args.keep_stamps,
    )
    return replay_bag(settings, output_bag, handle_sigint=True)
