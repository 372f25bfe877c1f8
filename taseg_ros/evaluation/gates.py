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
from dataclasses import dataclass
from pathlib import Path

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


def load_gates(path: str | Path) -> list[Gate]:
    """Gates from a YAML file: ``gates: {FIGURE: {BOUND: VALUE, ...}, ...}`` (module docstring)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InputError(f"--gates {path}: no such file") from None
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"--gates {path}: not readable YAML ({str(exc).splitlines()[0]})") from None
    gates = data.get("gates") if isinstance(data, dict) else None
    if not isinstance(gates, dict) or not gates:
        raise InputError(f"--gates {path}: expected a 'gates' mapping of FIGURE: {{BOUND: VALUE}}")
    out = []
    for figure, bounds in gates.items():
        if not isinstance(bounds, dict) or not bounds:
            raise InputError(f"{path}: gates.{figure}: expected a mapping of {', '.join(BOUNDS)} to numbers")
        out += [_gate(str(figure), str(bound), value, str(path)) for bound, value in bounds.items()]
    return out


def check_gates(gates: list[Gate], figures: dict, baseline: dict | None) -> list[dict]:
    """Every gate against the run's figures and (for change bounds) the baseline's."""
    return [gate.check(figures.get(gate.figure), (baseline or {}).get(gate.figure)) for gate in gates]
