"""Figures as text: one way to write a number that may be missing and a byte size, and the one
progress bar. Standard library and tqdm only (the command line and every report use it)."""
from __future__ import annotations

import math
import sys

from tqdm import tqdm


def fixed(value: float | None, unit: str = "", digits: int = 1) -> str:
    """A number with `digits` decimals and its unit, or "-" when it is missing (None or NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}{unit}"


def human_size(size: int | float | None, unknown: str = "-") -> str:
    """Bytes in B, KiB, MiB or GiB (1024-based, one decimal above bytes): ``1.5 GiB``."""
    if size is None:
        return unknown
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def on_terminal() -> bool:
    """Whether progress is shown by default: on a terminal, not in logs or CI."""
    return sys.stderr.isatty()


def progress_bar(iterable=None, *, total: int | None = None, desc: str | None = None, unit: str = "it",
                 enabled: bool | None = None, leave: bool = False, **options) -> tqdm:
    """The one progress bar (tqdm on stderr): shown when `enabled`, by default on a terminal only;
    `leave`: keep the finished bar on screen."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, leave=leave, dynamic_ncols=True,
                disable=not (on_terminal() if enabled is None else enabled), **options)

