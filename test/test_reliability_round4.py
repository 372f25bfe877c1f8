"""Issue 27, reliability round 4: the classes of the sweep, each fixed at its root.

- a: text from files (topic names, zip members, report fields, gate names) is escaped wherever it
  is printed or written (``errors.safe_text`` / ``safe_lines``, the CLI's error line);
- d: zip archives: every member problem is one line, sizes are checked before inflating, and two
  members for one frame are refused;
- f: checks that check what runs (baseline reports over other frames, thermal ranges that blank
  the frame, `train --output ''`);
- g: degenerate stamps and values, closed pipes, SIGTERM.
(e, registration, is in test_registration.py; f's runtime files in test_runtimes.py; 6, precision,
in test_runtimes.py and test_bench.py.)
"""
from __future__ import annotations

import json
import signal
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bag_fixtures import synthetic_frames, write_rgbt_bag
from process_fixtures import finish, proc_text, taseg, wait_for
from taseg_ros.classes import load_classes
from taseg_ros.cli import main
from taseg_ros.labelling.cvat import labelmap_text

# Every line break YAML or a terminal knows, an ANSI colour and an OSC title sequence.
HOSTILE = "\x1b[31m\x1b]0;pwned\x07\r\x85\u2028\u2029\v\f\n"
RAW = set("\x1b\x07\r\x85\u2028\u2029\v\f")


def raw_characters(text: str) -> set[str]:
    return RAW & set(text)


def injected_lines(text: str) -> list[str]:
    """Lines that start with what followed a line break inside a hostile name."""
    return [line for line in text.split("\n") if line.startswith(("INJECTED", "    checkpoint: evil"))]


@pytest.fixture(scope="module")
def hostile_bag(tmp_path_factory) -> Path:
    """A recording whose topic names carry terminal escapes and a YAML injection after a line break."""
    path = tmp_path_factory.mktemp("hostile") / "run"
    write_rgbt_bag(path, synthetic_frames(4, 48, 64), rgb_topic="/camera/rgb" + HOSTILE + "INJECTED",
                   thermal_topic="/thermal" + HOSTILE + "/**/taseg:\n  ros__parameters:\n    checkpoint: evil.safetensors")
    return path


def run(argv, capsys) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_a_topic_names_are_escaped_in_every_report(hostile_bag, tmp_path, capsys, tiny_checkpoint):
    """(The registration file bag calibrate/refine write: test_registration.py.)"""
    commands = {
        "info": ["bag", "info", hostile_bag],
        "info (error)": ["bag", "info", hostile_bag, "--rgb-topic", "/no/such/topic"],
        "extract": ["bag", "extract", hostile_bag, "-o", tmp_path / "ds"],
        "eval": ["bag", "eval", hostile_bag, "--checkpoint", tiny_checkpoint, "-o", tmp_path / "eval",
                 "--no-output-bag"],
    }
    for name, argv in commands.items():
        code, text = run(argv, capsys)
        assert code == (2 if "error" in name else 0), (name, text)
        assert not raw_characters(text) and not injected_lines(text), (name, text)
        assert "\\x1b[31m" in text, (name, text)  # shown, escaped
    text = (tmp_path / "eval" / "report.md").read_text()
    assert not raw_characters(text) and not injected_lines(text), text


