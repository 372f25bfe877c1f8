#!/usr/bin/env python3
"""The fleet engines measured in one run: `.venv/bin/python scripts/bench_fleet.py`.

Writes a fleet of recordings (the demo's street scenes, panned as a driving camera sees them, by day
and by night), then evaluates all of them, as `taseg bag eval` over several recordings does, with the
local engine (1 and 2 worker processes) and with Ray (a local instance, 1 and 2 actors), each run into
its own output folder. Prints per run: pairs/s over the whole run (worker start-up and model loads
included) and once the workers were ready, the ratio to one worker of the same engine, the engine's
overhead per recording (the time from dispatching a recording to its result, minus the worker's own
time on it: transfer, scheduling, the result's way back), the model loads per worker (must be 1), and
whether every run's folders are byte-identical to the first one's (the timings.* files aside).
Random tiny weights: the cost is the per-pair work (decode, model, label-free figures), not accuracy.

First it prints a worker's CPU work per pair at 640x480 on one thread, beside the model: decoding
(raw, and JPEG RGB + 16-bit PNG thermal as image_transport compresses them), the thermal preparation
(percentile normalisation of mono16) and the label-free figures (confidence, entropy, class shares,
flicker with the DIS optical flow) on the demo's street scenes: the part of a GPU worker's time that
does not shrink with a faster GPU.
"""

from __future__ import annotations

import argparse
import filecmp
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from taseg_ros.bag.evaluate.run import EvalSettings
from taseg_ros.bag.fleet.engines import LocalEngine, RayEngine
from taseg_ros.bag.fleet.evaluate import EvalWorker, run_fleet
from taseg_ros.bag.fleet.recordings import find_recordings
from taseg_ros.bag.fleet.store import TIMING_FILES, FleetRun, settings_record
from taseg_ros.bag.pairs import PairSource
from taseg_ros.demo.recording import write_rgbt_bag
from taseg_ros.inference.spec import ModelSpec
from taseg_ros.model.checkpoint import init_checkpoint
from taseg_ros.scenes import panned_street


class _Timed:
    """An engine whose events are time-stamped (dispatch and result of every recording)."""

    def __init__(self, engine) -> None:
        self.engine, self.name, self.workers = engine, engine.name, engine.workers
        self.events: list[tuple[float, object]] = []

    def run(self, spec, tasks, on_event) -> None:
        def hook(event):
            self.events.append((time.perf_counter(), event))
            on_event(event)

        self.start = time.perf_counter()
        self.engine.run(spec, tasks, hook)
        self.end = time.perf_counter()

    def figures(self) -> dict:
        """Start-up: from the run's start until the first recording began computing in a worker
        (spawn, imports, model load). Overhead: dispatch to result minus the worker's own time, over
        the recordings that were not their worker's first (a cold worker's load is start-up)."""
        started = {e.key: t for t, e in self.events if e.kind == "started"}
        finished = [(t, e) for t, e in self.events if e.kind == "finished"]
        pairs = sum(e.result.pairs for _, e in finished)
        first = min(t - e.result.seconds for t, e in finished)
        seen, overhead = set(), []
        for t, e in finished:
            worker = (e.worker.get("node"), e.worker["pid"])
            if worker in seen:
                overhead.append(t - started[e.key] - e.result.seconds)
            seen.add(worker)
        return {
            "pairs": pairs, "recordings": len(finished), "wall_s": self.end - self.start,
            "pairs_per_s": pairs / (self.end - self.start),
            "ready_pairs_per_s": pairs / (self.end - first),
            "startup_s": first - self.start,
            "overhead_ms": 1e3 * statistics.median(overhead) if overhead else float("nan"),
            "workers_used": len(seen),
            "loads_per_worker": max(e.worker["loads"] for _, e in finished),
        }


def machine_line() -> str:
    """The CPU (model, cores, the vector extensions that decide matmul speed) and its load now."""
    import os

    model, flags = "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    load = " load %.1f/%.1f/%.1f" % os.getloadavg() if hasattr(os, "getloadavg") else ""
    return f"{model}, {os.cpu_count()} cores, flags: {' '.join(f for f in wanted if f in flags) or 'none of avx2/avx512'};{load}"


