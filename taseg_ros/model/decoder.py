"""The text-aware mask decoder (paper sec. III-B2, eqs. 6-8).

SAM's frozen prompt encoder and mask decoder (with LoRA on the two-way transformer's
attention) turn the image embedding into per-pixel mask embeddings e_M at 1/4 resolution.
Those attend to the CLIP text embeddings of the class names (eq. 8), and a 1x1 projection
of [e_M, F_M] gives one logit per class.

Decided here (the paper leaves it open):
- e_M is SAM's `output_upscaling` of the transformer's image-side output: the same
  per-pixel embedding SAM dots with its hypernetwork mask vectors, (B, C/8, H/4, W/4).
- F_M and e_M are concatenated (not summed) before the projection, so the head can weigh
  the pixel's own appearance against its text-derived feature; at initialisation neither
  path is privileged.
- No point prompts: the sparse prompt set is empty; SAM's iou and mask tokens still take
  part in the two-way attention, as in SAM's automatic mode.
- Without text (ablation), K learnable class tokens join SAM's tokens and each pixel's
  logit is SAM's hypernetwork MLP (frozen, shared) of the class token dotted with e_M, as
  in SAMed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling import MaskDecoder, PromptEncoder
from torch import nn

from taseg_ros.errors import InputError
from taseg_ros.model.config import TASegConfig
from taseg_ros.model.lora import add_decoder_lora


class TextCrossAttention(nn.Module):
    """eq. (8): F_M = softmax(e_M W_Q (e_t W_K)^T / sqrt(d_k)) e_t W_V."""

    def __init__(self, pixel_dim: int, text_dim: int, attn_dim: int) -> None:
        super().__init__()
        self.w_q = nn.Linear(pixel_dim, attn_dim, bias=False)
        self.w_k = nn.Linear(text_dim, attn_dim, bias=False)
        self.w_v = nn.Linear(text_dim, pixel_dim, bias=False)

    def forward(self, pixels: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """pixels (B, N, C), text (K, D) -> (B, N, C)."""
        q = self.w_q(pixels).unsqueeze(1)  # (B, 1, N, d_k): one head
        k = self.w_k(text).expand(q.shape[0], 1, -1, -1)
        v = self.w_v(text).expand(q.shape[0], 1, -1, -1)
        # scaled_dot_product_attention's default scale is exactly 1/sqrt(d_k).
        return F.scaled_dot_product_attention(q, k, v).squeeze(1)


class TextAwareMaskDecoder(nn.Module):
    def __init__(
        self,
        prompt_encoder: PromptEncoder,
        sam_decoder: MaskDecoder,
        cfg: TASegConfig,
        num_classes: int,
        text_embeddings: torch.Tensor | None,
    ) -> None:
        super().__init__()
        self.prompt_encoder = prompt_encoder
        self.sam_decoder = sam_decoder
        self.num_classes = num_classes
        if cfg.decoder_lora:
            add_decoder_lora(sam_decoder, cfg.decoder_lora_rank, cfg.lora_alpha, tokens_used=not cfg.text)
        pixel_dim = cfg.decoder.transformer_dim // 8  # channels of SAM's upscaled mask embedding
        device = sam_decoder.iou_token.weight.device
        if cfg.text:
            if text_embeddings is None:
                raise InputError("a text-aware model needs text embeddings (K x D)")
            if tuple(text_embeddings.shape) != (num_classes, cfg.text_dim):
                raise InputError(
                    f"text embeddings have shape {tuple(text_embeddings.shape)}, "
                    f"expected ({num_classes}, {cfg.text_dim}) for {num_classes} classes and text_dim {cfg.text_dim}"
                )
            self.register_buffer("text_embeddings", text_embeddings.detach().to(device=device, dtype=torch.float32))
            self.text_attention = TextCrossAttention(pixel_dim, cfg.text_dim, cfg.text_attn_dim)
            self.head = nn.Linear(2 * pixel_dim, num_classes)
            self.class_tokens = None
        else:
            self.text_embeddings = None
            self.text_attention = None
            self.head = None
            self.class_tokens = nn.Parameter(torch.empty(num_classes, cfg.decoder.transformer_dim))
            if device.type != "meta":
                with torch.no_grad():
                    start = sam_decoder.mask_tokens.weight[0].detach().float()
                    self.class_tokens.copy_(start + 0.02 * torch.randn_like(self.class_tokens))

    def forward(self, image_embedding: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) image embedding -> (B, K, 4h, 4w) class logits."""
        b, c, h, w = image_embedding.shape
        dec = self.sam_decoder
        image_pe = self.prompt_encoder.pe_layer((h, w)).unsqueeze(0).to(image_embedding.dtype)  # E_p
        dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)  # e_d: "no mask" prompt
        tokens = [dec.iou_token.weight, dec.mask_tokens.weight]
        if self.class_tokens is not None:
            tokens.append(self.class_tokens)
        tokens = torch.cat(tokens, dim=0).unsqueeze(0).expand(b, -1, -1).to(image_embedding.dtype)  # E_t
        token_out, src = dec.transformer(image_embedding + dense, image_pe, tokens)  # E_s = e_en + e_d
        mask_embedding = dec.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))  # e_M
        _, pc, mh, mw = mask_embedding.shape
        pixels = mask_embedding.flatten(2)  # (B, C/8, N)
        if self.class_tokens is None:
            pixels = pixels.transpose(1, 2)  # (B, N, C/8)
            text_features = self.text_attention(pixels, self.text_embeddings.to(pixels.dtype))
            logits = self.head(torch.cat((pixels, text_features), dim=-1)).transpose(1, 2)
        else:
            first = 1 + dec.num_mask_tokens
            class_vectors = dec.output_hypernetworks_mlps[0](token_out[:, first:])  # (B, K, C/8)
            logits = class_vectors @ pixels
        return logits.reshape(b, self.num_classes, mh, mw)
