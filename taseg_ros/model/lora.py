"""LoRA (Hu et al. 2021) for the frozen SAM blocks, eq. (5) of the paper.

Encoder: SAM fuses q, k and v into one `qkv` Linear, and eq. (5) adapts only Q and V.
peft's LoRA adapts a whole Linear (it would also change K), so the q/v-slice adapter is
written here: two rank-r pairs whose outputs are added to the first and last thirds.

Decoder: SAM's two-way transformer has separate q_proj/k_proj/v_proj Linears, which is
exactly what peft handles; we inject peft LoRA into every q_proj and v_proj there.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from taseg_ros.errors import InputError


class LoRAQKV(nn.Module):
    """A frozen fused qkv Linear plus low-rank updates of its q and v outputs:
    Q = W0q x + Bq Aq x, V = W0v x + Bv Av x, K unchanged."""

    def __init__(self, qkv: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        dim = qkv.in_features
        if qkv.out_features != 3 * dim:
            raise InputError(f"expected a fused qkv Linear ({dim} -> {3 * dim}), got {qkv.out_features} outputs")
        self.qkv = qkv
        self.dim = dim
        self.scale = alpha / rank
        factory = {"device": qkv.weight.device, "dtype": qkv.weight.dtype}
        self.lora_a_q = nn.Linear(dim, rank, bias=False, **factory)
        self.lora_b_q = nn.Linear(rank, dim, bias=False, **factory)
        self.lora_a_v = nn.Linear(dim, rank, bias=False, **factory)
        self.lora_b_v = nn.Linear(rank, dim, bias=False, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # As in peft/LoRA: A Kaiming-uniform, B zero, so the update starts at exactly 0.
        for a, b in ((self.lora_a_q, self.lora_b_q), (self.lora_a_v, self.lora_b_v)):
            nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5))
            nn.init.zeros_(b.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).split(self.dim, dim=-1)
        q = q + self.lora_b_q(self.lora_a_q(x)) * self.scale
        v = v + self.lora_b_v(self.lora_a_v(x)) * self.scale
        return torch.cat((q, k, v), dim=-1)


def add_encoder_lora(image_encoder: nn.Module, rank: int, alpha: float) -> None:
    """Wrap every SAM block's attention qkv with LoRAQKV (in place)."""
    for block in image_encoder.blocks:
        block.attn.qkv = LoRAQKV(block.attn.qkv, rank, alpha)


def add_decoder_lora(mask_decoder: nn.Module, rank: int, alpha: float, tokens_used: bool) -> None:
    """peft LoRA on q_proj and v_proj of the attention layers of SAM's two-way transformer
    (token self-attention, token-to-image and image-to-token cross-attention).

    The transformer's last layer (`final_attn_token_to_image`) only updates the tokens; when
    the head reads the image side alone (text mode), LoRA there would never get a gradient,
    so it is adapted only when the output tokens are used (`tokens_used`)."""
    from peft import LoraConfig, inject_adapter_in_model

    layers = r"layers\.\d+\.(self_attn|cross_attn_token_to_image|cross_attn_image_to_token)"
    if tokens_used:
        layers = rf"({layers}|final_attn_token_to_image)"
    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=rf".*{layers}\.(q_proj|v_proj)", bias="none"
    )
    inject_adapter_in_model(config, mask_decoder.transformer)


@torch.no_grad()
def merged_qkv(layer: LoRAQKV) -> nn.Linear:
    """The plain fused Linear that computes what `layer` computes: W_q += s Bq Aq, W_v += s Bv Av."""
    qkv = layer.qkv
    merged = nn.Linear(qkv.in_features, qkv.out_features, bias=qkv.bias is not None,
                       device=qkv.weight.device, dtype=qkv.weight.dtype)
    weight = qkv.weight.detach().clone()
    dim = layer.dim
    weight[:dim] += layer.scale * (layer.lora_b_q.weight @ layer.lora_a_q.weight)
    weight[2 * dim:] += layer.scale * (layer.lora_b_v.weight @ layer.lora_a_v.weight)
    merged.weight.copy_(weight)
    if qkv.bias is not None:
        merged.bias.copy_(qkv.bias)
    return merged.requires_grad_(False)


def merge_encoder_lora(image_encoder: nn.Module) -> int:
    """Replace every LoRAQKV of a SAM encoder by its merged Linear (in place); returns how many."""
    count = 0
    for block in image_encoder.blocks:
        if isinstance(block.attn.qkv, LoRAQKV):
            block.attn.qkv = merged_qkv(block.attn.qkv)
            count += 1
    return count


def merge_decoder_lora(module: nn.Module) -> int:
    """Fold peft's injected LoRA layers into their base Linears and put the base Linears back
    (peft's merge_and_unload lives on PeftModel; the adapters here were injected without one)."""
    from peft.tuners.lora import LoraLayer

    targets = [(name, m) for name, m in module.named_modules() if isinstance(m, LoraLayer)]
    for name, layer in targets:
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, layer.get_base_layer())
    return len(targets)


def merge_lora(model: nn.Module) -> nn.Module:
    """Merge a TASeg's encoder q/v LoRA and decoder peft LoRA into the frozen weights, in place.

    The merged model computes the same function with SAM's plain Linears, so inference pays
    nothing for LoRA (and exporters see ordinary layers). It can no longer be trained or saved
    as a TASeg checkpoint (the LoRA factors are gone): `model.lora_merged` says so."""
    if getattr(model, "lora_merged", False):
        return model
    merge_encoder_lora(model.image_encoder.vit)
    merge_decoder_lora(model.mask_decoder.sam_decoder)
    model.lora_merged = True
    return model