def cpu_per_pair_ms(repeats: int = 3) -> dict[str, float]:
    """Median over ``repeats`` of the mean ms per pair of each CPU step (module docstring), one thread."""
    import cv2
    import numpy as np
    import torch

    from taseg_ros.bag.io.messages import compressed_message, image_message
    from taseg_ros.evaluation.quality import QualityTracker
    from taseg_ros.frames.codec import decode_pair
    from taseg_ros.frames.thermal import ThermalNormalization, ThermalPreparation
    from taseg_ros.scenes import CLASSES, thermal_counts

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    frames = panned_street(480, 640, 12, step=4, seed=7)
    raw = [(image_message(0, "rgb", f.rgb, "rgb8"), image_message(0, "thermal", thermal_counts(f.thermal), "mono16"))
           for f in frames]
    packed = [(compressed_message(0, "rgb", f.rgb, "rgb8", "jpeg"),
               compressed_message(0, "thermal", thermal_counts(f.thermal), "mono16", "png")) for f in frames]
    decoded = [decode_pair(a, b) for a, b in raw]
    prepare = ThermalPreparation(ThermalNormalization())
    rng = np.random.default_rng(0)
    maps = [(rng.random((480, 640), dtype=np.float32), rng.random((480, 640), dtype=np.float32)) for _ in frames]
    tracker = QualityTracker(CLASSES.num_classes)

    def figures():
        tracker.reset()
        for f, (confidence, entropy) in zip(frames, maps):
            tracker.update(f.label, confidence, entropy, f.rgb)

    steps = {
        "decode raw": lambda: [decode_pair(a, b) for a, b in raw],
        "decode JPEG + PNG": lambda: [decode_pair(a, b) for a, b in packed],
        "thermal preparation": lambda: [prepare(t, rgb.shape[:2]) for rgb, t in decoded],
        "label-free figures": figures,
    }
    out = {}
    for name, step in steps.items():
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            times.append((time.perf_counter() - start) / len(frames) * 1e3)
        out[name] = statistics.median(times)
    return out


def write_fleet(root: Path, recordings: int, frames: int, size: tuple[int, int]) -> Path:
    for i in range(recordings):
        night = i % 2 == 1
        scene = panned_street(size[0], size[1], frames, step=4, seed=20 + i, night=night)
        write_rgbt_bag(root / f"drive_{i:02d}", scene, storage="mcap", seed=i,
                       start_ns=1_700_000_000_000_000_000 + i * 10**12)
    return root


def _same(a: Path, b: Path) -> bool:
    names = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file() and p.name not in TIMING_FILES)
    other = sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file() and p.name not in TIMING_FILES)
    return names == other and not filecmp.cmpfiles(a, b, names, shallow=False)[1]


def run_bench(args) -> list[tuple[str, dict]]:
    work = Path(tempfile.mkdtemp(prefix="taseg-bench-fleet-"))
    checkpoint = work / "tiny.safetensors"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        init_checkpoint("tiny", "mfnet", checkpoint, seed=0)
    recordings = find_recordings([write_fleet(work / "drives", args.recordings, args.frames, (args.height, args.width))])
    model = ModelSpec(checkpoint)
    settings = EvalSettings(PairSource(recordings[0].path), checkpoint_name=str(checkpoint))
    run = FleetRun(recordings, {"path": str(checkpoint), "sha256": model.digest()}, settings_record(settings))
    worker = EvalWorker(model, settings)
    engines = [("local", 1, LocalEngine(1)), ("local", 2, LocalEngine(2))]
    if not args.no_ray:
        init = {"num_cpus": 2}
        engines += [("ray", 1, RayEngine(1, init_kwargs=init)), ("ray", 2, RayEngine(2, init_kwargs=init))]
    results = []
    for name, workers, engine in engines:
        timed = _Timed(engine)
        out = work / f"{name}_{workers}"
        run_fleet(run, worker, timed, out, print_line=lambda line: None)
        figures = timed.figures()
        figures["identical"] = _same(work / "local_1", out)
        results.append((f"{name}, {workers} worker{'s' if workers > 1 else ''}", figures))
        print(f"{results[-1][0]}: {figures['pairs_per_s']:.2f} pairs/s", flush=True)
    return results


def format_results(results: list[tuple[str, dict]], args) -> str:
    base = {name.split(",")[0]: r for name, r in results if name.endswith("1 worker")}
    lines = [f"{args.recordings} recordings x {args.frames} frames at {args.width}x{args.height}, tiny model, "
             f"1 CPU thread per worker; {machine_line()}",
             "| engine | pairs/s (whole run) | vs 1 worker | pairs/s (workers ready) | vs 1 worker | start-up s "
             "| overhead per recording ms | model loads per worker | folders = local 1 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results:
        one = base[name.split(",")[0]]
        lines.append(f"| {name} | {r['pairs_per_s']:.2f} | {r['pairs_per_s'] / one['pairs_per_s']:.2f}x | "
                     f"{r['ready_pairs_per_s']:.2f} | {r['ready_pairs_per_s'] / one['ready_pairs_per_s']:.2f}x | "
                     f"{r['startup_s']:.1f} | {r['overhead_ms']:.0f} | {r['loads_per_worker']} | "
                     f"{'yes' if r['identical'] else 'NO'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench_fleet.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recordings", type=int, default=8)
    parser.add_argument("--frames", type=int, default=30, help="frames per recording (10 Hz)")
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--no-ray", action="store_true", help="the local engine only")
    args = parser.parse_args(argv)
    cpu = cpu_per_pair_ms()
    print("CPU work per 640x480 pair, one thread, ms: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()), flush=True)
    print(format_results(run_bench(args), args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
