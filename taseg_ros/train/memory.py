"""Training memory: what one optimiser step needs, predicted before any training.

The prediction adds up, per micro-batch size b,

    frozen weights + trainable weights + their gradients + AdamW's two moments
    + saved activations(b) + backward workspace(b)

where the activations are not estimated from formulas but counted: one forward (model and
loss) runs with `torch.autograd.graph.saved_tensors_hooks` and the distinct storages that
autograd keeps for backward are summed, minus the model's own weights. That forward runs on
FakeTensors (`torch._subclasses.FakeTensorMode`): shapes, dtypes and autocast's casting
decisions of the real device, no memory and no arithmetic, so vit_h at 1280x720 is counted
in seconds on any machine. The same code on real tensors counts the same bytes (tested on
the tiny config), and on a GPU `check_prediction` compares it with the allocator's peak.
"""
from __future__ import annotations

import contextlib
import re
import warnings
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn.functional as F

from taseg_ros.classes import ClassInfo, default_palette
from taseg_ros.datasets import IGNORE_INDEX, resolve_config
from taseg_ros.devices import resolve_device, torch_dtype
from taseg_ros.errors import InputError
from taseg_ros.model.checkpoint import describe_checkpoint
from taseg_ros.model.config import get_config
from taseg_ros.model.taseg import build_model
from taseg_ros.train.loss import dice_per_image

GiB = 1024**3
# The share of a GPU's memory a plan may fill: the rest is the CUDA context, cuBLAS/cuDNN
# workspaces and the caching allocator's fragmentation (21 GiB of a 24 GiB card).
USABLE_FRACTION = 0.875
# Allocations that do not scale with anything we count (cuBLAS workspace, small buffers).
FIXED_WORKSPACE = 256 * 1024**2
DEFAULT_GPU_MEMORY = 24 * GiB


# --- counting saved tensors -----------------------------------------------------------------
def _storage_key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage()._cdata


class SavedTensorCounter:
    """Distinct storages autograd saves for backward while active, the model's own
    parameters and buffers left out (they are counted as weights). Views of one storage
    count once. Module hooks (`watch`) record the running total at block boundaries."""

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self.excluded = {_storage_key(t) for t in exclude}
        self.storages: dict[int, torch.UntypedStorage] = {}  # holding them: no key reuse
        self.marks: list[int] = []

    @property
    def total_bytes(self) -> int:
        return sum(s.nbytes() for s in self.storages.values())

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        key = _storage_key(tensor)
        if key not in self.excluded:
            self.storages.setdefault(key, tensor.untyped_storage())
        return tensor

    def watch(self, modules: Iterable[torch.nn.Module]) -> list:
        """Record the running total after each of `modules` runs; returns the hook handles."""
        return [m.register_forward_hook(lambda *_: self.marks.append(self.total_bytes)) for m in modules]

    @contextlib.contextmanager
    def counting(self):
        with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor):
            yield self


# --- one forward, shape only ----------------------------------------------------------------
@contextlib.contextmanager
def autocast_on(device_type: str, dtype: torch.dtype | None):
    """torch.autocast, also for a FakeTensor CUDA device on a machine without CUDA (where
    torch.autocast("cuda") switches itself off): the casting policy is the device's."""
    if dtype is None:
        yield
        return
    previous = (torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type))
    torch.set_autocast_enabled(device_type, True)
    torch.set_autocast_dtype(device_type, dtype)
    try:
        yield
    finally:
        torch.set_autocast_enabled(device_type, previous[0])
        torch.set_autocast_dtype(device_type, previous[1])


