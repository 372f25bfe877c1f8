"""Measure the node's own per-frame work next to the model's inference time.

    python -m taseg_ros.ros.bench --size 640x480 --frames 50            # tiny untrained model
    python -m taseg_ros.ros.bench --checkpoint models/my.safetensors --device cuda

Four measurements on the same frames:
  1. model: the inference step of the node's per-frame pipeline (``inference.pipeline.FramePipeline``), on a
     worker thread like the node's;
  2. steps: that pipeline's own per-step timings (decode, thermal, inference, render), without DDS;
  3. node: the real lifecycle node over DDS (rclpy), fed one pair at a time (closed loop, so
     nothing is dropped; ``fps`` is that loop's rate after 3 warm-up frames), with subscribers on
     labels/colorized/overlay; its own statistics
     split each frame into inference and overhead (decode + thermal normalise/resize +
     colourise + message building + publishing) and give the stamp-to-publish latency;
  4. quality: the label-free figures the node adds to its diagnostics (``quality_diagnostics``:
     mean confidence, low-confidence share, raw flicker), and for comparison what ``bag eval`` adds
     per pair (also p5, per-class and DIS motion-compensated flicker), as a share of the
     pipeline's per-frame time.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from taseg_ros.evaluation.quality import QualityTracker
from taseg_ros.errors import InputError
from taseg_ros.frames.codec import encode_image
from taseg_ros.inference import Segmenter
from taseg_ros.inference.pipeline import FramePipeline
from taseg_ros.model.checkpoint import init_checkpoint
from taseg_ros.outputs import write_text_atomic
from taseg_ros.ros.diagnostics import NodeStatistics
from taseg_ros.ros.domains import claim_domain
from taseg_ros.frames.render import OUTPUTS, RENDERED_OUTPUTS
from taseg_ros.frames.settings import STEPS
from taseg_ros.frames.sizes import parse_size
from taseg_ros.ros.client import wait_for
from taseg_ros.ros.params import NodeParams
from taseg_ros.scenes import scene_pair16
from taseg_ros.timing import summarize_ms


def _frames(height: int, width: int):
    return scene_pair16(height, width)


def _timeit(fn, repeats: int) -> list[float]:
    fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def _in_thread(fn):
    result = []
    worker = threading.Thread(target=lambda: result.append(fn()), name="taseg_bench_model")
    worker.start()
    worker.join()
    return result[0]


def _pipeline_runs(pipeline, rgb_msg, thermal_msg, frames: int, outputs=RENDERED_OUTPUTS) -> list:
    """FramePipeline results for ``frames`` runs after one warm-up, on a worker thread as in the node."""
    def run():
        pipeline.process_messages(rgb_msg, thermal_msg, outputs)
        return [pipeline.process_messages(rgb_msg, thermal_msg, outputs) for _ in range(frames)]

    return _in_thread(run)


def bench_model_and_steps(checkpoint: Path, height: int, width: int, frames: int, device: str, precision: str) -> dict:
    """The node's per-frame pipeline without DDS: its own step timings, with thermal at the RGB size
    and at half size (the resize step), plus rendering and building the output messages with every
    output subscribed (raw and compressed) and with only ~/labels (the node skips the others)."""
    seg = Segmenter.from_checkpoint(checkpoint, device=device, precision=precision)
    rgb, thermal = _frames(height, width)
    pipeline = FramePipeline(seg)
    # the codec is duck-typed: encoded image fields decode like a message, so this part needs no rclpy
    bgr = encode_image(rgb[:, :, ::-1].copy(), "bgr8")
    full = _pipeline_runs(pipeline, bgr, encode_image(thermal, "mono16"), frames)
    half = _pipeline_runs(pipeline, bgr, encode_image(thermal[::2, ::2].copy(), "mono16"), frames)
    labels_only = _pipeline_runs(pipeline, bgr, encode_image(thermal, "mono16"), frames, outputs=())
    steps = {step: [r.timings[step] for r in full] for step in STEPS}
    steps["thermal_from_half_size"] = [r.timings["thermal"] for r in half]
    steps["render_labels_only"] = [r.timings["render"] for r in labels_only]
    steps.update(_quality_costs(full, len(seg.class_info.names), frames))
    try:
        from std_msgs.msg import Header

        from taseg_ros.ros.publishers import COMPRESSED, output_messages

        header, last, params = Header(), full[-1], NodeParams(publish_confidence=True)
        steps["messages_all_outputs"] = _timeit(
            lambda: output_messages(header, last, params, list(OUTPUTS), list(COMPRESSED)), frames)
        steps["messages_labels_only"] = _timeit(lambda: output_messages(header, last, params, ["labels"], []), frames)
    except ImportError:  # no rclpy: the message-building step is measured by the node run only
        pass
    seg.release()
    return {"model": summarize_ms(steps["inference"]), "steps": {k: summarize_ms(v) for k, v in steps.items()}}


def _quality_costs(results: list, classes: int, frames: int) -> dict[str, list[float]]:
    """Seconds per frame of evaluation.quality as the node runs it (quality_node) and as bag eval
    does (quality_bag_eval); frames alternate with a copy shifted by 3 px, so every flicker is computed
    on two different frames."""
    first = results[-1]
    shifted = (np.roll(first.labels, 3, axis=1), np.roll(first.confidence, 3, axis=1), np.roll(first.rgb, 3, axis=1))
    inputs = [(first.labels, first.confidence, first.rgb), shifted]
    out = {}
    for name, tracker in (("quality_node", QualityTracker(classes, motion=False, detailed=False)),
                          ("quality_bag_eval", QualityTracker(classes))):
        counter = iter(range(10**9))

        def one(tracker=tracker):
            labels, confidence, rgb = inputs[next(counter) % 2]
            tracker.update(labels, confidence, rgb=rgb if tracker.motion is not None else None)

        out[name] = _timeit(one, frames)
    return out


def bench_node(checkpoint: Path, height: int, width: int, frames: int, device: str, precision: str,
               backend: str = "auto") -> dict:
    """The real lifecycle node over DDS, closed loop: publish a pair, wait for all three outputs."""
    bench = _NodeBench(checkpoint, device, precision, backend)
    try:
        bench.start()
        return bench.run(*_frames(height, width), frames)
    finally:
        bench.close()


class _NodeBench:
    """A node and a probe node (publishers of the pairs, subscribers of the outputs) in one context."""

    VIEWED = tuple(name for name in OUTPUTS if name != "confidence")  # what a viewer subscribes to
    WARMUP = 3

    def __init__(self, checkpoint: Path, device: str, precision: str, backend: str) -> None:
        from rclpy.parameter import Parameter

        from taseg_ros.ros.client import ToolNode
        from taseg_ros.ros.node import TASegNode

        self.probe = ToolNode("bench_probe", namespace="/bench", domain_id=claim_domain())
        params = {"checkpoint": str(checkpoint), "device": device, "precision": precision, "backend": backend,
                  "input_qos": "reliable"}
        self.node = TASegNode(namespace="/bench", context=self.probe.context,
                              parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        self.probe.add_node(self.node)
        self.rgb_pub = self.probe.publisher("rgb/image", "sensor_msgs/msg/Image")
        self.thermal_pub = self.probe.publisher("thermal/image", "sensor_msgs/msg/Image")
        self.received = {name: 0 for name in self.VIEWED}
        self.cond = threading.Condition()
        self.subs = [self.probe.subscribe(f"taseg/{name}", "sensor_msgs/msg/Image", self._counter(name))
                     for name in self.VIEWED]

    def _counter(self, name: str):
        def on_msg(_):
            with self.cond:
                self.received[name] += 1
                self.cond.notify_all()
        return on_msg

    def start(self) -> None:
        from rclpy.lifecycle import TransitionCallbackReturn

        self.probe.start()
        if self.node.trigger_configure() != TransitionCallbackReturn.SUCCESS:  # to_label() is "transition_success"
            raise RuntimeError(f"configure failed: {self.node.configure_error}")
        self.node.trigger_activate()
        wait_for(self._connected, 30)

    def _connected(self) -> bool:
        return bool(self.rgb_pub.get_subscription_count() and self.thermal_pub.get_subscription_count()
                    and all(s.get_publisher_count() for s in self.subs))

    def run(self, rgb: np.ndarray, thermal: np.ndarray, frames: int) -> dict:
        from std_msgs.msg import Header

        from taseg_ros.ros.messages import image_message

        rgb_msg, thermal_msg = image_message(Header(), rgb, "rgb8"), image_message(Header(), thermal, "mono16")
        for i in range(frames + self.WARMUP):
            if i == self.WARMUP:
                # The node records a frame's statistics after publishing its outputs: wait for the last
                # warm-up frame's record before dropping them, or (on a loaded machine) it lands in the
                # measured statistics as a fourth frame.
                wait_for(lambda: self.node.health.stats.processed >= self.WARMUP, 30)
                self.node.health.stats = NodeStatistics()  # drop the warm-up frames from the statistics
                measured_from = time.perf_counter()
            self._one_pair(rgb_msg, thermal_msg, i)
        elapsed = time.perf_counter() - measured_from
        deadline = time.monotonic() + 10
        while self.node.health.stats.processed < frames and time.monotonic() < deadline:
            time.sleep(0.01)
        return self._result(frames / elapsed)

    def _one_pair(self, rgb_msg, thermal_msg, index: int) -> None:
        rgb_msg.header.stamp = thermal_msg.header.stamp = self.probe.now()
        with self.cond:
            target = self.received["overlay"] + 1
        self.rgb_pub.publish(rgb_msg)
        self.thermal_pub.publish(thermal_msg)
        with self.cond:
            if not self.cond.wait_for(lambda: min(self.received.values()) >= target, timeout=60):
                raise RuntimeError(f"no output for frame {index}")

    def _result(self, fps: float) -> dict:
        snap = self.node.health.stats.snapshot()
        result = {"fps": fps, "processed": snap["processed"], "dropped": self.node._slot.dropped,
                  "errors": snap["errors"]}
        for name in ("inference", "overhead", "latency", "prepare", "publish"):
            result[name] = {k: v * 1e3 for k, v in snap[name].items()}  # ms, named as timing.summarize_ms names them
        return result

    def close(self) -> None:
        self.probe.close()  # destroys the node too, which releases what it holds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="TASeg checkpoint (default: a tiny untrained model made on the fly)")
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the frames (default 640x480)")
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--no-node", action="store_true", help="skip the DDS run (no rclpy needed)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    try:
        width, height = parse_size(args.size)
    except InputError as exc:
        parser.error(f"--size: {exc}")

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(args.checkpoint) if args.checkpoint else Path(tmp) / "tiny.safetensors"
        if not args.checkpoint:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                init_checkpoint("tiny", "mfnet", checkpoint)
        results = {"size": f"{width}x{height}", "frames": args.frames, "device": args.device,
                   "precision": args.precision, "cpu_count": os.cpu_count()}
        results.update(bench_model_and_steps(checkpoint, height, width, args.frames, args.device, args.precision))
        if not args.no_node:
            results["node"] = bench_node(checkpoint, height, width, args.frames, args.device, args.precision)

    print(f"{width}x{height}, {args.frames} frames, {args.device} {args.precision}")
    print(f"  model predict           {results['model']['mean']:8.2f} ms mean  {results['model']['p95']:8.2f} ms p95")
    for name, value in results["steps"].items():
        print(f"  step {name:<22} {value['mean']:7.2f} ms mean  {value['p95']:8.2f} ms p95")
    total = sum(results["steps"][step]["mean"] for step in STEPS)
    for name in ("quality_node", "quality_bag_eval"):
        print(f"  {name} / pipeline per-frame time = {results['steps'][name]['mean'] / total:.2%}")
    if "messages_all_outputs" in results["steps"]:
        every = results["steps"]["render"]["mean"] + results["steps"]["messages_all_outputs"]["mean"]
        labels = results["steps"]["render_labels_only"]["mean"] + results["steps"]["messages_labels_only"]["mean"]
        print(f"  outputs rendered + built per frame: every output subscribed (4 raw incl. confidence, 3 compressed) "
              f"{every:.2f} ms, only ~/labels {labels:.2f} ms: skipping the unsubscribed ones saves {every - labels:.2f} ms")
    if "node" in results:
        node = results["node"]
        print(f"  node ({node['processed']} frames, {node['dropped']} dropped, errors {node['errors'] or 0}, "
              f"{node['fps']:.2f} fps closed loop):")
        for name in ("inference", "overhead", "prepare", "publish", "latency"):
            print(f"    {name:<10} {node[name]['mean']:8.2f} ms mean  {node[name]['p95']:8.2f} ms p95"
                  f"  {node[name]['max']:8.2f} ms max")
        ratio = node["overhead"]["mean"] / node["inference"]["mean"]
        print(f"    overhead / inference = {ratio:.1%}")
    if args.json:
        write_text_atomic(args.json, json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
