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
import dataclasses
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

from taseg_ros.config_io import parse_json
from taseg_ros.datasets import IGNORE_INDEX, build_dataset
from taseg_ros.datasets.transforms import train_transform
from taseg_ros.devices import resolve_device, runnable_precision, torch_dtype
from taseg_ros.errors import InputError, MissingInputError
from taseg_ros.formatting import progress_bar
from taseg_ros.evaluation.metrics import ConfusionMatrix
from taseg_ros.frames.blank import blank_thermal as blank  # AugmentedSamples.blank_thermal is the switch
from taseg_ros.evaluation.run import evaluate
from taseg_ros.model.checkpoint import init_checkpoint, load_checkpoint, save_checkpoint
from taseg_ros.model.config import get_config
from taseg_ros.model.sam_parts import check_state_fits
from taseg_ros.outputs import replacing, write_text_atomic
from taseg_ros.train.loss import loss_share
from taseg_ros.train.memory import GiB, cast_frozen, check_prediction, plan_for_recipe
from taseg_ros.train.recipe import Recipe
from taseg_ros.train.run_dir import drop_replayed_log_rows, read_train_state

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
        raise InputError("train.device is 'cuda' but CUDA is not available")
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
    """The training set keyed by (epoch, index): each sample's augmentation is drawn from
    (seed, epoch, index) (datasets.base.augmentation_rng), so every worker and every resumed
    run draws the same crop for the same sample."""

    def __init__(self, dataset, blank_thermal: bool = False) -> None:
        self.dataset, self.blank_thermal = dataset, blank_thermal

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key
        sample = self.dataset.sample(index, epoch)
        if self.blank_thermal:
            sample["thermal"] = blank(sample["rgb"].shape[:2])
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
    with replacing(path) as tmp:
        torch.save(state, tmp)


# --- validation -----------------------------------------------------------------------------
def validate(model, dataset, runtime: Runtime, precision: str, blank_thermal: bool = False):
    """Score the validation split, images shared out over processes, one confusion matrix."""
    evaluator = evaluate(
        model, dataset, device=runtime.device, precision=precision, blank_thermal=blank_thermal,
        indices=range(runtime.rank, len(dataset), runtime.world_size),
    )
    if runtime.world_size > 1:
        evaluator.total.matrix = all_reduce_sum(evaluator.total.matrix, runtime)
        evaluator.num_images = int(all_reduce_sum(evaluator.num_images, runtime))

        for name in ("day", "night"):  # every rank reduces the same matrices, seen or not
            evaluator.conditions.setdefault(name, ConfusionMatrix(len(evaluator.class_names)))
            evaluator.num_images_by_condition.setdefault(name, 0)
        for name in sorted(evaluator.conditions):
            evaluator.conditions[name].matrix = all_reduce_sum(evaluator.conditions[name].matrix, runtime)
            evaluator.num_images_by_condition[name] = int(all_reduce_sum(evaluator.num_images_by_condition[name], runtime))
    return evaluator.result()


# --- logs -----------------------------------------------------------------------------------
class RunLog:
    """train_log.csv, TensorBoard and the progress bar; files on the main process only."""

    HEADER = ["step", "loss", "ce", "dice", "lr", "images_per_s", "val_miou"]

    def __init__(self, output: Path, recipe: Recipe, start: int, resume: bool, runtime: Runtime, progress: bool) -> None:
        self.writer = self.file = self.csv = None
        if runtime.is_main:
            from torch.utils.tensorboard import SummaryWriter

            # Steps after `start` were logged by the interrupted run and are logged again now.
            self.writer = SummaryWriter(str(output / "tensorboard"), purge_step=start + 1 if start else None)
            log_path = output / "train_log.csv"
            new_log = not (resume and log_path.is_file())
            if not new_log:
                drop_replayed_log_rows(log_path, start)
            if new_log:  # replaced (a link there is not followed), then appended to row by row
                write_text_atomic(log_path, ",".join(self.HEADER) + "\r\n")
            self.file = open(log_path, "a", newline="")
            self.csv = csv.writer(self.file)
            write_text_atomic(output / "recipe.json", json.dumps(recipe.to_dict(), indent=2) + "\n")
        self.bar = progress_bar(total=recipe.train.steps, initial=start, desc="train", enabled=progress and runtime.is_main,
                                leave=True)

    def train_step(self, step: int, loss: float, parts: dict, lr: float, speed: float) -> None:
        self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", img_s=f"{speed:.1f}")
        if self.writer is None:
            return
        for name, value in (("loss", loss), ("ce", parts["ce"]), ("dice", parts["dice"]), ("lr", lr), ("images_per_s", speed)):
            self.writer.add_scalar(f"train/{name}", value, step)
        self.csv.writerow([step, f"{loss:.6f}", f"{parts['ce']:.6f}", f"{parts['dice']:.6f}", f"{lr:.6e}", f"{speed:.2f}", ""])
        self.file.flush()

    def validation(self, step: int, miou: float, best_miou: float) -> None:
        if self.writer is None:
            return
        self.writer.add_scalar("val/miou", miou, step)
        self.csv.writerow([step, "", "", "", "", "", f"{miou:.6f}"])
        self.file.flush()
        self.bar.write(f"step {step}: val mIoU {100 * miou:.2f} (best {100 * max(miou, best_miou):.2f})")

    def note(self, text: str) -> None:
        if self.writer is not None:
            self.bar.write(text)

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()
            self.file.close()


