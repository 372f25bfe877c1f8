"""Training recipes: one YAML file per experiment, overridable from the command line.

    taseg train training/recipes/mfnet.yaml data.root=/data/MFNet train.steps=20000

Unknown keys are errors (a typo must not silently train with a default)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from taseg_ros.resources import training_dir


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "folder"  # mfnet | pst900 | fmb | kp | folder (<root>/classes.yaml) | a dataset YAML
    root: str = ""
    train_split: str = "train"
    val_split: str = "val"  # keep-best selects on this split; never on test
    crop: tuple[int, int] = (480, 640)  # (height, width) of training crops
    scale: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    color_jitter: bool = True
    blank_thermal: bool = False  # ablation: train and validate with the thermal input zeroed
    num_workers: int = 4


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 5e-4  # paper sec. IV-A
    weight_decay: float = 0.01  # paper sec. IV-A
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 200
    schedule: str = "poly"  # poly | cosine | constant (after warm-up)
    poly_power: float = 0.9
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0  # max gradient norm; 0 disables


@dataclass(frozen=True)
class LossConfig:
    ce_weight: float = 1.0
    dice_weight: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 20000  # optimiser steps
    batch_size: int = 8  # global: all processes x gradient accumulation
    micro_batch_size: int = 4  # per process and forward pass
    precision: str = "bf16"  # fp32 | bf16 | fp16 (GPU); CPU runs use fp32
    device: str = "auto"  # auto | cpu | cuda
    seed: int = 0
    val_every: int = 1000
    log_every: int = 20
    checkpoint_every: int = 500  # resumable state; also written at every validation
    output: str = "runs/experiment"


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


def _build(cls, data: dict, where: str):
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in data.items():
        if key not in fields:
            raise ValueError(f"{where}: unknown key '{key}' (known: {', '.join(sorted(fields))})")
        default = getattr(cls(), key) if key not in ("model_overrides",) else {}
        if dataclasses.is_dataclass(default):
            value = _build(type(default), value, f"{where}.{key}")
        elif isinstance(default, tuple) and isinstance(value, (list, tuple)):
            value = tuple(value)
        elif isinstance(default, bool) and not isinstance(value, bool):
            raise ValueError(f"{where}.{key}: expected true/false, got {value!r}")
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            try:
                value = type(default)(value)
            except (TypeError, ValueError):
                raise ValueError(f"{where}.{key}: expected a number, got {value!r}") from None
        values[key] = value
    return cls(**values)


def _set_dotted(tree: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ValueError(f"override '{dotted}': '{key}' is not a section")
    node[keys[-1]] = value


def resolve_recipe_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    builtin = training_dir() / "recipes" / f"{name_or_path}.yaml"
    if builtin.is_file():
        return builtin
    raise FileNotFoundError(
        f"training recipe not found: {name_or_path} (built-in: "
        + ", ".join(sorted(p.stem for p in (training_dir() / "recipes").glob("*.yaml")))
        + ")"
    )


def load_recipe(name_or_path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """A recipe YAML (path or built-in name) with `section.key=value` overrides applied."""
    path = resolve_recipe_path(name_or_path)
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override '{item}' is not of the form section.key=value")
        key, raw = item.split("=", 1)
        _set_dotted(tree, key.strip(), yaml.safe_load(raw))
    recipe = _build(Recipe, tree, str(path))
    validate(recipe, str(path))
    return recipe


def validate(recipe: Recipe, where: str) -> None:
    t, o = recipe.train, recipe.optim
    if t.precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"{where}: train.precision must be fp32, bf16 or fp16")
    if o.schedule not in ("poly", "cosine", "constant"):
        raise ValueError(f"{where}: optim.schedule must be poly, cosine or constant")
    for key in ("steps", "batch_size", "micro_batch_size", "val_every", "log_every", "checkpoint_every"):
        if getattr(t, key) < 1:
            raise ValueError(f"{where}: train.{key} must be >= 1")
    if any(c % 16 for c in recipe.data.crop):
        raise ValueError(f"{where}: data.crop {recipe.data.crop} must be multiples of 16")
