"""The output folder of a fleet run: one folder per recording, each written whole or not at all.

    OUT/fleet_run.json        the run: model (path, sha256), baseline, settings, gates, the recordings
    OUT/<recording>/          report.json, report.md, summary.json, plots (with labels: iou, confusion),
                              run.json (the recording's fingerprint, the model's digest, the settings),
                              timings.json
    OUT/<recording>/          or, when it could not be evaluated: failure.json (the one-line reason), run.json
    OUT/fleet.json, fleet.md  the fleet report (rollup.py), rebuilt from the files above alone
    OUT/timings.json, .md     the run's progress and speed

Everything except the files named ``timings.*`` is the same, byte for byte, whichever engine, worker
count or machine made it (``TIMING_FILES``: what a comparison leaves out). A recording's folder is
written beside its place and renamed into it when complete (``outputs.replacing_dir``), so a killed
run leaves finished folders and no half one; a rerun skips the folders whose run.json names the same
identity: recording fingerprint, model digest, baseline and settings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from taseg_ros.bag.fleet.recordings import Recording
from taseg_ros import config_io
from taseg_ros.config_io import parse_json
from taseg_ros.errors import InputError, MissingInputError
from taseg_ros.weights import sha256_file
from taseg_ros.outputs import remove_dead_temporaries, replacing_dir, write_bytes_atomic, write_text_atomic

RUN_FILE = "fleet_run.json"
RECORDING_RUN_FILE = "run.json"
FAILURE_FILE = "failure.json"
SUMMARY_FILE = "summary.json"
TIMING_FILES = ("timings.json", "timings.md")


def dumps(data) -> str:
    """The one JSON form of the fleet's files: sorted keys, no NaN, newline at the end."""
    return json.dumps(data, indent=2, sort_keys=True, allow_nan=False, default=_plain) + "\n"


def _plain(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def digest(data) -> str:
    return hashlib.sha256(dumps(data).encode()).hexdigest()


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def settings_record(settings) -> dict:
    """A settings dataclass as plain JSON values, without the recording itself (``source.bag``) and
    the model's name (its digest counts, not the path it was given by)."""
    record = parse_json(dumps(dataclasses.asdict(settings)), "settings")
    record.get("source", {}).pop("bag", None)
    record.pop("checkpoint_name", None)
    return record


@dataclass
class FleetRun:
    """What a fleet run is asked to do; ``key`` names the work a recording's folder must have been
    made with to be skipped (with the recording's fingerprint)."""

    recordings: list[Recording]
    model: dict  # {"path", "sha256"}
    settings: dict  # settings_record(...)
    gates: list[str] = field(default_factory=list)
    baseline: dict | None = None  # {"kind": "model"|"reports", "path", "sha256" (model)}
    command: str = "bag eval"

    @property
    def key(self) -> str:
        baseline = None if self.baseline is None else {k: v for k, v in self.baseline.items() if k != "path"}
        return digest({"command": self.command, "model": self.model["sha256"], "baseline": baseline,
                       "settings": self.settings})

    def baseline_report_for(self, recording: Recording) -> Path | None:
        if self.baseline is None or self.baseline["kind"] != "reports":
            return None
        return Path(self.baseline["path"]) / recording.name / "report.json"

    def to_dict(self) -> dict:
        return {"command": self.command, "model": self.model, "baseline": self.baseline, "settings": self.settings,
                "gates": self.gates, "key": self.key,
                "recordings": [{"name": r.name, "path": str(r.path)} for r in self.recordings]}


def recording_identity(run: FleetRun, recording: Recording, fingerprint: str | None) -> dict:
    baseline_report = run.baseline_report_for(recording)
    return {
        "recording": {"path": str(recording.path), "fingerprint": fingerprint},
        "model": run.model,
        "baseline": run.baseline,
        "baseline_report_sha256": _file_sha256(baseline_report) if baseline_report else None,
        "settings": run.settings,
        "run_key": run.key,
    }


def _file_sha256(path: Path) -> str | None:
    try:
        return sha256_file(path)
    except OSError:
        return None


class RecordingStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def begin(self, run: FleetRun) -> None:
        """The folder made (or taken up again: what a killed run left half-written goes) and the run
        described in fleet_run.json."""
        self.root.mkdir(parents=True, exist_ok=True)
        remove_dead_temporaries(self.root)
        write_text_atomic(self.root / RUN_FILE, dumps(run.to_dict()))

    def is_done(self, run: FleetRun, recording: Recording, fingerprint: str) -> bool:
        folder = self.root / recording.name
        if not (folder / SUMMARY_FILE).is_file():
            return False
        return read_json(folder / RECORDING_RUN_FILE) == recording_identity(run, recording, fingerprint)

    def write_done(self, run: FleetRun, recording: Recording, fingerprint: str, files: dict[str, bytes],
                   timings: dict) -> None:
        self._write(recording, {**files, RECORDING_RUN_FILE: dumps(recording_identity(run, recording, fingerprint)).encode(),
                                "timings.json": dumps(timings).encode()})

    def write_failure(self, run: FleetRun, recording: Recording, fingerprint: str | None, reason: str,
                      timings: dict | None = None) -> None:
        files = {FAILURE_FILE: dumps({"recording": str(recording.path), "reason": reason}).encode(),
                 RECORDING_RUN_FILE: dumps(recording_identity(run, recording, fingerprint)).encode()}
        if timings is not None:
            files["timings.json"] = dumps(timings).encode()
        self._write(recording, files)

    def _write(self, recording: Recording, files: dict[str, bytes]) -> None:
        with replacing_dir(self.root / recording.name) as stage:
            for name, data in sorted(files.items()):
                write_bytes_atomic(stage / name, data)


def read_json(path: Path):
    """A fleet file, or None when it is not there."""
    if not Path(path).exists():
        return None
    return config_io.read_json(path)


def read_run(root: Path) -> dict:
    root = Path(root)
    if not root.is_dir():
        raise MissingInputError(f"{root}: no such folder")
    run = read_json(root / RUN_FILE)
    if not isinstance(run, dict) or not isinstance(run.get("recordings"), list):
        raise InputError(f"{root}: not the output folder of a fleet run (no {RUN_FILE}); "
                         "give the -o folder of `taseg bag eval` over several recordings")
    return run
