"""Presenting an EvaluationResult: terminal table, JSON, Markdown, and two PNG plots.

Plots use matplotlib's Figure directly (Agg canvas), never pyplot: no global backend
switch, nothing opens a window, safe off the main thread.

    write_report(result, out_dir)  ->  metrics.json, metrics.md, iou_per_class.png,
                                       confusion_matrix.png (+ one per condition)
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from taseg_ros.evaluation.metrics import EvaluationResult, Scores
from taseg_ros.outputs import save_figure, write_text_atomic


def _pct(value: float) -> str:
    return "  n/a" if value is None or math.isnan(value) else f"{100 * value:5.1f}"


def _columns(result: EvaluationResult) -> list[tuple[str, Scores]]:
    return [("all", result.overall)] + [(c, s) for c, s in result.by_condition.items()]


def _other_policy(policy: str) -> str:
    return "nanmean" if policy == "zero" else "zero"


def _summary_rows(result: EvaluationResult) -> list[tuple[str, list[str]]]:
    cols = _columns(result)
    head = result.protocol.nan_policy
    other = _other_policy(head)
    return [
        (f"mIoU ({head}, headline)", [_pct(s.miou_by_policy[head]) for _, s in cols]),
        (f"mIoU ({other})", [_pct(s.miou_by_policy[other]) for _, s in cols]),
        (f"mAcc ({head})", [_pct(s.macc_by_policy[head]) for _, s in cols]),
        (f"mAcc ({other})", [_pct(s.macc_by_policy[other]) for _, s in cols]),
        ("pixel accuracy", [_pct(s.pixel_accuracy) for _, s in cols]),
    ]


def format_table(result: EvaluationResult) -> str:
    """Per-class IoU / accuracy (in %) for all images and each condition, then the means."""
    cols = _columns(result)
    name_w = max(22, *(len(n) for n in result.class_names)) + 2
    header = "class".ljust(name_w) + "".join(f"{'IoU ' + c:>12}{'Acc ' + c:>12}" for c, _ in cols)
    lines = [header, "-" * len(header)]
    scored = set(result.overall.scored.tolist())
    for i, name in enumerate(result.class_names):
        label = name if i in scored else f"{name} (not scored)"
        lines.append(label.ljust(name_w) + "".join(f"{_pct(s.iou[i]):>12}{_pct(s.acc[i]):>12}" for _, s in cols))
    lines.append("-" * len(header))
    for label, values in _summary_rows(result):
        lines.append(label.ljust(name_w) + "".join(f"{v:>12}{'':>12}" for v in values))
    counts = ", ".join([f"{result.num_images} images"] + [f"{n} {c}" for c, n in result.num_images_by_condition.items()])
    lines.append(f"{counts}; one confusion matrix per column; NaN policy '{result.protocol.nan_policy}'")
    absent = result.overall.absent_classes
    if absent:
        lines.append("absent from ground truth and never predicted: " + ", ".join(result.class_names[c] for c in absent))
    return "\n".join(lines)


def _clean(value):
    """JSON has no NaN: write null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def scores_to_dict(scores: Scores, class_names) -> dict:
    return {
        "miou": _clean(scores.miou),
        "macc": _clean(scores.macc),
        "miou_by_nan_policy": {k: _clean(v) for k, v in scores.miou_by_policy.items()},
        "macc_by_nan_policy": {k: _clean(v) for k, v in scores.macc_by_policy.items()},
        "pixel_accuracy": _clean(scores.pixel_accuracy),
        "num_pixels": scores.num_pixels,
        "per_class": {
            name: {
                "iou": _clean(float(scores.iou[i])),
                "acc": _clean(float(scores.acc[i])),
                "gt_pixels": int(scores.support[i]),
                "predicted_pixels": int(scores.predicted[i]),
                "scored": bool(i in set(scores.scored.tolist())),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": scores.matrix.tolist(),
    }


def to_dict(result: EvaluationResult) -> dict:
    p = result.protocol
    return {
        "dataset": result.dataset,
        "protocol": {
            "nan_policy": p.nan_policy,
            "classes_scored": [result.class_names[i] for i in result.overall.scored],
            "eval_resolution": "native" if p.eval_resolution is None else list(p.eval_resolution),
            "conditions": list(p.conditions),
            "reference": p.reference,
            "confusion_matrix": "rows = ground truth, columns = prediction, ignored pixels dropped",
        },
        "classes": list(result.class_names),
        "num_images": result.num_images,
        "num_images_by_condition": dict(result.num_images_by_condition),
        "overall": scores_to_dict(result.overall, result.class_names),
        "by_condition": {c: scores_to_dict(s, result.class_names) for c, s in result.by_condition.items()},
    }


def to_json(result: EvaluationResult) -> str:
    return json.dumps(to_dict(result), indent=2, allow_nan=False)


def to_markdown(result: EvaluationResult) -> str:
    cols = _columns(result)
    title = f"# Evaluation{': ' + result.dataset if result.dataset else ''}\n"
    head = "| class | " + " | ".join(f"IoU {c} | Acc {c}" for c, _ in cols) + " |"
    sep = "|---|" + "---:|---:|" * len(cols)
    rows = [
        f"| {name} | " + " | ".join(f"{_pct(s.iou[i]).strip()} | {_pct(s.acc[i]).strip()}" for _, s in cols) + " |"
        for i, name in enumerate(result.class_names)
    ]
    summary_head = "| | " + " | ".join(c for c, _ in cols) + " |"
    summary_sep = "|---|" + "---:|" * len(cols)
    summary = [f"| {label} | " + " | ".join(v.strip() for v in values) + " |" for label, values in _summary_rows(result)]
    counts = ", ".join([f"{result.num_images} images"] + [f"{n} {c}" for c, n in result.num_images_by_condition.items()])
    notes = [
        "",
        f"Scores in %. {counts}. One confusion matrix over all images of each column "
        f"(rows = ground truth, columns = prediction, ignored pixels dropped).",
        f"NaN policy of the headline: `{result.protocol.nan_policy}`"
        + (f". Protocol: {result.protocol.reference}" if result.protocol.reference else ""),
    ]
    return "\n".join([title, *summary_head.splitlines(), summary_sep, *summary, "", head, sep, *rows, *notes]) + "\n"


def plot_iou_bars(result: EvaluationResult, path: Path) -> Path:
    """Horizontal bars of per-class IoU, one colour per column (all / day / night)."""
    from matplotlib.figure import Figure

    cols = _columns(result)
    names = list(result.class_names)
    k = len(names)
    height = 0.8 / len(cols)
    fig = Figure(figsize=(8, 1.2 + 0.35 * k * max(1, len(cols) * 0.6)))
    ax = fig.subplots()
    y = np.arange(k)
    for j, (label, s) in enumerate(cols):
        values = np.nan_to_num(s.iou, nan=0.0) * 100
        ax.barh(y + j * height, values, height=height, label=f"{label} (mIoU {_pct(s.miou).strip()})")
        for c in np.flatnonzero(np.isnan(s.iou)):
            ax.text(1, y[c] + j * height, "n/a", va="center", fontsize=7, color="grey")
    ax.set_yticks(y + height * (len(cols) - 1) / 2)
    ax.set_yticklabels(names)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("IoU (%)")
    ax.set_title(f"Per-class IoU{' - ' + result.dataset if result.dataset else ''}")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    return Path(path)


def plot_confusion(scores: Scores, class_names, path: Path, title: str = "Confusion matrix") -> Path:
    """Row-normalised heat map (each ground-truth row sums to 1): the cell is the fraction of
    that class's pixels predicted as the column class."""
    from matplotlib.figure import Figure

    m = scores.matrix.astype(np.float64)
    rows = m.sum(axis=1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    k = len(class_names)
    size = 2.5 + 0.45 * k
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(class_names, rotation=60, ha="right")
    ax.set_yticklabels(class_names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title(title)
    if k <= 20:
        for r in range(k):
            for c in range(k):
                if norm[r, c] >= 0.01:
                    ax.text(c, r, f"{norm[r, c]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if norm[r, c] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    return Path(path)


def write_report(result: EvaluationResult, out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "json": out / "metrics.json",
        "markdown": out / "metrics.md",
        "iou_bars": out / "iou_per_class.png",
        "confusion": out / "confusion_matrix.png",
    }
    write_text_atomic(files["json"], to_json(result) + "\n")
    write_text_atomic(files["markdown"], to_markdown(result))
    plot_iou_bars(result, files["iou_bars"])
    plot_confusion(result.overall, result.class_names, files["confusion"], "Confusion matrix (all images)")
    for cond, scores in result.by_condition.items():
        files[f"confusion_{cond}"] = plot_confusion(
            scores, result.class_names, out / f"confusion_matrix_{cond}.png", f"Confusion matrix ({cond})"
        )
    return files
