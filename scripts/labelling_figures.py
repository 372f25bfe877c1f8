"""What `taseg bag select` chooses on a recording of real frames with near-duplicates, against ranking
by uncertainty alone.

    python scripts/labelling_figures.py ../shared/data/rgbt_samples/msrs [--views 10] [--copies 3] [-k 5]

The recording (a real rosbag2 file, written with the package's writer) holds each of the first
--views MSRS pairs --copies times in a row, every copy with its own sensor noise (sigma 2 grey
levels): what a robot standing still records. The model is the untrained tiny TASeg with perturbed
weights and a 30x sharper class head (the test suite's model: its uncertainty varies from frame to
frame; a trained model's varies more). Prints the views chosen, how many are distinct, and the same
for the top-K frames by entropy alone.
"""
from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch

from taseg_ros.demo.recording import write_rgbt_bag
from taseg_ros.frames.files import read_rgb, read_thermal
from taseg_ros.inference import Segmenter
from taseg_ros.labelling.select import SelectSettings, select_frames
from taseg_ros.labelling.uncertainty import frame_uncertainty
from taseg_ros.model.checkpoint import init_checkpoint, load_checkpoint
from taseg_ros.scenes import SceneFrame


def sharp_model(work: Path) -> Segmenter:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        init_checkpoint("tiny", "mfnet", work / "tiny.safetensors", seed=0)
        model = load_checkpoint(work / "tiny.safetensors")
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.2 * torch.randn(param.shape, generator=generator))
        model.mask_decoder.head.bias.zero_()
        model.mask_decoder.head.weight.mul_(30.0)
    return Segmenter(model.eval())


def views(root: Path, count: int, size=(96, 128)) -> list[SceneFrame]:
    out = []
    for name in sorted(p.name for p in (root / "vi").glob("*.png"))[:count]:
        rgb = cv2.resize(read_rgb(root / "vi" / name), size[::-1], interpolation=cv2.INTER_AREA)
        thermal = cv2.resize(read_thermal(root / "ir" / name), size[::-1], interpolation=cv2.INTER_AREA)
        out.append(SceneFrame(rgb=rgb, thermal=thermal.astype(np.uint8), label=None))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("msrs", type=Path, help="an MSRS-style folder (vi/ RGB, ir/ thermal)")
    parser.add_argument("--views", type=int, default=10)
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("-k", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    def noisy(a):
        return np.clip(a.astype(np.int16) + rng.normal(0, 2, a.shape).round(), 0, 255).astype(np.uint8)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        segmenter = sharp_model(work)
        frames, view_of = [], []
        for v, f in enumerate(views(args.msrs, args.views)):
            for _ in range(args.copies):
                frames.append(SceneFrame(rgb=noisy(f.rgb), thermal=noisy(f.thermal), label=None))
                view_of.append(v)
        rec = write_rgbt_bag(work / "rec", frames)
        view_of_stamp = {r.rgb_stamp_ns: view_of[r.index] for r in rec.frames}
        settings = SelectSettings((rec.path,), work / "selected", k=args.k, min_gap_s=0.05)
        result = select_frames(settings, segmenter)
        chosen = [view_of_stamp[c.stamp_ns] for c in result.chosen]
        entropy = [frame_uncertainty(segmenter.predict_prepared(f.rgb, f.thermal / 255.0,
                                                                return_probabilities=True).probabilities).entropy
                   for f in frames]
        top = [view_of[i] for i in np.argsort(-np.asarray(entropy), kind="stable")[: args.k]]
    per_view = [max(e for e, v in zip(entropy, view_of) if v == view) for view in range(args.views)]
    print(f"{len(frames)} pairs ({args.views} views x {args.copies} noisy copies), k={args.k}")
    print(f"bag select:          views {chosen}  distinct {len(set(chosen))}  "
          f"entropy {[round(c.score, 3) for c in result.chosen]}")
    print(f"top-{args.k} by entropy: views {top}  distinct {len(set(top))}")
    print(f"most uncertain view: {int(np.argmax(per_view))} (entropy {max(per_view):.3f}); "
          f"chosen: {int(np.argmax(per_view)) in chosen}")


if __name__ == "__main__":
    main()
