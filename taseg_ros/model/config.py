"""Model configurations: a registry of named configs plus YAML files that override one.

A YAML config file names a base config and overrides fields, e.g.

    base: vit_b
    encoder_lora_rank: 8
    text: false
    decoder: {depth: 2}

Values are read and checked by taseg_ros.config_io (type, range, shape); a bad one is an error
naming the file, the key and the expected form.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from taseg_ros.config_io import ConfigError, check_fields, from_mapping, merge, setting
from taseg_ros.errors import MissingInputError

RESOLUTION_MODES = ("native", "sam1024")

# The longest side (pixels) of the network's input when no other limit is given: larger frames are
# resized down, aspect kept, before the encoder, and the labels resized back up (model.inputs). In
# native mode the ViT sees every pixel and its global attention grows with the square of the token
# count: one 4000x3000 pair asked the tiny model for over 24 GB. 1920 keeps full-HD frames as they
# are. The node's max_input_size parameter and the --max-input-size option default to it.
DEFAULT_MAX_INPUT_SIZE = 1920
MIN_MAX_INPUT_SIZE = 32  # two patches of the smallest encoder: anything less carries no usable detail


def max_input_size_problem(value: object) -> str | None:
    """The one rule for a max input size: 0 (no limit) or at least MIN_MAX_INPUT_SIZE pixels; None when fine."""
    if isinstance(value, bool) or not isinstance(value, int) or not (value == 0 or value >= MIN_MAX_INPUT_SIZE):
        return f"must be 0 (no limit) or a whole number of pixels >= {MIN_MAX_INPUT_SIZE}"
    return None


@dataclass(frozen=True)
class EncoderConfig:
    """SAM ViT image encoder shape (segment_anything.build_sam values)."""

    embed_dim: int = setting(ge=1)
    depth: int = setting(ge=1)
    num_heads: int = setting(ge=1)
    global_attn_indexes: tuple[int, ...] = setting(ge=0)
    window_size: int = setting(14, ge=1)
    patch_size: int = setting(16, ge=1)
    img_size: int = setting(1024, ge=1)
    mlp_ratio: float = setting(4.0, gt=0)
    out_chans: int = setting(256, ge=1)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.embed_dim % self.num_heads:
            raise ConfigError("embed_dim", f"must be divisible by num_heads ({self.num_heads})", self.embed_dim)
        late = [i for i in self.global_attn_indexes if i >= self.depth]
        if late:
            raise ConfigError("global_attn_indexes", f"block indexes must be < depth ({self.depth})", self.global_attn_indexes)


@dataclass(frozen=True)
class DecoderConfig:
    """SAM prompt encoder + mask decoder shape. SAM uses 256/2/2048/8 for every size."""

    transformer_dim: int = setting(256, ge=1)
    depth: int = setting(2, ge=1)
    mlp_dim: int = setting(2048, ge=1)
    num_heads: int = setting(8, ge=1)
    num_multimask_outputs: int = setting(3, ge=1)
    iou_head_hidden_dim: int = setting(256, ge=1)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.transformer_dim % self.num_heads:
            raise ConfigError("transformer_dim", f"must be divisible by num_heads ({self.num_heads})", self.transformer_dim)


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
    dffm_hidden: int = setting(216, ge=1)
    se_reduction: int = setting(4, ge=1)
    encoder_lora_rank: int = setting(4, ge=1)
    decoder_lora_rank: int = setting(4, ge=1)
    lora_alpha: float = setting(4.0, gt=0)  # LoRA scale = alpha / rank (1.0 with the defaults)
    text_attn_dim: int = setting(256, ge=1)  # d_k of the text cross-attention (eq. 8)

    # --- text (CLIP) ------------------------------------------------------------------
    clip_model: str = "ViT-L-14"  # open_clip model name; the paper uses a ViT-L CLIP
    clip_weights: str | None = "ViT-L-14.pt"  # file name under models/ (OpenAI release, see `taseg weights`)
    text_dim: int = setting(768, ge=1)  # CLIP text embedding width of clip_model
    prompt_template: str = "a photo of a {}."

    # --- input ------------------------------------------------------------------------
    # "native": no resize, pad to /16; "sam1024": SAM's resize+pad to 1024
    resolution: str = setting("native", choices=RESOLUTION_MODES)
    # SAM's RGB statistics (0..255 scale); thermal in [0, 1] is standardised with these.
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = setting((58.395, 57.12, 57.375), gt=0)
    thermal_mean: float = 0.449
    thermal_std: float = setting(0.226, gt=0)

    def __post_init__(self) -> None:
        check_fields(self)

    def replace(self, **changes) -> "TASegConfig":
        return merge(self, changes, f"config '{self.name}'")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "model config") -> "TASegConfig":
        return from_mapping(cls, data, where)


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
            raise ConfigError("", f"unknown model config '{key}': use one of {sorted(MODEL_CONFIGS)} or a YAML file")
        if not path.is_file():
            raise MissingInputError(f"model config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError("", f"not valid YAML: {exc}", where=str(path)) from None
        if not isinstance(data, dict) or "base" not in data:
            raise ConfigError("", f"a model config file needs 'base: <one of {sorted(MODEL_CONFIGS)}>'", where=str(path))
        base = data.pop("base")
        if base not in MODEL_CONFIGS:
            raise ConfigError("base", f"expected one of {sorted(MODEL_CONFIGS)}", base, where=str(path))
        data.setdefault("name", f"{base}:{path.stem}")
        cfg = merge(MODEL_CONFIGS[base], data, str(path))
    return cfg.replace(**overrides) if overrides else cfg
