"""`taseg bench --backends ...`: every runtime on the same model, frame and rounds.

The random model is saved as a checkpoint and exported (`taseg export`, verified against eager)
for each runtime asked for; each (runtime, precision) variant is a Segmenter on the same frame,
timed in the same interleaved rounds as eager PyTorch fp32, so every ratio compares runs made
seconds apart. Each variant states the precision its runtime reports it ran at. Agreement is the
share of pixels whose argmax equals eager fp32's, over the real shared RGB-T frames when present.
Eager PyTorch with LoRA merged is a variant too, and its encoder is timed against plain SAM's."""
from __future__ import annotations

import copy
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from taseg_ros.bench.mode import prepared_inputs
from taseg_ros.bench.models import plain_encoder_forward, plain_sam_encoder
from taseg_ros.bench.node import node_vs_alone
from taseg_ros.bench.timing import auto_repeats, device_synchronizer, run_rounds, summarize_ratio
from taseg_ros.devices import BACKENDS, runnable_precision
from taseg_ros.errors import InputError
from taseg_ros.inference import Segmenter
from taseg_ros.model.checkpoint import save_checkpoint
from taseg_ros.runtime.export import export_model
from taseg_ros.runtime.formats import FORMATS, NETWORK_FORMATS
from taseg_ros.scenes import scene_pair
from taseg_ros.timing import summarize_ms

FORMAT_OF = {FORMATS[name].runtime: name for name in NETWORK_FORMATS}  # runtime -> the export it runs
REFERENCE = "torch fp32"


@dataclass(frozen=True)
class Variant:
    backend: str
    precision: str
    device: str  # the runtime's device name (ONNX Runtime: its execution provider)
    merged: bool = False  # torch: LoRA merged into the frozen weights

    @property
    def name(self) -> str:
        where = "" if self.backend in ("torch", "tensorrt") or self.device == "cpu" else f" {self.device}"
        return f"{self.backend}{where} {self.precision}" + (" merged" if self.merged else "")


def scene_frames(height: int, width: int, count: int = 4) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Frames the runtimes' labels are compared on: procedural street scenes, day and night."""
    return [(f"scene {seed} ({'night' if seed % 2 else 'day'})", *scene_pair(height, width, seed=seed, night=bool(seed % 2)))
            for seed in range(count)]


def plan_variants(backends: tuple[str, ...], precisions: tuple[str, ...], cuda: bool,
                  flags: frozenset[str] | None = None) -> list[Variant]:
    """The (runtime, precision) pairs worth timing here; eager fp32 (the reference) always first.
    Eager PyTorch only in the precisions this device runs natively (devices.runnable_precision:
    emulated bf16 is no figure to report); the other runtimes say themselves what they ran."""
    device = "cuda" if cuda else "cpu"
    usable = [p for p in precisions if cuda or p != "fp16"]
    native = [p for p in usable if not runnable_precision(p, device, flags)[1]]
    out = [Variant("torch", "fp32", device)]
    for backend in backends:
        if backend == "torch":
            out += [Variant("torch", p, device) for p in native if p != "fp32"]
            out += [Variant("torch", p, device, merged=True) for p in native]
        elif backend == "onnxruntime":
            out.append(Variant("onnxruntime", "fp32", device))
            if cuda:
                out += [Variant("onnxruntime", p, "tensorrt") for p in ("fp32", "fp16") if p in usable]
        elif backend == "openvino" and not cuda:  # OpenVINO's GPU is Intel's; this machine's CPU is what is timed
            out += [Variant("openvino", p, "CPU") for p in usable]
        elif backend == "tensorrt" and cuda:
            out += [Variant("tensorrt", p, "cuda") for p in ("fp32", "fp16") if p in usable]
        elif backend not in BACKENDS:
            raise InputError(f"--backends: unknown backend '{backend}'")
    return list(dict.fromkeys(out))


