"""The models a benchmark times: TASeg with random frozen weights, the plain SAM image
encoder with the very same weights, and their FLOP counts."""
from __future__ import annotations

import warnings

import torch
from segment_anything.modeling import ImageEncoderViT

from taseg_ros.bench.timing import StageClock
from taseg_ros.classes import ClassInfo
from taseg_ros.model.config import TASegConfig
from taseg_ros.model.encoder import resize_position_embedding
from taseg_ros.model.sam_parts import SamParts
from taseg_ros.model.taseg import TASeg, build_model

# Stages of one forward pass, in the order a frame goes through them.
STAGES = (
    "sam_vit",  # SAM's frozen ViT: patch embed, blocks (frozen qkv), neck
    "thermal_embed",  # thermal patch embedding (eq. 1)
    "dffm",  # Dynamic Feature Fusion Modules (eqs. 2-4), or the concatenation baseline
    "lora",  # LoRA on q/v, unmerged: the low-rank products plus split/add/concat
    "decoder",  # SAM prompt-free two-way transformer (with LoRA) + mask upscaling
    "text_head",  # text cross-attention (eq. 8) + 1x1 class projection
    "upsample",  # bilinear upsampling of the 1/4-resolution logits to the input size
)

STAGE_LABELS = {
    "sam_vit": "SAM ViT encoder (frozen)",
    "thermal_embed": "thermal patch embed",
    "dffm": "DFFM fusion",
    "lora": "encoder LoRA q/v",
    "decoder": "decoder (2-way tf + upscale)",
    "text_head": "text attention + head",
    "upsample": "logit upsampling",
}


def random_text_embeddings(cfg: TASegConfig, num_classes: int, seed: int) -> torch.Tensor:
    """Unit-norm random class embeddings: the text encoder runs once at model creation and
    never at inference, so its weights play no part in timing."""
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(num_classes, cfg.text_dim, generator=generator), dim=-1)


def build_random_model(cfg: TASegConfig, class_info: ClassInfo, seed: int, device: str | torch.device = "cpu") -> TASeg:
    """TASeg with seeded random frozen weights (no SAM file needed); the caller says so in its output."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # build_model's "NO SAM CHECKPOINT" warning: the report states it once
        model = build_model(cfg, class_info, random_text_embeddings(cfg, class_info.num_classes, seed), seed=seed)
    return model.to(device).eval()


def plain_sam_encoder(model: TASeg) -> ImageEncoderViT:
    """segment_anything's ImageEncoderViT of the model's size, sharing the model's frozen
    weights (LoRA wrappers unwrapped, LoRA factors left out)."""
    with torch.device("meta"):
        plain = SamParts(model.cfg).image_encoder
    state = {
        name.replace(".qkv.qkv.", ".qkv."): tensor
        for name, tensor in model.image_encoder.vit.state_dict().items()
        if ".lora_" not in name
    }
    plain.load_state_dict(state, strict=True, assign=True)
    return plain.eval()


def plain_encoder_forward(encoder: ImageEncoderViT, rgb: torch.Tensor) -> torch.Tensor:
    """SAM's own forward at 1024x1024; at other sizes the same steps with the position table
    resampled as TASeg's encoder does (SAM adds its 64x64 table as is, which fits only 1024)."""
    grid = (rgb.shape[-2] // encoder.patch_embed.proj.stride[0], rgb.shape[-1] // encoder.patch_embed.proj.stride[1])
    if encoder.pos_embed is None or tuple(encoder.pos_embed.shape[1:3]) == grid:
        return encoder(rgb)
    x = encoder.patch_embed(rgb)
    x = x + resize_position_embedding(encoder.pos_embed, x.shape[1:3])
    for block in encoder.blocks:
        x = block(x)
    return encoder.neck(x.permute(0, 3, 1, 2))


def attach_stage_clock(model: TASeg, clock: StageClock) -> None:
    """Hook the stage boundaries of `model` into `clock` (raw stages; see derive_stages)."""
    encoder, decoder = model.image_encoder, model.mask_decoder
    clock.attach(model, "forward")
    clock.attach(encoder, "encoder")
    clock.attach(encoder.thermal_patch_embed, "thermal_embed")
    for fusion in list(encoder.dffm or []) + ([encoder.concat_fusion] if encoder.concat_fusion is not None else []):
        clock.attach(fusion, "dffm")
    for block in encoder.vit.blocks:
        qkv = block.attn.qkv
        if hasattr(qkv, "qkv") and isinstance(qkv.qkv, torch.nn.Module):  # LoRAQKV around the frozen Linear
            clock.attach(qkv, "qkv_with_lora")
            clock.attach(qkv.qkv, "qkv_frozen")
    clock.attach(decoder, "decoder_total")
    for part in (decoder.text_attention, decoder.head):
        if part is not None:
            clock.attach(part, "text_head")


def derive_stages(record: dict[str, float]) -> dict[str, float]:
    """Raw hook intervals of one forward -> the STAGES, which add up to the forward time."""
    get = record.get
    lora = get("qkv_with_lora", 0.0) - get("qkv_frozen", 0.0)
    encoder_own = get("thermal_embed", 0.0) + get("dffm", 0.0) + lora
    return {
        "sam_vit": get("encoder", 0.0) - encoder_own,
        "thermal_embed": get("thermal_embed", 0.0),
        "dffm": get("dffm", 0.0),
        "lora": lora,
        "decoder": get("decoder_total", 0.0) - get("text_head", 0.0),
        "text_head": get("text_head", 0.0),
        "upsample": get("forward", 0.0) - get("encoder", 0.0) - get("decoder_total", 0.0),
    }


def count_flops(cfg: TASegConfig, class_info: ClassInfo, padded_hw: tuple[int, int]) -> dict[str, int]:
    """FLOPs (multiply-add = 2) of one frame, counted by torch.utils.flop_counter on a
    shape-only (meta) model: TASeg encoder, plain SAM encoder, whole TASeg forward."""
    from torch.utils.flop_counter import FlopCounterMode

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(cfg, class_info, torch.zeros(class_info.num_classes, cfg.text_dim), device="meta").eval()
    with torch.device("meta"):
        plain = SamParts(cfg).image_encoder.eval()
    rgb = torch.empty(1, 3, *padded_hw, device="meta")
    thermal = torch.empty(1, 1, *padded_hw, device="meta")
    counts = {}
    for name, run in (
        ("taseg_encoder", lambda: model.image_encoder(rgb, thermal)),
        ("plain_encoder", lambda: plain_encoder_forward(plain, rgb)),
        ("forward", lambda: model(rgb, thermal)),
    ):
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            run()
        counts[name] = int(counter.get_total_flops())
    return counts
