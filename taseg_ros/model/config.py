"""Model configurations: a registry of named configs plus YAML files that override one.

A YAML config file names a base config and overrides fields, e.g.

    base: vit_b
    encoder_lora_rank: 8
    text: false
    decoder: {depth: 2}
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

RESOLUTION_MODES = ("native", "sam1024")


@dataclass(frozen=True)
class EncoderConfig:
    """SAM ViT image encoder shape (segment_anything.build_sam values)."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14
    patch_size: int = 16
    img_size: int = 1024
    mlp_ratio: float = 4.0
    out_chans: int = 256


@dataclass(frozen=True)
class DecoderConfig:
    """SAM prompt encoder + mask decoder shape. SAM uses 256/2/2048/8 for every size."""

    transformer_dim: int = 256
    depth: int = 2
    mlp_dim: int = 2048
    num_heads: int = 8
    num_multimask_outputs: int = 3
    iou_head_hidden_dim: int = 256


@dataclass(frozen=True)
class TASegConfig:
    name: str
    encoder: EncoderConfig
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    # Official SAM checkpoint file this config's frozen weights come from (None: tiny, random).
    sam_checkpoint: str | None = None

    # --- paper Table III ablation switches -------------------------------------------
    dffm: bool = True  # off: RGB and thermal patch embeddings concatenated and projected
    decoder_lora: bool = True
    text: bool = True  # off: K learnable class tokens through the decoder (SAMed style)

    # --- trainable parts ------------------------------------------------------------
    # DFFM hidden width: 216 puts vit_h's trainable total at 28.59 M, next to the paper's
    # 28.77 M (the paper does not give the width; 216 is the multiple of 8 closest to it).
    dffm_hidden: int = 216
    se_reduction: int = 4
    encoder_lora_rank: int = 4
    decoder_lora_rank: int = 4
    lora_alpha: float = 4.0  # LoRA scale = alpha / rank (1.0 with the defaults)
    text_attn_dim: int = 256  # d_k of the text cross-attention (eq. 8)

    # --- text (CLIP) ------------------------------------------------------------------
    clip_model: str = "ViT-L-14"  # open_clip model name; the paper uses a ViT-L CLIP
    clip_weights: str | None = "ViT-L-14.pt"  # file name under models/ (OpenAI release, see `taseg weights`)
    text_dim: int = 768  # CLIP text embedding width of clip_model
    prompt_template: str = "a photo of a {}."

    # --- input ------------------------------------------------------------------------
    resolution: str = "native"  # "native": no resize, pad to /16; "sam1024": SAM's resize+pad to 1024
    # SAM's RGB statistics (0..255 scale); thermal in [0, 1] is standardised with these.
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    thermal_mean: float = 0.449
    thermal_std: float = 0.226

    def __post_init__(self) -> None:
        if self.resolution not in RESOLUTION_MODES:
            raise ValueError(f"config '{self.name}': resolution '{self.resolution}' is not one of {RESOLUTION_MODES}")
        if self.encoder.embed_dim % self.encoder.num_heads:
            raise ValueError(f"config '{self.name}': encoder embed_dim must be divisible by num_heads")
        for key in ("dffm_hidden", "se_reduction", "encoder_lora_rank", "decoder_lora_rank", "text_attn_dim", "text_dim"):
            if getattr(self, key) < 1:
                raise ValueError(f"config '{self.name}': {key} must be >= 1")

    def replace(self, **changes) -> "TASegConfig":
        return _merge(self, changes, self.name)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TASegConfig":
        data = dict(data)
        data["encoder"] = EncoderConfig(**{**data["encoder"], "global_attn_indexes": tuple(data["encoder"]["global_attn_indexes"])})
        data["decoder"] = DecoderConfig(**data["decoder"])
        for key in ("pixel_mean", "pixel_std"):
            if key in data:
                data[key] = tuple(data[key])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys {sorted(unknown)}")
        return cls(**data)


def _merge(cfg, changes: dict, where: str):
    """Return a copy of dataclass `cfg` with `changes` applied; nested dicts merge into nested configs."""
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    updates = {}
    for key, value in changes.items():
        if key not in fields:
            raise ValueError(f"{where}: unknown config key '{key}' (known: {sorted(fields)})")
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            value = _merge(current, value, f"{where}.{key}")
        elif isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        updates[key] = value
    return dataclasses.replace(cfg, **updates)


_SAM_DECODER = DecoderConfig()

MODEL_CONFIGS: dict[str, TASegConfig] = {
    # A few-MB model with SAM's structure (windowed + global blocks, full decoder) for tests,
    # the offline demo and CPU smoke checks. Random frozen weights: there is no "tiny SAM".
    # The decoder keeps 128 channels (SAM: 256) so that the per-pixel mask embedding e_M has
    # 16 channels: with 8, random frozen weights lose small objects before the head sees them.
    "tiny": TASegConfig(
        name="tiny",
        encoder=EncoderConfig(embed_dim=64, depth=4, num_heads=2, global_attn_indexes=(1, 3), window_size=7, out_chans=128),
        decoder=DecoderConfig(transformer_dim=128, depth=2, mlp_dim=256, num_heads=8, iou_head_hidden_dim=64),
        dffm_hidden=32,
        text_attn_dim=64,
        clip_model="taseg-tiny-text",
        clip_weights=None,
        text_dim=512,
        sam_checkpoint=None,
    ),
    "vit_b": TASegConfig(
        name="vit_b",
        encoder=EncoderConfig(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
        decoder=_SAM_DECODER,
        sam_checkpoint="sam_vit_b_01ec64.pth",
    ),
    "vit_l": TASegConfig(
        name="vit_l",
        encoder=EncoderConfig(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
        decoder=_SAM_DECODER,
        sam_checkpoint="sam_vit_l_0b3195.pth",
    ),
    "vit_h": TASegConfig(
        name="vit_h",
        encoder=EncoderConfig(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
        decoder=_SAM_DECODER,
        sam_checkpoint="sam_vit_h_4b8939.pth",
    ),
}


def get_config(name_or_path: str | Path, **overrides) -> TASegConfig:
    """A registered config by name, or a YAML file (`base: NAME` + overrides)."""
    key = str(name_or_path)
    if key in MODEL_CONFIGS:
        cfg = MODEL_CONFIGS[key]
    else:
        path = Path(key)
        if not path.suffix:
            raise ValueError(f"unknown model config '{key}': use one of {sorted(MODEL_CONFIGS)} or a YAML file")
        if not path.is_file():
            raise FileNotFoundError(f"model config file not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict) or "base" not in data:
            raise ValueError(f"{path}: a model config file needs 'base: <one of {sorted(MODEL_CONFIGS)}>'")
        base = data.pop("base")
        if base not in MODEL_CONFIGS:
            raise ValueError(f"{path}: base '{base}' is not one of {sorted(MODEL_CONFIGS)}")
        data.setdefault("name", f"{base}:{path.stem}")
        cfg = _merge(MODEL_CONFIGS[base], data, str(path))
    return cfg.replace(**overrides) if overrides else cfg
