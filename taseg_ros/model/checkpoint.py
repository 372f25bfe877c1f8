"""TASeg checkpoints: one safetensors file.

Tensors: the trainable tensors and the class text embeddings; with `frozen=embedded`
also every frozen weight (used when the frozen weights are random, so there is no SAM
file to reload them from, and for merged deployment exports).
Metadata (safetensors' string header): format, model config, class names/prompts/palette,
where the frozen weights come from (official SAM file name + sha256), text source.

Loading rebuilds the model from the config, loads SAM from the official file, then
checks that every stored tensor fits (names and shapes) before using any of them.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from taseg_ros import __version__
from taseg_ros.classes import ClassInfo, load_classes
from taseg_ros.config_io import from_mapping, parse_json
from taseg_ros.devices import PRECISIONS, torch_dtype
from taseg_ros.errors import InputError, MissingInputError
from taseg_ros.model.config import TASegConfig, get_config
from taseg_ros.model.sam_parts import check_state_fits
from taseg_ros.model.taseg import FrozenSource, TASeg, build_model, is_trainable_name
from taseg_ros.model.text import class_text_embeddings
from taseg_ros.outputs import replacing
from taseg_ros.resources import is_plain_file_name, models_dir
from taseg_ros.weights import sha256_file

FORMAT = "taseg_ros.checkpoint/1"
TEXT_KEY = "mask_decoder.text_embeddings"
FITS_PROBLEM = "tensors do not fit the model its metadata describes"




def save_checkpoint(
    model: TASeg,
    path: str | Path,
    *,
    embed_frozen: bool | None = None,
    frozen_storage: str = "fp32",
    extra: dict | None = None,
) -> Path:
    """Write `model` to `path` atomically (outputs.replacing: a crash never leaves a half-written
    checkpoint under the final name, a link there is replaced, a full disk is one clear error). `embed_frozen` defaults to True when
    the frozen weights are random. Embedded frozen weights may be stored as fp16/bf16
    (`frozen_storage`, half the file); trainable tensors are always stored as float32."""
    path = Path(path)
    if getattr(model, "lora_merged", False):  # model.lora.merge_lora: the trainable LoRA factors are gone
        raise InputError(f"{path}: a model with LoRA merged into its frozen weights is not a TASeg checkpoint; save the "
                         "unmerged model (or export it: `taseg export --format onnx|openvino|tensorrt`)")
    path.parent.mkdir(parents=True, exist_ok=True)
    source = model.frozen_source
    if embed_frozen is None:
        embed_frozen = source.kind != "sam_checkpoint"
    if frozen_storage not in PRECISIONS:
        raise InputError(f"frozen weight storage '{frozen_storage}' is not one of {sorted(PRECISIONS)}")
    state = model.state_dict() if embed_frozen else model.trainable_state_dict()
    trainable = model.trainable_state_dict()

    def stored_dtype(name: str, tensor: torch.Tensor) -> torch.dtype:
        if not tensor.is_floating_point():
            return tensor.dtype
        return torch.float32 if name in trainable else torch_dtype(frozen_storage)

    tensors = {k: v.detach().to("cpu", stored_dtype(k, v)).contiguous().clone() for k, v in state.items()}
    metadata = {
        "format": FORMAT,
        "taseg_ros_version": __version__,
        "config": json.dumps(model.cfg.to_dict()),
        "classes": json.dumps(model.class_info.to_mapping()),
        "frozen": "embedded" if embed_frozen else "sam_checkpoint",
        "frozen_storage": frozen_storage if embed_frozen else "",
        "frozen_source": json.dumps(source.__dict__),
        "text_source": model.text_source,
    }
    for key, value in (extra or {}).items():
        metadata[key] = value if isinstance(value, str) else json.dumps(value)
    with replacing(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - safetensors raises several error types
        raise InputError(f"{path}: not a TASeg checkpoint (cannot read it as safetensors: {exc})") from exc
    if metadata.get("format") != FORMAT:
        found = metadata.get("format", "no format field")
        raise InputError(f"{path}: not a TASeg checkpoint (format '{found}', expected '{FORMAT}')")
    return metadata


def describe_checkpoint(path: str | Path) -> tuple[TASegConfig, ClassInfo, dict[str, str]]:
    metadata = read_metadata(path)
    try:
        cfg = TASegConfig.from_dict(parse_json(metadata["config"], "config"))
        class_info = ClassInfo.from_mapping(parse_json(metadata["classes"], "classes"), source=str(path))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: damaged TASeg metadata ({exc})") from exc
    return cfg, class_info, metadata


def frozen_source_of(metadata: dict[str, str], path: str | Path) -> FrozenSource:
    """The checkpoint's FrozenSource (where its frozen SAM weights come from); checked field by field."""
    text = metadata.get("frozen_source")
    if not text:
        return FrozenSource("random")
    try:
        return from_mapping(FrozenSource, parse_json(text, "frozen_source"), "frozen_source")
    except ValueError as exc:
        raise InputError(f"{path}: damaged TASeg metadata ({exc})") from None


