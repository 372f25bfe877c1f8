"""Command-line options shared by several `taseg` commands: one definition, one help text."""
from __future__ import annotations


def add_force_option(parser) -> None:
    """--force: the overwrite policy of taseg_ros.outputs (refuse an existing output without it)."""
    from taseg_ros.outputs import FORCE_HELP

    parser.add_argument("--force", action="store_true", help=FORCE_HELP)
