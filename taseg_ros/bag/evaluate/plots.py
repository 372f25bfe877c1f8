"""The timing plot of `taseg bag eval` (the score plots come from taseg_ros.evaluation.report)."""

from __future__ import annotations

from pathlib import Path

from taseg_ros.bag.evaluate.result import BagEvalResult
from taseg_ros.frames.pairing import NS_PER_S
from taseg_ros.outputs import replacing


def plot_timing(result: BagEvalResult, path: Path) -> Path:
    """Processing time of every pair over the recording, and where a real-time node dropped pairs."""
    from matplotlib.figure import Figure

    frames = [f for f in result.frames if f.error is None]
    fig = Figure(figsize=(9, 3.2))
    ax = fig.subplots()
    if frames:
        t0 = min(f.arrival_ns for f in frames)
        x = [(f.arrival_ns - t0) / NS_PER_S for f in frames]
        ax.plot(x, [f.processing_s * 1e3 for f in frames], ".", label="processing per pair")
        if result.mode == "realtime":
            ax.plot(
                x, [(f.finish_ns - f.rgb_stamp_ns) * 1e-6 for f in frames], "x", label="latency (output - RGB stamp)"
            )
        if result.dropped_arrivals_ns:
            drops = [(t - t0) / NS_PER_S for t in result.dropped_arrivals_ns]
            ax.plot(drops, [0] * len(drops), "|", color="red", markersize=14, label="pair dropped by a real-time node")
        period = result.recording_duration_s / result.pairs * 1e3 if result.pairs else None
        if period:
            ax.axhline(period, color="red", linestyle="--", linewidth=1, label=f"mean pair interval {period:.0f} ms")
    ax.set_xlabel("recording time (s)")
    ax.set_ylabel("ms")
    share = result.dropped_share
    ax.set_title(
        f"{result.mode}: {result.processed} processed, {result.dropped} dropped by a real-time node"
        + (f" ({100 * share:.1f}%)" if share is not None else "")
    )
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    with replacing(path, suffix=Path(path).suffix) as tmp:
        fig.savefig(tmp, dpi=100)
    return Path(path)
