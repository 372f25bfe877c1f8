#!/usr/bin/env python3
"""Frames lost in transport between a camera and the node (issue 25; prints figures, no pass/fail).

The real node is started by the real launch file (`ros2 launch taseg_ros taseg.launch.py` from a
colcon build of the checkout) with the launch file's defaults, plus any launch arguments given here;
a camera in this process (another process than the node, as a driver is) publishes RGB + thermal
pairs at a fixed rate, the way a typical driver does (reliable, keep last 10: rclpy's default
profile). The node's own counters are read from /diagnostics before and after the measured frames.

    .venv/bin/python scripts/bench_transport.py                                  # both cases, launch defaults
    .venv/bin/python scripts/bench_transport.py input_qos:=sensor_data input_depth:=1 dds_transport:=  # a variant
    .venv/bin/python scripts/bench_transport.py --source ../main                 # another checkout (before)

Cases: RGB 1280x720 rgb8 + thermal 640x512 mono16 at 30 Hz, and RGB 640x480 + thermal 640x512 at
10 Hz, each for --seconds. Printed per stream: frames sent, received by the node's callbacks, lost in
transport (sent - received) and how many of those DDS itself reported lost (SAMPLE_LOST); then the
pairs made, processed, and dropped by the node's newest-pair-wins policy (the model is slower than
the camera on a CPU: those drops are by design and counted). Needs `ros2` (launch) and `colcon`
beside this Python (../shared/ros2_tools/install.sh puts them there).
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from taseg_ros.ros.domains import claim_domain

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CASES = {"1280x720@30": (1280, 720, 30.0), "640x480@10": (640, 480, 10.0)}
THERMAL_WH = (640, 512)
COUNTERS = ("rgb_received", "thermal_received", "pairs", "processed", "dropped", "lost_rgb", "lost_thermal")


def build(source: Path, workspace: Path) -> Path:
    """colcon build of `source`'s tracked files in `workspace`; the install prefix."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=source,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (source / name).is_file():
            (workspace / "src" / "taseg_ros" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, workspace / "src" / "taseg_ros" / name)
    done = subprocess.run([str(BIN / "colcon"), "build", "--packages-select", "taseg_ros"], cwd=workspace,
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"bench_transport: colcon build failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return workspace / "install" / "taseg_ros"


class Launch:
    def __init__(self, prefix: Path, checkpoint: Path, domain: int, args: list[str], log: Path,
                 node_env: dict[str, str]) -> None:
        site = next((prefix / "lib").glob("python3*/site-packages"))
        env = {**os.environ, **node_env, "ROS_DOMAIN_ID": str(domain), "PYTHONUNBUFFERED": "1", "RCUTILS_COLORIZED_OUTPUT": "0",
               "AMENT_PREFIX_PATH": os.pathsep.join(filter(None, [str(prefix), os.environ.get("AMENT_PREFIX_PATH")])),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
               "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")])}
        self.log_path, self.log = log, open(log, "w")
        command = [str(BIN / "ros2"), "launch", "taseg_ros", "taseg.launch.py", f"checkpoint:={checkpoint}",
                   "namespace:=bench", "rgb_topic:=/bench_cam/rgb", "thermal_topic:=/bench_cam/thermal", *args]
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def wait_active(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while "active:" not in self.output():
            if self.process.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"bench_transport: the node did not become active:\n{self.output()[-3000:]}")
            time.sleep(0.5)

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


class Camera:
    """Publishes pairs (cycling four different frames, so nothing looks frozen) and reads the node's
    diagnostics counters."""

    def __init__(self, domain: int, rgb_wh: tuple[int, int]) -> None:
        from std_msgs.msg import Header

        from taseg_ros.ros.client import ToolNode
        from taseg_ros.ros.messages import image_message
        from taseg_ros.scenes import scene_pair16

        self.ros = ToolNode(f"bench_camera_{os.getpid()}", domain_id=domain)
        self.rgb_pub = self.ros.publisher("/bench_cam/rgb", "sensor_msgs/msg/Image", "reliable", 10)
        self.thermal_pub = self.ros.publisher("/bench_cam/thermal", "sensor_msgs/msg/Image", "reliable", 10)
        self.values: dict[str, str] = {}
        self.updates = 0
        self.lock = threading.Lock()
        self.ros.subscribe("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", self._on_diagnostics, "reliable", 10)
        rgb, _ = scene_pair16(rgb_wh[1], rgb_wh[0])
        _, thermal = scene_pair16(THERMAL_WH[1], THERMAL_WH[0])
        self.rgb = [image_message(Header(frame_id="cam_rgb"), np.roll(rgb, 7 * i, axis=1), "rgb8") for i in range(4)]
        self.thermal = [image_message(Header(frame_id="cam_thermal"), np.roll(thermal, 5 * i, axis=1), "mono16")
                        for i in range(4)]
        self.ros.start()

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name == "/bench/taseg: segmentation":
                with self.lock:
                    self.values = {kv.key: kv.value for kv in status.values}
                    self.updates += 1

    def counters(self) -> dict[str, int]:
        with self.lock:
            return {key: int(self.values.get(key, 0)) for key in COUNTERS}

    def connected(self) -> bool:
        with self.lock:
            seen = self.updates > 0
        return seen and self.rgb_pub.get_subscription_count() > 0 and self.thermal_pub.get_subscription_count() > 0

    def publish(self, rate_hz: float, count: int) -> float:
        """`count` pairs at `rate_hz` (thermal stamped 2 ms after RGB); the achieved rate."""
        period, start, last = 1.0 / rate_hz, time.perf_counter(), time.perf_counter()
        for i in range(count):
            delay = start + i * period - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            stamp_ns = self.ros.node.get_clock().now().nanoseconds
            rgb, thermal = self.rgb[i % 4], self.thermal[i % 4]
            rgb.header.stamp.sec, rgb.header.stamp.nanosec = divmod(stamp_ns, 10**9)
            thermal.header.stamp.sec, thermal.header.stamp.nanosec = divmod(stamp_ns + 2_000_000, 10**9)
            self.rgb_pub.publish(rgb)
            self.thermal_pub.publish(thermal)
            last = time.perf_counter()
        return (count - 1) / (last - start) if count > 1 and last > start else rate_hz

    def settled(self, timeout: float = 120) -> dict[str, int]:
        """The counters once three diagnostics in a row (>= 2 s) no longer change."""
        deadline, last, same_since = time.monotonic() + timeout, None, time.monotonic()
        while time.monotonic() < deadline:
            now = self.counters()
            if now != last:
                last, same_since = now, time.monotonic()
            elif time.monotonic() - same_since > 3.0:
                return now
            time.sleep(0.2)
        return last or self.counters()

    def close(self) -> None:
        self.ros.close()