# --- the run --------------------------------------------------------------------------------
def train(recipe: Recipe, resume: bool = False, progress: bool = True) -> dict:
    """Train as `recipe` says; returns a summary (steps, best validation mIoU, files)."""
    return Trainer(recipe, resume, progress).run()


class Trainer:
    """One run. The constructor sets everything up (data, model, memory, optimiser, resumed
    state, logs); `run` is the loop: learning rate, forward/backward over the micro-batches,
    optimiser step, logging, validation and checkpoints."""

    def __init__(self, recipe: Recipe, resume: bool = False, progress: bool = True) -> None:
        self.recipe, self.t = recipe, recipe.train
        self.runtime = start_runtime(self.t.device)
        self.output = Path(self.t.output)
        if self.runtime.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
        if self.runtime.world_size > 1:
            dist.barrier()
        # CPU runs train in fp32; a GPU without the recipe's precision (bf16 before compute 8.0) too, said.
        asked = self.t.precision if self.runtime.device.type == "cuda" else "fp32"
        self.precision, why = runnable_precision(asked, str(self.runtime.device))
        if why and self.runtime.is_main:
            print(f"note: {why}", flush=True)
        self.use_amp = self.precision != "fp32"
        self.dtype = torch_dtype(self.precision)
        self.build_data()
        self.build_model()
        self.micro_batch, self.accumulation = self.plan_micro_batches()
        self.build_optimizer()
        self.start, self.best = self.load_state(resume)
        self.ddp = DistributedDataParallel(self.model) if self.runtime.world_size > 1 else None
        self.loader = DataLoader(
            self.samples,
            batch_sampler=StepBatches(self.start, self.t.steps, len(self.train_set), self.t.batch_size, self.t.seed, self.runtime),
            num_workers=self.recipe.data.num_workers,
            persistent_workers=False,
            pin_memory=self.runtime.device.type == "cuda",
        )
        self.log = RunLog(self.output, recipe, self.start, resume, self.runtime, progress)
        for line in self.notes:
            self.log.note(line)

    # --- setup ------------------------------------------------------------------------------
    def build_data(self) -> None:
        d, t = self.recipe.data, self.t
        transform = train_transform(d.crop, d.scale, d.flip, d.color_jitter)
        self.train_set = build_dataset(d.dataset, d.root, d.train_split, transform, seed=t.seed)
        self.val_set = build_dataset(d.dataset, d.root, d.val_split)
        if len(self.train_set) < t.batch_size:
            raise InputError(f"{d.root}: split '{d.train_split}' has {len(self.train_set)} samples, fewer than train.batch_size {t.batch_size}")
        self.samples = AugmentedSamples(self.train_set, d.blank_thermal)

    def build_model(self) -> None:
        classes = self.train_set.class_info
        model = initial_model(self.recipe, classes, self.output, self.runtime).to(self.runtime.device).train()
        if tuple(model.class_info.names) != tuple(classes.names):
            source = self.recipe.init_checkpoint or "the model"
            raise InputError(
                f"{source} predicts {len(model.class_info.names)} classes {list(model.class_info.names)}, the dataset "
                f"{self.recipe.data.root} has {len(classes.names)}: {list(classes.names)}"
            )
        if self.use_amp and self.t.half_frozen:
            cast_frozen(model, self.dtype)  # never updated; autocast would cast them anyway
        model.image_encoder.grad_checkpointing = self.t.grad_checkpointing
        self.model = model

    def plan_micro_batches(self) -> tuple[int, int]:
        """(micro-batch, accumulation steps). `auto` takes the largest divisor of the
        per-process batch that the memory plan fits; on a GPU the plan's prediction is kept
        to check against the allocator's peak after the first step."""
        t, world = self.t, self.runtime.world_size
        per_process, remainder = divmod(t.batch_size, world)
        self.notes, self.plan = [], None
        if t.micro_batch_size == "auto" or self.runtime.device.type == "cuda":
            candidates = [b for b in range(1, per_process + 1) if per_process % b == 0] or [1]
            ran = dataclasses.replace(self.recipe, train=dataclasses.replace(t, precision=self.precision))  # what runs
            self.plan = plan_for_recipe(ran, self.model.cfg, self.train_set.class_info.num_classes,
                                        self.runtime.device.type, micro_batches=candidates)
        micro = t.micro_batch_size
        if micro == "auto":
            micro = self.plan.largest_fitting
            if micro is None:
                raise InputError(f"train.micro_batch_size auto: not even micro-batch 1 fits\n{self.plan.table()}")
            self.notes.append(f"micro_batch_size auto: {micro} (predicted peak {self.plan.predicted(micro) / GiB:.2f} GiB "
                              f"of {self.plan.usable / GiB:.2f} GiB usable)")
        accumulation, rest = divmod(per_process, micro) if per_process else (0, 1)
        if remainder or rest or accumulation < 1:
            raise InputError(
                f"train.batch_size {t.batch_size} must be a multiple of processes ({world}) x train.micro_batch_size ({micro})"
            )
        return micro, accumulation

    def build_optimizer(self) -> None:
        o = self.recipe.optim
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda") if self.use_amp and self.dtype == torch.float16 else None

    def load_state(self, resume: bool) -> tuple[int, dict]:
        """(first step, best validation so far): 0 and nothing, or the state file's."""
        self.state_path = self.output / STATE_FILE
        if not resume:
            return 0, {"miou": -1.0, "step": -1}
        if not self.state_path.is_file():
            raise MissingInputError(f"nothing to resume: {self.state_path} does not exist")
        state = read_train_state(self.state_path)
        # strict=False below (the frozen weights are not in the state): check the trainable ones fit first
        check_state_fits(self.state_path, "the state's tensors do not fit the recipe's model",
                         self.model.trainable_state_dict(), state["model"])
        self.model.load_state_dict(state["model"], strict=False)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scaler is not None and state["scaler"]:
                self.scaler.load_state_dict(state["scaler"])
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{self.state_path}: the optimiser state does not fit the model ({exc}); pass --force "
                             "instead of --resume to start the run over") from None
        return int(state["step"]), parse_json(state["best"], "best")

    # --- the loop ---------------------------------------------------------------------------
    def run(self) -> dict:
        t = self.t
        self.last_time, self.images_since, self.loss_value = time.perf_counter(), 0, None
        if self.runtime.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.runtime.device)
        for step, batch in zip(range(self.start, t.steps), self.loader):
            self.set_learning_rate(step)
            loss, parts = self.forward_backward(batch)
            self.optimizer_step()
            done = step + 1
            if done == self.start + 1:
                self.check_memory_plan()
            self.images_since += t.batch_size
            self.log.bar.update(1)
            if done % t.log_every == 0 or done == t.steps:
                self.log_progress(done, loss, parts)
            validate_now = done % t.val_every == 0 or done == t.steps
            if validate_now:
                self.validate_and_keep_best(done)
            if validate_now or done % t.checkpoint_every == 0:
                self.save_state(done)
        return self.finish()

    def set_learning_rate(self, step: int) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.recipe.optim.lr * learning_rate_factor(step, self.recipe)

    def forward_backward(self, batch: dict) -> tuple[float, dict]:
        """Gradients of the step's loss, accumulated over micro-batches; the loss is
        normalised over the whole step (all micro-batches and processes)."""
        runtime, t = self.runtime, self.t
        labelled = int(all_reduce_sum(int((batch["label"] != IGNORE_INDEX).sum()), runtime))
        step_loss, step_parts = 0.0, {"ce": 0.0, "dice": 0.0}
        forward = self.ddp if self.ddp is not None else self.model
        for micro in range(self.accumulation):
            part = slice(micro * self.micro_batch, (micro + 1) * self.micro_batch)
            rgb = batch["rgb"][part].to(runtime.device, non_blocking=True).permute(0, 3, 1, 2).float()
            thermal = batch["thermal"][part].to(runtime.device, non_blocking=True).unsqueeze(1)
            labels = batch["label"][part].to(runtime.device, non_blocking=True)
            last = micro == self.accumulation - 1
            with self.ddp.no_sync() if (self.ddp is not None and not last) else contextlib.nullcontext():
                with torch.autocast(runtime.device.type, dtype=self.dtype, enabled=self.use_amp):
                    rgb_in, thermal_in, geometry = self.model.preprocess(rgb, thermal)
                    logits = self.model.postprocess(forward(rgb_in, thermal_in), geometry)
                loss, loss_parts = loss_share(
                    logits, labels, step_labelled_pixels=labelled, step_images=t.batch_size,
                    ce_weight=self.recipe.loss.ce_weight, dice_weight=self.recipe.loss.dice_weight,
                )
                # DDP averages gradients over processes; the shares must add up instead.
                scaled = loss * runtime.world_size
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            step_loss += loss.item()
            for key in step_parts:
                step_parts[key] += loss_parts[key]
        return step_loss, step_parts

    def optimizer_step(self) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.recipe.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.recipe.optim.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def check_memory_plan(self) -> None:
        """GPU: the allocator's peak over the first step against the plan's prediction."""
        if self.plan is None or self.runtime.device.type != "cuda":
            return
        miss = check_prediction(self.plan.predicted(self.micro_batch), self.runtime.device)
        if miss:
            self.log.note(f"warning: {miss}")

    def log_progress(self, done: int, step_loss: float, step_parts: dict) -> None:
        self.loss_value = float(all_reduce_sum(step_loss, self.runtime))
        parts = {k: float(all_reduce_sum(v, self.runtime)) for k, v in step_parts.items()}
        now = time.perf_counter()
        speed = self.images_since / (now - self.last_time)
        self.last_time, self.images_since = now, 0
        self.log.train_step(done, self.loss_value, parts, self.optimizer.param_groups[0]["lr"], speed)

    def validate_and_keep_best(self, done: int) -> None:
        d = self.recipe.data
        miou = validate(self.model, self.val_set, self.runtime, self.precision, d.blank_thermal).overall.miou
        if self.runtime.is_main:
            self.log.validation(done, miou, self.best["miou"])
            extra = {"step": done, "val_miou": miou, "dataset": str(d.dataset), "recipe": self.recipe.to_dict()}
            if miou > self.best["miou"]:
                self.best = {"miou": miou, "step": done}
                save_checkpoint(self.model, self.output / "best.safetensors", extra=extra)
            save_checkpoint(self.model, self.output / "last.safetensors", extra=extra)
        self.best = _broadcast(self.best, self.runtime)

    def save_state(self, done: int) -> None:
        if self.runtime.is_main:
            save_state(self.state_path, self.model, self.optimizer, self.scaler, done, self.best, self.recipe)
        if self.runtime.world_size > 1:
            dist.barrier()

    def finish(self) -> dict:
        self.log.close()
        summary = {
            "steps": self.t.steps,
            "best_val_miou": self.best["miou"],
            "best_step": self.best["step"],
            "final_loss": self.loss_value,
            "output": str(self.output),
        }
        if self.runtime.is_main:
            write_text_atomic(self.output / "summary.json", json.dumps(summary, indent=2) + "\n")
        return summary


def _broadcast(best: dict, runtime: Runtime) -> dict:
    """Rank 0 decides what is best; every rank must agree for the next comparison."""
    if runtime.world_size == 1:
        return best
    tensor = torch.tensor([best["miou"], best["step"]], dtype=torch.float64)
    tensor = tensor.to(runtime.device if runtime.device.type == "cuda" else "cpu")
    dist.broadcast(tensor, src=0)
    return {"miou": float(tensor[0]), "step": int(tensor[1])}