def training_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The loss's autograd footprint (CE + Dice as in train.loss) without its .item() calls,
    which a shape-only run cannot answer."""
    ce = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return ce + dice_per_image(logits, labels).sum()


@dataclass(frozen=True)
class ForwardCount:
    saved_bytes: int  # everything autograd keeps for backward after model + loss forward
    largest_block_bytes: int  # what the largest encoder block (with its DFFM) saves, not checkpointed


def count_forward(model, batch: int, hw: tuple[int, int], device: torch.device, autocast_dtype) -> ForwardCount:
    """Saved-tensor bytes of one training forward of `model` (on `device`, real or fake) on
    a batch of `batch` images of size `hw` (as the data loader delivers them)."""
    counter = SavedTensorCounter(exclude=[*model.parameters(), *model.buffers()])
    encoder = model.image_encoder
    handles = counter.watch(encoder.vit.blocks) if not encoder.grad_checkpointing else []
    rgb = torch.zeros(batch, 3, *hw, device=device)
    thermal = torch.zeros(batch, 1, *hw, device=device)
    labels = torch.zeros(batch, *hw, dtype=torch.long, device=device)
    try:
        with counter.counting(), autocast_on(device.type, autocast_dtype):
            rgb_in, thermal_in, geometry = model.preprocess(rgb, thermal)
            logits = model.postprocess(model(rgb_in, thermal_in), geometry)
            training_loss(logits, labels)
    finally:
        for handle in handles:
            handle.remove()
    steps = [b - a for a, b in zip([0, *counter.marks], counter.marks)]
    return ForwardCount(counter.total_bytes, max(steps, default=0))


def shape_only_model(cfg, num_classes: int, device: str, frozen_dtype: torch.dtype):
    """(model, fake mode): a TASeg of `cfg` whose tensors are FakeTensors on `device`
    (possibly "cuda" on a machine without one), frozen weights in `frozen_dtype`."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    names = tuple(f"class{i}" for i in range(num_classes))
    classes = ClassInfo(names=names, palette=default_palette(num_classes))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(cfg, classes, torch.zeros(num_classes, cfg.text_dim), device="meta")
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        model = model.to_empty(device=device)
        cast_frozen(model, frozen_dtype)
    return model.train(), mode


# Modules whose weights autocast casts to the low precision at every call anyway.
AUTOCAST_CAST_MODULES = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)


def cast_frozen(model, dtype: torch.dtype) -> int:
    """Store the frozen (never updated) weights of Linear and convolution layers in
    `dtype`, the autocast precision; returns the bytes of all frozen weights afterwards.

    Under autocast these weights are cast to `dtype` at every call, so storing them cast
    changes no result, halves their memory and saves the per-call copies that autograd
    would keep for backward. Everything else keeps its dtype: trainable tensors (the
    optimiser updates fp32 values), norms, position embeddings and tokens (autocast keeps
    their arithmetic in fp32, and so does the residual stream)."""
    for module in model.modules():
        if isinstance(module, AUTOCAST_CAST_MODULES):
            for param in module.parameters(recurse=False):
                if not param.requires_grad and param.dtype != dtype:
                    param.data = param.data.to(dtype)
    return sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad) + sum(
        b.numel() * b.element_size() for b in model.buffers()
    )


# --- the plan -------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlanRow:
    micro_batch: int
    activations: int  # saved for backward by the micro-batch's forward
    workspace: int  # backward's transient: one block recomputed/differentiated, cuBLAS
    total: int  # predicted peak of the optimiser step (torch.cuda.max_memory_allocated)
    fits: bool


@dataclass(frozen=True)
class MemoryPlan:
    model: str
    input_hw: tuple[int, int]
    device: str  # the device the prediction is for ("cuda" unless training on the CPU)
    precision: str
    grad_checkpointing: bool
    frozen_dtype: str
    gpu_memory: int
    frozen_bytes: int  # frozen weights and buffers
    trainable_bytes: int  # trainable weights (fp32)
    optimizer_bytes: int  # gradients + AdamW exp_avg and exp_avg_sq (fp32)
    fixed_activation_bytes: int  # saved tensors that do not grow with the batch
    activation_bytes_per_image: int
    block_bytes_per_image: int  # the largest encoder block's saved tensors, one image
    rows: tuple[PlanRow, ...]

    @property
    def usable(self) -> int:
        return int(self.gpu_memory * USABLE_FRACTION)

    @property
    def largest_fitting(self) -> int | None:
        fitting = [r.micro_batch for r in self.rows if r.fits]
        return max(fitting) if fitting else None

    def predicted(self, micro_batch: int) -> int:
        return next(r.total for r in self.rows if r.micro_batch == micro_batch)

    def table(self) -> str:
        g = lambda n: f"{n / GiB:.2f}"  # noqa: E731
        head = (
            f"memory plan: {self.model}, input {self.input_hw[0]}x{self.input_hw[1]}, {self.precision} on {self.device}, "
            f"checkpointing {'on' if self.grad_checkpointing else 'off'}, frozen weights {self.frozen_dtype}\n"
            f"  fixed: frozen weights {g(self.frozen_bytes)} GiB + trainable {g(self.trainable_bytes)} GiB "
            f"+ gradients and AdamW {g(self.optimizer_bytes)} GiB; saved activations "
            f"{g(self.activation_bytes_per_image)} GiB per image (+{g(self.fixed_activation_bytes)} GiB per forward)\n"
            f"  usable: {g(self.usable)} of {g(self.gpu_memory)} GiB ({USABLE_FRACTION:.1%}; the rest is CUDA context, "
            "workspaces and allocator fragmentation)\n"
            "  micro-batch | activations GiB | workspace GiB | predicted peak GiB | fits\n"
        )
        lines = [
            f"  {r.micro_batch:>11} | {g(r.activations):>15} | {g(r.workspace):>13} | {g(r.total):>18} | {'yes' if r.fits else 'no'}"
            for r in self.rows
        ]
        best = self.largest_fitting
        tail = f"\n  largest micro-batch that fits: {best}" if best else "\n  no micro-batch fits this memory"
        return head + "\n".join(lines) + tail


