"""Reliability classes of issue 27 fixed at their roots, the homes every read and write goes through:

- b. writes outside the write mechanism (taseg_ros.outputs): `label import --force` through a link, on a
  full disk; two `bag eval` runs into one folder; a killed run's half-written output recording;
- c. files read outside the bounded reader (taseg_ros.config_io): FIFOs and devices, alias bombs, deep
  JSON, control characters, duplicate keys, values of the wrong type.

Each test fails on the code before the fix (a hang, a traceback, a file written through a link, both
runs reporting success). Cases that would block or exhaust memory there run in a child process with a
time and memory limit.
"""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from bag_fixtures import synthetic_frames, write_rgbt_bag
from system_limits import file_size_limit
from taseg_ros.bag.evaluate.compare import load_baseline_report
from taseg_ros.classes import load_classes
from taseg_ros.cli import main
from taseg_ros.config_io import ConfigError, parse_json, parse_yaml, read_yaml
from taseg_ros.demo.data import write_street_dataset
from taseg_ros.errors import TasegError
from taseg_ros.evaluation.gates import load_gates
from taseg_ros.frames.render import colorize
from taseg_ros.labelling.cvat import labelmap_text

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

REPO = Path(__file__).resolve().parents[1]
H, W = 32, 48


# --- c. files read outside the bounded reader ----------------------------------------------------------


def run_limited(code: str, timeout_s: float = 120, memory_bytes: int = 2 << 30) -> subprocess.CompletedProcess:
    """`code` in a child Python with an address-space limit (a reader that expands /dev/zero or an alias
    bomb fails there, not on the machine) and a time limit (one that waits on a FIFO is killed)."""

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    try:
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                              timeout=timeout_s, preexec_fn=limit, cwd=REPO)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still reading after {timeout_s} s (a reader that waits on a FIFO?)")


REFUSED = """
import sys
from taseg_ros.errors import TasegError
try:
    {call}
except TasegError as exc:
    print("REFUSED", str(exc))
    sys.exit(0 if "\\n" not in str(exc) else 3)
sys.exit(4)  # accepted
"""


@pytest.fixture()
def fifo(tmp_path) -> Path:
    path = tmp_path / "gates.yaml"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("reader", [
    "from taseg_ros.evaluation.gates import load_gates; load_gates({path!r})",
    "from taseg_ros.ros.params import homography_from_params_file; homography_from_params_file({path!r})",
])
@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_gates_and_registration_files_must_be_regular_files(reader, special, fifo):
    """--gates and --thermal-homography on a FIFO waited forever, on /dev/zero ran out of memory."""
    path = str(fifo) if special == "fifo" else special
    done = run_limited(REFUSED.format(call=reader.format(path=path)))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "not a regular file" in done.stdout and path in done.stdout


def test_a_gates_alias_bomb_is_refused_in_one_line(tmp_path):
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    lines.append("gates: {mean_confidence: {min: *a8}}")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    done = run_limited(REFUSED.format(call=f"from taseg_ros.evaluation.gates import load_gates; load_gates({str(path)!r})"))
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "aliases" in done.stdout


@pytest.mark.parametrize("text, expected", [
    ("gates:\n  mean_confidence: {min: 0.5}\n  mean_confidence: {max: 0.9}\n", "duplicate key 'mean_confidence'"),
    ("gates:\n  mean_confidence: {min: true}\n", "gates.mean_confidence.min: expected a number"),
    ("gates:\n  mean_confidence: {min: '0.5'}\n", "gates.mean_confidence.min: expected a number"),
])
def test_gates_hold_numbers_once(tmp_path, text, expected):
    """Duplicate keys, `true` and quoted numbers were accepted as gates."""
    path = tmp_path / "gates.yaml"
    path.write_text(text)
    with pytest.raises(TasegError) as refused:
        load_gates(path)
    message = str(refused.value)
    assert expected in message and str(path) in message and "\n" not in message, message


def test_yaml_numbers_in_exponent_form_are_numbers(tmp_path):
    """What makes refusing quoted numbers fair: 1e-2 (YAML 1.2) is a number, not the text PyYAML made of it."""
    path = tmp_path / "gates.yaml"
    path.write_text("gates:\n  mean_confidence: {change_min: -2e-2}\n  flicker: {max: 5E-2, change_max: 1}\n")
    assert [(g.figure, g.bound, g.limit) for g in load_gates(path)] == [
        ("mean_confidence", "change_min", -0.02), ("flicker", "max", 0.05), ("flicker", "change_max", 1.0)]
    assert parse_yaml("lr: 1e-4\nname: x1e5\nsteps: 100") == {"lr": 1e-4, "name": "x1e5", "steps": 100}


