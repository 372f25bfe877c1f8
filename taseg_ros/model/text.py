"""CLIP text embeddings of the class names (paper sec. III-B2).

The text encoder is frozen and runs once, when a model is created: its K x D output is
stored in the checkpoint, so inference never needs CLIP. Three sources, in order of
preference: precomputed embeddings (.npy / .pt), an open_clip model with local weights,
or (offline, no weights) a randomly initialised open_clip text encoder - loudly.
"""
from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from taseg_ros.errors import InputError, MissingInputError

_TINY_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "taseg-tiny-text.json"


def _open_clip():
    import open_clip

    # A few-MB CLIP shape for tests and the offline demo ("taseg-tiny-text").
    if _TINY_CONFIG.stem not in open_clip.list_models():
        open_clip.add_model_config(_TINY_CONFIG)
    return open_clip


def prompts_for(class_prompts: list[str] | tuple[str, ...], template: str) -> list[str]:
    if "{}" not in template:
        raise InputError(f"prompt template '{template}' has no '{{}}' placeholder for the class name")
    return [template.format(p) for p in class_prompts]


def normalize(embeddings: torch.Tensor) -> torch.Tensor:
    """CLIP compares text by direction: L2-normalise rows (some published files are not)."""
    return torch.nn.functional.normalize(embeddings.float(), dim=-1)


@torch.no_grad()
def encode_with_open_clip(
    texts: list[str], model_name: str, weights: str | Path | None, seed: int = 0
) -> torch.Tensor:
    """Encode texts with open_clip's text encoder; `weights=None` means random init."""
    open_clip = _open_clip()
    if model_name not in open_clip.list_models():
        raise InputError(f"unknown open_clip model '{model_name}' (see open_clip.list_models())")
    if weights is not None:
        weights = Path(weights)
        if not weights.is_file():
            raise MissingInputError(f"CLIP weights not found: {weights}")
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(seed)
        try:
            if weights is not None and is_torchscript_archive(weights):
                model = _openai_release_model(weights)
            else:
                # open_clip loads local files with torch.load(weights_only=True) by default.
                model = open_clip.create_model(model_name, pretrained=str(weights) if weights else None, device="cpu")
        except (RuntimeError, KeyError) as exc:
            raise InputError(f"{weights}: does not fit open_clip model '{model_name}': {exc}") from exc
    model.eval()
    tokens = open_clip.get_tokenizer(model_name)(texts)
    return normalize(model.encode_text(tokens))


def is_torchscript_archive(path: str | Path) -> bool:
    """OpenAI's CLIP release files (e.g. ViT-L-14.pt) are TorchScript archives."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") or "/code/" in name for name in archive.namelist())
    except zipfile.BadZipFile:
        return False


def _openai_release_model(path: str | Path):
    """Build open_clip's CLIP from an OpenAI TorchScript release file.

    torch.jit.load reads the archive with TorchScript's own restricted unpickler (tensors and
    TorchScript types, no arbitrary Python objects); only its weights are kept. open_clip's
    builder sets QuickGELU, which the OpenAI weights need. (open_clip.load_openai_model does
    the same but falls back to a plain torch.load on failure, which we do not want.)"""
    from open_clip.model import build_model_from_openai_state_dict

    state = torch.jit.load(str(path), map_location="cpu").state_dict()
    state.pop("attn_mask", None)  # a buffer, rebuilt by the model
    return build_model_from_openai_state_dict(state, cast_dtype=torch.float32).float()


def load_text_embeddings(path: str | Path, num_classes: int, dim: int) -> torch.Tensor:
    """Precomputed K x D embeddings from `.npy` (no pickles) or `.pt` (weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"text embeddings file not found: {path}")
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise InputError(f"{path}: not a plain numeric .npy array ({exc})") from exc
        tensor = torch.from_numpy(np.asarray(array, dtype=np.float32))
    elif path.suffix in (".pt", ".pth"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
            # torch's own message advises weights_only=False, which would run code from the file
            raise InputError(f"{path}: not a plain tensor file (refused: it holds objects other than tensors, or is "
                             f"corrupt: {type(exc).__name__})") from None
        if isinstance(obj, dict):
            tensors = [v for v in obj.values() if isinstance(v, torch.Tensor)]
            if len(tensors) != 1:
                raise InputError(f"{path}: expected one tensor, found keys {list(obj)}")
            obj = tensors[0]
        if not isinstance(obj, torch.Tensor):
            raise InputError(f"{path}: expected a tensor, got {type(obj).__name__}")
        tensor = obj.float()
    else:
        raise InputError(f"{path}: text embeddings must be .npy or .pt")
    if tensor.shape != (num_classes, dim):
        raise InputError(
            f"{path}: text embeddings have shape {tuple(tensor.shape)}, expected ({num_classes}, {dim}) "
            f"({num_classes} classes, text_dim {dim})"
        )
    if not torch.isfinite(tensor).all():
        raise InputError(f"{path}: text embeddings contain NaN or inf")
    return normalize(tensor)


def class_text_embeddings(
    class_prompts: list[str] | tuple[str, ...],
    *,
    model_name: str,
    dim: int,
    template: str,
    weights: str | Path | None = None,
    embeddings_file: str | Path | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, str]:
    """(K, D) embeddings and a short description of where they came from."""
    k = len(class_prompts)
    if embeddings_file is not None:
        return load_text_embeddings(embeddings_file, k, dim), f"file:{Path(embeddings_file).name}"
    texts = prompts_for(class_prompts, template)
    if weights is None:
        message = (
            f"NO CLIP TEXT WEIGHTS: using a RANDOMLY INITIALISED '{model_name}' text encoder. "
            "Class names carry no meaning for this model; put the CLIP weights in models/ "
            "(see `taseg weights`) or pass precomputed embeddings."
        )
        warnings.warn(message, stacklevel=2)
        source = f"random:{model_name}:seed{seed}"
    else:
        source = f"open_clip:{model_name}:{Path(weights).name}"
    embeddings = encode_with_open_clip(texts, model_name, weights, seed=seed)
    if embeddings.shape != (k, dim):
        raise InputError(f"open_clip '{model_name}' gives {embeddings.shape[1]}-d text embeddings, config says text_dim {dim}")
    return embeddings, source
