"""`taseg bench`: every figure measured in one process, in interleaved rounds (see timing.py).

Per resolution mode (SAM's 1024 padding, native), one set of rounds (bench/mode.py) times together:
  - predict: `Segmenter.predict` on a 640x480 uint8 RGB + uint16 thermal pair (the API a
    user calls: thermal normalisation, padding, forward, logits back to the frame, argmax);
  - plain_encoder: segment_anything's ImageEncoderViT of the same size with the same frozen
    weights, on the same padded input, in the same precision;
  - matmul: a square dense matmul in the model's precision (this machine's attainable FLOP/s);
  - on CUDA also: the forward alone (CUDA-event stage timing), other precisions, a batch;
  - with --compile: predict through a torch.compile'd copy of the model.
Stage times come from module hooks inside the timed forward passes (wall clock on the CPU,
CUDA events on the GPU), so they add up to the forward they were taken from. Ratios are
taken per round (both sides measured seconds apart) and summarised by their median. Every
timed call runs in one long-lived worker thread (see Worker). With --backends, every runtime
is timed against eager PyTorch in rounds of its own (bench/backends.py).
"""
from __future__ import annotations

import copy
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from taseg_ros.bench.backends import BackendBench
from taseg_ros.bench.memory import model_bytes, process_peak_rss_bytes
from taseg_ros.bench.mode import ModeBench, segmenter_for
from taseg_ros.bench.models import (
    attach_stage_clock,
    build_random_model,
    plain_encoder_forward,
    plain_sam_encoder,
)
from taseg_ros.bench.node import Worker, node_vs_alone
from taseg_ros.bench.timing import StageClock, auto_repeats, device_synchronizer, run_rounds
from taseg_ros.classes import load_classes
from taseg_ros.config_io import read_text
from taseg_ros.devices import check_memory
from taseg_ros.errors import InputError
from taseg_ros.model.checkpoint import save_checkpoint
from taseg_ros.devices import CPU_FP16, PRECISIONS, cpu_flags, runnable_precision
from taseg_ros.model.config import RESOLUTION_MODES, get_config
from taseg_ros.model.inputs import tensor_bytes
from taseg_ros.ros.client import ros_missing
from taseg_ros.runtime import BACKENDS
from taseg_ros.scenes import scene_pair16
from taseg_ros.timing import summarize_ms

PAPER_VIT_H_FPS = 4.65  # TASeg paper: ViT-H at 640x480 on an RTX 3090
WEIGHTS_NOTE = (
    "RANDOM frozen weights and random text embeddings (seeded): timings are those of the real "
    "architecture, outputs are meaningless. No SAM or CLIP file is needed or used."
)