def test_every_yaml_parser_error_is_one_config_error_line(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("train:\n  steps: 10\x1b[31m\n")
    with pytest.raises(ConfigError) as refused:
        read_yaml(path)
    assert str(path) in str(refused.value) and "\n" not in str(refused.value)
    with pytest.raises(ConfigError, match="duplicate key 'steps'"):
        parse_yaml("steps: 1\nsteps: 2\n", "x.yaml")


def write_report(path: Path, summary: dict, **top) -> Path:
    report = {"class_names": ["a", "b"], "recording_start_ns": 5, "topics": {"rgb": "/rgb", "thermal": "/t"},
              "quality": {"summary": summary, "frames": 3},
              "per_frame": [{"rgb_stamp_ns": 5 + i, "quality": {"mean_confidence": 0.5}} for i in range(3)], **top}
    path.write_text(json.dumps(report))
    return path


def test_a_baseline_report_nested_deep_is_one_line(tmp_path):
    path = tmp_path / "report.json"
    path.write_text('{"quality": ' + "[" * 100_000 + "]" * 100_000 + ', "class_names": ["a", "b"]}')
    with pytest.raises(TasegError) as refused:  # was RecursionError
        load_baseline_report(path, ["a", "b"], 5, ("/rgb", "/t"))
    assert "nested deeper" in str(refused.value) and str(path) in str(refused.value)


@pytest.mark.parametrize("summary, top, expected", [
    ({"mean_confidence": "0.5"}, {}, "quality.summary.mean_confidence: expected a number"),
    ({"mean_confidence": True}, {}, "quality.summary.mean_confidence: expected a number"),
    ({"mean_confidence": 0.5}, {"recording_start_ns": "5"}, "recording_start_ns: expected"),
    ({"mean_confidence": 0.5}, {"class_names": "ab"}, "class_names: expected a list of strings"),
])
def test_a_baseline_report_holds_typed_values(tmp_path, summary, top, expected):
    """A string where a number belongs ended in a TypeError when the change was computed."""
    path = write_report(tmp_path / "report.json", summary, **top)
    with pytest.raises(TasegError) as refused:
        load_baseline_report(path, ["a", "b"], 5, ("/rgb", "/t"))
    assert expected in str(refused.value) and str(path) in str(refused.value), str(refused.value)
    good = write_report(tmp_path / "good.json", {"mean_confidence": 0.5, "flicker": None})
    assert load_baseline_report(good, ["a", "b"], 5, ("/rgb", "/t")).summary == {"mean_confidence": 0.5, "flicker": None}


def test_json_keys_given_twice_are_refused():
    with pytest.raises(ConfigError, match="duplicate key 'a'"):
        parse_json('{"a": 1, "a": 2}', "x.json")


# --- b. label import writes through the write mechanism ----------------------------------------------------


@pytest.fixture()
def labelled(tmp_path) -> tuple[Path, Path, dict]:
    """(dataset folder with labels/, a CVAT export of new masks for it, {id: the new labels})."""
    data = write_street_dataset(tmp_path / "data", num_train=2, num_val=1, num_test=1, height=H, width=W, seed=3)
    classes = load_classes(data / "classes.yaml")
    ids = sorted(p.stem for p in (data / "rgb").glob("*.png"))
    new = {i: np.full((H, W), 1 + k % 3, np.uint8) for k, i in enumerate(ids)}
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("labelmap.txt", labelmap_text(classes))
        for i, labels in new.items():
            zf.writestr(f"SegmentationClass/{i}.png", cv2.imencode(".png", colorize(labels, classes.palette)[:, :, ::-1])[1].tobytes())
    return data, archive, new


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_label_import_never_writes_through_a_labels_link_into_the_frames(labelled, capsys):
    data, archive, _ = labelled
    rgb_before = tree_bytes(data / "rgb")
    for label in (data / "labels").iterdir():
        label.unlink()
    (data / "labels").rmdir()
    (data / "labels").symlink_to("rgb")
    assert main(["label", "import", str(archive), str(data), "--force"]) == 2
    err = capsys.readouterr().err.strip()
    assert "labels" in err and "input" in err and err.count("\n") == 0, err
    assert tree_bytes(data / "rgb") == rgb_before  # the RGB frames were overwritten with labels


def test_label_import_replaces_a_label_link_instead_of_writing_through_it(labelled, tmp_path):
    data, archive, new = labelled
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"someone else's file")
    first = sorted(new)[0]
    (data / "labels" / f"{first}.png").unlink()
    (data / "labels" / f"{first}.png").symlink_to(outside)
    assert main(["label", "import", str(archive), str(data), "--force"]) == 0
    assert outside.read_bytes() == b"someone else's file"
    label = data / "labels" / f"{first}.png"
    assert not label.is_symlink() and np.array_equal(cv2.imread(str(label), cv2.IMREAD_UNCHANGED), new[first])


