"""The fleet report: every recording's figures and verdict, the roll-up, the worst recordings and
segments, and the gates, built from the output folder alone (``write_fleet_report``), so that it can be
rebuilt after a partial or killed run (`taseg bag report OUT`).

Roll-up: a figure's mean over all the fleet's pairs that have it, i.e. each recording's mean weighted
by its number of pairs with that figure (flicker: pairs after the first); with labels, one confusion
matrix summed over the recordings gives the fleet's per-class IoU and mIoU (not a mean of mIoUs).
Gates apply to each recording (its figures, and its baseline's for change bounds) and to the
roll-up (the fleet's figures against the baseline's roll-up): fleet.md says which failed where.

A recording is done (its folder's run.json names this run's model and settings), failed (failure.json
with the reason), stale (made with another model or settings: not counted), or pending (no folder yet).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from taseg_ros.bag.evaluate.report import FIGURE_LABELS
from taseg_ros.bag.fleet.store import (
    FAILURE_FILE,
    RECORDING_RUN_FILE,
    SUMMARY_FILE,
    dumps,
    read_json,
    read_run,
)
from taseg_ros.datasets.config import MetricProtocol
from taseg_ros.evaluation.gates import check_gates, parse_gate
from taseg_ros.evaluation.metrics import compute_scores
from taseg_ros.evaluation.quality import FIGURES, WORST_SEGMENT_FIGURES
from taseg_ros.outputs import write_text_atomic

# Worst recordings: by these figures, (figure, sign): +1 when high is bad.
WORST_RECORDING_FIGURES = (("miou", -1), ("mean_confidence", -1), *WORST_SEGMENT_FIGURES)
WORST_COUNT = 3


def _recording_row(root: Path, entry: dict, run_key: str, gates) -> dict:
    folder = root / entry["name"]
    row = {"name": entry["name"], "recording": entry["path"], "status": "pending"}
    identity = read_json(folder / RECORDING_RUN_FILE)
    if identity is None:
        return row
    if identity.get("run_key") != run_key:
        return {**row, "status": "stale", "reason": "made with another model, baseline or settings"}
    failure = read_json(folder / FAILURE_FILE)
    if failure is not None:
        return {**row, "status": "failed", "reason": failure.get("reason", "")}
    summary = read_json(folder / SUMMARY_FILE)
    verdicts = check_gates(gates, summary["figures"], summary["baseline_figures"])
    return {**row, "status": "done", "summary": summary, "gates": verdicts,
            "passed": all(v["passed"] for v in verdicts)}


def _weighted(rows: list[dict], figures_key: str, frames_key: str) -> tuple[dict, dict]:
    """(figure -> mean over the fleet's pairs, figure -> pairs)."""
    out, counts = {}, {}
    for name in FIGURES:
        total, n = 0.0, 0
        for row in rows:
            s = row["summary"]
            value, frames = (s[figures_key] or {}).get(name), (s[frames_key] or {}).get(name, 0)
            if value is not None and frames:
                total, n = total + value * frames, n + frames
        out[name], counts[name] = (total / n if n else None), n
    return out, counts


def _fleet_scores(rows: list[dict]) -> dict | None:
    """The summed confusion matrix's scores, when every done recording was scored with one class list."""
    scored = [r["summary"]["scores"] for r in rows if r["summary"].get("scores")]
    if not scored or len({(tuple(s["classes_scored"]), s["nan_policy"]) for s in scored}) != 1:
        return None
    matrix = np.sum([np.asarray(s["confusion_matrix"], dtype=np.int64) for s in scored], axis=0)
    protocol = MetricProtocol(nan_policy=scored[0]["nan_policy"], classes_scored=tuple(scored[0]["classes_scored"]))
    scores = compute_scores(matrix, protocol)
    return {"miou": _finite(scores.miou), "pixel_accuracy": _finite(scores.pixel_accuracy),
            "iou": [_finite(v) for v in scores.iou.tolist()], "recordings": len(scored),
            "nan_policy": protocol.nan_policy}


def _finite(value):
    return None if value is None or not np.isfinite(value) else float(value)


def _worst(rows: list[dict], top: int) -> tuple[dict, dict]:
    """(figure -> worst recordings [{name, value}], figure -> worst segments [{name, start_s, end_s, mean}])."""
    recordings = {}
    for name, sign in WORST_RECORDING_FIGURES:
        values = [(r["name"], _figure(r["summary"], name)) for r in rows]
        values = [(n, v) for n, v in values if v is not None]
        values.sort(key=lambda item: (-sign * item[1], item[0]))
        if values:
            recordings[name] = [{"name": n, "value": v} for n, v in values[:top]]
    segments = {}
    for name, sign in WORST_SEGMENT_FIGURES:
        found = [{"name": r["name"], **seg} for r in rows for seg in (r["summary"]["worst_segments"].get(name) or [])]
        found.sort(key=lambda s: (-sign * s["mean"], s["name"], s["start_s"]))
        if found:
            segments[name] = found[:top]
    return recordings, segments


def _figure(summary: dict, name: str):
    if name == "miou":
        return (summary.get("scores") or {}).get("miou")
    return summary["figures"].get(name)


def build_fleet_report(root: str | Path) -> dict:
    """The fleet report's dictionary from ``root`` (module docstring)."""
    root = Path(root)
    run = read_run(root)
    gates = [parse_gate(text) for text in run.get("gates", [])]
    rows = [_recording_row(root, entry, run["key"], gates) for entry in run["recordings"]]
    done = [r for r in rows if r["status"] == "done"]
    figures, frames = _weighted(done, "figures", "figure_frames")
    has_baseline = any(r["summary"]["baseline_figures"] for r in done)
    baseline, baseline_frames = _weighted(done, "baseline_figures", "baseline_frames") if has_baseline else ({}, {})
    rollup_gates = check_gates(gates, figures, baseline if has_baseline else None)
    counts = {status: sum(r["status"] == status for r in rows) for status in ("done", "failed", "stale", "pending")}
    top = int(run["settings"].get("worst_segments", WORST_COUNT)) or WORST_COUNT
    worst_recordings, worst_segments = _worst(done, top)
    failed_gates = sorted({v["gate"] for r in done for v in r["gates"] if not v["passed"]}
                          | {v["gate"] for v in rollup_gates if not v["passed"]})
    return {
        "model": run["model"], "baseline": run["baseline"], "settings": run["settings"], "gates": run["gates"],
        "recordings": [{k: v for k, v in r.items() if k != "summary"} | _row_figures(r) for r in rows],
        "counts": {**counts, "recordings": len(rows), "pairs": sum(r["summary"]["processed"] for r in done)},
        "rollup": {
            "figures": figures, "figure_pairs": frames,
            "baseline": baseline if has_baseline else None, "baseline_pairs": baseline_frames if has_baseline else None,
            "change": {n: None if figures[n] is None or baseline.get(n) is None else figures[n] - baseline[n]
                       for n in FIGURES} if has_baseline else None,
            "scores": _fleet_scores(done),
            "class_names": done[0]["summary"]["class_names"] if done else None,
            "gates": rollup_gates,
        },
        "worst_recordings": worst_recordings,
        "worst_segments": worst_segments,
        "verdict": {"complete": counts["done"] == len(rows), "failed_gates": failed_gates,
                    "passed": counts["done"] == len(rows) and not failed_gates},
    }


def _row_figures(row: dict) -> dict:
    if row["status"] != "done":
        return {}
    s = row["summary"]
    return {"pairs": s["pairs"], "processed": s["processed"], "scored": s["scored"],
            "miou": (s.get("scores") or {}).get("miou"), "figures": s["figures"],
            "baseline_figures": s["baseline_figures"]}


def exit_code(report: dict) -> int:
    """2: a recording failed (or is not done); else 1: a gate failed; else 0."""
    if not report["verdict"]["complete"]:
        return 2
    return 1 if report["verdict"]["failed_gates"] else 0


def write_fleet_report(root: str | Path, timings: dict | None = None) -> dict:
    """fleet.json and fleet.md (and, given the run's ``timings``, timings.json and timings.md)."""
    root = Path(root)
    report = build_fleet_report(root)
    write_text_atomic(root / "fleet.json", dumps(report))
    write_text_atomic(root / "fleet.md", fleet_markdown(report))
    if timings is not None:
        write_text_atomic(root / "timings.json", dumps(timings))
        write_text_atomic(root / "timings.md", timings_markdown(timings))
    return report


# --- Markdown ------------------------------------------------------------------------------------------


def _fmt(name: str, value, signed: bool = False) -> str:
    if value is None:
        return "-"
    percent = FIGURE_LABELS.get(name, ("", True))[1]
    sign = "+" if signed else ""
    return f"{100 * value:{sign}.1f}%" if percent else f"{value:{sign}.3f}"


def _label(name: str) -> str:
    return "mIoU" if name == "miou" else FIGURE_LABELS[name][0]


def fleet_markdown(report: dict) -> str:
    c, rollup, verdict = report["counts"], report["rollup"], report["verdict"]
    state = "PASS" if verdict["passed"] else "FAIL" + (
        f": gates failed: {', '.join(verdict['failed_gates'])}" if verdict["failed_gates"] else "")
    if not verdict["complete"]:
        state += f" ({c['recordings'] - c['done']} of {c['recordings']} recordings not evaluated)"
    text = ["# Fleet evaluation", "", "| | |", "|---|---|",
            f"| model | `{report['model']['path']}` (sha256 {report['model']['sha256'][:12]}) |",
            f"| recordings | {c['recordings']}: {c['done']} done, {c['failed']} failed, {c['stale']} stale, "
            f"{c['pending']} pending |",
            f"| pairs evaluated | {c['pairs']} |"]
    if report["baseline"]:
        text.append(f"| baseline | {report['baseline']['kind']} `{report['baseline']['path']}` |")
    if report["gates"]:
        text.append(f"| gates | {', '.join(f'`{g}`' for g in report['gates'])}: each applied to every recording "
                    "and to the roll-up |")
    text += [f"| verdict | **{state}** |", "", "Timings (pairs/s, per recording and for the fleet): `timings.md`.", ""]
    text += _rollup_markdown(rollup)
    text += _gates_markdown(report)
    text += _recordings_markdown(report)
    text += _worst_markdown(report)
    return "\n".join(text) + "\n"


def _rollup_markdown(rollup: dict) -> list[str]:
    base = rollup["baseline"] is not None
    text = ["## Roll-up", "", "Means over the fleet's pairs (each recording weighted by its pairs with the figure).", "",
            "| figure | fleet | pairs |" + (" baseline | change |" if base else ""),
            "|---|---|---|" + ("---|---|" if base else "")]
    scores = rollup["scores"]
    if scores is not None:
        miou = "-" if scores["miou"] is None else f"{100 * scores['miou']:.1f}%"
        text.append(f"| mIoU ({scores['nan_policy']}, one confusion matrix over {scores['recordings']} recordings) "
                    f"| {miou} | |" + (" | |" if base else ""))
    for name in FIGURES:
        if rollup["figure_pairs"][name] == 0 and not (base and rollup["baseline_pairs"][name]):
            continue
        line = f"| {_label(name)} | {_fmt(name, rollup['figures'][name])} | {rollup['figure_pairs'][name]} |"
        if base:
            line += f" {_fmt(name, rollup['baseline'][name])} | {_fmt(name, rollup['change'][name], True)} |"
        text.append(line)
    if scores is not None and rollup["class_names"]:
        text += ["", "| class | fleet IoU |", "|---|---|"]
        text += [f"| {n} | {'-' if v is None else f'{100 * v:.1f}%'} |" for n, v in zip(rollup["class_names"], scores["iou"])]
    return text + [""]


def _gates_markdown(report: dict) -> list[str]:
    if not report["gates"]:
        return []
    text = ["## Gates", "", "| gate | roll-up | recordings failing it |", "|---|---|---|"]
    for verdict in report["rollup"]["gates"]:
        failing = [r["name"] for r in report["recordings"] if r["status"] == "done"
                   and any(v["gate"] == verdict["gate"] and not v["passed"] for v in r["gates"])]
        value = "-" if verdict["value"] is None else f"{verdict['value']:+.4f}"
        state = "pass" if verdict["passed"] else "**FAIL**" + (f" ({verdict['reason']})" if verdict["reason"] else "")
        text.append(f"| `{verdict['gate']}` | {value}: {state} | {', '.join(failing) or 'none'} |")
    return text + [""]


def _recordings_markdown(report: dict) -> list[str]:
    names = ("mean_confidence", "low_confidence_share", "flicker_compensated")
    text = ["## Recordings", "", "| recording | pairs | mIoU | " + " | ".join(_label(n) for n in names) + " | verdict |",
            "|---|---|---|" + "---|" * len(names) + "---|"]
    for r in report["recordings"]:
        if r["status"] != "done":
            text.append(f"| {r['name']} | | | " + " | " * len(names) + f"{r['status'].upper()}: {r.get('reason', '')} |")
            continue
        failed = [v["gate"] for v in r["gates"] if not v["passed"]]
        verdict = "pass" if not failed else "**FAIL** " + ", ".join(f"`{g}`" for g in failed)
        miou = "-" if r["miou"] is None else f"{100 * r['miou']:.1f}%"
        text.append(f"| {r['name']} | {r['processed']} | {miou} | "
                    + " | ".join(_fmt(n, r["figures"][n]) for n in names) + f" | {verdict} |")
    return text + [""]


def _worst_markdown(report: dict) -> list[str]:
    text = []
    if report["worst_recordings"]:
        text += ["## Worst recordings", "", "| figure | recordings |", "|---|---|"]
        text += [f"| {_label(n)} | " + ", ".join(f"{w['name']} ({_fmt(n, w['value'])})" for w in worst) + " |"
                 for n, worst in report["worst_recordings"].items()]
        text.append("")
    if report["worst_segments"]:
        window = report["settings"].get("segment_window_s")
        text += [f"## Worst segments ({window:g} s windows, seconds into each recording)", "",
                 "| figure | segments |", "|---|---|"]
        text += [f"| {_label(n)} | " + ", ".join(f"{s['name']} {s['start_s']:.1f}-{s['end_s']:.1f} s ({_fmt(n, s['mean'])})"
                                                  for s in segs) + " |" for n, segs in report["worst_segments"].items()]
        text.append("")
    return text


def timings_markdown(timings: dict) -> str:
    text = ["# Fleet run: progress and speed", "",
            f"{timings['done']} done, {timings['failed']} failed, {timings['skipped']} skipped (done before) of "
            f"{timings['recordings']} recordings in {timings['wall_s']:.1f} s; {timings['pairs']} pairs, "
            f"{timings['pairs_per_s']:.2f} pairs/s for the fleet.", "",
            "| recording | status | pairs | seconds | pairs/s | attempts | worker |", "|---|---|---|---|---|---|---|"]
    for name, r in timings["per_recording"].items():
        rate = "-" if not r.get("pairs_per_s") else f"{r['pairs_per_s']:.2f}"
        seconds = "-" if r.get("seconds") is None else f"{r['seconds']:.1f}"
        text.append(f"| {name} | {r['status']} | {r.get('pairs', 0)} | {seconds} | {rate} | {r.get('attempts', 0)} | "
                    f"{r.get('worker', '')} |")
    return "\n".join(text) + "\n"
