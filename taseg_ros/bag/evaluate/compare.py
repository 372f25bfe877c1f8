"""`taseg bag eval --baseline`: a new model against a previous one on the same recording, without labels.

The baseline is either
  - a previous model (any file ``Segmenter.from_checkpoint`` opens): it runs on the same decoded
    pairs in the same pass (``evaluate_bag(baseline=...)``), so every figure of both models comes
    from identical inputs, and the per-frame share of pixels where both chose the same class
    (``baseline_agreement``) is measured;
  - a previous ``report.json`` of ``bag eval`` on the same recording (or its folder): figures only,
    no second model run.
Either way the change (new - baseline) of every figure is reported, and the gates
(``evaluation.gates``) decide pass or fail. A baseline of another class list, or a report of
another recording, is refused before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from taseg_ros.config_io import check_type, read_json
from taseg_ros.errors import InputError, MissingInputError
from taseg_ros.evaluation.gates import Gate, check_gates
from taseg_ros.evaluation.figures import FIGURES
from taseg_ros.formatting import fixed
from taseg_ros.frames.pairing import NS_PER_S


@dataclass
class BaselineReport:
    path: Path
    summary: dict  # the report's quality summary: figure -> value
    frames: int
    stamps: frozenset[int] = frozenset()  # RGB stamps of the pairs its figures are means over


def is_report(path: str | Path) -> bool:
    """A report.json, or a folder holding one (else: a model file)."""
    path = Path(path)
    return path.suffix == ".json" or (path.is_dir() and (path / "report.json").is_file())


def load_baseline_report(path: str | Path, class_names, recording_start_ns: int | None, topics: tuple[str, str]) -> BaselineReport:
    """A previous report of this recording with this class list, or InputError in one line."""
    path = Path(path)
    path = path / "report.json" if path.is_dir() else path
    if not path.exists():
        raise MissingInputError(f"--baseline {path}: no such report")
    report = read_json(path)  # a regular file, bounded in size and depth: one line for anything else
    if not isinstance(report, dict) or not isinstance(report.get("quality"), dict) or "class_names" not in report:
        raise InputError(f"--baseline {path}: not a `taseg bag eval` report with label-free figures "
                         "(made by an older version?); run bag eval with the old model again")
    report = _typed_report(report, str(path))
    if list(report["class_names"]) != list(class_names):
        raise InputError(f"--baseline {path}: classes {report['class_names']} differ from the model's "
                         f"{list(class_names)}; a comparison needs one class list")
    recorded = (report.get("recording_start_ns"), (report.get("topics") or {}).get("rgb"),
                (report.get("topics") or {}).get("thermal"))
    if recorded != (recording_start_ns, *topics):
        raise InputError(f"--baseline {path}: a report of another recording ({report.get('bag')}, "
                         f"start {_seconds(recorded[0])}, {recorded[1]} + {recorded[2]}; this one starts "
                         f"{_seconds(recording_start_ns)}, {topics[0]} + {topics[1]}); compare on the same recording")
    if report.get("interrupted"):
        raise InputError(f"--baseline {path}: the report of an interrupted run (its figures cover part of the "
                         "recording); run bag eval with the old model to the end")
    return BaselineReport(path, report["quality"].get("summary") or {}, int(report["quality"].get("frames") or 0),
                          _measured_stamps(report, path))


def _measured_stamps(report: dict, path: Path) -> frozenset[int]:
    """The RGB stamps of the pairs a report's label-free figures are means over (its per-frame rows
    with figures)."""
    rows = report.get("per_frame")
    try:
        return frozenset(int(row["rgb_stamp_ns"]) for row in rows if row.get("quality") is not None)
    except (TypeError, KeyError, ValueError, AttributeError):
        raise InputError(f"--baseline {path}: its per_frame rows are not a `taseg bag eval` report's") from None


def check_same_pairs(result, baseline: BaselineReport) -> None:
    """A report's figures are means over its pairs: compared with this run's only over the same ones
    (was: a report of 3 pairs accepted as the baseline of a whole recording)."""
    ours = frozenset(f.rgb_stamp_ns for f in result.frames if f.quality is not None)
    if ours != baseline.stamps:
        raise InputError(
            f"--baseline {baseline.path}: its figures are means over {len(baseline.stamps)} pairs, this run's over "
            f"{len(ours)} ({len(ours & baseline.stamps)} in common); compare runs over the same pairs (same "
            "--max-pairs and --slop, --mode offline), or give the old model as --baseline")


# The parts of a report.json the comparison reads, with their types (a report is a file: a string where
# a number belongs must be refused here, not fail as a TypeError in the subtraction).
REPORT_TYPES = {
    "class_names": list[str],
    "recording_start_ns": Optional[int],
    "topics": Optional[dict[str, Optional[str]]],
    "bag": Optional[str],
}
QUALITY_TYPES = {"summary": Optional[dict[str, Optional[float]]], "frames": Optional[int]}


def _typed_report(report: dict, where: str) -> dict:
    typed = dict(report)
    for key, hint in REPORT_TYPES.items():
        typed[key] = check_type(report.get(key), hint, key, where)
    quality = dict(report["quality"])
    for key, hint in QUALITY_TYPES.items():
        quality[key] = check_type(report["quality"].get(key), hint, f"quality.{key}", where)
    typed["quality"] = quality
    return typed


def check_baseline_model(baseline, segmenter, path) -> None:
    if list(baseline.class_info.names) != list(segmenter.class_info.names):
        raise InputError(f"--baseline {path}: classes {list(baseline.class_info.names)} differ from the "
                         f"checkpoint's {list(segmenter.class_info.names)}; a comparison needs one class list")


def check_gates_available(gates: list[Gate], baseline: str | None, model_baseline: bool, thermal_reliance: bool) -> None:
    """Refuse, before running, a gate this run cannot evaluate."""
    for gate in gates:
        if gate.on_change and baseline is None:
            raise InputError(f"--gate {gate}: a change bound needs --baseline")
        if gate.figure == "baseline_agreement" and not model_baseline:
            raise InputError(f"--gate {gate}: baseline_agreement needs a model as --baseline (a report holds no predictions to agree with)")
        if gate.figure == "thermal_reliance" and not thermal_reliance:
            raise InputError(f"--gate {gate}: thermal_reliance needs --thermal-reliance")


def compare(result, gates: list[Gate], baseline: str | None, baseline_report: BaselineReport | None) -> dict:
    """The change of every figure against the baseline (if any) and the gates' verdicts; also kept
    in ``result.comparison``."""
    figures = result.quality.summary()
    if baseline_report is not None:
        check_same_pairs(result, baseline_report)
        kind, base, base_frames = "report", baseline_report.summary, baseline_report.frames
    elif result.baseline_quality is not None:
        kind, base, base_frames = "model", result.baseline_quality.summary(), len(result.baseline_quality.frames)
    else:
        kind, base, base_frames = None, None, 0
    table = {}
    for name in FIGURES:
        value, old = figures.get(name), None if base is None else base.get(name)
        table[name] = {"value": value, "baseline": old,
                       "change": None if value is None or old is None else value - old}
    verdicts = check_gates(gates, figures, base)
    result.comparison = {
        "baseline": baseline,
        "kind": kind,
        "frames": len(result.quality.frames),
        "baseline_frames": base_frames,
        "figures": table,
        "gates": verdicts,
        "passed": all(v["passed"] for v in verdicts),
    }
    return result.comparison


def _seconds(ns) -> str:
    return "?" if ns is None else fixed(ns / NS_PER_S, " s", 3)
