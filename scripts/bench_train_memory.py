#!/usr/bin/env python3
"""Training-memory figures on this machine's CPU (prints them; no pass/fail):

1. compute cost of activation checkpointing: one training step (forward, CE+Dice, backward)
   with and without, interleaved in one process, fp32;
2. the planner's shape-only (FakeTensor) count of saved activations against the same count
   on real tensors;
3. with --attention: segment_anything's global Attention against F.scaled_dot_product_attention
   with the decomposed relative-position bias as attn_mask (max difference, saved bytes, time).

    .venv/bin/python scripts/bench_train_memory.py --model vit_b --size 480 640 --rounds 3
"""
from __future__ import annotations

import argparse
import time
import warnings

import torch

from taseg_ros.classes import ClassInfo, default_palette
from taseg_ros.model.config import get_config
from taseg_ros.model.taseg import build_model
from taseg_ros.train.memory import GiB, SavedTensorCounter, count_forward, shape_only_model, training_loss


def real_model(cfg, num_classes: int):
    classes = ClassInfo(names=tuple(f"c{i}" for i in range(num_classes)), palette=default_palette(num_classes))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_model(cfg, classes, torch.zeros(num_classes, cfg.text_dim)).train()


def step_seconds(model, rgb, thermal, labels) -> tuple[float, float]:
    """(wall, CPU) seconds of one step. On a shared machine the process's CPU time is the
    steadier figure: other processes stretch the wall clock, not the work done."""
    start, cpu = time.perf_counter(), time.process_time()
    rgb_in, thermal_in, geometry = model.preprocess(rgb, thermal)
    training_loss(model.postprocess(model(rgb_in, thermal_in), geometry), labels).backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start, time.process_time() - cpu


def sdpa_attention(self, x: torch.Tensor) -> torch.Tensor:
    """segment_anything's Attention.forward with the scores, bias and softmax left to
    F.scaled_dot_product_attention (its default scale is SAM's head_dim ** -0.5)."""
    import torch.nn.functional as F
    from segment_anything.modeling.image_encoder import get_rel_pos

    B, H, W, _ = x.shape
    q, k, v = self.qkv(x).reshape(B, H * W, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    r_q = q.reshape(B * self.num_heads, H, W, -1)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, get_rel_pos(H, H, self.rel_pos_h))
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, get_rel_pos(W, W, self.rel_pos_w))
    bias = (rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).reshape(B, self.num_heads, H * W, H * W)
    x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    return self.proj(x.view(B, self.num_heads, H, W, -1).permute(0, 2, 3, 1, 4).reshape(B, H, W, -1))


def compare_attention(cfg, hw: tuple[int, int], rounds: int) -> None:
    from segment_anything.modeling.image_encoder import Attention

    enc = cfg.encoder
    torch.manual_seed(0)
    attn = Attention(enc.embed_dim, enc.num_heads, use_rel_pos=True, input_size=(64, 64))
    with torch.no_grad():
        attn.rel_pos_h.normal_(0, 0.02)
        attn.rel_pos_w.normal_(0, 0.02)
    x = torch.randn(1, hw[0] // 16, hw[1] // 16, enc.embed_dim, requires_grad=True)
    results = {}
    for name, forward in (("segment_anything", Attention.forward), ("sdpa", sdpa_attention)):
        counter = SavedTensorCounter(exclude=list(attn.parameters()))
        with counter.counting():
            y = forward(attn, x)
        grads = torch.autograd.grad(y.square().sum(), [x, attn.qkv.weight])
        results[name] = (y.detach(), grads, counter.total_bytes)
    (y0, g0, b0), (y1, g1, b1) = results.values()
    rel = lambda a, b: float((a - b).abs().max() / a.abs().max())  # noqa: E731
    print(f"  global attention {x.shape[1]}x{x.shape[2]} tokens, fp32: output max rel. difference {rel(y0, y1):.1e}, "
          f"gradients {max(rel(a, b) for a, b in zip(g0, g1)):.1e}; saved {b0 / 2**20:.1f} MiB (segment_anything) "
          f"vs {b1 / 2**20:.1f} MiB (sdpa)")
    for grad_mode in (True, False):
        times = {Attention.forward: [], sdpa_attention: []}
        with torch.set_grad_enabled(grad_mode):
            for _ in range(rounds):
                for forward in times:
                    start = time.process_time()
                    y = forward(attn, x)
                    if grad_mode:
                        y.square().sum().backward()
                    times[forward].append(time.process_time() - start)
        sam, sdpa = (min(t) for t in times.values())
        print(f"  {'forward+backward' if grad_mode else 'forward only'} CPU seconds: segment_anything {sam:.3f}, "
              f"sdpa {sdpa:.3f} ({sdpa / sam:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_b")
    parser.add_argument("--size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time is the work done)")
    parser.add_argument("--attention", action="store_true", help="only compare SAM's attention with SDPA")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.attention:
        compare_attention(get_config(args.model), tuple(args.size), args.rounds)
        return
    cfg, hw, classes = get_config(args.model), tuple(args.size), 9
    model = real_model(cfg, classes)
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(args.batch, 3, *hw, generator=g) * 255
    thermal = torch.rand(args.batch, 1, *hw, generator=g)
    labels = torch.randint(0, classes, (args.batch, *hw), generator=g)

    print(f"{args.model} {hw[0]}x{hw[1]} batch {args.batch}, fp32 on cpu, {torch.get_num_threads()} threads")
    for checkpointing in (False, True):
        model.image_encoder.grad_checkpointing = checkpointing
        real = count_forward(model, args.batch, hw, torch.device("cpu"), None).saved_bytes
        fake, mode = shape_only_model(cfg, classes, "cpu", torch.float32)
        fake.image_encoder.grad_checkpointing = checkpointing
        with mode:
            counted = count_forward(fake, args.batch, hw, torch.device("cpu"), None).saved_bytes
        print(f"  checkpointing {'on ' if checkpointing else 'off'}: saved activations real {real / GiB:.3f} GiB, "
              f"shape-only {counted / GiB:.3f} GiB ({(counted - real) / real:+.2%})")

    times = {False: [], True: []}
    model.image_encoder.grad_checkpointing = False
    step_seconds(model, rgb, thermal, labels)  # warm-up
    for _ in range(args.rounds):  # interleaved: machine load hits both alike
        for checkpointing in (False, True):
            model.image_encoder.grad_checkpointing = checkpointing
            times[checkpointing].append(step_seconds(model, rgb, thermal, labels))
    for kind, index in (("wall", 0), ("CPU", 1)):
        plain, ckpt = (min(t[index] for t in times[c]) for c in (False, True))
        print(f"  step {kind} seconds, plain {[round(t[index], 2) for t in times[False]]}, "
              f"checkpointed {[round(t[index], 2) for t in times[True]]}: checkpointing costs {ckpt / plain:.2f}x "
              f"(best of {args.rounds} each)")


if __name__ == "__main__":
    main()
