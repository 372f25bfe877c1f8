"""`taseg bag info`: is this recording usable (topics, rates, pairs, registration)?"""
from __future__ import annotations

from taseg_ros.bag.info import format_info, inspect_bag
from taseg_ros.cli.bag.common import bag_and_topics, json_option, source_from_args
from taseg_ros.cli.options import add_homography_option, registration_from_args


def add_info(sub) -> None:
    info = sub.add_parser(
        "info",
        help="is this recording usable? topics, rates, pairs, stamp offsets",
        description="Topics, rates, gaps and how many RGB/thermal pairs match at --slop. "
        "Exit code 0 when pairs match, 1 when the recording is not usable as it is.",
    )
    bag_and_topics(info)
    json_option(info, "print JSON instead of text")

    add_homography_option(info, "registration to check on a few sampled pairs (9 numbers or a parameters file); "
                          "default: the plain resize (the identity for same-size cameras)")
    info.add_argument("--no-registration-check", action="store_true",
                      help="skip the registration check (it refines on 3 downscaled pairs: about a second)")
    info.set_defaults(func=run_info)


def run_info(args) -> int:
    import json

    homography, made_for = registration_from_args(args)
    info = inspect_bag(args.bag, args.rgb_topic, args.thermal_topic, args.slop)
    if info.usable and not args.no_registration_check:
        from taseg_ros.bag.calibrate import registration_check

        info.registration = registration_check(source_from_args(args), homography, info.pairs, made_for=made_for)
    text = format_info(info) + (f"\n{info.registration}" if info.registration else "")
    print(json.dumps(info.to_dict(), indent=2) if args.json else text)
    return 0 if info.usable else 1
