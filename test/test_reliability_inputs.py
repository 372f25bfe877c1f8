"""Issue 19, the classes that need more than one in-process command (the one-line refusals of
hostile files are rows of the sweep in test_cli_errors.py):

- 3: one `taseg train` per run folder (two real processes; the lock dies with its process);
- 4: --resume checks what it reads; a killed run's temporaries are cleaned when a run starts;
- 12: the bounded YAML/JSON readers themselves; a corrupt recipe_history.json;
- 15: SIGTERM does what Ctrl-C does (real subprocesses sent SIGTERM mid-run).

Every wait is a condition polled up to a generous deadline (never a fixed sleep): the machine
running the suite may be loaded.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from process_fixtures import DEADLINE_S, REPO, finish, taseg, wait_for
from taseg_ros.cli import main


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from taseg_ros.demo.data import write_street_dataset

    return write_street_dataset(tmp_path_factory.mktemp("street") / "data", num_train=4, num_val=2, num_test=2,
                                height=32, width=48, seed=3)


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if "error:" in line]


def run_cli(argv, capsys) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def train_args(data: Path, run: Path, steps: int, *extra: str) -> list[str]:
    return ["train", "demo_tiny", f"--data-root={data}", f"--output={run}", "--no-progress", "data.crop=[32,48]",
            "data.num_workers=0", f"train.steps={steps}", "train.batch_size=2", "train.micro_batch_size=2",
            f"train.val_every={steps}", "train.log_every=1", f"train.checkpoint_every={steps}", "train.device=cpu", *extra]


# --- 3: one run per folder ----------------------------------------------------------------------
def test_a_second_train_into_a_running_runs_folder_is_refused_with_the_pid_of_the_first(tmp_path, data):
    run = tmp_path / "run"
    lock = run / ".taseg_train.lock"  # run_dir.LOCK_FILE
    first = taseg(*train_args(data, run, 1_000_000))  # runs until stopped
    log = run / "train_log.csv"
    wait_for(lambda: log.is_file() and log.read_text().count("\n") > 1, first, "the first run's first logged step")

    # --force too: it must not clear a live run's files (was: both runs went on, interleaved)
    for code, _, err in [finish(p) for p in [taseg(*train_args(data, run, 2), *extra) for extra in (["--force"], [])]]:
        assert code == 2, err
        (line,) = error_lines(err)
        assert f"is in use by another `taseg train` (PID {first.pid})" in line, line
    assert lock.read_text().strip() == str(first.pid)
    steps = log.read_text().count("\n")
    wait_for(lambda: log.read_text().count("\n") > steps, first, "the first run's next step")  # it goes on
    assert (run / "init.safetensors").is_file()

    first.send_signal(signal.SIGTERM)  # 15: stopped like Ctrl-C: its clean-up runs, the lock goes
    code, _, err = finish(first)
    assert code == 143 and "terminated" in err, err
    assert not lock.exists()


def test_the_lock_dies_with_its_process(tmp_path):
    """A run killed with SIGKILL leaves its lock file; the kernel has dropped the lock, so the next
    run takes it (no stale-lock refusal, no PID guessing)."""
    from taseg_ros.train.run_dir import RunFolderInUse, _locked

    lock = tmp_path / ".taseg_train.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from taseg_ros.train.run_dir import _locked\n"
         f"with _locked(Path({str(lock)!r})):\n    print('locked', flush=True); time.sleep(600)"],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RunFolderInUse, match=f"PID {holder.pid}"):
        with _locked(lock):
            pass
    holder.kill()
    holder.wait(timeout=DEADLINE_S)
    assert lock.read_text().strip() == str(holder.pid)  # the dead run's file is still there
    with _locked(lock):
        assert lock.read_text().strip() == str(os.getpid())
    assert not lock.exists()


# --- 4: resume reads only what is sound; temporaries of a killed run go ---------------------------
def test_resume_refuses_a_damaged_checkpoint_and_a_run_start_removes_stale_temporaries(tmp_path, data, capsys):
    run = tmp_path / "run"
    args = train_args(data, run, 2)
    code, err = run_cli(args, capsys)
    assert code == 0, err
    best = (run / "best.safetensors").read_bytes()

    (run / "best.safetensors").write_bytes(best[: len(best) // 2])  # truncated (a full disk, a killed copy)
    code, err = run_cli([*args, "--resume"], capsys)
    assert code == 2
    (line,) = error_lines(err)
    assert "best.safetensors: cannot be read" in line and "--force" in line, line
    (run / "best.safetensors").write_bytes(b"\0" * 64)  # not a checkpoint at all
    code, err = run_cli([*args, "--resume"], capsys)
    assert code == 2 and "best.safetensors: cannot be read" in error_lines(err)[0]
    (run / "best.safetensors").unlink()  # the state records a best model: its file must be there
    code, err = run_cli([*args, "--resume"], capsys)
    assert code == 2 and "best.safetensors is missing (the state records a best model at step 2)" in error_lines(err)[0]

    (run / "best.safetensors").write_bytes(best)
    # outputs.replacing's temporaries (a file, the staging folder of a several-file write) and older names
    stale = [run / ".taseg-4242-0a1b2c3d.tmp", run / ".best.safetensors.tmp77", run / ".recipe.json.tmp9"]
    for path in stale:
        path.write_bytes(b"half a file")
    (run / ".taseg-4242-ffffffff").mkdir()
    (run / ".taseg-4242-ffffffff" / "last.safetensors").write_bytes(b"half")
    mine = [run / ".my.tmp1", run / "notes.txt"]  # not our pattern: the user's
    for path in mine:
        path.write_text("the user's")
    code, err = run_cli([*args, "--resume"], capsys)
    assert code == 0, err
    assert "removed 4 temporary file(s) an interrupted run left" in err
    assert not any(p.exists() for p in stale) and not (run / ".taseg-4242-ffffffff").exists()
    assert all(p.read_text() == "the user's" for p in mine)
    for path in stale:
        path.write_bytes(b"half a file")
    code, err = run_cli([*args, "--force"], capsys)
    assert code == 0, err
    assert not any(p.exists() for p in stale) and all(p.read_text() == "the user's" for p in mine)


def test_resume_refuses_a_state_that_does_not_fit_and_a_corrupt_recipe_history(tmp_path, data, capsys):
    import torch

    run = tmp_path / "run"
    args = train_args(data, run, 2)
    assert run_cli(args, capsys)[0] == 0
    state = torch.load(run / "train_state.pt", weights_only=True)
    good = dict(state)

    state["model"] = {k: v for i, (k, v) in enumerate(state["model"].items()) if i}  # one tensor short
    torch.save(state, run / "train_state.pt")
    code, err = run_cli([*args, "--resume"], capsys)
    assert code == 2 and "train_state.pt: the state's tensors do not fit the recipe's model" in error_lines(err)[0]
    for bad_best, why in (('{"miou": 0.1, "step": 9}', "best step 9 after the state's step 2"), ("[" * 5000, "nested deeper")):
        torch.save(dict(good, best=bad_best), run / "train_state.pt")
        code, err = run_cli([*args, "--resume"], capsys)
        assert code == 2 and why in error_lines(err)[0], err

    torch.save(good, run / "train_state.pt")
    (run / "recipe_history.json").write_text('{"from_step": ')
    code, err = run_cli([*args, "--resume", "train.steps=3", "--allow-recipe-change"], capsys)
    assert code == 2
    (line,) = error_lines(err)
    assert "recipe_history.json: cannot read the recipe history (" in line, line


# --- 12: the bounded readers ----------------------------------------------------------------------
@pytest.mark.parametrize("text, why", [
    ("a: &a [x, x]\nb: [*a, *a]\n", "aliases"),
    ("a: &a {k: v}\nb:\n  <<: *a\n", "aliases"),
    ("[" * 100 + "]" * 100, "nested deeper than 64"),
    ("[" * 100_000, "nested deeper than 64"),
    ("a: [1, 2", "expected ',' or ']'"),
])
def test_the_yaml_reader_refuses_aliases_deep_nesting_and_garbage_in_one_line(text, why):
    from taseg_ros.config_io import ConfigError, parse_yaml

    with pytest.raises(ConfigError, match=why) as info:
        parse_yaml(text, "x.yaml")
    assert str(info.value).startswith("x.yaml: not valid YAML: ") and 'in "x.yaml"' in str(info.value)


def test_billion_laughs_is_refused_fast():
    from taseg_ros.config_io import ConfigError, parse_yaml

    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="aliases"):
        parse_yaml("\n".join(lines), "laughs.yaml")
    assert time.perf_counter() - start < 5  # a guard against a hang, not a timing figure


def test_the_json_reader_bounds_nesting_and_size_and_keeps_ordinary_metadata():
    from taseg_ros.config_io import MAX_NESTING, MAX_TEXT_BYTES, ConfigError, parse_json

    assert parse_json('{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}
    assert parse_json("[" * MAX_NESTING + "]" * MAX_NESTING, "m")  # the limit itself is accepted
    for text in ("[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1), "[" * 100_000 + "]" * 100_000, '{"a":' * 5000):
        with pytest.raises(ConfigError, match="m: JSON nested deeper than 64 levels|m: not valid JSON"):
            parse_json(text, "m")
    with pytest.raises(ConfigError, match="over the limit"):
        parse_json(" " * (MAX_TEXT_BYTES + 1), "m")


def test_builtin_yaml_files_read_through_the_bounded_reader():
    """Every YAML the package ships still reads (none uses aliases or deep nesting)."""
    from taseg_ros.config_io import read_yaml
    from taseg_ros.resources import share_dir

    files = sorted(share_dir().glob("training/**/*.yaml")) + sorted(share_dir().glob("config/*.yaml"))
    assert files
    for path in files:
        read_yaml(path)


# --- 15: SIGTERM is Ctrl-C ------------------------------------------------------------------------
def test_sigterm_stops_predict_and_removes_its_half_filled_output(tmp_path, tiny_checkpoint):
    rng = np.random.default_rng(0)
    for folder in ("rgb", "thermal"):
        (tmp_path / folder).mkdir()
    for i in range(400):  # far more than run before the signal: the run is stopped half-way
        cv2.imwrite(str(tmp_path / "rgb" / f"{i:04d}.png"), rng.integers(0, 255, (64, 80, 3), dtype=np.uint8))
        cv2.imwrite(str(tmp_path / "thermal" / f"{i:04d}.png"), rng.integers(0, 255, (64, 80), dtype=np.uint8))
    out = tmp_path / "out"
    process = taseg("predict", "--checkpoint", tiny_checkpoint, "--rgb", tmp_path / "rgb", "--thermal",
                    tmp_path / "thermal", "-o", out, "--device", "cpu")
    wait_for(lambda: any(out.glob("*/*.png")), process, "the first prediction file")
    process.send_signal(signal.SIGTERM)
    code, _, err = finish(process)
    assert code == 143 and "terminated" in err, err
    assert not out.exists()  # was: a half-filled folder that the next run refuses


def test_sigterm_stops_bag_extract_at_a_safe_point_with_its_split_files(tmp_path):
    from bag_fixtures import synthetic_frames, write_rgbt_bag

    frame = synthetic_frames(1, 96, 128, seed=2)[0]
    bag = write_rgbt_bag(tmp_path / "rec", [frame] * 600, compressed=True).path
    out = tmp_path / "ds"
    process = taseg("bag", "extract", bag, "-o", out)
    wait_for(lambda: any(out.glob("**/*.png")), process, "the first extracted image")
    process.send_signal(signal.SIGTERM)
    code, _, err = finish(process)
    assert code == 143, err
    val = out / "val.txt"  # written when the stop came late enough for a validation share
    ids = (out / "train.txt").read_text().split() + (val.read_text().split() if val.is_file() else [])
    rows = (out / "frames.csv").read_text().splitlines()[1:]
    assert 0 < len(ids) == len(rows) < 600  # stopped early, and what was extracted is listed
    assert sorted(p.stem for p in (out / "rgb").glob("*.png")) == sorted(ids)
