"""Thermal branch of the encoder: thermal patch embedding (eq. 1) and the Dynamic Feature
Fusion Module (eqs. 2-4), plus the paper's concatenation baseline (DFFM off).

All tensors here are channels-last (B, H, W, C) like SAM's ViT blocks, so the paper's 1x1
convolutions are nn.Linear over the channel axis (the same operation, no layout changes).
"""
from __future__ import annotations

import torch
from segment_anything.modeling.image_encoder import PatchEmbed
from torch import nn


def thermal_patch_embed_from_rgb(rgb_patch_embed: PatchEmbed) -> PatchEmbed:
    """PatchEmbed* of eq. (1): a trainable 1-channel copy of SAM's RGB patch embedding.

    Summing the RGB kernels over input channels makes a grey image (R=G=B=t) embed as
    SAM would embed it, a better start than random for a frozen backbone."""
    proj = rgb_patch_embed.proj
    thermal = PatchEmbed(
        kernel_size=proj.kernel_size, stride=proj.stride, padding=proj.padding, in_chans=1, embed_dim=proj.out_channels
    ).to(device=proj.weight.device, dtype=proj.weight.dtype)
    if proj.weight.device.type != "meta":
        with torch.no_grad():
            thermal.proj.weight.copy_(proj.weight.sum(dim=1, keepdim=True))
            thermal.proj.bias.copy_(proj.bias)
    return thermal


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018) on channels-last tensors.

    torchvision.ops.SqueezeExcitation is NCHW-only; using it would mean two permutes per
    block, so these four lines are written out."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        squeezed = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, squeezed)
        self.fc2 = nn.Linear(squeezed, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc2(torch.relu(self.fc1(x.mean(dim=(1, 2), keepdim=True))))
        return x * torch.sigmoid(scale)


class DFFM(nn.Module):
    """One Dynamic Feature Fusion Module, eq. (2):

        F_DFFM^i = conv_out(conv_thermal(F_DFFM^{i-1}) + SE(conv_rgb(F_TB^{i-1})))

    conv_out is zero-initialised, so at the start of fine-tuning the fused input of every
    SAM block equals its RGB input and the encoder reproduces pretrained SAM exactly."""

    def __init__(self, dim: int, hidden: int, se_reduction: int) -> None:
        super().__init__()
        self.conv_thermal = nn.Linear(dim, hidden)
        self.conv_rgb = nn.Linear(dim, hidden)
        self.se = SqueezeExcitation(hidden, se_reduction)
        self.conv_out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, thermal_features: torch.Tensor, rgb_features: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv_thermal(thermal_features) + self.se(self.conv_rgb(rgb_features)))


class ConcatFusion(nn.Module):
    """The paper's baseline (Table III, DFFM off): concatenate RGB and thermal patch
    embeddings and project back to the ViT width once, before the first block.

    Initialised to [I | 0] so the projection starts as the identity on the RGB tokens."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(2 * dim, dim)
        with torch.no_grad():
            if self.proj.weight.device.type != "meta":
                self.proj.weight.zero_()
                self.proj.weight[:, :dim].copy_(torch.eye(dim))
                self.proj.bias.zero_()

    def forward(self, rgb_tokens: torch.Tensor, thermal_tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.cat((rgb_tokens, thermal_tokens), dim=-1))
