"""One resolution mode of `taseg bench`: the candidates timed together, their rounds, and the
figures derived from them (latencies, overhead over plain SAM, stage shares, FLOP/s, memory).

Candidates: predict() on the frame pair, segment_anything's plain encoder on the same padded
input, a dense matmul (this machine's attainable FLOP/s); on CUDA also the forward alone with
CUDA-event stage timing and predict in the other precisions; a batch; a torch.compile'd copy."""
from __future__ import annotations

import ctypes
import math
from typing import Any, Callable

import numpy as np
import torch

from taseg_ros.bench.memory import measure_peak
from taseg_ros.bench.models import STAGES, count_flops, derive_stages
from taseg_ros.bench.timing import auto_repeats, device_synchronizer, run_rounds, summarize_ratio
from taseg_ros.timing import summarize_ms
from taseg_ros.devices import PRECISIONS, runnable_precision, torch_dtype
from taseg_ros.inference import Segmenter


def trim_heap() -> None:
    # Hand freed heap pages back to the OS before a resident-set measurement, so a later,
    # smaller working set is not hidden in pages an earlier step left mapped (glibc only).
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def median(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def segmenter_for(model, device, precision: str, mode: str) -> Segmenter:
    # One set of weights serves both resolution modes: the Segmenter takes the mode to plan with.
    return Segmenter(model, device=str(device), precision=precision, resolution=mode)


def prepared_inputs(seg: Segmenter, rgb: np.ndarray, thermal: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The padded, standardised tensors Segmenter.predict feeds the model (its own preprocess)."""
    thermal01, _ = seg.thermal(thermal, rgb.shape[:2])
    rgb_in, thermal_in, _ = seg.prepare([rgb], [thermal01])
    return rgb_in, thermal_in


class ModeBench:
    """Times one resolution mode; `run()` returns its figures (the JSON's modes[mode])."""

    def __init__(self, mode: str, model, compiled_model, plain_run, clock, frames, opt, device, worker,
                 log: Callable[[str], None]) -> None:
        self.mode, self.model, self.compiled_model, self.plain_run = mode, model, compiled_model, plain_run
        self.clock, self.opt, self.device, self.worker, self.log = clock, opt, device, worker, log
        self.rgb, self.thermal = frames
        self.cuda = device.type == "cuda"
        self.dtype = torch_dtype(opt.precision)  # run_benchmark made it one this device runs natively
        self.sync = device_synchronizer(device)
        self.seg = segmenter_for(model, device, opt.precision, mode)
        self.geometry = self.seg.transform.geometry(opt.height, opt.width)
        self.inputs = prepared_inputs(self.seg, self.rgb, self.thermal)
        self.matmul_n = opt.matmul_size or (8192 if self.cuda else 2048)
        generator = torch.Generator(device=device).manual_seed(opt.seed)
        self.mats = [torch.randn(self.matmul_n, self.matmul_n, device=device, dtype=self.dtype, generator=generator)
                     for _ in range(2)]
        self.batch = opt.batch or (8 if self.cuda else 1)
        # On the CPU the stage hooks ride along inside predict (microseconds against milliseconds).
        # On CUDA they would add launch overhead to predict, so the forward with CUDA-event stage
        # timing is a candidate of its own and predict runs without hooks.
        self.staged_names = ("forward" if self.cuda else "predict", "plain_encoder")
        self.records: dict[str, list[dict[str, float]]] = {name: [] for name in self.staged_names}

    # --- candidates -----------------------------------------------------------------------------

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)

    def predict(self) -> None:
        self.seg.predict(self.rgb, self.thermal)

    def plain_encoder(self) -> None:
        with torch.inference_mode(), self._autocast():
            self.plain_run(self.inputs[0])

    def forward(self) -> None:
        with torch.inference_mode(), self._autocast():
            self.model(*self.inputs)

    def matmul(self) -> None:
        with torch.inference_mode():
            torch.mm(*self.mats)

    def _staged(self, fn: Callable[[], None]) -> Callable[[], None]:
        def call() -> None:
            self.clock.enabled = True
            try:
                fn()
            finally:
                self.clock.enabled = False

        return call

    def candidates(self) -> dict[str, Callable[[], None]]:
        out = {
            "predict": self.predict if self.cuda else self._staged(self.predict),
            "plain_encoder": self._staged(self.plain_encoder),
            "matmul": self.matmul,
        }
        rgb, thermal = self.rgb, self.thermal
        if self.cuda:
            out["forward"] = self._staged(self.forward)
            for other in PRECISIONS:  # the others this GPU runs natively (bf16: compute 8.0 and later)
                if other != self.opt.precision and not runnable_precision(other, str(self.device))[1]:
                    other_seg = segmenter_for(self.model, self.device, other, self.mode)
                    out[f"predict_{other}"] = lambda s=other_seg: s.predict(rgb, thermal)
        if self.batch > 1:
            out["predict_batch"] = lambda: self.seg.predict_batch([rgb] * self.batch, [thermal] * self.batch)
        if self.compiled_model is not None:
            compiled = segmenter_for(self.compiled_model, self.device, self.opt.precision, self.mode)
            out["predict_compiled"] = lambda: compiled.predict(rgb, thermal)
        return out

    # --- rounds ---------------------------------------------------------------------------------

    def _after_call(self, name: str) -> None:
        if name in self.records:
            record = self.clock.collect()
            if record is not None:
                self.records[name].append(record)

    def _rounds(self, candidates, count: int) -> tuple[dict[str, list[float]], float]:
        return self.worker(run_rounds, candidates, count, self.sync, self._after_call)

    def _forget_records(self) -> None:
        for records in self.records.values():
            records.clear()

    def measure(self) -> tuple[dict[str, list[float]], int, float, dict]:
        """Peak memory of the first predict, warm-up rounds (the last one sizes the run), timed rounds."""
        candidates = self.candidates()
        trim_heap()
        memory = self.worker(measure_peak, self.predict, self.device)
        hw = self.geometry.padded_hw
        self.log(f"  {self.mode}: input {hw[1]}x{hw[0]}, first predict done; warming up")
        round_s = float("nan")
        for _ in range(self.opt.warmup):  # the first may include compiling
            _, round_s = self._rounds(candidates, 1)
        if not self.opt.repeats and not math.isfinite(round_s):  # no warm-up round to size the run with
            _, round_s = self._rounds(candidates, 1)
        self._forget_records()
        repeats = self.opt.repeats or auto_repeats(round_s, self.opt.budget_s)
        self.log(f"  {self.mode}: last warm-up round took {round_s:.2f} s; {repeats} timed rounds")
        samples, round_s = self._rounds(candidates, repeats)
        return samples, repeats, round_s, memory

    # --- figures --------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        samples, repeats, round_s, memory = self.measure()
        model_records = self.records["forward" if self.cuda else "predict"]
        plain = [r["plain_encoder"] for r in self.records["plain_encoder"]]
        forward = [r["forward"] for r in model_records]
        encoder = [r["encoder"] for r in model_records]
        predict = summarize_ms(samples["predict"])
        result: dict[str, Any] = {
            "input_hw": list(self.geometry.padded_hw),
            "resized_hw": list(self.geometry.resized_hw),
            "repeats": repeats,
            "round_seconds": round_s,
            "latency": {"predict": predict, "forward": summarize_ms(forward), "plain_encoder": summarize_ms(plain),
                        "taseg_encoder": summarize_ms(encoder)},
            "fps": 1e3 / predict["median"],
            "timing_clock": "cuda_events" if self.cuda else "perf_counter",
            "overhead_vs_plain_encoder": {
                "forward": summarize_ratio([f / p for f, p in zip(forward, plain)]),
                "encoder": summarize_ratio([e / p for e, p in zip(encoder, plain)]),
                "predict": None if self.cuda else summarize_ratio([a / p for a, p in zip(samples["predict"], plain)]),
            },
            "memory": memory,
        }
        result.update(self._stage_shares(model_records, forward))
        result.update(self._flop_rates(samples["matmul"], encoder, plain))
        latency, extras = self._extras(samples, forward, predict)
        result["latency"].update(latency)
        result.update(extras)
        return result

    def _stage_shares(self, model_records, forward: list[float]) -> dict[str, Any]:
        rows = [derive_stages(r) for r in model_records]
        stage_ms = {stage: median([row[stage] for row in rows]) * 1e3 for stage in STAGES}
        total = sum(stage_ms.values())
        return {
            "stages_ms": stage_ms,
            "shares": {stage: (value / total if total > 0 else float("nan")) for stage, value in stage_ms.items()},
            "stages_sum_vs_forward": total / (median(forward) * 1e3) if forward else float("nan"),
        }

    def _flop_rates(self, matmul_s: list[float], encoder: list[float], plain: list[float]) -> dict[str, Any]:
        flops = count_flops(self.model.cfg.replace(resolution=self.mode), self.model.class_info, self.geometry.padded_hw)
        matmul_rate = [2 * self.matmul_n**3 / s for s in matmul_s]

        def achieved(count: int, seconds: list[float]) -> float:
            return count / median(seconds) if seconds else float("nan")

        def efficiency(count: int, seconds: list[float]) -> dict[str, float]:
            return summarize_ratio([count / s / m for s, m in zip(seconds, matmul_rate)])

        return {
            "flops": flops,
            "achieved_flops_per_s": {"taseg_encoder": achieved(flops["taseg_encoder"], encoder),
                                     "plain_encoder": achieved(flops["plain_encoder"], plain)},
            "matmul": {"n": self.matmul_n, "dtype": str(self.dtype).replace("torch.", ""),
                       "latency": summarize_ms(matmul_s), "flops_per_s": median(matmul_rate)},
            "efficiency_vs_matmul": {"taseg_encoder": efficiency(flops["taseg_encoder"], encoder),
                                     "plain_encoder": efficiency(flops["plain_encoder"], plain)},
        }

    def _extras(self, samples, forward: list[float], predict: dict) -> tuple[dict[str, Any], dict[str, Any]]:
        """(latency entries, mode entries): pre/post-processing (CPU), other precisions (CUDA), the
        batch, torch.compile."""
        def fps_entry(name: str, frames: int = 1) -> dict[str, Any]:
            stats = summarize_ms(samples[name])
            return {"latency": stats, "fps": frames * 1e3 / stats["median"]}

        latency: dict[str, Any] = {}
        extras: dict[str, Any] = {"throughput": {"batch": 1, "fps": 1e3 / predict["median"]}}
        if not self.cuda:
            latency["pre_post"] = summarize_ms([a - f for a, f in zip(samples["predict"], forward)])
        else:
            latency["forward_wall"] = summarize_ms(samples["forward"])
            extras["precisions"] = {self.opt.precision: {"latency": predict, "fps": 1e3 / predict["median"]}}
            extras["precisions"].update({p: fps_entry(f"predict_{p}") for p in PRECISIONS if f"predict_{p}" in samples})
        if "predict_batch" in samples:
            extras["throughput"] = {"batch": self.batch, **fps_entry("predict_batch", self.batch)}
        if "predict_compiled" in samples:
            extras["compiled"] = {**fps_entry("predict_compiled"), "speedup": summarize_ratio(
                [e / c for e, c in zip(samples["predict"], samples["predict_compiled"])])}
        return latency, extras
