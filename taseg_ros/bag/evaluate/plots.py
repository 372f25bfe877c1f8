"""The timing and label-free quality plots of `taseg bag eval` (the score plots come from
taseg_ros.evaluation.report)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from taseg_ros.bag.evaluate.result import BagEvalResult
from taseg_ros.frames.pairing import NS_PER_S
from taseg_ros.outputs import save_figure


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
    save_figure(fig, path, dpi=100)
    return Path(path)


def plot_quality(result: BagEvalResult, path: Path) -> Path:
    """The label-free figures over the recording: confidence, flicker (and thermal reliance / agreement
    with the baseline), class shares; the worst segments shaded."""
    from matplotlib.figure import Figure

    quality = result.quality
    t = quality.times_s
    fig = Figure(figsize=(11, 7.5))
    conf_ax, flick_ax, class_ax = fig.subplots(3, 1, sharex=True)
    for name, label in (("mean_confidence", "mean confidence"), ("p5_confidence", "5th percentile confidence"),
                        ("low_confidence_share", f"share below {quality.low_confidence:g}"),
                        ("entropy", "entropy / log K")):
        conf_ax.plot(t, quality.series(name), ".-", markersize=3, label=label)
    conf_ax.set_ylim(0, 1.02)
    conf_ax.set_title("confidence")
    for name, label in (("flicker", "flicker (labels changed)"),
                        ("flicker_compensated", "flicker, motion compensated"),
                        ("thermal_reliance", "changed with thermal blanked"),
                        ("baseline_agreement", "agreement with the baseline model")):
        values = quality.series(name)
        if not np.isnan(values).all():
            flick_ax.plot(t, values, ".-", markersize=3, label=label)
    flick_ax.set_ylim(0, 1.02)
    flick_ax.set_title("temporal consistency (share of pixels)")
    shares = np.array([q.class_shares for q in quality.frames]).reshape(len(t), -1)
    if len(t):
        palette = result_palette(result, shares.shape[1])
        class_ax.stackplot(t, shares.T, labels=result.class_names, colors=palette)
    class_ax.set_ylim(0, 1)
    class_ax.set_title("class shares")
    class_ax.set_xlabel("recording time (s)")
    worst = quality.worst(result.segment_window_s, result.worst_segments).get("flicker_compensated", [])
    for segment in worst:
        flick_ax.axvspan(segment["start_s"], segment["end_s"], color="red", alpha=0.12)
    for ax in (conf_ax, flick_ax, class_ax):  # beside the axes: the curves sit anywhere in [0, 1]
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="x-small")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    return Path(path)


def result_palette(result: BagEvalResult, classes: int) -> list:
    """The model's class colours as matplotlib wants them (tab20 when the result has none)."""
    if result.palette is None:
        from matplotlib import colormaps

        return [colormaps["tab20"](i % 20) for i in range(classes)]
    return [tuple(float(c) / 255 for c in result.palette[i]) for i in range(classes)]
