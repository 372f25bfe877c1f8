"""The report of `taseg bag eval`: the console summary, report.md, report.json and the plots beside them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from taseg_ros.bag.evaluate.plots import plot_timing
from taseg_ros.bag.evaluate.result import BagEvalResult
from taseg_ros.outputs import write_text_atomic


def _ms(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_summary(result: BagEvalResult) -> str:
    t = result.timing()
    lines = [
        f"{result.bag}: {result.pairs} RGB/thermal pairs at slop {result.slop_s * 1e3:g} ms "
        f"({result.rgb_topic} + {result.thermal_topic}), mode {result.mode}"
        + (" -- INTERRUPTED" if result.interrupted else ""),
        f"  processed {result.processed}"
        + (f", failed {result.failed}" if result.failed else "")
        + f"; per pair {_ms(t['processing_ms']['median'])} ms median, {_ms(t['processing_ms']['p90'])} ms p90 "
        f"(model {_ms(t['inference_ms']['median'])} ms) on {result.device} {result.precision}",
    ]
    share = result.dropped_share
    verb = "dropped" if result.mode == "realtime" else "would drop"
    lines.append(
        f"  a real-time node on this machine {verb} {result.dropped} of {result.pairs} pairs"
        + (f" ({100 * share:.1f}%)" if share is not None else "")
        + (
            f"; throughput {t['throughput_fps']:.1f} pairs/s vs {t['input_pair_rate_hz']:.1f} pairs/s recorded"
            if t.get("throughput_fps") and t.get("input_pair_rate_hz")
            else ""
        )
    )
    latency = t.get("latency_ms") or t.get("simulated_realtime_latency_ms")
    if latency and latency["count"]:
        lines.append(
            f"  latency of a real-time node (output - RGB stamp): median {_ms(latency['median'])} ms, p90 "
            f"{_ms(latency['p90'])} ms, max {_ms(latency['max'])} ms"
        )
    if result.label_source is not None:
        lines.append(
            f"  labels: {result.labels_total} in {result.label_source}; {result.scored} pairs scored, "
            f"{result.labels_unmatched} labels matched no processed pair"
        )
    if result.scores is not None:
        s = result.scores.overall
        lines.append(f"  mIoU {100 * s.miou:.1f}% ({s.nan_policy}), pixel accuracy {100 * s.pixel_accuracy:.1f}%")
        for i, name in enumerate(result.class_names):
            iou = s.iou[i]
            lines.append(f"    {name:<20} IoU {'n/a' if np.isnan(iou) else f'{100 * iou:5.1f}%'}")
    for note in result.notes:
        lines.append(f"  note: {note}")
    if result.output_bag:
        lines.append(f"  output recording: {result.output_bag}")
    return "\n".join(lines)


def _markdown(result: BagEvalResult, plots: dict[str, Path]) -> str:
    from taseg_ros.evaluation.report import to_markdown

    t = result.timing()
    rows = [
        ("recording", f"`{result.bag}`"),
        ("topics", f"`{result.rgb_topic}` + `{result.thermal_topic}`"),
        ("checkpoint", f"`{result.checkpoint}` ({result.model}, {result.device} {result.precision})"),
        ("mode", result.mode + (" (interrupted)" if result.interrupted else "")),
        ("pairs (slop)", f"{result.pairs} ({result.slop_s * 1e3:g} ms)"),
        ("processed / failed", f"{result.processed} / {result.failed}"),
        (
            "dropped by a real-time node",
            f"{result.dropped} ({'-' if result.dropped_share is None else f'{100 * result.dropped_share:.1f}%'})",
        ),
        (
            "processing per pair, median / p90 / max",
            " / ".join(_ms(t["processing_ms"][k]) for k in ("median", "p90", "max")) + " ms",
        ),
        ("model per pair, median", f"{_ms(t['inference_ms']['median'])} ms"),
    ]
    latency = t.get("latency_ms") or t.get("simulated_realtime_latency_ms")
    if latency and latency["count"]:
        rows.append(
            (
                "latency of a real-time node (output - RGB stamp), median / p90 / max",
                f"{_ms(latency['median'])} / {_ms(latency['p90'])} / {_ms(latency['max'])} ms",
            )
        )
    if result.label_source is not None:
        rows.append(
            (
                "labels",
                f"{result.labels_total} in `{result.label_source}`, {result.scored} scored, "
                f"{result.labels_unmatched} unmatched",
            )
        )
    if result.output_bag:
        rows.append(("output recording", f"`{result.output_bag}`"))
    text = ["# Recording evaluation", "", "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], ""]
    if result.mode == "offline":
        text.append(
            "Drops are simulated: the recording's pairs replayed at their recorded times against the "
            "measured per-pair processing times, with the node's newest-pair-wins policy.\n"
        )
    for note in result.notes:
        text.append(f"- note: {note}")
    if "latency" in plots:
        text += ["", f"![processing time per pair]({plots['latency'].name})", ""]
    if result.scores is not None:
        scores_md = to_markdown(result.scores).replace("# Evaluation", "## Scores", 1)
        text += [scores_md]
        for key in ("iou_bars", "confusion"):
            if key in plots:
                text.append(f"![{key}]({plots[key].name})\n")
    return "\n".join(text) + "\n"


def write_eval_report(result: BagEvalResult, out_dir: str | Path) -> dict[str, Path]:
    """report.json, report.md, timing.png and (with labels) iou_per_class.png and confusion_matrix.png."""
    from taseg_ros.evaluation.report import plot_confusion, plot_iou_bars

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {"latency": plot_timing(result, out / "timing.png")}
    if result.scores is not None:
        files["iou_bars"] = plot_iou_bars(result.scores, out / "iou_per_class.png")
        files["confusion"] = plot_confusion(result.scores.overall, result.class_names, out / "confusion_matrix.png")
    files["json"] = out / "report.json"
    write_text_atomic(files["json"], json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n")
    files["markdown"] = out / "report.md"
    write_text_atomic(files["markdown"], _markdown(result, files))
    return files