def test_label_import_on_a_full_disk_truncates_no_label_and_names_the_file(labelled, capsys):
    data, archive, _ = labelled
    before = tree_bytes(data / "labels")
    with file_size_limit(40):  # every label PNG is larger: the first write fails
        code = main(["label", "import", str(archive), str(data), "--force"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0, err
    assert "labels/" in err and ".png" in err and "file too large" in err, err
    assert tree_bytes(data / "labels") == before


# --- b. bag eval's outputs: one run per folder, no half-written recording -----------------------------------


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory) -> Path:
    """Enough pairs that `bag eval` of the tiny model runs for seconds: time to stop or kill it mid-run."""
    frames = synthetic_frames(8, 48, 64, seed=5) * 8
    return write_rgbt_bag(tmp_path_factory.mktemp("long") / "long", frames, seed=1).path


def start_eval(recording: Path, checkpoint: Path, out: Path, *options: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "taseg_ros.cli", "bag", "eval", str(recording), "--checkpoint",
                             str(checkpoint), "-o", str(out), "--force", *options], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, what: str, process: subprocess.Popen, deadline_s: float = 240) -> None:
    end = time.monotonic() + deadline_s
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"bag eval ended (exit {process.returncode}) before {what}: {process.stderr.read()[-2000:]}")
        if time.monotonic() > end:
            pytest.fail(f"no {what} after {deadline_s} s")
        time.sleep(0.02)


def storage_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.suffix == ".mcap"] if folder.is_dir() else []


@pytest.mark.slow
def test_two_bag_eval_runs_into_one_folder_do_not_both_succeed(long_recording, tiny_checkpoint, tmp_path, capsys):
    """Both wrote their report into the folder and both said so (without output recordings, which
    refused each other for another reason)."""
    out = tmp_path / "eval"
    first = start_eval(long_recording, tiny_checkpoint, out, "--max-pairs", "30", "--no-output-bag")
    try:
        wait_for(out.is_dir, "the report folder", first)
        first.send_signal(signal.SIGSTOP)  # the first run is mid-way, its folder open
        second = main(["bag", "eval", str(long_recording), "--checkpoint", str(tiny_checkpoint), "-o", str(out),
                       "--force", "--max-pairs", "5", "--no-output-bag"])
        err = capsys.readouterr().err.strip()
    finally:
        first.send_signal(signal.SIGCONT)
    first_code = first.wait(timeout=600)
    assert second == 2 and "another taseg run" in err and str(out) in err and err.count("\n") == 0, err
    assert first_code == 0, first.stderr.read()[-2000:]
    assert json.loads((out / "report.json").read_text())["frames"]["pairs"] == 30  # the first run's report, whole


def test_a_killed_runs_output_recording_does_not_block_the_rerun(long_recording, tiny_checkpoint, tmp_path):
    out = tmp_path / "eval"
    killed = start_eval(long_recording, tiny_checkpoint, out)
    try:
        wait_for(lambda: bool(storage_files(out)), "an output recording", killed)
    finally:
        killed.kill()
        killed.wait(timeout=60)
    assert not (out / "long_taseg" / "metadata.yaml").exists()  # killed before the recording was finished
    code = main(["bag", "eval", str(long_recording), "--checkpoint", str(tiny_checkpoint), "-o", str(out), "--force",
                 "--max-pairs", "5"])
    assert code == 0
    recording = out / "long_taseg"
    assert (recording / "metadata.yaml").is_file() and [p.name for p in storage_files(recording)] == ["long_taseg.mcap"]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".taseg-")]  # the killed run's temporary removed
    assert json.loads((out / "report.json").read_text())["output_bag"] == str(recording)  # its final name
