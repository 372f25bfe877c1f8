"""`taseg demo`: the whole product end to end, with nothing downloaded.

1. generate procedural RGB-T street scenes (day and night) in the plain folder format;
2. train the tiny config on them with the real training code;
3. evaluate with the real evaluation code: all, day, night; and the same model with the
   thermal input blanked, to show what the thermal branch contributes;
4. record a short sequence as a rosbag (a turning camera: consecutive frames overlap), report its
   label-free quality (`taseg bag eval` without labels), play it over DDS into the real node,
   record the node's outputs into a bag, and report fps, latency and drops;
5. save overlay images and plots;
and the labelling loop's first half on the recording of step 4: the frames most worth labelling
(`taseg bag select`) with the model's pre-labels as a CVAT zip (`taseg label export`).

With a checkpoint and a data root (or a bag) the same steps run on a user's model and data,
skipping generation and training.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from taseg_ros.bag.evaluate.report import format_summary, write_eval_report
from taseg_ros.bag.evaluate.run import EvalSettings, evaluate_bag
from taseg_ros.bag.pairs import PairSource
from taseg_ros.bag.replay import ReplaySettings, format_replay, replay_bag
from taseg_ros.datasets import build_dataset
from taseg_ros.demo.data import write_street_dataset
from taseg_ros.demo.recording import write_rgbt_bag
from taseg_ros.errors import TasegError
from taseg_ros.evaluation.report import format_table, write_report
from taseg_ros.evaluation.run import PredictionWriter, evaluate
from taseg_ros.frames.files import write_rgb
from taseg_ros.frames.settings import FrameSettings
from taseg_ros.frames.thermal import ThermalNormalization
from taseg_ros.inference import Segmenter
from taseg_ros.inference.pipeline import FramePipeline
from taseg_ros.labelling.cvat import export_prelabels
from taseg_ros.labelling.select import SelectSettings, select_frames
from taseg_ros.model.checkpoint import load_checkpoint
from taseg_ros.outputs import write_text_atomic
from taseg_ros.ros.client import ros_missing
from taseg_ros.ros.domains import claim_domain
from taseg_ros.scenes import SceneFrame, panned_street
from taseg_ros.train.loop import train
from taseg_ros.train.recipe import load_recipe

# Whatever the recording's topic names, replay publishes on these and the node listens there.
DEMO_RGB_TOPIC = "/taseg_demo/rgb/image"
DEMO_THERMAL_TOPIC = "/taseg_demo/thermal/image"


@dataclass
class DemoOptions:
    output: Path
    checkpoint: Path | None = None
    data_root: Path | None = None
    dataset: str = "folder"
    split: str = "test"
    bag: Path | None = None
    steps: int = 900
    image_size: tuple[int, int] = (160, 224)
    node: bool = True
    progress: bool = True


def _say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def generate_data(opts: DemoOptions) -> Path:
    _say("1/5 generating procedural RGB-T street scenes (day and night)")
    h, w = opts.image_size
    root = write_street_dataset(opts.output / "data", num_train=64, num_val=16, num_test=32, height=h, width=w, seed=0)
    print(f"wrote {root}: 64 train / 16 val / 32 test frames, {w}x{h}, half of each split at night")
    return root


def train_model(opts: DemoOptions, data_root: Path) -> Path:
    _say(f"2/5 training the tiny model ({opts.steps} steps, CPU is fine)")
    h, w = opts.image_size
    recipe = load_recipe(
        "demo_tiny",
        [f"data.root={data_root}", f"train.output={opts.output / 'train'}", f"train.steps={opts.steps}",
         f"data.crop=[{h},{w}]", f"train.val_every={max(1, opts.steps // 4)}"],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny model's random frozen weights are expected here
        summary = train(recipe, progress=opts.progress)
    print(f"best validation mIoU {100 * summary['best_val_miou']:.1f} at step {summary['best_step']}")
    return Path(summary["output"]) / "best.safetensors"


def evaluate_model(opts: DemoOptions, checkpoint: Path, data_root: Path) -> dict:
    _say("3/5 evaluating: all / day / night, and with the thermal input blanked")
    model = load_checkpoint(checkpoint)
    dataset = build_dataset(opts.dataset, data_root, opts.split)
    writer = PredictionWriter(opts.output / "predictions", dataset.class_info.palette)
    results = {}
    for name, blank in (("eval", False), ("eval_blank_thermal", True)):
        result = evaluate(model, dataset, blank_thermal=blank, on_prediction=None if blank else writer).result()
        write_report(result, opts.output / name)
        results[name] = result
        print(("thermal blanked:" if blank else "with thermal:"))
        print(format_table(result))
    return results


def demo_recording(opts: DemoOptions, data_root: Path | None) -> Path:
    """The recording the node step and the label-free report run on: ``--bag``, or 40 frames written
    as a rosbag (the given dataset's test frames, or two street scenes panned 4 px per frame, one by
    day and one by night, so consecutive frames overlap as a driving camera's do)."""
    if opts.bag is not None:
        return opts.bag
    if data_root is not None and opts.checkpoint is not None:
        dataset = build_dataset(opts.dataset, data_root, opts.split)
        frames = []
        for i in range(min(40, len(dataset))):
            s = dataset.load(i)
            frames.append(SceneFrame(rgb=s["rgb"], thermal=(s["thermal"] * 255).astype(np.uint8), label=None))
    else:
        h, w = opts.image_size
        frames = panned_street(h, w, 20, step=4, seed=7) + panned_street(h, w, 20, step=4, seed=8, night=True)
    bag = opts.output / "bag" / "input"
    if bag.exists():
        import shutil

        shutil.rmtree(bag)
    bag.parent.mkdir(parents=True, exist_ok=True)
    write_rgbt_bag(bag, frames, storage="mcap", rate_hz=10.0, drop_thermal=(13,), seed=3)
    print(f"wrote {bag}: {len(frames)} frames at 10 Hz (RGB + thermal, stamp jitter, one thermal frame dropped)")
    return bag


def label_free_report(opts: DemoOptions, checkpoint: Path, bag: Path) -> dict:
    """`taseg bag eval` without labels on the recording: the label-free quality a user gets on their own."""
    _say("4/5 label-free quality of the recording (taseg bag eval, no labels, --thermal-reliance)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        segmenter = Segmenter.from_checkpoint(checkpoint)
    settings = EvalSettings(PairSource(bag), checkpoint_name=str(checkpoint), thermal_reliance=True)
    result = evaluate_bag(settings, segmenter)
    files = write_eval_report(result, opts.output / "bag_eval")
    print(format_summary(result))
    print(f"  report: {files['markdown']} (+ report.json, quality.png)")
    return {"report": str(files["markdown"]), **result.quality.summary()}


def record_and_replay(opts: DemoOptions, checkpoint: Path, bag: Path) -> dict | None:
    if not opts.node:
        return None
    if missing := ros_missing():
        _say(f"4/5 skipped: {missing}")
        return None

    _say("4/5 playing the recording over DDS into the real node, recording its outputs")
    domain = claim_domain()  # its own: a second demo or a test run beside it sees nothing of it
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain))
    node_cmd = [
        sys.executable, "-m", "taseg_ros.ros.start", "--ros-args", "-p", f"checkpoint:={checkpoint}",
        "-r", f"rgb/image:={DEMO_RGB_TOPIC}", "-r", f"thermal/image:={DEMO_THERMAL_TOPIC}",
    ]
    log_path = opts.output / "bag" / "node.log"
    log_path.unlink(missing_ok=True)  # a link there is removed, not written through (the node appends to it live)
    with open(log_path, "w") as log:
        node = subprocess.Popen(node_cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            settings = ReplaySettings(PairSource(bag), wait_s=60.0, domain_id=domain,
                                      publish_rgb_topic=DEMO_RGB_TOPIC, publish_thermal_topic=DEMO_THERMAL_TOPIC)
            result = replay_bag(settings, opts.output / "bag" / "output")
        except Exception as exc:  # noqa: BLE001 - report and go on with the remaining steps
            print(f"node step failed: {exc}\n(node log: {log_path})")
            return {"error": str(exc)}
        finally:
            node.terminate()
            try:
                node.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.kill()
    print(format_replay(result))
    write_text_atomic(opts.output / "bag" / "replay.json", json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    return result.to_dict()


PRELABEL_FRAMES = 4  # frames chosen for labelling from the demo's recording
PRELABEL_EVERY = 4  # score every 4th pair only: the step stays a few seconds
PRELABEL_MIN_GAP_S = 0.5  # the recording lasts 4 s: the default 1 s gap would leave room for 4 frames only just


def prelabel_export(opts: DemoOptions, checkpoint: Path) -> dict | None:
    """Choose a few frames of the demo's recording worth labelling and write them with the model's
    pre-labels as a CVAT 'Segmentation mask 1.1' zip (taseg bag select + taseg label export)."""
    recording = opts.bag or opts.output / "bag" / "input"
    if not recording.exists():
        _say("pre-labels for CVAT skipped: no recording (the node step did not run)")
        return None
    _say(f"pre-labels for CVAT: the {PRELABEL_FRAMES} frames of the recording most worth labelling")
    folder, archive = opts.output / "labelling" / "to_label", opts.output / "labelling" / "prelabels.zip"
    settings = SelectSettings((recording,), folder, k=PRELABEL_FRAMES, every=PRELABEL_EVERY, min_gap_s=PRELABEL_MIN_GAP_S)
    try:
        segmenter = Segmenter.from_checkpoint(checkpoint)
        chosen = select_frames(settings, segmenter)
        export_prelabels(folder, segmenter, archive, force=True)
    except TasegError as exc:  # e.g. a given --bag without a usable pair: the other steps stand
        print(f"skipped: {exc}")
        return {"error": str(exc)}
    print(f"chose {len(chosen.ids)} of {chosen.scored} scored pairs (uncertain, not near-duplicates) -> {folder}")
    print(f"wrote {archive}: CVAT 'Segmentation mask 1.1' pre-labels; see docs/own_recordings.md (Labelling)")
    return {"frames": len(chosen.ids), "folder": str(folder), "zip": str(archive)}


def overlay_montage(opts: DemoOptions, checkpoint: Path, data_root: Path) -> Path:
    """One picture: a day and a night test frame, RGB | thermal | prediction overlay."""
    _say("5/5 overlay images and plots")
    # Dataset thermal is already normalised to [0, 1].
    pipeline = FramePipeline(Segmenter.from_checkpoint(checkpoint), FrameSettings(ThermalNormalization("fixed", 0.0, 1.0), overlay_alpha=0.6))
    dataset = build_dataset(opts.dataset, data_root, opts.split)
    picks = {}
    for i in range(len(dataset)):
        cond = dataset.records[i].condition or "frame"
        picks.setdefault(cond, i)
    rows = []
    for cond, index in sorted(picks.items()):
        s = dataset.load(index)
        blend = pipeline.process(s["rgb"], s["thermal"], outputs={"overlay"}).overlay
        thermal = cv2.cvtColor((s["thermal"] * 255).astype(np.uint8), cv2.COLOR_GRAY2RGB)
        row = np.hstack([s["rgb"], thermal, blend])
        cv2.putText(row, cond, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
        rows.append(row)
    path = opts.output / "demo_overlay.png"

    write_rgb(path, np.vstack(rows))
    print(f"wrote {path} (RGB | thermal | prediction) and overlays of every test frame in {opts.output / 'predictions'}")
    return path


def run_demo(opts: DemoOptions) -> dict:
    started = time.perf_counter()
    opts.output.mkdir(parents=True, exist_ok=True)
    if opts.checkpoint is None:
        data_root = generate_data(opts)
        checkpoint = train_model(opts, data_root)
    else:
        checkpoint = opts.checkpoint
        data_root = opts.data_root
        _say("1-2/5 skipped: using the given checkpoint" + (f" and data in {data_root}" if data_root else ""))
    results = evaluate_model(opts, checkpoint, data_root) if data_root is not None else {}
    bag = demo_recording(opts, data_root)
    quality = label_free_report(opts, checkpoint, bag)
    replay = record_and_replay(opts, checkpoint, bag)
    prelabels = prelabel_export(opts, checkpoint)
    montage = overlay_montage(opts, checkpoint, data_root) if data_root is not None else None
    summary = {
        "output": str(opts.output),
        "checkpoint": str(checkpoint),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if results:
        with_t, blank = results["eval"], results["eval_blank_thermal"]
        summary["miou"] = {
            "with_thermal": {"all": with_t.overall.miou, **{c: s.miou for c, s in with_t.by_condition.items()}},
            "thermal_blanked": {"all": blank.overall.miou, **{c: s.miou for c, s in blank.by_condition.items()}},
        }
    summary["label_free"] = quality
    if replay is not None and "error" in replay:
        summary["node"] = replay
    elif replay is not None:
        summary["node"] = {
            "expected_pairs": replay.get("expected_pairs"),
            "answered_pairs": replay.get("answered_pairs"),
            "dropped": replay.get("dropped"),
            "latency_ms": replay.get("latency_from_stamp_ms") or replay.get("latency_from_pair_ms"),
            "fps": replay.get("node_diagnostics", {}).get("fps"),
        }
    if montage is not None:
        summary["overlay"] = str(montage)
    if prelabels is not None:
        summary["prelabels"] = prelabels
    write_text_atomic(opts.output / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    print_summary(summary)
    return summary


def print_summary(summary: dict) -> None:
    print("\n" + "=" * 72)
    print(f"taseg demo finished in {summary['seconds']:.0f} s; everything is in {summary['output']}")
    miou = summary.get("miou")
    if miou:
        row = lambda d: "  ".join(f"{k} {100 * v:5.1f}" for k, v in d.items())  # noqa: E731
        print(f"  mIoU with thermal      {row(miou['with_thermal'])}")
        print(f"  mIoU thermal blanked   {row(miou['thermal_blanked'])}")
    quality = summary.get("label_free")
    if quality:
        pct = lambda name: "-" if quality.get(name) is None else f"{100 * quality[name]:.1f}%"  # noqa: E731
        print(f"  label-free (recording)  mean confidence {pct('mean_confidence')}, flicker {pct('flicker')} raw / "
              f"{pct('flicker_compensated')} motion compensated, thermal reliance {pct('thermal_reliance')} "
              f"({quality['report']})")
    node = summary.get("node")
    if node and "error" in node:
        print(f"  node over DDS          FAILED: {node['error']}")
    elif node:
        lat = node.get("latency_ms") or {}
        print(
            f"  node over DDS          {node.get('answered_pairs')}/{node.get('expected_pairs')} pairs answered, "
            f"{node.get('dropped')} dropped, latency median {lat.get('median', float('nan')):.0f} ms"
            + (f", {node['fps']} fps" if node.get("fps") else "")
        )
    else:
        print("  node over DDS          skipped")
    if summary.get("overlay"):
        print(f"  picture                {summary['overlay']}")
    prelabels = summary.get("prelabels") or {}
    if "zip" in prelabels:
        print(f"  pre-labels for CVAT    {prelabels['zip']} ({prelabels['frames']} frames of the recording)")
    print("=" * 72)
