#!/usr/bin/env python3
"""Training-memory figures on this machine's CPU (prints them; no pass/fail):

1. compute cost of activation checkpointing: one training step (forward, CE+Dice, backward)
   with and without, interleaved in one process, fp32;
2. the planner's shape-only (FakeTensor) count of saved activations against the same count
   on real tensors.

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
from taseg_ros.train.memory import GiB, count_forward, shape_only_model, training_loss


def real_model(cfg, num_classes: int):
    classes = ClassInfo(names=tuple(f"c{i}" for i in range(num_classes)), palette=default_palette(num_classes))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_model(cfg, classes, torch.zeros(num_classes, cfg.text_dim)).train()


def step_seconds(model, rgb, thermal, labels) -> float:
    start = time.perf_counter()
    rgb_in, thermal_in, geometry = model.preprocess(rgb, thermal)
    training_loss(model.postprocess(model(rgb_in, thermal_in), geometry), labels).backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_b")
    parser.add_argument("--size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
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
    plain, ckpt = min(times[False]), min(times[True])
    print(f"  step seconds, plain {[round(t, 2) for t in times[False]]}, checkpointed {[round(t, 2) for t in times[True]]}")
    print(f"  checkpointing compute cost: {ckpt / plain:.2f}x (best of {args.rounds} each)")


if __name__ == "__main__":
    main()
