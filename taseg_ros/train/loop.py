"""The training loop of `taseg train`, readable top to bottom (in the spirit of nanoGPT).

One code path for every setup: a single CPU process, one GPU, or many GPUs and machines
through `torchrun` (PyTorch DDP; NCCL on GPUs, gloo on CPUs).

Determinism and exact resume: the data order is a pure function of (seed, step) and each
sample's augmentation of (seed, epoch, index); the model has no dropout. A run killed at
any point and resumed from its last state file continues with exactly the batches and
weights it would have seen.
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from taseg_ros.datasets import build_dataset
from taseg_ros.datasets.transforms import train_transform
from taseg_ros.devices import resolve_device
from taseg_ros.evaluation.run import evaluate
from taseg_ros.inference import PRECISIONS
from taseg_ros.model.checkpoint import init_checkpoint, load_checkpoint, save_checkpoint
from taseg_ros.model.config import get_config
from taseg_ros.model.inputs import normalize_and_pad, plan_geometry, restore_logits
from taseg_ros.train.loss import loss_share
from taseg_ros.train.recipe import Recipe
from taseg_ros.train.run_dir import drop_replayed_log_rows

STATE_FILE = "train_state.pt"


# --- processes ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Runtime:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def start_runtime(device_choice: str) -> Runtime:
    """Single process, or the process group that torchrun describes in the environment."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = resolve_device(device_choice) == "cuda"
    if device_choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device is 'cuda' but CUDA is not available")
    if world_size > 1:
        if not dist.is_initialized():
            # Validation runs on all ranks, but a slow one must not trip NCCL's watchdog.
            dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(minutes=60))
        rank = dist.get_rank()
    else:
        rank = 0
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return Runtime(rank, world_size, device)


def all_reduce_sum(value, runtime: Runtime):
    if runtime.world_size == 1:
        return value
    tensor = torch.as_tensor(value, dtype=torch.float64 if isinstance(value, float) else torch.int64)
    tensor = tensor.to(runtime.device if runtime.device.type == "cuda" else "cpu")
    dist.all_reduce(tensor)
    return tensor.cpu().numpy() if tensor.ndim else tensor.item()


# --- data order -----------------------------------------------------------------------------
def step_indices(step: int, num_samples: int, batch_size: int, seed: int) -> tuple[int, list[int]]:
    """(epoch, the global batch of sample indices) of optimiser step `step`.

    Epoch e visits a permutation seeded by (seed, e); incomplete last batches are dropped.
    DistributedSampler does the same per epoch, but cannot start in the middle of one."""
    steps_per_epoch = num_samples // batch_size
    epoch, position = divmod(step, steps_per_epoch)
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(num_samples, generator=generator)
    return epoch, order[position * batch_size : (position + 1) * batch_size].tolist()


class StepBatches(torch.utils.data.Sampler):
    """Yields, for each step from `start`, this process's (epoch, index) keys of the step."""

    def __init__(self, start: int, steps: int, num_samples: int, batch_size: int, seed: int, runtime: Runtime):
        self.start, self.steps = start, steps
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.per_process = batch_size // runtime.world_size
        self.rank = runtime.rank

    def __iter__(self):
        for step in range(self.start, self.steps):
            epoch, batch = step_indices(step, self.num_samples, self.batch_size, self.seed)
            mine = batch[self.rank * self.per_process : (self.rank + 1) * self.per_process]
            yield [(epoch, index) for index in mine]

    def __len__(self) -> int:
        return self.steps - self.start


class AugmentedSamples(torch.utils.data.Dataset):
    """Dataset keyed by (epoch, index): the augmentation RNG is a function of the key, so
    every worker and every resumed run draws the same crop for the same sample."""

    def __init__(self, dataset, transform, seed: int, blank_thermal: bool = False) -> None:
        self.dataset, self.transform, self.seed = dataset, transform, seed
        self.blank_thermal = blank_thermal

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key
        sample = self.dataset.load(index)
        sample = self.transform(sample, np.random.default_rng([self.seed, epoch, index]))
        if self.blank_thermal:
            sample["thermal"] = np.zeros_like(sample["thermal"])
        return {
            "rgb": torch.from_numpy(np.ascontiguousarray(sample["rgb"])),
            "thermal": torch.from_numpy(np.ascontiguousarray(sample["thermal"])),
            "label": torch.from_numpy(np.ascontiguousarray(sample["label"])),
        }