class BackendBench:
    """One resolution mode: export, open every variant, time them in rounds, compare outputs."""

    def __init__(self, model, mode: str, opt, frames, worker, log: Callable[[str], None]) -> None:
        self.model, self.mode, self.opt, self.frames, self.worker, self.log = model, mode, opt, frames, worker, log
        self.device = torch.device(opt.device)
        self.variants = plan_variants(opt.backends, opt.backend_precisions, self.device.type == "cuda")
        self.segmenters: dict[str, Segmenter] = {}
        self.exports: dict[str, dict] = {}
        self.files: dict[str, Path] = {}
        self.samples: dict[str, list[float]] = {}

    def run(self) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="taseg-bench-backends-") as tmp:
            self.export(Path(tmp))
            self.open_variants()
            samples, repeats = self.time_rounds()
            self.samples = samples
            agreement = self.agreement()
            node = self.node_runs() if self.opt.node else {"skipped": "--skip-node"}
            encoder = self.merged_encoder()
        for seg in self.segmenters.values():
            seg.release()
        return self.summary(samples, repeats, agreement, encoder, node)

    def export(self, folder: Path) -> None:
        model = copy.copy(self.model)  # shallow: same weights, this mode's config
        model.cfg = self.model.cfg.replace(resolution=self.mode)
        self.files["torch"] = save_checkpoint(model, folder / f"bench_{model.cfg.name}_{self.mode}.safetensors")
        for variant in self.variants:
            if variant.backend == "torch":
                continue
            fmt = FORMAT_OF[variant.backend]
            precision = variant.precision if fmt == "tensorrt" else "fp32"
            key = f"{fmt}-{precision}"
            if key in self.exports:
                continue
            output = folder / f"model-{precision}{FORMATS[fmt].suffix}"
            self.log(f"  {self.mode}: exporting {fmt} {precision} (verified against eager PyTorch)")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.exports[key] = export_model(self.files["torch"], output, fmt, size=(self.opt.width, self.opt.height),
                                                 precision=precision)
            self.files[key] = output

    def open_variants(self) -> None:
        for variant in self.variants:
            if variant.backend == "torch":
                model = copy.deepcopy(self.model) if variant.merged else self.model
                seg = Segmenter(model, device=variant.device, precision=variant.precision, resolution=self.mode,
                                merge_lora=variant.merged)
            else:
                fmt = FORMAT_OF[variant.backend]
                path = self.files[f"{fmt}-{variant.precision if fmt == 'tensorrt' else 'fp32'}"]
                seg = Segmenter.from_checkpoint(path, backend=variant.backend, device=variant.device,
                                                precision=variant.precision)
            self.segmenters[variant.name] = seg

    def time_rounds(self) -> tuple[dict[str, list[float]], int]:
        rgb, thermal = self.frames
        candidates = {name: (lambda s=seg: s.predict(rgb, thermal)) for name, seg in self.segmenters.items()}
        sync = device_synchronizer(self.device)
        _, round_s = self.worker(run_rounds, candidates, max(1, self.opt.warmup), sync)
        repeats = self.opt.repeats or auto_repeats(round_s, self.opt.budget_s)
        self.log(f"  {self.mode}: {len(candidates)} runtime variants, {repeats} interleaved rounds of {round_s:.2f} s")
        samples, _ = self.worker(run_rounds, candidates, repeats, sync)
        return samples, repeats

    def agreement(self) -> dict[str, Any]:
        frames = scene_frames(self.opt.height, self.opt.width)
        reference = self.segmenters[REFERENCE]
        expected = [reference.predict(rgb, thermal).labels for _, rgb, thermal in frames]
        out = {"frames": [name for name, _, _ in frames]}
        for name, seg in self.segmenters.items():
            same = [(seg.predict(rgb, thermal).labels == e).mean() for (_, rgb, thermal), e in zip(frames, expected)]
            out[name] = float(np.mean(same))
        return out

    def merged_encoder(self) -> dict[str, Any]:
        """TASeg's encoder with LoRA merged / segment_anything's plain encoder, same frozen weights."""
        seg = self.segmenters.get("torch fp32 merged")  # the encoders are called directly: no autocast
        if seg is None:
            return {}
        rgb_in, thermal_in = prepared_inputs(seg, *self.frames)
        plain = plain_sam_encoder(self.model).to(self.device).eval()
        unmerged = self.model.image_encoder
        merged = seg.model.image_encoder

        def call(fn):
            def run():
                with torch.inference_mode():
                    fn()
            return run

        candidates = {
            "plain": call(lambda: plain_encoder_forward(plain, rgb_in)),
            "merged": call(lambda: merged(rgb_in, thermal_in)),
            "unmerged": call(lambda: unmerged(rgb_in, thermal_in)),
        }
        sync = device_synchronizer(self.device)
        self.worker(run_rounds, candidates, 1, sync)
        samples, _ = self.worker(run_rounds, candidates, self.opt.repeats or 5, sync)
        return {
            "precision": seg.precision,
            "latency": {k: summarize_ms(v) for k, v in samples.items()},
            "merged_vs_plain": summarize_ratio([m / p for m, p in zip(samples["merged"], samples["plain"])]),
            "unmerged_vs_plain": summarize_ratio([u / p for u, p in zip(samples["unmerged"], samples["plain"])]),
        }

    def node_runs(self) -> dict[str, Any]:
        """Per runtime variant (not the merged ones: the node's merge_lora is the same model), the node
        through DDS against that variant alone."""

        out = {}
        for variant in self.variants:
            if variant.merged:
                continue
            if variant.device == "tensorrt":  # ORT's TensorRT EP builds its engine per session: minutes, twice more
                out[variant.name] = {"skipped": "ONNX Runtime's TensorRT provider rebuilds its engine per session"}
                continue
            fmt = FORMAT_OF.get(variant.backend)
            path = self.files["torch"] if fmt is None else self.files[f"{fmt}-{variant.precision if fmt == 'tensorrt' else 'fp32'}"]
            seconds = summarize_ms(self.samples[variant.name])["median"] * 1e-3
            count = self.opt.node_frames or auto_repeats(seconds, self.opt.budget_s / 2)
            self.log(f"  node with {variant.name}: {count} frames through DDS, the runtime alone before and after")
            out[variant.name] = node_vs_alone(path, self.frames, count, self.worker, backend=variant.backend,
                                              device=variant.device, precision=variant.precision)
        return out

    def summary(self, samples, repeats, agreement, encoder, node) -> dict[str, Any]:
        reference = samples[REFERENCE]
        variants = {}
        for variant in self.variants:
            seg, times = self.segmenters[variant.name], samples[variant.name]
            same_precision = f"torch {seg.precision}"  # the eager run of the precision that actually ran
            entry = {
                "backend": variant.backend,
                "requested_precision": variant.precision,
                "ran": seg.describe(),
                "precision": seg.precision,
                "precision_note": seg.backend.precision_note,
                "op_precisions": getattr(seg.backend, "op_precisions", None),  # OpenVINO's own account
                "latency": summarize_ms(times),
                "fps": 1e3 / summarize_ms(times)["median"],
                "speedup_vs_eager_fp32": summarize_ratio([r / t for r, t in zip(reference, times)]),
                "argmax_agreement_vs_eager_fp32": agreement.get(variant.name),
            }
            if same_precision in samples:
                entry["speedup_vs_eager_same_precision"] = summarize_ratio(
                    [r / t for r, t in zip(samples[same_precision], times)])
            variants[variant.name] = entry
        exports = {key: {"verification": e["verification"], "frame": e["frame"]} for key, e in self.exports.items()}
        return {"repeats": repeats, "variants": variants, "agreement_frames": agreement["frames"],
                "exports": exports, "merged_encoder": encoder, "node": node}