def count_parameters(model) -> tuple[int, int]:
    """(trainable parameters, their fp32 bytes)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, trainable * 4


def plan_memory(
    cfg,
    num_classes: int,
    input_hw: tuple[int, int],
    *,
    device: str = "cuda",
    precision: str = "bf16",
    grad_checkpointing: bool = False,
    half_frozen: bool = True,
    gpu_memory: int = DEFAULT_GPU_MEMORY,
    micro_batches: Iterable[int] = (1, 2, 3, 4, 6, 8),
) -> MemoryPlan:
    """Predicted peak memory of one optimiser step for each micro-batch size, from a
    shape-only forward of `cfg` at `input_hw` (two batch sizes: the count is linear in b)."""
    autocast_dtype = None if precision == "fp32" or device == "cpu" else torch_dtype(precision)
    frozen_dtype = autocast_dtype if (autocast_dtype is not None and half_frozen) else torch.float32
    model, mode = shape_only_model(cfg, num_classes, device, frozen_dtype)
    target = torch.device(device)
    with mode:
        frozen_bytes = cast_frozen(model, frozen_dtype)
        _, trainable_bytes = count_parameters(model)
        block = count_forward(model, 1, input_hw, target, autocast_dtype).largest_block_bytes
        model.image_encoder.grad_checkpointing = grad_checkpointing
        one, two = (count_forward(model, b, input_hw, target, autocast_dtype).saved_bytes for b in (1, 2))
    per_image, fixed = two - one, 2 * one - two
    optimizer_bytes = 3 * trainable_bytes  # gradients + exp_avg + exp_avg_sq
    static = frozen_bytes + trainable_bytes + optimizer_bytes
    rows = []
    for b in micro_batches:
        activations = fixed + per_image * b
        # Backward differentiates one block at a time, next to everything still saved: the
        # block's gradients are about as large as what it saves, and with checkpointing its
        # saved tensors are first recomputed as well.
        workspace = (2 if grad_checkpointing else 1) * block * b + FIXED_WORKSPACE
        total = static + activations + workspace
        rows.append(PlanRow(b, activations, workspace, total, total <= gpu_memory * USABLE_FRACTION))
    return MemoryPlan(
        model=cfg.name, input_hw=tuple(input_hw), device=device, precision=precision if autocast_dtype else "fp32",
        grad_checkpointing=grad_checkpointing, frozen_dtype=str(frozen_dtype).replace("torch.", ""),
        gpu_memory=int(gpu_memory), frozen_bytes=frozen_bytes, trainable_bytes=trainable_bytes,
        optimizer_bytes=optimizer_bytes, fixed_activation_bytes=fixed, activation_bytes_per_image=per_image,
        block_bytes_per_image=block, rows=tuple(rows),
    )


def parse_memory(text: str) -> int:
    """'24GiB', '24G', '23.5 GB', '24000MiB', '1000B' -> bytes; a bare number is GiB (G/GB/GiB
    all mean 2**30 here: GPU vendors quote binary sizes under decimal names)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(i?B)?\s*", str(text), re.IGNORECASE)
    if not match:
        raise InputError(f"--gpu-memory '{text}': expected a size such as 24GiB or 80G")
    letter, suffix = match.group(2).upper(), match.group(3)
    unit = 1 if (not letter and suffix) else {"": GiB, "K": 1024, "M": 1024**2, "G": GiB, "T": 1024**4}[letter]
    return int(float(match.group(1)) * unit)