@dataclass
class BenchOptions:
    config: str = "tiny"
    height: int = 480
    width: int = 640
    device: str = "cpu"
    precision: str = "fp32"
    resolutions: tuple[str, ...] = ("sam1024", "native")
    warmup: int = 1  # untimed rounds before the timed ones
    repeats: int | None = None  # timed rounds; None: as many as fit in budget_s (3..50)
    budget_s: float = 30.0  # seconds of timed rounds per resolution mode when repeats is None
    batch: int | None = None  # throughput batch; None: 1 on the CPU, 8 on CUDA
    compile: bool = False
    node: bool = True
    node_frames: int | None = None  # None: as many as fit in budget_s (3..50)
    vit_h: bool = True  # on CUDA, also time ViT-H (the paper's model) when the config is another
    matmul_size: int | None = None  # None: 2048 on the CPU, 8192 on CUDA
    seed: int = 0
    classes: str = "mfnet"
    quick: bool = False  # smoke run: 1 warm-up, 3 rounds, 3 node frames, small matmul, no ViT-H
    backends: tuple[str, ...] = ()  # also time these runtimes against eager PyTorch (bench/backends.py)
    backend_precisions: tuple[str, ...] | None = None  # None: fp32, bf16 (and fp16 on CUDA)

    def __post_init__(self) -> None:
        if self.quick:
            self.warmup = min(self.warmup, 1)
            self.repeats = self.repeats or 3
            self.node_frames = self.node_frames or 3
            self.matmul_size = self.matmul_size or 512
            self.vit_h = False
        if self.height < 1 or self.width < 1:
            raise InputError(f"frame size must be positive, got {self.width}x{self.height}")
        if self.warmup < 0 or (self.repeats is not None and self.repeats < 1):
            raise InputError("--warmup must be >= 0 and --repeats >= 1")
        if self.precision not in PRECISIONS:
            raise InputError(f"precision '{self.precision}' is not one of {sorted(PRECISIONS)}")
        if self.backend_precisions is None:
            self.backend_precisions = ("fp32", "bf16", "fp16") if self.device.startswith("cuda") else ("fp32", "bf16")

        bad = [b for b in self.backends if b not in BACKENDS] + [p for p in self.backend_precisions if p not in PRECISIONS]
        if bad:
            raise InputError(f"--backends/--backend-precisions: unknown {bad} (backends {list(BACKENDS)}, precisions {list(PRECISIONS)})")
        unknown = [r for r in self.resolutions if r not in RESOLUTION_MODES]
        if unknown or not self.resolutions:
            raise InputError(f"resolution modes must be among {RESOLUTION_MODES}, got {list(self.resolutions)}")
        self.check_memory()

    def check_memory(self) -> None:
        """Refuse a frame size or batch whose tensors alone do not fit, before building anything."""
        cfg, classes = get_config(self.config), load_classes(self.classes).num_classes
        batch = self.batch or (8 if self.device.startswith("cuda") else 1)
        needed = max(tensor_bytes(cfg.replace(resolution=mode), classes, (self.height, self.width), batch)
                     for mode in self.resolutions)
        check_memory(needed, self.device, f"{self.width}x{self.height} frames, batch {batch}: one forward's input and "
                     "output tensors", "choose a smaller --width/--height or --batch")


CPU_SPEED_FLAGS = frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_fp16", "amx_fp16", "bf16", "asimd"})


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _environment(device: torch.device) -> dict[str, Any]:
    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
    }
    try:
        for line in read_text("/proc/cpuinfo").splitlines():
            if line.startswith("model name"):
                env["cpu"] = line.split(":", 1)[1].strip()
                break
    except (OSError, ValueError):  # no /proc (macOS): the processor name above stays
        pass
    env["cpu_flags"] = sorted(cpu_flags() & CPU_SPEED_FLAGS)  # what decides the CPU's fast precisions
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    if hasattr(os, "getloadavg"):
        env["loadavg_start"] = list(os.getloadavg())
    return env


class _PlainEncoderRun(torch.nn.Module):
    """The plain encoder's forward as one module, so the stage clock can time it like TASeg's."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return plain_encoder_forward(self.encoder, rgb)


def _bench_node(
    model, opt: BenchOptions, model_fps: dict[str, float], worker: Worker, log: Callable[[str], None]
) -> dict[str, Any]:
    """The node with the bench's model (its own resolution mode), saved as a checkpoint."""
    if missing := ros_missing():
        return {"skipped": f"{missing}; or use --skip-node"}

    mode = model.cfg.resolution
    count = opt.node_frames
    if count is None:
        seconds = 1.0 / model_fps[mode] if model_fps.get(mode) else 1.0
        count = auto_repeats(seconds, opt.budget_s / 2)
    log(f"  node: {count} frames through DDS ({mode} resolution, the checkpoint's), model alone before and after")
    with tempfile.TemporaryDirectory(prefix="taseg-bench-") as tmp:
        checkpoint = save_checkpoint(model, Path(tmp) / f"bench_{model.cfg.name}.safetensors")
        node = node_vs_alone(checkpoint, scene_pair16(opt.height, opt.width), count, worker, device=opt.device,
                             precision=opt.precision)
    node.update(mode=mode)
    return node


