"""`taseg demo` end to end (short training), and its behaviour without ROS 2."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_demo(args, extra_code: str = "") -> subprocess.CompletedProcess:
    code = f"{extra_code}\nimport sys\nfrom taseg_ros.cli import main\nsys.exit(main({args!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, cwd=REPO)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    pytest.importorskip("rclpy")
    out = tmp_path_factory.mktemp("demo") / "out"
    result = run_demo(["demo", "-o", str(out), "--steps", "40", "--no-progress"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result.stdout


def test_demo_writes_every_step(demo_run):
    out, stdout = demo_run
    summary = json.loads((out / "summary.json").read_text())
    for key in ("all", "day", "night"):
        assert 0.0 <= summary["miou"]["with_thermal"][key] <= 1.0
        assert 0.0 <= summary["miou"]["thermal_blanked"][key] <= 1.0
    assert (out / "data" / "classes.yaml").is_file() and (out / "data" / "night.txt").is_file()
    assert (out / "train" / "best.safetensors").is_file() and (out / "train" / "train_log.csv").is_file()
    for report in ("eval", "eval_blank_thermal"):
        assert (out / report / "metrics.json").is_file() and (out / report / "iou_per_class.png").is_file()
    assert len(list((out / "predictions" / "overlay").glob("*.png"))) == 32
    assert (out / "demo_overlay.png").is_file()
    node = summary["node"]
    assert node["expected_pairs"] > 0 and node["answered_pairs"] > 0
    assert node["answered_pairs"] + node["dropped"] == node["expected_pairs"]
    assert (out / "bag" / "input" / "metadata.yaml").is_file() and (out / "bag" / "output" / "metadata.yaml").is_file()
    assert "taseg demo finished" in stdout and "mIoU thermal blanked" in stdout
    # the labelling loop on the demo's own recording: frames chosen, pre-labels as a CVAT zip
    assert summary["prelabels"]["frames"] == 4
    selected = (out / "labelling" / "to_label" / "selection.csv").read_text().splitlines()
    assert len(selected) == 1 + 4 and "pre-labels for CVAT" in stdout
    import zipfile

    with zipfile.ZipFile(out / "labelling" / "prelabels.zip") as zf:
        assert len([n for n in zf.namelist() if n.startswith("SegmentationClass/")]) == 4


def test_demo_on_a_given_checkpoint_and_data(demo_run, tmp_path):
    out, _ = demo_run
    result = run_demo(["demo", "-o", str(tmp_path / "again"), "--checkpoint", str(out / "train" / "best.safetensors"),
                       "--data-root", str(out / "data"), "--no-node"])
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "again" / "summary.json").read_text())
    first = json.loads((out / "summary.json").read_text())
    assert summary["miou"] == first["miou"]  # same model, same data, same protocol
    assert "node" not in summary and not (tmp_path / "again" / "train").exists()


def test_demo_without_ros_says_so_and_skips_the_node(tmp_path):
    # rclpy absent, as on a machine without the ROS 2 Python packages.
    result = run_demo(["demo", "-o", str(tmp_path / "noros"), "--steps", "5", "--no-progress"],
                      extra_code="import sys; sys.modules['rclpy'] = None")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "4/5 skipped: the ROS 2 Python packages are not importable (rclpy is missing)" in result.stdout
    assert "node over DDS          skipped" in result.stdout
