"""The `taseg` command line: one entry point, one module per subcommand.

Each module in COMMANDS defines `register(subparsers)` which adds its parser and
sets `func` to a callable taking the parsed args and returning an exit code.
Modules are imported lazily so that `taseg --help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> module (relative to this package); the order is the order in --help.
COMMANDS = {
    "demo": ".demo",
    "info": ".info",
    "init": ".init",
    "export": ".export",
    "weights": ".weights",
    "train": ".train",
    "eval": ".eval",
    "score": ".score",
    "predict": ".predict",
    "bag": ".bag",
    "bench": ".bench",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taseg",
        description="TASeg RGB-thermal semantic segmentation: model, training, evaluation, ROS 2 tools.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMANDS.values():
        importlib.import_module(module_name, __name__).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # key=value overrides may stand anywhere, also after options (argparse alone would
    # refuse a positional list once an option has followed it).
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(item.startswith("-") or "=" not in item for item in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError) as exc:  # user errors: one clear line, no traceback
        print(f"taseg {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