def _bench_vit_h(
    opt: BenchOptions, class_info, device: torch.device, worker: Worker, log: Callable[[str], None]
) -> dict[str, Any]:
    """The paper's model on this GPU: predict at 640x480 in every precision, both modes."""
    cfg = get_config("vit_h")
    log("ViT-H: building (random frozen weights)")
    model = build_random_model(cfg, class_info, opt.seed, device)
    rgb, thermal = scene_pair16(opt.height, opt.width)
    sync = device_synchronizer(device)
    out: dict[str, Any] = {"paper_fps_rtx3090": PAPER_VIT_H_FPS, "modes": {}}
    for mode in opt.resolutions:
        candidates = {
            precision: (lambda s=segmenter_for(model, device, precision, mode): s.predict(rgb, thermal))
            for precision in PRECISIONS if not runnable_precision(precision, str(device))[1]  # native only
        }
        worker(run_rounds, candidates, max(opt.warmup, 1), sync)
        samples, _ = worker(run_rounds, candidates, opt.repeats or 10, sync)
        out["modes"][mode] = {
            p: {"latency": summarize_ms(s), "fps": 1e3 / summarize_ms(s)["median"]} for p, s in samples.items()
        }
        log(f"  ViT-H {mode}: " + ", ".join(f"{p} {v['fps']:.2f} fps" for p, v in out["modes"][mode].items()))
    del model
    torch.cuda.empty_cache()
    return out


def run_benchmark(opt: BenchOptions, log: Callable[[str], None] = _log) -> dict[str, Any]:
    device = torch.device(opt.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' requested but CUDA is not available on this machine")
    if device.type == "cpu" and opt.precision == "fp16":
        raise InputError(f"fp16 is not supported on the CPU ({CPU_FP16}); use fp32 or bf16")
    asked, (opt.precision, why) = opt.precision, runnable_precision(opt.precision, str(device))
    if why:  # every figure is of the precision that runs, and the report says which was asked
        log(f"note: {why}")
    cfg = get_config(opt.config)
    class_info = load_classes(opt.classes)
    started = time.perf_counter()
    result: dict[str, Any] = {
        "config": cfg.name,
        "frame_hw": [opt.height, opt.width],
        "device": str(device),
        "precision": opt.precision,
        "requested_precision": asked,
        "precision_note": why,
        "weights": WEIGHTS_NOTE,
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(opt).items()},
        "environment": _environment(device),
        "modes": {},
    }
    log(f"taseg bench: building {cfg.name} with random frozen weights on {device}")
    model = build_random_model(cfg, class_info, opt.seed, device)
    compiled_model = torch.compile(copy.deepcopy(model)) if opt.compile else None  # before hooks go on
    clock = StageClock(device)
    attach_stage_clock(model, clock)
    plain_run = _PlainEncoderRun(plain_sam_encoder(model)).to(device).eval()
    clock.attach(plain_run, "plain_encoder")
    result["model_bytes"] = model_bytes(model)
    frames = scene_pair16(opt.height, opt.width)
    worker = Worker()
    if device.type == "cuda" and device.index is not None:  # CUDA events record on the current device
        worker(torch.cuda.set_device, device)
    try:
        for mode in opt.resolutions:
            result["modes"][mode] = ModeBench(
                mode, model, compiled_model, plain_run, clock, frames, opt, device, worker, log
            ).run()
        clock.detach()
        if opt.node:
            fps = {mode: r["fps"] for mode, r in result["modes"].items()}
            result["node"] = _bench_node(model, opt, fps, worker, log)
        else:
            result["node"] = {"skipped": "--skip-node"}
        if opt.backends:
            result["backends"] = {
                mode: BackendBench(model, mode, opt, frames, worker, log).run() for mode in opt.resolutions
            }
        del compiled_model, plain_run
        if device.type == "cuda" and opt.vit_h and cfg.name != "vit_h":
            del model
            torch.cuda.empty_cache()
            result["vit_h"] = _bench_vit_h(opt, class_info, device, worker, log)
    finally:
        clock.detach()
        worker.close()
    result["process_peak_rss_bytes"] = process_peak_rss_bytes()
    if device.type == "cuda":
        result["cuda_max_memory_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
    if hasattr(os, "getloadavg"):
        result["environment"]["loadavg_end"] = list(os.getloadavg())
    result["wall_seconds"] = time.perf_counter() - started
    return result
