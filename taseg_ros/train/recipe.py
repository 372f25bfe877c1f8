"""Training recipes: one YAML file per experiment, overridable from the command line.

    taseg train training/recipes/mfnet.yaml data.root=/data/MFNet train.steps=20000

Unknown keys are errors (a typo must not silently train with a default); values are checked
by taseg_ros.config_io against the field types and limits below, and a bad one is an error
naming the recipe file, the dotted key and the expected form."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from taseg_ros.config_io import ConfigError, from_mapping, parse_yaml, read_yaml, setting
from taseg_ros.devices import PRECISIONS
from taseg_ros.errors import MissingInputError
from taseg_ros.resources import training_dir


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "folder"  # mfnet | pst900 | fmb | kp | folder (<root>/classes.yaml) | a dataset YAML
    root: str = ""
    train_split: str = "train"
    val_split: str = "val"  # keep-best selects on this split; never on test
    # (height, width) of training crops
    crop: tuple[int, int] = setting((480, 640), ge=16, multiple_of=16, form="[height, width]")
    scale: tuple[float, float] = setting((0.5, 2.0), gt=0, form="[min, max]")
    flip: bool = True
    color_jitter: bool = True
    blank_thermal: bool = False  # ablation: train and validate with the thermal input zeroed
    num_workers: int = setting(4, ge=0)

    def __post_init__(self) -> None:
        if self.scale[0] > self.scale[1]:
            raise ConfigError("scale", "expected [min, max] with min <= max", self.scale)


@dataclass(frozen=True)
class OptimConfig:
    lr: float = setting(5e-4, gt=0)  # paper sec. IV-A
    weight_decay: float = setting(0.01, ge=0)  # paper sec. IV-A
    betas: tuple[float, float] = setting((0.9, 0.999), ge=0, lt=1)
    warmup_steps: int = setting(200, ge=0)
    schedule: str = setting("poly", choices=("poly", "cosine", "constant"))  # after warm-up
    poly_power: float = setting(0.9, gt=0)
    min_lr_ratio: float = setting(0.0, ge=0, le=1)
    grad_clip: float = setting(1.0, ge=0)  # max gradient norm; 0 disables


@dataclass(frozen=True)
class LossConfig:
    ce_weight: float = setting(1.0, ge=0)
    dice_weight: float = setting(1.0, ge=0)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = setting(20000, ge=1)  # optimiser steps
    batch_size: int = setting(8, ge=1)  # global: all processes x gradient accumulation
    # per process and forward pass; auto: the largest the memory plan fits (train/memory.py)
    micro_batch_size: int | Literal["auto"] = setting(4, ge=1)
    grad_checkpointing: bool = False  # recompute each encoder block in backward: far less activation memory
    half_frozen: bool = True  # under fp16/bf16 autocast, frozen SAM matmul weights stored in that precision
    gpu_memory: str = ""  # memory the plan may use (micro_batch_size auto), e.g. 24GiB; default the GPU's
    precision: str = setting("bf16", choices=tuple(PRECISIONS))  # fp16/bf16 on GPU; CPU runs use fp32
    device: str = setting("auto", choices=("auto", "cpu", "cuda"))
    seed: int = setting(0, ge=0, le=2**32 - 1)  # the data order seeds torch with seed * 100003 + epoch (64 bits)
    val_every: int = setting(1000, ge=1)
    log_every: int = setting(20, ge=1)
    checkpoint_every: int = setting(500, ge=1)  # resumable state; also written at every validation
    output: str = "runs/experiment"

    def __post_init__(self) -> None:
        if not self.output.strip():  # an empty path is the current folder to every file function
            raise ConfigError("output", "expected a folder for the run (an empty path is no folder)", self.output)


@dataclass(frozen=True)
class Recipe:
    model: str = "vit_b"  # model config name or YAML
    model_overrides: dict = field(default_factory=dict)
    sam_checkpoint: str | None = None  # default: models/<official name>
    clip_weights: str | None = None  # default: models/<name> when present
    text_embeddings: str | None = None  # precomputed K x D class embeddings
    init_checkpoint: str | None = None  # start from this TASeg checkpoint instead
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _set_dotted(tree: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError("", f"override '{dotted}': '{key}' is not a section")
    node[keys[-1]] = value


def resolve_recipe_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    builtin = training_dir() / "recipes" / f"{name_or_path}.yaml"
    if builtin.is_file():
        return builtin
    raise MissingInputError(
        f"training recipe not found: {name_or_path} (built-in: "
        + ", ".join(sorted(p.stem for p in (training_dir() / "recipes").glob("*.yaml")))
        + ")"
    )


def load_recipe(name_or_path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """A recipe YAML (path or built-in name) with `section.key=value` overrides applied."""
    path = resolve_recipe_path(name_or_path)
    tree = read_yaml(path) or {}
    if not isinstance(tree, dict):
        raise ConfigError("", f"expected a mapping of sections ({', '.join(f.name for f in dataclasses.fields(Recipe))})", where=str(path))
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError("", f"override '{item}' is not of the form section.key=value")
        key, raw = item.split("=", 1)
        try:
            value = parse_yaml(raw, "override")
        except ConfigError:
            raise ConfigError(key.strip(), "expected a YAML value", raw, where="override") from None
        _set_dotted(tree, key.strip(), value)
    return from_mapping(Recipe, tree, str(path))
