"""Frame sizes as text: one notation, WIDTHxHEIGHT (``640x480``), the order of camera drivers, OpenCV
and sensor_msgs/Image (width, height); numpy arrays are (height, width). Every option that takes a
size as text parses it here (`taseg export --size`, `taseg score --eval-resolution`, `bag calibrate
--board` COLSxROWS). Standard library only: the command-line parsers use it."""
from __future__ import annotations

from taseg_ros.errors import InputError


def parse_size(text: str, what: str = "WIDTHxHEIGHT", example: str = "640x480") -> tuple[int, int]:
    """``"640x480"`` -> (640, 480): two positive integers joined by x (or X); InputError naming the
    expected form otherwise."""
    first, sep, second = str(text).strip().lower().partition("x")
    try:
        a, b = int(first), int(second)
    except ValueError:
        a = b = 0
    if not sep or a < 1 or b < 1:
        raise InputError(f"expected {what} of positive integers (e.g. {example}), got {text!r}")
    return a, b


def format_size(width: int, height: int) -> str:
    """(640, 480) -> ``"640x480"``."""
    return f"{width}x{height}"
