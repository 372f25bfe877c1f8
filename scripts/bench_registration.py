#!/usr/bin/env python3
"""Registration figures (issue 20; prints them, no pass/fail):

1. `taseg bag calibrate` on the synthetic two-camera target recording of test/test_registration.py
   (640x480 RGB, 320x256 16-bit inverted, blurred, noisy thermal, 6 board poses): reprojection RMS and
   worst (RGB px), and the recovered homography against the true one (thermal frame corners, mean);
2. target-free refinement on the 20 real MSRS pairs (../shared/data/rgbt_samples) seen by a 480x360
   16-bit thermal camera (a known homography) knocked 10-20 px and up to 1 degree: start -> end error
   (mean displacement over the thermal frame, px) per pair, against the pair's own best alignment
   composed with the known warp; and for the 20 pairs as one recording of that camera (one knock,
   ten knocks in all): `bag refine`'s combination of 3, 8 (its default) and all 20 pairs against the
   pairs' consensus registration;
3. the alignment score: aligned (the pair's own best alignment), the dataset's registration as
   shipped (identity), and knocked (three knocks per pair: two 10-20 px, one 25-40 px);
4. the node's registration check: decode a 640x480 mono16 thermal message + alignment_score, per check.

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_registration.py [--samples ../shared/data/rgbt_samples]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test"))  # the synthetic rig and the knock model live with the tests

from test_registration import CAMERA_H, THERMAL_HW, TRUE_H, good_frames, knocked, record  # noqa: E402

from taseg_ros.bag.calibrate import CalibrateSettings, calibrate  # noqa: E402
from taseg_ros.bag.io.messages import image_message  # noqa: E402
from taseg_ros.bag.pairs import PairSource  # noqa: E402
from taseg_ros.frames import registration as reg  # noqa: E402
from taseg_ros.frames.calibration import Target  # noqa: E402
from taseg_ros.frames.codec import decode_thermal  # noqa: E402


def calibration_figures() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bag = record(Path(tmp) / "board_run", good_frames(np.random.default_rng(0)))
        settings = CalibrateSettings(PairSource(bag), Path(tmp) / "reg.yaml", Target(9, 6))
        result = calibrate(settings)
    h, fit = result.fit.homography, result.fit
    print(f"1. calibrate (synthetic, {result.both} poses): RMS {fit.rms_px:.3f} px, worst {fit.worst_px:.3f} px; "
          f"vs truth: corners {reg.corner_shift(h, TRUE_H, THERMAL_HW):.3f} px, "
          f"mean {reg.mean_shift(h, TRUE_H, THERMAL_HW):.3f} px")


def real_pairs(samples: Path):
    for path in sorted((samples / "msrs" / "vi").glob("*.png")):
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        yield path.stem, rgb, cv2.imread(str(samples / "msrs" / "ir" / path.name), cv2.IMREAD_UNCHANGED)


def refinement_and_score_figures(samples: Path) -> None:
    rng, score_rng = np.random.default_rng(7), np.random.default_rng(11)
    ends, aligned, shipped, off = [], [], [], []
    print("2. refinement on real MSRS pairs, three knocks each (start -> end, mean px over the thermal frame):")
    for name, rgb, ir in real_pairs(samples):
        native = reg.refine_homography(rgb, ir).homography
        thermal = cv2.warpPerspective(ir, CAMERA_H, (480, 360), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR)
        thermal16 = (7000 + 30 * thermal.astype(np.uint16)).astype(np.uint16)
        truth = native @ CAMERA_H
        line = []
        for _ in range(3):
            start = knocked(truth, rng.uniform(10, 20), rng.uniform(-1, 1), rng.uniform(0, 360))
            t0 = time.perf_counter()
            result = reg.refine_homography(rgb, thermal16, start)
            seconds = time.perf_counter() - t0
            ends.append(reg.mean_shift(result.homography, truth, (360, 480)))
            line.append(f"{reg.mean_shift(start, truth, (360, 480)):4.1f} -> {ends[-1]:5.2f} ({seconds:.2f} s)")
        print(f"   {name}: " + "; ".join(line) + f"; own alignment {reg.mean_shift(native, np.eye(3), (480, 640)):.1f} px "
              "from identity")
        aligned.append(reg.alignment_score(rgb, ir, native))
        shipped.append(reg.alignment_score(rgb, ir, None))
        off += [reg.alignment_score(rgb, ir, knocked(native, score_rng.uniform(*px), score_rng.uniform(-1, 1),
                                                     score_rng.uniform(0, 360)))
                for px in ((10, 20), (10, 20), (25, 40))]
    ends = np.array(ends)
    print(f"   within 2 px: {(ends < 2).sum()} of {len(ends)}; median {np.median(ends):.2f} px; "
          f"over 5 px: {(ends > 5).sum()}")
    recording_figures(list(real_pairs(samples)), rng)
    for label, values in (("aligned", aligned), ("as shipped", shipped), ("knocked 10-40 px", off)):
        v = np.array(values)
        print(f"3. score {label}: min {v.min():.3f} median {np.median(v):.3f} max {v.max():.3f}; "
              f"below SCORE_WARN {reg.SCORE_WARN}: {(v < reg.SCORE_WARN).sum()} of {len(v)}")


def recording_figures(pairs, rng, knocks: int = 10) -> None:
    """The 20 pairs as one recording of the 480x360 camera: truth is their consensus registration
    (the median of their own alignments, as `bag refine` combines) composed with CAMERA_H."""
    own = [reg.refine_homography(rgb, ir) for _, rgb, ir in pairs]
    consensus = reg.combine_homographies([r.homography for r in own if r.converged], (480, 640))
    spread = [reg.mean_shift(r.homography, consensus, (480, 640)) for r in own]
    print(f"   one pair's own alignment vs the consensus: median {np.median(spread):.1f} px, max {max(spread):.1f} px")
    truth = consensus @ CAMERA_H
    thermals = [(7000 + 30 * cv2.warpPerspective(ir, CAMERA_H, (480, 360), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR)
                 .astype(np.uint16)).astype(np.uint16) for _, _, ir in pairs]
    for samples in (3, 8, len(pairs)):  # bag refine's --samples (default 8): pairs of distinct scenes
        errors, starts = [], []
        for _ in range(knocks):
            start = knocked(truth, rng.uniform(10, 20), rng.uniform(-1, 1), rng.uniform(0, 360))
            chosen = rng.choice(len(pairs), samples, replace=False)
            results = [reg.refine_homography(pairs[i][1], thermals[i], start) for i in chosen]
            combined = reg.combine_homographies([r.homography for r in results if r.converged] or [start], (360, 480))
            starts.append(reg.mean_shift(start, truth, (360, 480)))
            errors.append(reg.mean_shift(combined, truth, (360, 480)))
        errors = np.array(errors)
        print(f"   a recording, {samples} sampled pairs, {knocks} knocks ({min(starts):.0f}-{max(starts):.0f} px): "
              f"within 2 px in {(errors < 2).sum()} of {knocks}; error median {np.median(errors):.2f} px, "
              f"max {errors.max():.2f} px")


def node_check_cost(samples: Path, runs: int = 30) -> None:
    name, rgb, ir = next(real_pairs(samples))
    msg = image_message(1, "thermal", (7000 + 30 * ir.astype(np.uint16)).astype(np.uint16), "mono16")
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        reg.alignment_score(rgb, decode_thermal(msg), None)
        times.append(time.perf_counter() - t0)
    print(f"4. node registration check at {rgb.shape[1]}x{rgb.shape[0]} (decode mono16 + score at {reg.SCORE_WIDTH} px): "
          f"median {1e3 * np.median(times):.1f} ms, max {1e3 * np.max(times):.1f} ms over {runs} checks")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=Path, default=REPO.parent / "shared" / "data" / "rgbt_samples")
    args = parser.parse_args()
    calibration_figures()
    if not (args.samples / "msrs").is_dir():
        print(f"(no real samples at {args.samples}: figures 2-4 skipped)")
        return
    refinement_and_score_figures(args.samples)
    node_check_cost(args.samples)


if __name__ == "__main__":
    main()