def run_case(prefix: Path, checkpoint: Path, name: str, seconds: float, args: list[str], tmp: Path,
             node_env: dict[str, str]) -> dict:
    width, height, rate = CASES[name]
    domain = claim_domain()
    launch = Launch(prefix, checkpoint, domain, args, tmp / f"launch_{name}.log", node_env)
    camera = None
    try:
        launch.wait_active()
        camera = Camera(domain, (width, height))
        deadline = time.monotonic() + 120
        while not camera.connected():
            if time.monotonic() > deadline:
                sys.exit("bench_transport: the camera and the node did not discover each other in 120 s")
            time.sleep(0.2)
        camera.publish(rate, int(rate * 2))  # warm-up: discovery settles on both sides, the model is warm
        before = camera.settled()
        count = int(rate * seconds)
        achieved = camera.publish(rate, count)
        after = camera.settled()
    finally:
        if camera is not None:
            camera.close()
        launch.close()
    delta = {key: after[key] - before[key] for key in COUNTERS}
    return {"case": name, "sent": count, "rate": achieved, **delta}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("launch_args", nargs="*", help="launch arguments name:=value for the node (a variant)")
    parser.add_argument("--source", type=Path, default=REPO, help="checkout whose launch file and node run (default: this one)")
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="default: both")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per case (default 10)")
    parser.add_argument("--node-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the launch (the node) only, e.g. a DDS setting")
    parser.add_argument("--camera-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the camera (this process's DDS participant)")
    args = parser.parse_args(argv)
    if not (BIN / "ros2").exists() or not (BIN / "colcon").exists():
        sys.exit(f"bench_transport: needs `ros2` and `colcon` in {BIN} (../shared/ros2_tools/install.sh {sys.executable})")
    os.environ.update(dict(item.split("=", 1) for item in args.camera_env))  # read when the camera's participant starts
    from taseg_ros.model.checkpoint import init_checkpoint

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        prefix = build(args.source.resolve(), tmp / "ws")
        checkpoint = tmp / "tiny.safetensors"
        init_checkpoint("tiny", "mfnet", checkpoint)
        node_env = dict(item.split("=", 1) for item in args.node_env)
        results = [run_case(prefix, checkpoint, case, args.seconds, args.launch_args, tmp, node_env)
                   for case in args.case or list(CASES)]
    flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0] if Path("/proc/cpuinfo").exists() else ""
    print(f"source {args.source}, launch arguments {' '.join(args.launch_args) or '(defaults)'}"
          f"{', node environment ' + ' '.join(args.node_env) if args.node_env else ''}"
          f"{', camera environment ' + ' '.join(args.camera_env) if args.camera_env else ''}; "
          f"{os.cpu_count()} CPUs (avx512_bf16: {'avx512_bf16' in flags}), load {os.getloadavg()[0]:.1f}")
    print("case         sent  rgb recv  lost (DDS)  thermal recv  lost (DDS)  pairs  processed  dropped (newest wins)")
    for r in results:
        print(f"{r['case']:<11} {r['sent']:5d}  {r['rgb_received']:8d}  {r['sent'] - r['rgb_received']:4d} ({r['lost_rgb']:3d})"
              f"  {r['thermal_received']:12d}  {r['sent'] - r['thermal_received']:4d} ({r['lost_thermal']:3d})"
              f"  {r['pairs']:5d}  {r['processed']:9d}  {r['dropped']:7d}   [{r['rate']:.1f} Hz sent]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
