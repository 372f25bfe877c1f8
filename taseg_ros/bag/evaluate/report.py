"""The report of `taseg bag eval`: the console summary, report.md, report.json and the plots beside them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from taseg_ros.bag.evaluate.plots import plot_quality, plot_timing
from taseg_ros.bag.evaluate.result import BagEvalResult, split_timings
from taseg_ros.evaluation.figures import FIGURES
from taseg_ros.evaluation.report import plot_confusion, plot_iou_bars, to_markdown
from taseg_ros.formatting import fixed
from taseg_ros.errors import safe_lines
from taseg_ros.outputs import write_text_atomic

# How each figure reads in the summaries: (label, shown as a percentage).
FIGURE_LABELS = {
    "mean_confidence": ("mean confidence", False),
    "p5_confidence": ("5th percentile confidence", False),
    "low_confidence_share": ("low-confidence pixels", True),
    "entropy": ("entropy / log K", False),
    "flicker": ("flicker (labels changed vs the previous pair)", True),
    "flicker_compensated": ("flicker, motion compensated", True),
    "thermal_reliance": ("labels changed with thermal blanked", True),
    "baseline_agreement": ("agreement with the baseline model", True),
}


def _figure(name: str, value, signed: bool = False) -> str:
    if value is None:
        return "-"
    percent = FIGURE_LABELS[name][1]
    sign = "+" if signed else ""
    return f"{100 * value:{sign}.1f}%" if percent else f"{value:{sign}.3f}"


def _segments(segments: list[dict], name: str) -> str:
    return ", ".join(f"{s['start_s']:.1f}-{s['end_s']:.1f} s ({_figure(name, s['mean'])})" for s in segments)


def _quality_lines(result: BagEvalResult) -> list[str]:
    if result.quality is None or not result.quality.frames:
        return []
    q = result.quality.summary()
    lines = [
        f"  label-free: mean confidence {_figure('mean_confidence', q['mean_confidence'])} "
        f"(p5 {_figure('p5_confidence', q['p5_confidence'])}), {_figure('low_confidence_share', q['low_confidence_share'])} "
        f"of pixels below {result.quality.low_confidence:g}, entropy {_figure('entropy', q['entropy'])}; flicker "
        f"{_figure('flicker', q['flicker'])} raw, {_figure('flicker_compensated', q['flicker_compensated'])} motion compensated"
        + (f"; thermal reliance {_figure('thermal_reliance', q['thermal_reliance'])}" if q["thermal_reliance"] is not None else "")
        + (f"; agreement with the baseline {_figure('baseline_agreement', q['baseline_agreement'])}"
           if q["baseline_agreement"] is not None else "")
    ]
    for name, segments in result.quality.worst(result.segment_window_s, result.worst_segments).items():
        if segments:
            lines.append(f"  worst {FIGURE_LABELS[name][0]}: {_segments(segments, name)}")
    comparison = result.comparison
    if comparison and comparison["kind"]:
        changes = [f"{name} {_figure(name, row['change'], signed=True)}" for name, row in comparison["figures"].items()
                   if row["change"] is not None]
        lines.append(f"  vs baseline ({comparison['kind']} {comparison['baseline']}): " + ", ".join(changes))
    if comparison and comparison["gates"]:
        failed = [g for g in comparison["gates"] if not g["passed"]]
        lines.append(f"  gates: {len(comparison['gates']) - len(failed)} of {len(comparison['gates'])} passed"
                     + "".join(f"; FAILED {g['gate']} ({_gate_value(g)})" for g in failed))
    return lines


def _gate_value(gate: dict) -> str:
    if gate["value"] is None:
        return gate["reason"]
    return f"{'change' if gate['bound'].startswith('change') else 'value'} {gate['value']:+.4f}"


def format_summary(result: BagEvalResult) -> str:
    t = result.timing()
    lines = [
        f"{result.bag}: {result.pairs} RGB/thermal pairs at slop {result.slop_s * 1e3:g} ms "
        f"({result.rgb_topic} + {result.thermal_topic}), mode {result.mode}"
        + (" -- INTERRUPTED" if result.interrupted else ""),
        f"  processed {result.processed}"
        + (f", failed {result.failed}" if result.failed else "")
        + f"; per pair {fixed(t['processing_ms']['median'])} ms median, {fixed(t['processing_ms']['p90'])} ms p90 "
        f"(model {fixed(t['inference_ms']['median'])} ms) on {result.device} {result.precision}",
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
            f"  latency of a real-time node (output - RGB stamp): median {fixed(latency['median'])} ms, p90 "
            f"{fixed(latency['p90'])} ms, max {fixed(latency['max'])} ms"
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
    lines += _quality_lines(result)
    for note in result.notes:
        lines.append(f"  note: {note}")
    if result.output_bag:
        lines.append(f"  output recording: {result.output_bag}")
    return safe_lines(lines)  # topic names, notes and baseline fields are files' text


def _quality_markdown(result: BagEvalResult, plots: dict[str, Path]) -> list[str]:
    """The label-free section: figures (with the baseline and the change), gates, worst segments, classes."""
    quality = result.quality
    if quality is None or not quality.frames:
        return []
    comparison = result.comparison or {}
    rows = comparison.get("figures") or {name: {"value": v, "baseline": None, "change": None}
                                          for name, v in quality.summary().items()}
    text = ["## Label-free quality", "",
            f"Means over {len(quality.frames)} processed pairs; low confidence: below {quality.low_confidence:g}. "
            "Flicker compares each pair with the previous processed one (motion compensated: the previous labels "
            "warped along the DIS optical flow of the RGB frames).", ""]
    baseline = comparison.get("kind")
    header = "| figure | value |" + (f" baseline ({baseline}) | change |" if baseline else "")
    text += [header, "|---|---|" + ("---|---|" if baseline else "")]
    for name in FIGURES:
        row = rows[name]
        line = f"| {FIGURE_LABELS[name][0]} (`{name}`) | {_figure(name, row['value'])} |"
        if baseline:
            line += f" {_figure(name, row['baseline'])} | {_figure(name, row['change'], signed=True)} |"
        text.append(line)
    if baseline:
        text += ["", f"Baseline: `{comparison['baseline']}` ({comparison['baseline_frames']} pairs)."]
    if comparison.get("gates"):
        text += ["", "### Gates", "", "| gate | value | verdict |", "|---|---|---|"]
        for gate in comparison["gates"]:
            verdict = "pass" if gate["passed"] else "**FAIL**" + (f" ({gate['reason']})" if gate["reason"] else "")
            value = "-" if gate["value"] is None else f"{gate['value']:+.4f}"
            text.append(f"| `{gate['gate']}` | {value} | {verdict} |")
    worst = quality.worst(result.segment_window_s, result.worst_segments)
    if any(worst.values()):
        text += ["", f"### Worst segments ({result.segment_window_s:g} s windows, seconds into the recording)", "",
                 "| figure | segments (mean over the window) |", "|---|---|"]
        text += [f"| {FIGURE_LABELS[name][0]} | {_segments(segs, name)} |" for name, segs in worst.items() if segs]
    text += ["", "### Per class", "", "| class | share of pixels | flicker, motion compensated (1 - IoU) |", "|---|---|---|"]
    for name, row in quality.class_summary().items():
        share, flicker = row["share"], row["flicker_compensated"]
        text.append(f"| {name} | {'-' if share is None else f'{100 * share:.1f}%'} | "
                    f"{'-' if flicker is None else f'{100 * flicker:.1f}%'} |")
    if "quality" in plots:
        text += ["", f"![label-free quality over time]({plots['quality'].name})"]
    return text + [""]


def _markdown(result: BagEvalResult, plots: dict[str, Path], timings: bool = True) -> str:
    rows = [
        ("recording", f"`{result.bag}`"),
        ("topics", f"`{result.rgb_topic}` + `{result.thermal_topic}`"),
        ("checkpoint", f"`{result.checkpoint}` ({result.model}, {result.device} {result.precision})"),
        ("mode", result.mode + (" (interrupted)" if result.interrupted else "")),
        ("pairs (slop)", f"{result.pairs} ({result.slop_s * 1e3:g} ms)"),
        ("processed / failed", f"{result.processed} / {result.failed}"),
    ]
    if timings:
        rows += _timing_rows(result)
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
    if result.mode == "offline" and timings:
        text += [
            "Drops are simulated: the recording's pairs replayed at their recorded times against the "
            "measured per-pair processing times, with the node's newest-pair-wins policy.", ""
        ]
    if not timings:
        text += ["Timings (per pair, and the pairs a real-time node would drop) are in `timings.json`.", ""]
    for note in result.notes:
        text.append(f"- note: {note}")
    if "latency" in plots:
        text += ["", f"![processing time per pair]({plots['latency'].name})", ""]
    text += _quality_markdown(result, plots)
    if result.scores is not None:
        scores_md = to_markdown(result.scores).replace("# Evaluation", "## Scores", 1)
        text += scores_md.splitlines()
        for key in ("iou_bars", "confusion"):
            if key in plots:
                text += [f"![{key}]({plots[key].name})", ""]
    return safe_lines(text) + "\n"  # one field per line: a topic name's line break cannot start a line


def _timing_rows(result: BagEvalResult) -> list[tuple[str, str]]:
    t = result.timing()
    rows = [
        (
            "dropped by a real-time node",
            f"{result.dropped} ({'-' if result.dropped_share is None else f'{100 * result.dropped_share:.1f}%'})",
        ),
        (
            "processing per pair, median / p90 / max",
            " / ".join(fixed(t["processing_ms"][k]) for k in ("median", "p90", "max")) + " ms",
        ),
        ("model per pair, median", f"{fixed(t['inference_ms']['median'])} ms"),
    ]
    latency = t.get("latency_ms") or t.get("simulated_realtime_latency_ms")
    if latency and latency["count"]:
        rows.append(
            (
                "latency of a real-time node (output - RGB stamp), median / p90 / max",
                f"{fixed(latency['median'])} / {fixed(latency['p90'])} / {fixed(latency['max'])} ms",
            )
        )
    return rows


def write_eval_report(result: BagEvalResult, out_dir: str | Path, timings: bool = True) -> dict[str, Path]:
    """report.json, report.md, timing.png, quality.png and (with labels) iou_per_class.png and
    confusion_matrix.png. ``timings`` False (a fleet's recording): what depends on this run's speed
    goes to timings.json alone (no timing.png), so every other file is the same on any machine."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {"latency": plot_timing(result, out / "timing.png")} if timings else {}
    if result.quality is not None and result.quality.frames:
        files["quality"] = plot_quality(result, out / "quality.png")
    if result.scores is not None:
        files["iou_bars"] = plot_iou_bars(result.scores, out / "iou_per_class.png")
        files["confusion"] = plot_confusion(result.scores.overall, result.class_names, out / "confusion_matrix.png")
    report = result.to_dict()
    if not timings:
        report, times = split_timings(report)
        files["timings"] = out / "timings.json"
        write_text_atomic(files["timings"], json.dumps(times, indent=2, allow_nan=False) + "\n")
    files["json"] = out / "report.json"
    write_text_atomic(files["json"], json.dumps(report, indent=2, allow_nan=False) + "\n")
    files["markdown"] = out / "report.md"
    write_text_atomic(files["markdown"], _markdown(result, files, timings))
    return files
