"""Pass/fail ranges on the label-free figures of a recording, for gating a model update in CI.

A gate bounds one recording-level figure (``evaluation.figures.FIGURES``: the mean over the frames)
either as a value or as its change against a baseline (new minus baseline):

    min / max                the figure itself:          flicker_compensated:max=0.05
    change_min / change_max  new - baseline:              mean_confidence:change_min=-0.02

On the command line one gate is ``FIGURE:BOUND=VALUE`` (no shell quoting needed); in YAML the same
as a mapping, several bounds per figure allowed::

    gates:
      mean_confidence: {change_min: -0.02}
      flicker_compensated: {max: 0.05, change_max: 0.01}
      baseline_agreement: {min: 0.95}

A figure a run could not compute (e.g. the flicker of a single frame) fails its gate, with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

from taseg_ros.config_io import from_mapping, read_yaml
from taseg_ros.errors import InputError
from taseg_ros.evaluation.figures import FIGURES

BOUNDS = ("min", "max", "change_min", "change_max")
GATE_SYNTAX = "FIGURE:BOUND=VALUE with BOUND one of min, max, change_min, change_max"


@dataclass(frozen=True)
class Gate:
    figure: str
    bound: str
    limit: float

    @property
    def on_change(self) -> bool:
        return self.bound.startswith("change_")

    def __str__(self) -> str:
        return f"{self.figure}:{self.bound}={self.limit:g}"

    def check(self, value: float | None, baseline: float | None) -> dict:
        """{gate, value (the figure, or its change), passed, reason}."""
        if self.on_change:
            if value is None or baseline is None:
                return self._result(None, False, "not computed in " + ("this run" if value is None else "the baseline"))
            value = value - baseline
        elif value is None:
            return self._result(None, False, "not computed in this run")
        passed = value >= self.limit if self.bound.endswith("min") else value <= self.limit
        return self._result(value, passed, "")

    def _result(self, value: float | None, passed: bool, reason: str) -> dict:
        return {"gate": str(self), "figure": self.figure, "bound": self.bound, "limit": self.limit,
                "value": value, "passed": passed, "reason": reason}


def _gate(figure: str, bound: str, value, where: str) -> Gate:
    if figure not in FIGURES:
        raise InputError(f"{where}: unknown figure '{figure}'; gateable figures: {', '.join(FIGURES)}")
    if bound not in BOUNDS:
        raise InputError(f"{where}: unknown bound '{bound}'; bounds: {', '.join(BOUNDS)}")
    try:
        limit = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: {figure}:{bound} needs a number, got {value!r}") from None
    if not math.isfinite(limit):
        raise InputError(f"{where}: {figure}:{bound} needs a finite number, got {value!r}")
    return Gate(figure, bound, limit)


def parse_gate(text: str) -> Gate:
    """``FIGURE:BOUND=VALUE`` (the --gate option)."""
    figure, sep, rest = text.partition(":")
    bound, eq, value = rest.partition("=")
    if not sep or not eq:
        raise InputError(f"--gate {text!r}: expected {GATE_SYNTAX}, e.g. mean_confidence:change_min=-0.02")
    return _gate(figure.strip(), bound.strip(), value.strip(), f"--gate {text!r}")


@dataclass(frozen=True)
class GateBounds:
    """The bounds of one figure in a gates file (at least one)."""

    min: float | None = None
    max: float | None = None
    change_min: float | None = None
    change_max: float | None = None


@dataclass(frozen=True)
class GatesFile:
    """A gates file: ``gates: {FIGURE: {BOUND: VALUE, ...}, ...}`` (module docstring)."""

    gates: dict[str, GateBounds]


def load_gates(path: str | Path) -> list[Gate]:
    """Gates from a YAML file (GatesFile), read by the bounded reader: a regular file, no aliases or
    duplicate keys, numbers that are numbers; any problem is one InputError line naming the file."""
    where = f"--gates {path}"
    data = read_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("gates"), dict) or not data["gates"]:
        raise InputError(f"{where}: expected a 'gates' mapping of FIGURE: {{BOUND: VALUE}}")
    gates = from_mapping(GatesFile, data, str(path), strict=True).gates
    out = []
    for figure, bounds in gates.items():
        given = [(f.name, getattr(bounds, f.name)) for f in fields(GateBounds) if getattr(bounds, f.name) is not None]
        if not given:
            raise InputError(f"{path}: gates.{figure}: expected a mapping of {', '.join(BOUNDS)} to numbers")
        out += [_gate(str(figure), bound, value, str(path)) for bound, value in given]
    return out


def check_gates(gates: list[Gate], figures: dict, baseline: dict | None) -> list[dict]:
    """Every gate against the run's figures and (for change bounds) the baseline's."""
    return [gate.check(figures.get(gate.figure), (baseline or {}).get(gate.figure)) for gate in gates]