def visible_gpu_memory() -> int | None:
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory


def check_prediction(predicted: int, device: torch.device, tolerance: float = 0.15) -> str | None:
    """After the first optimiser steps on a GPU: a warning line when the allocator's peak
    is more than `tolerance` away from the prediction, else None."""
    if device.type != "cuda":
        return None
    measured = torch.cuda.max_memory_allocated(device)
    miss = (measured - predicted) / max(predicted, 1)
    if abs(miss) <= tolerance:
        return None
    return (
        f"memory plan missed: predicted peak {predicted / GiB:.2f} GiB, measured {measured / GiB:.2f} GiB "
        f"({miss:+.0%}; torch.cuda.max_memory_allocated after the first steps)"
    )


# --- one real step --------------------------------------------------------------------------
def measure_step(cfg, num_classes: int, input_hw: tuple[int, int], micro_batch: int, *, device: str = "cpu",
                 precision: str = "bf16", grad_checkpointing: bool = False, half_frozen: bool = True,
                 steps: int = 2) -> dict:
    """Images/s of a training step (forward, loss, backward, AdamW) of `cfg` with random frozen
    weights on `device`, after one untimed warm-up step; on CUDA also the allocator's peak."""
    import time

    target = torch.device(device)
    autocast_dtype = None if precision == "fp32" or target.type != "cuda" else torch_dtype(precision)
    classes = ClassInfo(names=tuple(f"class{i}" for i in range(num_classes)), palette=default_palette(num_classes))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if target.type == "cuda":  # vit_h's random init takes long on a CPU; values do not matter here
            model = build_model(cfg, classes, torch.zeros(num_classes, cfg.text_dim), device="meta").to_empty(device=target)
            with torch.no_grad():
                for tensor in (*model.parameters(), *model.buffers()):
                    if tensor.is_floating_point():
                        tensor.normal_(0.0, 0.02)
            model.train()
        else:
            model = build_model(cfg, classes, torch.zeros(num_classes, cfg.text_dim), device=target).train()
    if autocast_dtype is not None and half_frozen:
        cast_frozen(model, autocast_dtype)
    model.image_encoder.grad_checkpointing = grad_checkpointing
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    generator = torch.Generator().manual_seed(0)
    rgb = (torch.rand(micro_batch, 3, *input_hw, generator=generator) * 255).to(target)
    thermal = torch.rand(micro_batch, 1, *input_hw, generator=generator).to(target)
    labels = torch.randint(0, num_classes, (micro_batch, *input_hw), generator=generator).to(target)

    def step() -> None:
        with autocast_on(target.type, autocast_dtype):
            rgb_in, thermal_in, geometry = model.preprocess(rgb, thermal)
            logits = model.postprocess(model(rgb_in, thermal_in), geometry)
        training_loss(logits, labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if target.type == "cuda":
        torch.cuda.reset_peak_memory_stats(target)
    step()
    sync = (lambda: torch.cuda.synchronize(target)) if target.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps - 1):
        step()
    sync()
    seconds = (time.perf_counter() - start) / max(steps - 1, 1)
    result = {"images_per_s": micro_batch / seconds, "seconds_per_step": seconds, "micro_batch": micro_batch, "device": str(target)}
    if target.type == "cuda":
        result["peak_bytes"] = int(torch.cuda.max_memory_allocated(target))
    return result


# --- a recipe's plan (`taseg train RECIPE --plan`, micro_batch_size auto) -------------------
# CPU timing of one step is skipped above this many parameters (vit_b and up: minutes a step).
CPU_TIMING_MAX_PARAMS = 50_000_000


def recipe_model_config(recipe):
    """The model config a recipe trains: its init checkpoint's, else `model` + overrides."""
    if recipe.init_checkpoint:
        return describe_checkpoint(recipe.init_checkpoint)[0]

    return get_config(recipe.model, **recipe.model_overrides)


def recipe_num_classes(recipe) -> tuple[int, str]:
    """(number of classes, a note when it had to be assumed)."""
    try:
        return resolve_config(recipe.data.dataset, recipe.data.root).classes.num_classes, ""
    except FileNotFoundError:
        return 19, f"classes: 19 assumed ({recipe.data.dataset} classes not readable without data.root)"


