"""`taseg info`: architecture summary and trainable-parameter breakdown of a config."""
from __future__ import annotations

from taseg_ros.classes import load_classes
from taseg_ros.errors import safe_text
from taseg_ros.model.config import get_config

GROUP_LABELS = {
    "thermal_patch_embed": "thermal patch embedding (eq. 1)",
    "dffm": "DFFM / fusion (eqs. 2-4)",
    "encoder_lora": "encoder LoRA, q and v (eq. 5)",
    "decoder_lora": "decoder LoRA (peft)",
    "text_attention": "text cross-attention (eq. 8)",
    "head": "class head",
}


def register(subparsers) -> None:
    p = subparsers.add_parser("info", help="architecture summary and trainable-parameter breakdown")
    p.add_argument("--config", default="vit_h", help="tiny | vit_b | vit_l | vit_h | config YAML (default vit_h)")
    p.add_argument("--classes", default="mfnet", help="class list: mfnet | pst900 | kp | fmb | classes YAML (sets K)")
    p.add_argument("--checkpoint", help="describe a TASeg checkpoint instead of a config")
    p.set_defaults(func=run)


def format_count(n: int) -> str:
    return f"{n:>13,d}  ({n / 1e6:8.3f} M)"


def run(args) -> int:
    import torch

    from taseg_ros.model.checkpoint import describe_checkpoint
    from taseg_ros.model.taseg import build_model, parameter_breakdown

    if args.checkpoint:
        cfg, class_info, metadata = describe_checkpoint(args.checkpoint)
    else:
        cfg, class_info, metadata = get_config(args.config), load_classes(args.classes), {}
    # Shapes only: the meta device allocates nothing, so ViT-H counts in well under a second.
    model = build_model(cfg, class_info, torch.empty(class_info.num_classes, cfg.text_dim, device="meta"), device="meta")
    counts = parameter_breakdown(model)
    enc = cfg.encoder
    # A checkpoint's metadata is a file's text: escaped before it reaches the terminal.
    print(f"TASeg config '{safe_text(cfg.name)}'")
    print(f"  image encoder   SAM ViT: {enc.depth} blocks, width {enc.embed_dim}, {enc.num_heads} heads, "
          f"window {enc.window_size}, global blocks {list(enc.global_attn_indexes)}, patch {enc.patch_size}")
    print(f"  frozen weights  {safe_text(cfg.sam_checkpoint) if cfg.sam_checkpoint else 'random (no official SAM of this size)'}")
    print(f"  thermal fusion  {'DFFM before every block, hidden ' + str(cfg.dffm_hidden) if cfg.dffm else 'concatenated patch embeddings (baseline)'}")
    print(f"  LoRA            encoder q,v rank {cfg.encoder_lora_rank}; decoder "
          f"{'q,v rank ' + str(cfg.decoder_lora_rank) if cfg.decoder_lora else 'off'}; alpha {cfg.lora_alpha}")
    print(f"  classes         {class_info.num_classes}: {', '.join(class_info.names)}")
    print(f"  text            {'CLIP ' + safe_text(cfg.clip_model) + f' ({cfg.text_dim}-d), prompt ' + repr(cfg.prompt_template) if cfg.text else 'off (K learnable class tokens)'}")
    print(f"  resolution      {cfg.resolution}")
    if metadata:
        print(f"  checkpoint      frozen={safe_text(metadata.get('frozen'))} text={safe_text(metadata.get('text_source'))}")
    print("\nTrainable parameters")
    for group, label in GROUP_LABELS.items():
        print(f"  {label:<34}{format_count(counts[group])}")
    print(f"  {'total trainable':<34}{format_count(counts['total_trainable'])}")
    print(f"  {'frozen (SAM)':<34}{format_count(counts['frozen'])}")
    return 0