# --- learning rate --------------------------------------------------------------------------
def learning_rate_factor(step: int, recipe: Recipe) -> float:
    o, total = recipe.optim, recipe.train.steps
    if step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    progress = (step - o.warmup_steps) / max(1, total - o.warmup_steps)
    if o.schedule == "constant":
        decay = 1.0
    elif o.schedule == "cosine":
        decay = 0.5 * (1 + math.cos(math.pi * progress))
    else:
        decay = (1 - progress) ** o.poly_power
    return o.min_lr_ratio + (1 - o.min_lr_ratio) * decay


# --- model ----------------------------------------------------------------------------------
def initial_model(recipe: Recipe, class_source, output: Path, runtime: Runtime):
    """The model a run starts from: a given TASeg checkpoint, or a new one from SAM (+CLIP)."""
    if recipe.init_checkpoint:
        return load_checkpoint(recipe.init_checkpoint, sam_checkpoint=recipe.sam_checkpoint)
    cfg = get_config(recipe.model, **recipe.model_overrides)
    init_path = output / "init.safetensors"
    if runtime.is_main:  # text embeddings and SAM hashing once; other ranks read the result
        init_checkpoint(
            cfg, class_source, init_path, sam_checkpoint=recipe.sam_checkpoint,
            clip_weights=recipe.clip_weights, text_embeddings=recipe.text_embeddings, seed=recipe.train.seed,
        )
    if runtime.world_size > 1:
        dist.barrier()
    return load_checkpoint(init_path, sam_checkpoint=recipe.sam_checkpoint, verify_sam=False)


