"""Summaries of measured durations: one definition of the statistics the reports show.

Free of torch and ROS, so the bag tools (which must start fast) and the benchmarks share it.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

# Keys of every summary, in milliseconds (count: how many values).
SUMMARY_KEYS = ("count", "mean", "median", "q1", "q3", "p90", "p95", "p99", "min", "max")


def summarize_ms(seconds: Iterable[float]) -> dict[str, float | int | None]:
    """Durations (or offsets) in seconds -> milliseconds: count, mean, median, quartiles, p90, p95,
    p99, min and max; None for each statistic when there are no values."""
    ms = np.asarray(list(seconds), dtype=np.float64) * 1e3
    if ms.size == 0:
        return {key: 0 if key == "count" else None for key in SUMMARY_KEYS}
    q1, median, q3, p90, p95, p99 = np.percentile(ms, [25, 50, 75, 90, 95, 99])
    return {
        "count": int(ms.size),
        "mean": float(ms.mean()),
        "median": float(median),
        "q1": float(q1),
        "q3": float(q3),
        "p90": float(p90),
        "p95": float(p95),
        "p99": float(p99),
        "min": float(ms.min()),
        "max": float(ms.max()),
    }
