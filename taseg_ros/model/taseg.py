"""TASeg: SAM's frozen encoder and decoder, adapted with a thermal branch (DFFM), LoRA and
a text-aware head. `build_model` is the one way to make one from a config."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from taseg_ros.classes import ClassInfo
from taseg_ros.errors import InputError
from taseg_ros.model.config import TASegConfig
from taseg_ros.model.decoder import TextAwareMaskDecoder
from taseg_ros.model.encoder import RGBTImageEncoder
from taseg_ros.model.inputs import FrameTransform, InputGeometry
from taseg_ros.model.sam_parts import SamParts, load_sam_weights, init_random_frozen_weights


@dataclass(frozen=True)
class FrozenSource:
    """Where the frozen SAM weights came from; recorded in checkpoints."""

    kind: str  # "sam_checkpoint" | "random"
    name: str = ""  # official file name
    sha256: str = ""
    seed: int = 0


class TASeg(nn.Module):
    def __init__(
        self,
        cfg: TASegConfig,
        sam: SamParts,
        class_info: ClassInfo,
        text_embeddings: torch.Tensor | None,
        frozen_source: FrozenSource,
        text_source: str = "",
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.class_info = class_info
        self.transform = FrameTransform(cfg)
        self.frozen_source = frozen_source
        self.text_source = text_source
        sam.requires_grad_(False)
        self.image_encoder = RGBTImageEncoder(sam.image_encoder, cfg)
        self.mask_decoder = TextAwareMaskDecoder(
            sam.prompt_encoder, sam.mask_decoder, cfg, class_info.num_classes, text_embeddings if cfg.text else None
        )
        # Only our additions train: SAM's weights were frozen above, before LoRA/peft
        # wrapped them; peft itself also leaves its base layers frozen.
        for name, param in self.named_parameters():
            param.requires_grad_(is_trainable_name(name))

    @property
    def num_classes(self) -> int:
        return self.class_info.num_classes

    def preprocess(self, rgb: torch.Tensor, thermal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, InputGeometry]:
        """Frames (rgb (B,3,H,W) 0..255, thermal (B,1,H,W) in [0,1]) -> this model's inputs and
        the geometry to map its logits back (see ``model.inputs.FrameTransform``)."""
        return self.transform.preprocess(rgb, thermal)

    def postprocess(self, logits: torch.Tensor, geometry: InputGeometry) -> torch.Tensor:
        """Logits over the prepared input -> logits over the original frames."""
        return self.transform.postprocess(logits, geometry)

    def forward(self, rgb: torch.Tensor, thermal: torch.Tensor) -> torch.Tensor:
        """Prepared rgb (B, 3, H, W) and thermal (B, 1, H, W) (``preprocess``) -> per-class
        logits (B, K, H, W) over the padded input."""
        if rgb.shape[-2:] != thermal.shape[-2:] or rgb.shape[1] != 3 or thermal.shape[1] != 1:
            raise InputError(f"expected rgb (B,3,H,W) and thermal (B,1,H,W), got {tuple(rgb.shape)} and {tuple(thermal.shape)}")
        patch = self.cfg.encoder.patch_size
        if rgb.shape[-2] % patch or rgb.shape[-1] % patch:
            raise InputError(f"input size {tuple(rgb.shape[-2:])} is not a multiple of {patch}; pad it first")
        image_embedding = self.image_encoder(rgb, thermal)
        logits = self.mask_decoder(image_embedding)  # 1/4 resolution
        return F.interpolate(logits, size=rgb.shape[-2:], mode="bilinear", align_corners=False)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint stores: trainable tensors plus the text embeddings."""
        state = {n: p for n, p in self.named_parameters() if p.requires_grad}
        if self.mask_decoder.text_embeddings is not None:
            state["mask_decoder.text_embeddings"] = self.mask_decoder.text_embeddings
        return state


# Parameter groups of the paper's breakdown, by name. Frozen SAM weights match none.
PARAMETER_GROUPS = {
    "thermal_patch_embed": ("image_encoder.thermal_patch_embed.",),
    "dffm": ("image_encoder.dffm.", "image_encoder.concat_fusion."),
    "encoder_lora": ("image_encoder.vit.",),
    "decoder_lora": ("mask_decoder.sam_decoder.",),
    "text_attention": ("mask_decoder.text_attention.",),
    "head": ("mask_decoder.head.", "mask_decoder.class_tokens"),
}


def parameter_group(name: str) -> str | None:
    """The breakdown group of a parameter name, or None for a frozen SAM weight."""
    for group, prefixes in PARAMETER_GROUPS.items():
        if name.startswith(prefixes):
            if group in ("encoder_lora", "decoder_lora") and ".lora_" not in name:
                return None
            return group
    return None


def is_trainable_name(name: str) -> bool:
    return parameter_group(name) is not None


def parameter_breakdown(model: TASeg) -> dict[str, int]:
    counts = {group: 0 for group in PARAMETER_GROUPS}
    frozen = 0
    for name, param in model.named_parameters():
        group = parameter_group(name)
        if group is None:
            frozen += param.numel()
        else:
            counts[group] += param.numel()
    counts["total_trainable"] = sum(counts[g] for g in PARAMETER_GROUPS)
    counts["frozen"] = frozen
    return counts


def build_model(
    cfg: TASegConfig,
    class_info: ClassInfo,
    text_embeddings: torch.Tensor | None,
    *,
    sam_checkpoint: str | Path | None = None,
    sam_sha256: str = "",
    seed: int = 0,
    text_source: str = "",
    device: str | torch.device = "cpu",
) -> TASeg:
    """A new TASeg with trainable parts at their initial values.

    With `sam_checkpoint` the frozen weights are the official SAM weights. Without, they
    are random (seeded) and a loud warning says so: such a model only serves tests, demos
    and pipeline checks. `device="meta"` builds shapes only (parameter counting)."""
    generator = torch.Generator().manual_seed(seed)
    if str(device) == "meta":
        with torch.device("meta"):
            sam = SamParts(cfg)
            return TASeg(cfg, sam, class_info, text_embeddings, FrozenSource("random", seed=seed), text_source)
    if sam_checkpoint is not None:
        with torch.device("meta"):  # no 2.5 GB random init just to overwrite it
            sam = SamParts(cfg)
        load_sam_weights(sam, sam_checkpoint)
        source = FrozenSource("sam_checkpoint", Path(sam_checkpoint).name, sam_sha256, seed)
    else:
        expected = f"config '{cfg.name}' expects {cfg.sam_checkpoint}" if cfg.sam_checkpoint else f"config '{cfg.name}' has no pretrained SAM"
        warnings.warn(
            f"NO SAM CHECKPOINT: {expected}; the frozen encoder and decoder are RANDOM. Such a model is for "
            "tests, demos and pipeline checks; real segmentation needs official SAM weights (see `taseg weights`).",
            stacklevel=2,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            sam = SamParts(cfg)
        init_random_frozen_weights(sam, generator)
        source = FrozenSource("random", seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        model = TASeg(cfg, sam, class_info, text_embeddings, source, text_source)
    return model.to(device)