def plan_for_recipe(recipe, cfg, num_classes: int, device_type: str, micro_batches=None, gpu_memory: int | None = None) -> MemoryPlan:
    """The memory plan of `recipe` for training on `device_type` ("cuda" or "cpu")."""
    t = recipe.train
    if gpu_memory is None:
        gpu_memory = parse_memory(t.gpu_memory) if t.gpu_memory else (visible_gpu_memory() or DEFAULT_GPU_MEMORY)
    options = {} if micro_batches is None else {"micro_batches": tuple(micro_batches)}
    return plan_memory(
        cfg, num_classes, recipe.data.crop, device="cuda" if device_type == "cuda" else "cpu", precision=t.precision,
        grad_checkpointing=t.grad_checkpointing, half_frozen=t.half_frozen, gpu_memory=gpu_memory, **options,
    )


def plan_report(recipe, gpu_memory: str | None = None, time_step: bool = True) -> tuple[MemoryPlan, str]:
    """(plan, text) for `taseg train RECIPE --plan`: the GPU prediction per micro-batch size,
    the largest that fits, and one timed step on this machine's device."""
    cfg = recipe_model_config(recipe)
    num_classes, class_note = recipe_num_classes(recipe)
    notes = [class_note] if class_note else []
    memory = parse_memory(gpu_memory) if gpu_memory else None
    if memory is None and recipe.train.gpu_memory:
        memory = parse_memory(recipe.train.gpu_memory)
    if memory is None:
        memory = visible_gpu_memory()
        if memory is None:
            memory = DEFAULT_GPU_MEMORY
            notes.append("no GPU visible: planning for a 24 GiB GPU (--gpu-memory SIZE for another)")
    batch = recipe.train.batch_size  # micro-batches must divide it (one process)
    plan = plan_for_recipe(recipe, cfg, num_classes, "cuda", [b for b in range(1, batch + 1) if batch % b == 0], memory)
    lines = [plan.table()]
    micro = recipe.train.micro_batch_size
    if micro == "auto":
        micro = plan.largest_fitting
        lines.append(f"  recipe: micro_batch_size auto -> {micro}")
    else:
        row = next((r for r in plan.rows if r.micro_batch == micro), None)
        row = row or plan_for_recipe(recipe, cfg, num_classes, "cuda", [micro], memory).rows[0]
        lines.append(f"  recipe: micro-batch {micro}, predicted peak {row.total / GiB:.2f} GiB: "
                     + ("fits" if row.fits else "DOES NOT FIT; lower train.micro_batch_size or set train.grad_checkpointing=true"))
    lines += notes
    if time_step and micro:
        lines.append(_timed_step_line(recipe, cfg, num_classes, micro, plan))
    return plan, "\n".join(lines)


def _timed_step_line(recipe, cfg, num_classes: int, micro: int, plan: MemoryPlan) -> str:
    t = recipe.train
    # the recipe's device where it exists; a plan made on a machine without CUDA times on the CPU
    device = resolve_device(t.device) if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        size = sum(p.numel() for p in shape_only_model(cfg, num_classes, "meta", torch.float32)[0].parameters())
        if size > CPU_TIMING_MAX_PARAMS:
            return (f"timed step: skipped on the CPU ({cfg.name}, {size / 1e6:.0f} M parameters: minutes a step); "
                    "run --plan on the training GPU for images/s and the measured peak")
    result = measure_step(cfg, num_classes, recipe.data.crop, micro, device=device, precision=t.precision,
                          grad_checkpointing=t.grad_checkpointing, half_frozen=t.half_frozen)
    precision = t.precision if device == "cuda" else "fp32"
    line = (f"timed step on {device} ({precision}, random frozen weights, micro-batch {micro}): "
            f"{result['images_per_s']:.2f} images/s")
    if "peak_bytes" in result:
        predicted = plan.predicted(micro) if micro in [r.micro_batch for r in plan.rows] else None
        line += f"; measured peak {result['peak_bytes'] / GiB:.2f} GiB"
        if predicted:
            line += f" vs predicted {predicted / GiB:.2f} GiB ({(result['peak_bytes'] - predicted) / predicted:+.0%})"
    return line
