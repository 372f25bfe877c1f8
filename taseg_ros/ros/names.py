"""ROS 2 name rules for namespaces, checked without ROS.

The bag tools write topic names into recordings without rclpy, so a name that ``ros2`` would
reject must be caught here. The rules are rmw's ``rmw_validate_namespace``: '/'-separated tokens
of letters, digits and '_', none empty and none starting with a digit. They are implemented only
in rmw's C code (rclpy reaches them only with a ROS installation), hence this small copy.
"""

from __future__ import annotations

import re

from taseg_ros.errors import InputError

_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_namespace(namespace: str, option: str = "namespace") -> str:
    """``namespace`` with one leading '/' and no trailing one ("" for the root namespace), or a
    ValueError naming ``option`` and what is wrong. A missing leading '/' is added, as before."""
    text = str(namespace).strip()
    normalised = text.strip("/")
    if not normalised:
        return ""
    for token in normalised.split("/"):
        if not _TOKEN.fullmatch(token):
            bad = sorted({c for c in token if not (c.isascii() and (c.isalnum() or c == "_"))})
            why = (
                "an empty name between two '/'"
                if not token
                else f"{token!r} starts with a digit"
                if token[0].isdigit() and not bad
                else f"{token!r} holds {', '.join(repr(c) for c in bad)}"
            )
            raise InputError(
                f"{option} {namespace!r}: not a valid ROS 2 namespace ({why}); use names of letters, digits "
                "and '_' separated by '/', none starting with a digit, e.g. /taseg or /robot1/taseg"
            )
    return "/" + normalised
