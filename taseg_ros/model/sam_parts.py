"""The frozen SAM modules, built with segment_anything's own classes, and the official
checkpoint loader.

build_sam.py in segment_anything builds a whole `Sam` and loads with a bare torch.load;
we need the three parts separately (shapes from our config, including the tiny one),
a weights_only load, and error messages that name the file and the mismatching keys.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer
from torch import nn

from taseg_ros.errors import InputError, MissingInputError
from taseg_ros.model.config import TASegConfig


class SamParts(nn.Module):
    """image_encoder / prompt_encoder / mask_decoder, named as in SAM's state dict."""

    def __init__(self, cfg: TASegConfig) -> None:
        super().__init__()
        enc, dec = cfg.encoder, cfg.decoder
        if enc.out_chans != dec.transformer_dim:
            raise InputError(f"config '{cfg.name}': encoder out_chans must equal decoder transformer_dim")
        grid = enc.img_size // enc.patch_size
        self.image_encoder = ImageEncoderViT(
            depth=enc.depth,
            embed_dim=enc.embed_dim,
            img_size=enc.img_size,
            mlp_ratio=enc.mlp_ratio,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            num_heads=enc.num_heads,
            patch_size=enc.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=enc.global_attn_indexes,
            window_size=enc.window_size,
            out_chans=enc.out_chans,
        )
        self.prompt_encoder = PromptEncoder(
            embed_dim=dec.transformer_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(enc.img_size, enc.img_size),
            mask_in_chans=16,
        )
        self.mask_decoder = MaskDecoder(
            num_multimask_outputs=dec.num_multimask_outputs,
            transformer=TwoWayTransformer(
                depth=dec.depth, embedding_dim=dec.transformer_dim, mlp_dim=dec.mlp_dim, num_heads=dec.num_heads
            ),
            transformer_dim=dec.transformer_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=dec.iou_head_hidden_dim,
        )


def init_random_frozen_weights(parts: SamParts, generator: torch.Generator) -> None:
    """Make random frozen weights a usable stand-in for a trained SAM (tiny config, demos).

    - SAM initialises its position embeddings to zero (the checkpoint fills them); give them
      small random values so that position matters, as it does in a trained SAM.
    - A trained SAM's mask upscaler (two 2x2 stride-2 transposed convolutions) gives the
      same embedding for the same content at every sub-pixel phase. Random kernels give four
      unrelated maps per layer, sixteen after two, which scrambles the per-pixel mask
      embedding e_M that the head reads. Random stand-ins therefore share one kernel over
      the 2x2 positions (nearest-neighbour upsampling followed by a random 1x1 map).
    """
    enc = parts.image_encoder
    with torch.no_grad():
        enc.pos_embed.copy_(torch.randn(enc.pos_embed.shape, generator=generator) * 0.02)
        for blk in enc.blocks:
            for p in (blk.attn.rel_pos_h, blk.attn.rel_pos_w):
                p.copy_(torch.randn(p.shape, generator=generator) * 0.02)
        for layer in parts.mask_decoder.output_upscaling:
            if isinstance(layer, nn.ConvTranspose2d):
                layer.weight.copy_(layer.weight[:, :, :1, :1].expand_as(layer.weight))


# `Sam` keeps its normalisation constants as buffers; they are not part of the three modules.
SAM_PREPROCESSING_KEYS = ("pixel_mean", "pixel_std")


def read_sam_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an official SAM `.pth` checkpoint safely (no code execution)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"SAM checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - zip/pickle errors come in many types
        try:  # files not saved in the zip format cannot be memory-mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001
            raise InputError(
                f"{path}: cannot read as a SAM checkpoint ({type(exc).__name__}: {exc}); "
                "the file is corrupt, truncated, or not a PyTorch weights file"
            ) from exc
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path}: not a SAM state dict (expected a mapping of parameter names to tensors)")
    return state


def check_state_fits(source: str | Path, problem: str, expected: dict, stored: dict) -> None:
    """Raise a ValueError naming `source` and listing missing/unexpected keys and shape
    mismatches when the tensors in `stored` do not fit a model's `expected` state."""
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    mismatched = [
        f"{k}: file {tuple(stored[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(stored))
        if tuple(stored[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        lines = [f"{source}: {problem}"]
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
            if items:
                lines.append(f"  {title}: " + ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else ""))
        raise InputError("\n".join(lines))


def load_sam_weights(parts: SamParts, path: str | Path) -> None:
    """Load an official SAM checkpoint into `parts` (which may live on the meta device).

    Every key must match in name and shape; otherwise the error lists the file, the
    missing/unexpected keys and the shape mismatches (e.g. a ViT-B file for a ViT-H config).
    """
    state = {k: v for k, v in read_sam_state_dict(path).items() if k not in SAM_PREPROCESSING_KEYS}
    check_state_fits(path, "does not fit this model's SAM configuration", parts.state_dict(keep_vars=True), state)
    parts.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, assign=True)
