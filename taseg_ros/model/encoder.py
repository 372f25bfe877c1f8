"""The RGB-T image encoder: SAM's frozen ViT with a thermal branch fused before every
block (eqs. 1-4) and LoRA on Q and V (eq. 5)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT
from torch import nn
from torch.utils.checkpoint import checkpoint

from taseg_ros.model.config import TASegConfig
from taseg_ros.model.fusion import DFFM, ConcatFusion, thermal_patch_embed_from_rgb
from taseg_ros.model.lora import add_encoder_lora


def resize_position_embedding(pos_embed: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """SAM's absolute position embedding (1, 64, 64, C) resampled to another token grid,
    for native-resolution inputs. (SAM's relative position tables resample themselves.)"""
    if tuple(pos_embed.shape[1:3]) == tuple(grid_hw):
        return pos_embed
    resized = F.interpolate(pos_embed.permute(0, 3, 1, 2), size=grid_hw, mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1)


class RGBTImageEncoder(nn.Module):
    def __init__(self, vit: ImageEncoderViT, cfg: TASegConfig) -> None:
        super().__init__()
        self.vit = vit  # frozen SAM encoder; its qkv Linears get wrapped with LoRA below
        self.patch_size = cfg.encoder.patch_size
        self.thermal_patch_embed = thermal_patch_embed_from_rgb(vit.patch_embed)
        dim = cfg.encoder.embed_dim
        if cfg.dffm:
            self.dffm = nn.ModuleList(DFFM(dim, cfg.dffm_hidden, cfg.se_reduction) for _ in vit.blocks)
            self.concat_fusion = None
        else:
            self.dffm = None
            self.concat_fusion = ConcatFusion(dim)
        add_encoder_lora(vit, cfg.encoder_lora_rank, cfg.lora_alpha)
        # Activation checkpointing (training only; `train.grad_checkpointing` sets it): each
        # block with its DFFM keeps only its two inputs for backward and recomputes the rest,
        # which cuts vit_h's saved activations several-fold for one extra block forward.
        # SAM's own Attention stays: F.scaled_dot_product_attention with the decomposed
        # relative-position bias as attn_mask gives the same result (2e-7) but, on the CPU, saves
        # 4 % more for backward and trains 4 % slower (the bias is a full N x N tensor either
        # way); scripts/bench_train_memory.py --attention. Not measured on a GPU.
        self.grad_checkpointing = False

    def forward(self, rgb: torch.Tensor, thermal: torch.Tensor) -> torch.Tensor:
        """rgb (B, 3, H, W) and thermal (B, 1, H, W), normalised, H and W multiples of the
        patch size -> image embedding (B, 256, H/16, W/16)."""
        x = self.vit.patch_embed(rgb)
        thermal_tokens = self.thermal_patch_embed(thermal)
        if self.concat_fusion is not None:
            x = self.concat_fusion(x, thermal_tokens)
        x = x + resize_position_embedding(self.vit.pos_embed, x.shape[1:3])
        fused = None if self.dffm is None else thermal_tokens  # F_DFFM^0 = e_th (eq. 4)
        for index in range(len(self.vit.blocks)):
            if self.grad_checkpointing and torch.is_grad_enabled():
                # No dropout or other randomness inside a block: no RNG state to replay.
                x, fused = checkpoint(self._block, index, x, fused, use_reentrant=False, preserve_rng_state=False)
            else:
                x, fused = self._block(index, x, fused)
        return self.vit.neck(x.permute(0, 3, 1, 2))

    def _block(self, index: int, x: torch.Tensor, fused: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """SAM block `index` with its DFFM: eqs. (2) and (3)."""
        if fused is None:
            return self.vit.blocks[index](x), None
        fused = self.dffm[index](fused, x)  # eq. (2)
        return self.vit.blocks[index](x + fused), fused  # eq. (3)