def save_state(path: Path, model, optimizer, scaler, step: int, best: dict, recipe: Recipe) -> None:
    """Everything a resume needs, in one file written atomically (tmp + rename)."""
    state = {
        "step": step,
        "model": {k: v.detach().cpu() for k, v in model.trainable_state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "best": json.dumps(best),
        "recipe": json.dumps(recipe.to_dict()),
    }
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --- validation -----------------------------------------------------------------------------
def validate(model, dataset, runtime: Runtime, dtype: torch.dtype, blank_thermal: bool = False):
    """Score the validation split, images shared out over processes, one confusion matrix."""
    evaluator = evaluate(
        model, dataset, device=runtime.device, dtype=dtype, blank_thermal=blank_thermal,
        indices=range(runtime.rank, len(dataset), runtime.world_size),
    )
    if runtime.world_size > 1:
        evaluator.total.matrix = all_reduce_sum(evaluator.total.matrix, runtime)
        evaluator.num_images = int(all_reduce_sum(evaluator.num_images, runtime))
        from taseg_ros.evaluation.metrics import ConfusionMatrix

        for name in ("day", "night"):  # every rank reduces the same matrices, seen or not
            evaluator.conditions.setdefault(name, ConfusionMatrix(len(evaluator.class_names)))
            evaluator.num_images_by_condition.setdefault(name, 0)
        for name in sorted(evaluator.conditions):
            evaluator.conditions[name].matrix = all_reduce_sum(evaluator.conditions[name].matrix, runtime)
            evaluator.num_images_by_condition[name] = int(all_reduce_sum(evaluator.num_images_by_condition[name], runtime))
    return evaluator.result()


# --- the run --------------------------------------------------------------------------------
def train(recipe: Recipe, resume: bool = False, progress: bool = True) -> dict:
    """Train as `recipe` says; returns a summary (steps, best validation mIoU, files)."""
    t = recipe.train
    runtime = start_runtime(t.device)
    output = Path(t.output)
    if runtime.is_main:
        output.mkdir(parents=True, exist_ok=True)
    if runtime.world_size > 1:
        dist.barrier()
    per_step_per_process, remainder = divmod(t.batch_size, runtime.world_size)
    accumulation, remainder2 = divmod(per_step_per_process, t.micro_batch_size) if per_step_per_process else (0, 1)
    if remainder or remainder2 or accumulation < 1:
        raise ValueError(
            f"train.batch_size {t.batch_size} must be a multiple of processes ({runtime.world_size}) "
            f"x train.micro_batch_size ({t.micro_batch_size})"
        )
    use_amp = runtime.device.type == "cuda" and t.precision != "fp32"
    dtype = PRECISIONS[t.precision] if use_amp else torch.float32

    # Data.
    d = recipe.data
    train_set = build_dataset(d.dataset, d.root, d.train_split, seed=t.seed)
    val_set = build_dataset(d.dataset, d.root, d.val_split)
    if len(train_set) < t.batch_size:
        raise ValueError(f"{d.root}: split '{d.train_split}' has {len(train_set)} samples, fewer than train.batch_size {t.batch_size}")
    samples = AugmentedSamples(train_set, train_transform(d.crop, d.scale, d.flip, d.color_jitter), t.seed, d.blank_thermal)

    # Model, optimiser, state.
    model = initial_model(recipe, train_set.class_info, output, runtime).to(runtime.device).train()
    if tuple(model.class_info.names) != tuple(train_set.class_info.names):
        source = recipe.init_checkpoint or "the model"
        raise ValueError(
            f"{source} predicts {len(model.class_info.names)} classes {list(model.class_info.names)}, the dataset "
            f"{d.root} has {len(train_set.class_info.names)}: {list(train_set.class_info.names)}"
        )
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=recipe.optim.lr, betas=recipe.optim.betas, weight_decay=recipe.optim.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if use_amp and dtype == torch.float16 else None
    start, best = 0, {"miou": -1.0, "step": -1}
    state_path = output / STATE_FILE
    if resume:
        if not state_path.is_file():
            raise FileNotFoundError(f"nothing to resume: {state_path} does not exist")
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        start, best = int(state["step"]), json.loads(state["best"])
    ddp = DistributedDataParallel(model) if runtime.world_size > 1 else None
    forward = ddp if ddp is not None else model

    loader = DataLoader(
        samples,
        batch_sampler=StepBatches(start, t.steps, len(train_set), t.batch_size, t.seed, runtime),
        num_workers=d.num_workers,
        persistent_workers=False,
        pin_memory=runtime.device.type == "cuda",
    )
    writer = log_file = None
    if runtime.is_main:
        from torch.utils.tensorboard import SummaryWriter

        # Steps after `start` were logged by the interrupted run and are logged again now.
        writer = SummaryWriter(str(output / "tensorboard"), purge_step=start + 1 if start else None)
        new_log = not (resume and (output / "train_log.csv").is_file())
        if not new_log:
            drop_replayed_log_rows(output / "train_log.csv", start)
        log_file = open(output / "train_log.csv", "w" if new_log else "a", newline="")
        log_csv = csv.writer(log_file)
        if new_log:
            log_csv.writerow(["step", "loss", "ce", "dice", "lr", "images_per_s", "val_miou"])
        (output / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=2) + "\n")
    bar = tqdm(total=t.steps, initial=start, desc="train", disable=not (progress and runtime.is_main), dynamic_ncols=True)
    last_time, images_since = time.perf_counter(), 0
    loss_value = parts = None

    for step, batch in zip(range(start, t.steps), loader):
        # 1. learning rate for this step
        for group in optimizer.param_groups:
            group["lr"] = recipe.optim.lr * learning_rate_factor(step, recipe)
        # 2. forward/backward over the micro-batches; the loss is normalised over the step
        labelled = int(all_reduce_sum(int((batch["label"] != 255).sum()), runtime))
        step_loss, step_parts = 0.0, {"ce": 0.0, "dice": 0.0}
        for micro in range(accumulation):
            part = slice(micro * t.micro_batch_size, (micro + 1) * t.micro_batch_size)
            rgb = batch["rgb"][part].to(runtime.device, non_blocking=True).permute(0, 3, 1, 2).float()
            thermal = batch["thermal"][part].to(runtime.device, non_blocking=True).unsqueeze(1)
            labels = batch["label"][part].to(runtime.device, non_blocking=True)
            geometry = plan_geometry(rgb.shape[-2], rgb.shape[-1], model.cfg)
            sync = micro == accumulation - 1
            context = ddp.no_sync() if (ddp is not None and not sync) else contextlib.nullcontext()
            with context:
                with torch.autocast(runtime.device.type, dtype=dtype, enabled=use_amp):
                    logits = restore_logits(forward(*normalize_and_pad(rgb, thermal, model.cfg, geometry)), geometry)
                loss, loss_parts = loss_share(
                    logits, labels, step_labelled_pixels=labelled, step_images=t.batch_size,
                    ce_weight=recipe.loss.ce_weight, dice_weight=recipe.loss.dice_weight,
                )
                # DDP averages gradients over processes; the shares must add up instead.
                scaled = loss * runtime.world_size
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
            step_loss += loss.item()
            for key in step_parts:
                step_parts[key] += loss_parts[key]
        # 3. optimiser step
        if scaler is not None:
            scaler.unscale_(optimizer)
        if recipe.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(trainable, recipe.optim.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        images_since += t.batch_size
        bar.update(1)

        # 4. logging, validation, checkpoints
        if done % t.log_every == 0 or done == t.steps:
            loss_value = float(all_reduce_sum(step_loss, runtime))
            parts = {k: float(all_reduce_sum(v, runtime)) for k, v in step_parts.items()}
            now = time.perf_counter()
            speed = images_since / (now - last_time)
            last_time, images_since = now, 0
            lr = optimizer.param_groups[0]["lr"]
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", img_s=f"{speed:.1f}")
            if runtime.is_main:
                writer.add_scalar("train/loss", loss_value, done)
                writer.add_scalar("train/ce", parts["ce"], done)
                writer.add_scalar("train/dice", parts["dice"], done)
                writer.add_scalar("train/lr", lr, done)
                writer.add_scalar("train/images_per_s", speed, done)
                log_csv.writerow([done, f"{loss_value:.6f}", f"{parts['ce']:.6f}", f"{parts['dice']:.6f}", f"{lr:.6e}", f"{speed:.2f}", ""])
                log_file.flush()
        validate_now = done % t.val_every == 0 or done == t.steps
        if validate_now:
            result = validate(model, val_set, runtime, dtype, d.blank_thermal)
            miou = result.overall.miou
            if runtime.is_main:
                writer.add_scalar("val/miou", miou, done)
                log_csv.writerow([done, "", "", "", "", "", f"{miou:.6f}"])
                log_file.flush()
                bar.write(f"step {done}: val mIoU {100 * miou:.2f} (best {100 * max(miou, best['miou']):.2f})")
                extra = {"step": done, "val_miou": miou, "dataset": str(d.dataset), "recipe": recipe.to_dict()}
                if miou > best["miou"]:
                    best = {"miou": miou, "step": done}
                    save_checkpoint(model, output / "best.safetensors", extra=extra)
                save_checkpoint(model, output / "last.safetensors", extra=extra)
            best = _broadcast(best, runtime)
        if runtime.is_main and (validate_now or done % t.checkpoint_every == 0):
            save_state(state_path, model, optimizer, scaler, done, best, recipe)
        if runtime.world_size > 1 and (validate_now or done % t.checkpoint_every == 0):
            dist.barrier()
    bar.close()
    if writer is not None:
        writer.close()
        log_file.close()
    summary = {
        "steps": t.steps,
        "best_val_miou": best["miou"],
        "best_step": best["step"],
        "final_loss": loss_value,
        "output": str(output),
    }
    if runtime.is_main:
        (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _broadcast(best: dict, runtime: Runtime) -> dict:
    """Rank 0 decides what is best; every rank must agree for the next comparison."""
    if runtime.world_size == 1:
        return best
    tensor = torch.tensor([best["miou"], best["step"]], dtype=torch.float64)
    tensor = tensor.to(runtime.device if runtime.device.type == "cuda" else "cpu")
    dist.broadcast(tensor, src=0)
    return {"miou": float(tensor[0]), "step": int(tensor[1])}