def resolve_sam_checkpoint(name: str, explicit: str | Path | None, needed_by: str) -> Path:
    """The SAM file: `explicit` when given, else models/<name>. `name` comes from a config or a
    checkpoint's metadata, so only a bare file name is accepted (never a path out of models/)."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise MissingInputError(f"SAM checkpoint not found: {path}")
        return path
    if not is_plain_file_name(name):
        raise InputError(f"{needed_by} names the SAM checkpoint {name!r}: only a file name in {models_dir()} is "
                         "accepted there; pass the SAM file's path explicitly")
    path = models_dir() / name
    if not path.is_file():
        raise MissingInputError(
            f"{needed_by} needs the SAM checkpoint {name}; put it in {models_dir()} (`taseg weights --download`) "
            "or pass its path"
        )
    return path


def load_checkpoint(
    path: str | Path,
    *,
    sam_checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
    verify_sam: bool = True,
) -> TASeg:
    """Rebuild a TASeg from a checkpoint. The frozen SAM weights come from the checkpoint
    itself (frozen=embedded) or from the official SAM file it names: `sam_checkpoint`, else
    models/<name>; its sha256 is checked against the recorded one when `verify_sam`."""
    path = Path(path)
    cfg, class_info, metadata = describe_checkpoint(path)
    try:
        # clone(): safetensors hands out views at arbitrary byte offsets; unaligned inputs
        # take different SIMD paths and the logits would differ in the last bit.
        tensors = {k: v.clone() for k, v in load_file(str(path)).items()}
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path}: cannot read tensors ({exc}); the file is truncated or corrupt") from exc
    text = tensors.get(TEXT_KEY)
    source = frozen_source_of(metadata, path)
    if metadata.get("frozen") == "embedded":
        model = build_model(cfg, class_info, text, device="meta", text_source=metadata.get("text_source", ""))
        check_state_fits(path, FITS_PROBLEM, model.state_dict(), tensors)
        model.load_state_dict(tensors, strict=True, assign=True)
        model.float()  # fp16/bf16-stored frozen weights compute in float32 like the rest (precision is the Segmenter's choice)
        model.frozen_source = source
        for name, param in model.named_parameters():  # assign=True swaps in new Parameter objects
            param.requires_grad_(is_trainable_name(name))
    else:
        sam_path = resolve_sam_checkpoint(source.name or cfg.sam_checkpoint or "", sam_checkpoint, str(path))
        if verify_sam and source.sha256:
            actual = sha256_file(sam_path)
            if actual != source.sha256:
                raise InputError(
                    f"{sam_path}: sha256 {actual} differs from {source.sha256} recorded in {path}; "
                    "this is not the SAM checkpoint the model was trained on"
                )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build_model(
                cfg, class_info, text, sam_checkpoint=sam_path, sam_sha256=source.sha256, text_source=metadata.get("text_source", "")
            )
        check_state_fits(path, FITS_PROBLEM, model.trainable_state_dict(), tensors)
        model.load_state_dict(tensors, strict=False)
    return model.to(device).eval()


def export_checkpoint(
    path: str | Path,
    output: str | Path,
    *,
    sam_checkpoint: str | Path | None = None,
    frozen_storage: str = "fp32",
) -> dict:
    """One self-contained file for deployment (`taseg export`): the checkpoint's tensors merged
    with the frozen SAM weights it was trained on (sha256-checked as when loading), so a vehicle
    needs no SAM file. Reloads the written file and compares every tensor with the source model
    before returning {"output", "bytes", "tensors", "max_abs_change"} (0.0 for fp32 storage)."""
    path, output = Path(path), Path(output)
    if output.resolve() == path.resolve():
        raise InputError(f"{output}: the export must not overwrite its source checkpoint")
    model = load_checkpoint(path, sam_checkpoint=sam_checkpoint)
    exported_from = {"name": path.name, "sha256": sha256_file(path)}
    save_checkpoint(model, output, embed_frozen=True, frozen_storage=frozen_storage, extra={"exported_from": exported_from})
    source_state, written = model.state_dict(), load_checkpoint(output).state_dict()
    check_state_fits(output, FITS_PROBLEM, source_state, written)
    max_abs_change = max(
        ((written[k].float() - v.float()).abs().max().item() for k, v in source_state.items() if v.numel()), default=0.0
    )
    if frozen_storage == "fp32" and max_abs_change != 0.0:
        output.unlink()  # never leave a wrong model where a deployment script would pick it up
        raise InputError(f"{output}: reloaded tensors differed from {path} by up to {max_abs_change}; file removed")
    return {"output": output, "bytes": output.stat().st_size, "tensors": len(written), "max_abs_change": max_abs_change}


def init_checkpoint(
    config: str | Path | TASegConfig,
    classes: str | Path | ClassInfo,
    output: str | Path,
    *,
    sam_checkpoint: str | Path | None = None,
    clip_weights: str | Path | None = None,
    text_embeddings: str | Path | None = None,
    seed: int = 0,
) -> TASeg:
    """Make an untrained but loadable model and write it to `output` (`taseg init`).

    SAM and CLIP weights are taken from the arguments, else from models/ under their
    official names when present; without them the frozen weights / text encoder are
    random and a loud warning says so."""
    cfg = config if isinstance(config, TASegConfig) else get_config(config)
    class_info = classes if isinstance(classes, ClassInfo) else load_classes(classes)
    if sam_checkpoint is None and cfg.sam_checkpoint and (models_dir() / cfg.sam_checkpoint).is_file():
        sam_checkpoint = models_dir() / cfg.sam_checkpoint
    if clip_weights is None and cfg.clip_weights and (models_dir() / cfg.clip_weights).is_file():
        clip_weights = models_dir() / cfg.clip_weights
    text, text_source = None, ""
    if cfg.text:
        text, text_source = class_text_embeddings(
            class_info.prompts,
            model_name=cfg.clip_model,
            dim=cfg.text_dim,
            template=cfg.prompt_template,
            weights=clip_weights,
            embeddings_file=text_embeddings,
            seed=seed,
        )
    sam_sha = ""
    if sam_checkpoint is not None:
        sam_sha = sha256_file(sam_checkpoint)
    model = build_model(
        cfg, class_info, text, sam_checkpoint=sam_checkpoint, sam_sha256=sam_sha, seed=seed, text_source=text_source
    )
    save_checkpoint(model, output)
    return model