def test_a_zip_member_gate_and_baseline_text_reach_the_terminal_escaped(hostile_bag, tmp_path, capsys,
                                                                        tiny_checkpoint):
    # a zip member name (CVAT export) in an error
    dataset = tmp_path / "ds"
    assert run(["bag", "extract", hostile_bag, "-o", dataset], capsys)[0] == 0
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("labelmap.txt", labelmap_text(load_classes("mfnet")))
        zf.writestr("SegmentationClass/frame\x1b]0;pwned\x07\u2028.png", b"\x89PNG\r\n\x1a\n" + bytes(20))
    code, text = run(["label", "import", archive, dataset], capsys)
    assert code == 2 and "SegmentationClass/frame\\x1b]0;pwned\\x07" in text and not raw_characters(text), text
    # a gate figure name of a --gates file
    gates = tmp_path / "gates.yaml"
    gates.write_text('gates:\n  "mean\\e[2J\\u2028x": {min: 0.1}\n')
    base = ["bag", "eval", hostile_bag, "--checkpoint", tiny_checkpoint, "--no-output-bag"]
    code, text = run([*base, "--gates", gates, "-o", tmp_path / "e1"], capsys)
    assert code == 2 and "unknown figure" in text and not raw_characters(text), text
    # a baseline report's fields
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"bag": "other\x1b[2J\u2028run", "quality": {}, "class_names": [
        "unlabeled", "car", "person", "bike", "curve", "car_stop", "guardrail", "color_cone", "bump"],
        "recording_start_ns": 1, "topics": {"rgb": "/a\x1b[5m", "thermal": "/b\r"}}))
    code, text = run([*base, "--baseline", report, "-o", tmp_path / "e2"], capsys)
    assert code == 2 and "another recording" in text and not raw_characters(text), text


# --- f: checks that check what matters -------------------------------------------------------------


def test_f_a_fixed_thermal_range_that_blanks_the_frame_is_said(tmp_path, capsys, tiny_checkpoint):
    """16-bit counts (~7000..14650) with the 8-bit range 0..255: every pixel was 1.0 and the model ran
    on RGB alone without a word. Now a note per frame kind: bag eval's report and the node's log."""
    from taseg_ros.frames.thermal import ThermalNormalization, ThermalPreparation

    bag = write_rgbt_bag(tmp_path / "run", synthetic_frames(3, 48, 64), thermal_encoding="mono16", imu=False).path
    code, text = run(["bag", "eval", bag, "--checkpoint", tiny_checkpoint, "-o", tmp_path / "eval", "--no-output-bag",
                      "--thermal-range", "0", "255"], capsys)
    assert code == 0 and "is at or above the fixed range 0..255: the thermal input is blank" in text, text
    counts = np.array([[7000, 9000], [12000, 14000]], np.uint16)
    for low, high, says in ((0, 255, "(7000..14000) is at or above"), (20000, 30000, "(7000..14000) is at or below"),
                            (0, 65535, None), (8000, 13000, None)):  # partly outside: a contrast choice, no note
        _, notes = ThermalPreparation(ThermalNormalization("fixed", low, high))(counts, (2, 2))
        texts = [n.text for n in notes if n.kind == "thermal_out_of_range"]
        assert (texts[0].startswith(f"every thermal pixel {says}") if says else not texts), (low, high, texts)


def test_f_train_output_empty_is_refused_not_the_recipes_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for argv in (["--output", ""], ["train.output="], ["train.output=''"]):
        code = main(["train", "mfnet", "--data-root", str(tmp_path / "data"), *argv])
        err = capsys.readouterr().err
        assert code == 2 and "train.output" in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert list(tmp_path.iterdir()) == []  # no runs/experiment
    # a path that reads as YAML is still a path
    from taseg_ros.train.recipe import load_recipe

    assert load_recipe("mfnet", ['train.output="yes"']).train.output == "yes"


# --- g: degenerate inputs and signals ------------------------------------------------------------------


@pytest.fixture(scope="module")
def unstamped_bags(tmp_path_factory) -> dict[str, Path]:
    """Recordings whose image stamps are all zero, or all negative (drivers that do not stamp)."""
    from taseg_ros.bag.io.messages import image_message
    from taseg_ros.bag.io.writer import BagWriter

    frames, bags = synthetic_frames(4, 48, 64), {}
    for name, stamp in (("zero", lambda i: 0), ("negative", lambda i: -10**9 + i * 10**8)):
        bags[name] = tmp_path_factory.mktemp("unstamped") / name
        with BagWriter(bags[name], storage="mcap", compress=False, distro="kilted") as writer:
            for i, frame in enumerate(frames):
                log = 1_700_000_000 * 10**9 + i * 10**8
                writer.write("/camera/image_raw", "sensor_msgs/msg/Image", log, image_message(stamp(i), "c", frame.rgb, "rgb8"))
                writer.write("/thermal/image_raw", "sensor_msgs/msg/Image", log + 1000,
                             image_message(stamp(i), "t", frame.thermal, "mono8"))
    return bags


