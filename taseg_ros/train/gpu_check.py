"""GPU check of training memory: each shipped recipe's model at its crop size and micro-batch,
two optimiser steps on the GPU, the allocator's peak against the planner's prediction, and
images/s. Writes Markdown and JSON (part of scripts/gpu_check.sh).

    python -m taseg_ros.train.gpu_check --out gpu_check/ [--recipes mfnet kp fmb pst900]

Random frozen weights: memory and speed do not depend on their values, and the check runs
without the 2.5 GB SAM file. Without a CUDA device it writes that it was skipped."""
from __future__ import annotations

import argparse
import gc
import json
import sys
from pathlib import Path

import torch

from taseg_ros.outputs import write_text_atomic
from taseg_ros.train.memory import GiB, measure_step, plan_for_recipe, recipe_model_config, recipe_num_classes
from taseg_ros.train.recipe import load_recipe

RECIPES = ("mfnet", "kp", "fmb", "pst900")
TOLERANCE = 0.15  # the plan's goal: within 15 % of the measured peak


def check_recipe(name: str, steps: int, device: str = "cuda") -> dict:
    recipe = load_recipe(name)
    t = recipe.train
    cfg = recipe_model_config(recipe)
    num_classes = recipe_num_classes(recipe)[0]
    micro = t.micro_batch_size
    plan = plan_for_recipe(recipe, cfg, num_classes, "cuda", micro_batches=None if micro == "auto" else (micro,))
    micro = plan.largest_fitting if micro == "auto" else micro
    predicted = plan.predicted(micro)
    row = {"recipe": name, "model": cfg.name, "crop": list(recipe.data.crop), "micro_batch": micro,
           "precision": t.precision, "grad_checkpointing": t.grad_checkpointing, "half_frozen": t.half_frozen,
           "predicted_peak_gib": round(predicted / GiB, 3)}
    try:
        measured = measure_step(cfg, num_classes, recipe.data.crop, micro, device=device, precision=t.precision,
                                grad_checkpointing=t.grad_checkpointing, half_frozen=t.half_frozen, steps=steps)
    except torch.cuda.OutOfMemoryError as exc:
        row.update(error=f"out of memory: {str(exc).splitlines()[0]}", within_tolerance=False)
        return row
    finally:
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    row.update(images_per_s=round(measured["images_per_s"], 3), seconds_per_step=round(measured["seconds_per_step"], 3))
    if "peak_bytes" in measured:  # CUDA only
        peak = measured["peak_bytes"]
        row.update(measured_peak_gib=round(peak / GiB, 3), miss=round((peak - predicted) / predicted, 4),
                   within_tolerance=abs(peak - predicted) <= TOLERANCE * predicted)
    return row


def markdown(rows: list[dict], device: str) -> str:
    lines = [
        f"## Training memory ({device})", "",
        "| recipe | model | crop | micro-batch | checkpointing | predicted peak GiB | measured peak GiB | miss | images/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        measured = r.get("measured_peak_gib", r.get("error", ""))
        miss = f"{r['miss']:+.1%}" if "miss" in r else ""
        lines.append(f"| {r['recipe']} | {r['model']} | {r['crop'][0]}x{r['crop'][1]} | {r['micro_batch']} | "
                     f"{'on' if r['grad_checkpointing'] else 'off'} | {r['predicted_peak_gib']:.2f} | {measured} | {miss} | "
                     f"{r.get('images_per_s', '')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_check", help="folder for train_memory.md and train_memory.json")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES))
    parser.add_argument("--steps", type=int, default=2, help="optimiser steps per recipe (the first is warm-up)")
    parser.add_argument("--device", default="cuda", help="cuda (the check); cpu runs the steps without a peak (self-test)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        write_text_atomic(out / "train_memory.json", json.dumps({"skipped": "no CUDA device"}) + "\n")
        print("training memory check: skipped (no CUDA device)")
        return 0
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    rows = []
    for name in args.recipes:
        rows.append(check_recipe(name, args.steps, args.device))
        print(json.dumps(rows[-1]), flush=True)
        # after every recipe: a time limit that stops the check keeps the rows measured so far
        write_text_atomic(out / "train_memory.json", json.dumps({"device": device, "rows": rows}, indent=2) + "\n")
        write_text_atomic(out / "train_memory.md", markdown(rows, device))
    print(markdown(rows, device))
    return 0 if all(r.get("within_tolerance", "error" not in r) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
