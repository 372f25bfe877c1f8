"""Timing primitives: interleaved repetitions, robust summaries, and stage clocks inside a forward.

Why interleave: on a machine shared with other work the available CPU changes from second to
second. Running candidate A ten times and then B ten times puts them in different conditions;
running them in turns (A B C, B C A, ...) puts every round's A, B and C in the same
conditions, so per-round ratios stay meaningful even when the absolute times drift.
torch.utils.benchmark.Timer measures one statement at a time, hence this small loop.
"""
from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Any, Callable

import numpy as np
import torch


def summarize_ratio(values: list[float]) -> dict[str, float]:
    """Median and range of per-round ratios."""
    if not values:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    arr = np.asarray(values, dtype=np.float64)
    return {"median": float(np.median(arr)), "min": float(arr.min()), "max": float(arr.max()), "n": int(arr.size)}


def device_synchronizer(device: torch.device) -> Callable[[], None]:
    """What makes a wall-clock reading final on `device`: CUDA work is asynchronous."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def auto_repeats(round_seconds: float, budget_seconds: float, minimum: int = 3, maximum: int = 50) -> int:
    """How many timed rounds fit in the budget, given one round's duration."""
    if round_seconds <= 0 or not math.isfinite(round_seconds):
        return maximum
    return int(min(maximum, max(minimum, budget_seconds // round_seconds)))


def run_rounds(
    candidates: dict[str, Callable[[], Any]],
    rounds: int,
    sync: Callable[[], None],
    after_call: Callable[[str], None] | None = None,
) -> tuple[dict[str, list[float]], float]:
    """Call every candidate once per round, rotating the order each round (so that no candidate
    always follows the same one), and return each one's durations plus the mean round time."""
    names = list(candidates)
    samples: dict[str, list[float]] = {name: [] for name in names}
    started = time.perf_counter()
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            sync()
            t0 = time.perf_counter()
            candidates[name]()
            sync()
            samples[name].append(time.perf_counter() - t0)
            if after_call is not None:
                after_call(name)
    elapsed = time.perf_counter() - started
    return samples, elapsed / max(rounds, 1)


class StageClock:
    """Times stages of a forward pass with module pre/post hooks.

    Each attached module's calls are timed (wall clock on the CPU, where kernels run
    synchronously; CUDA events on the GPU, which time the kernels on the stream without
    synchronising) and summed per stage name. `collect()` after each timed call turns the
    marks into one record {stage: seconds}. Hooks cost a few microseconds per call and do
    nothing while `enabled` is False."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.enabled = False
        self.records: list[dict[str, float]] = []
        self._starts: dict[int, list[Any]] = defaultdict(list)
        self._intervals: dict[str, list[tuple[Any, Any]]] = defaultdict(list)
        self._handles: list[Any] = []

    def _mark(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def _seconds(self, start: Any, end: Any) -> float:
        return start.elapsed_time(end) * 1e-3 if self.cuda else end - start

    def attach(self, module: torch.nn.Module, stage: str) -> None:
        key = id(module)

        def before(_module, _args):
            if self.enabled:
                self._starts[key].append(self._mark())

        def after(_module, _args, _output):
            if self.enabled and self._starts[key]:
                self._intervals[stage].append((self._starts[key].pop(), self._mark()))

        self._handles.append(module.register_forward_pre_hook(before))
        self._handles.append(module.register_forward_hook(after))

    def collect(self) -> dict[str, float] | None:
        """Close the current record (call after the device is synchronised)."""
        if not self._intervals:
            return None
        record = {stage: sum(self._seconds(a, b) for a, b in pairs) for stage, pairs in self._intervals.items()}
        self._intervals.clear()
        self._starts.clear()
        self.records.append(record)
        return record

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