def test_g_zero_or_negative_stamps_are_a_verdict_not_a_traceback(unstamped_bags, tmp_path, capsys, tiny_checkpoint):
    says = "every stamp of RGB (4 frames) and thermal (4 frames) is zero or negative"
    for name, bag in unstamped_bags.items():
        for argv, expected in ((["bag", "info", bag], 1), (["bag", "extract", bag, "-o", tmp_path / f"{name}_ds"], 2),
                               (["bag", "eval", bag, "--checkpoint", tiny_checkpoint, "-o", tmp_path / f"{name}_ev",
                                 "--no-output-bag"], 2)):
            code, text = run(argv, capsys)
            assert code == expected and says in text, (name, argv, text)


@pytest.mark.parametrize("option, value, says", [
    ("--min-gap", "inf", "--min-gap must be a finite number of seconds"),
    ("--segment-window", "inf", "--segment-window must be a finite number of seconds"),
    ("--label-tolerance", "nan", "--label-tolerance must be a finite number of seconds"),
])
def test_g_non_finite_numbers_are_refused_in_one_line(hostile_bag, tmp_path, capsys, tiny_checkpoint, option, value, says):
    command = "select" if option == "--min-gap" else "eval"
    extra = ["-k", "2"] if command == "select" else ["--no-output-bag"]
    code, text = run(["bag", command, hostile_bag, "--checkpoint", tiny_checkpoint, "-o", tmp_path / "out", *extra,
                      option, value], capsys)
    assert code == 2 and says in text and len(text.strip().splitlines()) == 1, text
    assert not (tmp_path / "out").exists()


def test_g_a_closed_stdout_ends_quietly(hostile_bag):
    """`taseg bag info REC | head -1`: the reader left; was a BrokenPipeError traceback."""
    process = taseg("bag", "info", hostile_bag)
    process.stdout.close()  # before the command writes: it is still importing
    err = process.stderr.read()
    assert process.wait(timeout=240) == 141 and "Traceback" not in err, err


def test_g_sigterm_while_the_command_starts_is_ctrl_c(hostile_bag, tiny_checkpoint, tmp_path):
    """SIGTERM while `bag select` loads its modules (torch): was ended by the signal (-15), not exit 143."""
    out = tmp_path / "sel"
    process = taseg("bag", "select", hostile_bag, "--checkpoint", tiny_checkpoint, "-k", "1", "-o", out)
    wait_for(lambda: "libtorch" in proc_text(process, "maps"), process, "torch loading", poll_s=0.005)
    process.send_signal(signal.SIGTERM)
    code, _, err = finish(process)
    assert code == 143 and "terminated" in err and "Traceback" not in err, (code, err)
    assert not out.exists()


def test_g_a_handled_interrupt_inside_exec_keeps_the_exit_code_under_python_m(tmp_path):
    """A SIGTERM that lands while a dataclass is being built (its methods come from exec() of a string)
    was handled (`terminated`, 143), yet `python -m taseg_ros.cli` then died by SIGINT (-2): CPython
    3.11 keeps a flag from that exec() (measured: sys.exit(143) here exits -2). exit_as_module resets it."""
    import subprocess
    import sys

    package = tmp_path / "probe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(
        "from taseg_ros.cli import exit_as_module\n"
        "try:\n    exec('raise KeyboardInterrupt')\nexcept KeyboardInterrupt:\n    pass\n"
        "exit_as_module(143)\n")
    done = subprocess.run([sys.executable, "-m", "probe"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 143, done.stderr
