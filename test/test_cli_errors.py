"""The sweep of issue 14: every user mistake gets one clear line, no traceback, and nothing the
user already had is changed or half-written.

CASES is a table (one row per bad input) run in-process through `taseg_ros.cli.main`; each row
checks: exit code 2, an `error:` line matching the row's pattern, no traceback, and that every
file under the workspace, the dataset and the checkpoint is byte-identical afterwards (nothing
destroyed, nothing created: no empty output folder, no half-written output). To add a command's
cases, add rows (placeholders: {w} workspace, {ckpt} tiny MFNet checkpoint, {data} a small folder
dataset, {bag} a small rosbag2 recording of RGB/thermal pairs; needs_bag=True for rows using it).

Below the table: the same commands succeed with --force, and the regressions of the classes that
are not refusals (resume bookkeeping, warnings that count, homography validation).
"""
from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from taseg_ros.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# --- the workspace every case starts from ---------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from taseg_ros.demo.scenes import write_street_dataset

    return write_street_dataset(tmp_path_factory.mktemp("street") / "data", num_train=4, num_val=2, num_test=2,
                                height=32, width=48, seed=3)


def write_workspace(w: Path, ckpt: Path) -> None:
    """Files a user might already have: each case must leave all of them as they were."""
    from taseg_ros.train.recipe import load_recipe

    rng = np.random.default_rng(0)
    w.mkdir(parents=True, exist_ok=True)
    (w / "afile").write_text("a file, not a folder\n")
    (w / "full").mkdir()
    (w / "full" / "keep.txt").write_text("the user's report\n")
    (w / "somedir").mkdir()
    rgb = rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)
    cv2.imwrite(str(w / "rgb.png"), rgb)
    cv2.imwrite(str(w / "thermal.png"), rng.integers(0, 255, (32, 48), dtype=np.uint8))
    cv2.imwrite(str(w / "rgba.png"), np.dstack([rgb, np.full((32, 48), 255, np.uint8)]))  # ordinary RGBA
    (w / "corrupt.png").write_bytes(b"not a png")
    (w / "frames").mkdir()
    cv2.imwrite(str(w / "frames" / "a.png"), rgb)
    (w / "trained.safetensors").write_bytes(b"the user's trained model")
    shutil.copy(ckpt, w / "model.safetensors")
    for folder in ("preds", "gt", "res/preds"):
        (w / folder).mkdir(parents=True)
        cv2.imwrite(str(w / folder / "a.png"), np.zeros((32, 48), np.uint8))
    run = w / "run"  # a finished training run
    run.mkdir()
    for name, text in (("best.safetensors", "best"), ("last.safetensors", "last"), ("train_state.pt", "state"),
                       ("train_log.csv", "step,loss\n30,0.5\n"), ("summary.json", "{}")):
        (run / name).write_text(text)
    (run / "recipe.json").write_text(json.dumps(load_recipe("demo_tiny").to_dict(), indent=2))
    (w / "bad_config.yaml").write_text("base: tiny\nembed_dim: wide\n")
    (w / "negative_config.yaml").write_text("base: tiny\nembed_dim: -8\n")


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file and folder under `roots` -> sha1 of its bytes ("dir" for folders)."""
    state = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            state[str(path)] = "dir" if path.is_dir() else hashlib.sha1(path.read_bytes()).hexdigest()
    return state


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """`taseg ARGV` in this process: (exit code, stdout, stderr). An exception escaping main is
    exactly the traceback a user would see, so it fails the test as one."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors: one line, exit 2
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- the table ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    id: str
    argv: str  # a command line after `taseg`, with the placeholders of the module docstring
    message: str  # regex the `error:` line must match (re.search)
    needs_bag: bool = False


PREDICT = "predict --checkpoint {ckpt} --rgb {w}/rgb.png --thermal {w}/thermal.png"
EVAL = "eval --checkpoint {ckpt} --data-root {data} --dataset folder --split test"
SCORE = "score --pred {w}/preds --gt {w}/gt --dataset mfnet"
TRAIN = "train demo_tiny --data-root {data} --no-progress data.crop=[32,48] train.steps=2 train.batch_size=2 train.micro_batch_size=2"
INIT = "init --config tiny --classes mfnet"
EXPORT = "export {ckpt}"
HOMOGRAPHY = "bag extract {bag} -o {w}/extracted --thermal-homography"

CASES = [
    # 8: output paths that cannot be created (was: a traceback)
    Case("predict-o-under-a-file", PREDICT + " -o {w}/afile/out", r"cannot create .*afile/out: .*afile is a file"),
    Case("predict-o-is-a-file", PREDICT + " -o {w}/afile", r"afile is an existing file; give a folder path"),
    Case("eval-out-under-a-file", EVAL + " --out {w}/afile/ev", r"cannot create .*afile/ev: .*afile is a file"),
    Case("score-out-under-a-file", SCORE + " --out {w}/afile/rep", r"cannot create .*afile/rep: .*afile is a file"),
    Case("train-output-under-a-file", TRAIN + " --output {w}/afile/run", r"cannot create .*afile/run: .*afile is a file"),
    Case("train-output-is-a-file", TRAIN + " --output {w}/afile", r"afile is an existing file"),
    Case("init-o-under-a-file", INIT + " -o {w}/afile/x.safetensors", r"cannot create .*afile/x.safetensors: .*afile is a file"),
    Case("export-o-under-a-file", EXPORT + " -o {w}/afile/x.safetensors", r"cannot create .*afile/x.safetensors: .*afile is a file"),
    Case("init-o-is-a-folder", INIT + " -o {w}/somedir", r"somedir is an existing folder; give a file path"),
    Case("export-o-is-a-folder", EXPORT + " -o {w}/somedir", r"somedir is an existing folder; give a file path"),
    # 3: one overwrite policy: an existing output is refused without --force
    Case("init-o-existing-checkpoint", INIT + " -o {w}/trained.safetensors", r"trained.safetensors exists; pass --force"),
    Case("export-o-existing-checkpoint", EXPORT + " -o {w}/trained.safetensors", r"trained.safetensors exists; pass --force"),
    Case("predict-o-non-empty", PREDICT + " -o {w}/full", r"full exists and is not empty; pass --force"),
    Case("eval-out-non-empty", EVAL + " --out {w}/full", r"full exists and is not empty; pass --force"),
    Case("score-out-non-empty", SCORE + " --out {w}/full", r"full exists and is not empty; pass --force"),
    # 2: a finished run is not replaced silently
    Case("train-into-a-finished-run", TRAIN + " --output {w}/run", r"run holds a training run .*--resume.*--force"),
    Case("train-resume-and-force", TRAIN + " --output {w}/run --resume --force", r"--resume .* --force .*one of them"),
    # 4: resume with a changed recipe is refused with the differences
    Case("train-resume-changed-recipe", "train demo_tiny --data-root {data} --output {w}/run --resume optim.lr=1e-2 data.crop=[48,48]",
         r"recipe differs .*data\.crop: \[\d+, \d+\] -> \[48, 48\]; optim\.lr: 0\.003 -> 0\.01\).*--allow-recipe-change"),
    # 1: an output that is, contains or lies inside an input (refused even with --force)
    Case("export-o-is-its-input", "export {w}/model.safetensors -o {w}/model.safetensors --force",
         r"model.safetensors: the output is also an input \(CKPT\)"),
    Case("predict-o-is-the-rgb-folder", "predict --checkpoint {ckpt} --rgb {w}/frames -o {w}/frames --force",
         r"frames: the output is also an input \(--rgb\)"),
    Case("eval-out-is-the-data-root", EVAL + " --out {data} --force", r"the output is also an input \(--data-root\)"),
    Case("eval-out-inside-the-data-root", EVAL + " --out {data}/rgb/ev", r"lies inside the input .* \(--data-root\)"),
    Case("score-out-contains-the-predictions", "score --pred {w}/res/preds --gt {w}/gt --dataset mfnet --out {w}/res --force",
         r"res: the output would contain the input .*preds \(--pred\)"),
    # 6: a constant alpha channel is not thermal
    Case("predict-rgba-without-thermal", "predict --checkpoint {ckpt} --rgb {w}/rgba.png -o {w}/new",
         r"rgba.png: .*alpha channel is constant \(255\).*--thermal"),
    # a failed run leaves no output folder behind (the image is read after the folder exists)
    Case("predict-corrupt-image-leaves-nothing", "predict --checkpoint {ckpt} --rgb {w}/corrupt.png --thermal {w}/thermal.png -o {w}/new/out",
         r"corrupt.png: cannot be read as an image"),
    # 9: config and recipe values
    Case("train-crop-zero", TRAIN.replace("[32,48]", "[0,0]") + " --output {w}/new", r"data\.crop"),
    Case("train-crop-negative", TRAIN.replace("[32,48]", "[-32,32]") + " --output {w}/new", r"data\.crop"),
    Case("train-crop-scalar", TRAIN.replace("[32,48]", "32") + " --output {w}/new", r"data\.crop"),
    Case("info-config-string-for-number", "info --config {w}/bad_config.yaml", r"bad_config.yaml.*embed_dim"),
    Case("init-config-negative-width", INIT.replace("tiny", "{w}/negative_config.yaml") + " -o {w}/new.safetensors",
         r"negative_config.yaml.*embed_dim"),
    # smaller ones
    Case("eval-unknown-dataset-lists-folder", EVAL.replace("folder", "nope") + " --out {w}/new", r"unknown dataset 'nope'.*folder"),
    Case("train-class-mismatch-names-the-checkpoint", TRAIN + " --output {w}/new init_checkpoint={ckpt}",
         r"tiny_mfnet.safetensors predicts 9 classes"),
    # 5: a degenerate homography (bag cases of the bag commands go here too)
    Case("bag-extract-homography-all-zeros", HOMOGRAPHY + " 0 0 0 0 0 0 0 0 0", r"--thermal-homography: .*all zeros", needs_bag=True),
    Case("bag-extract-homography-h33-zero", HOMOGRAPHY + " 1 0 0 0 1 0 0 0 0", r"--thermal-homography: .*h33 is 0", needs_bag=True),
    Case("bag-extract-homography-singular", HOMOGRAPHY + " 1 2 3 2 4 6 0 0 1", r"--thermal-homography: .*not invertible", needs_bag=True),
    Case("bag-extract-homography-out-of-frame", HOMOGRAPHY + " 1 0 100000 0 1 0 0 0 1",
         r"thermal homography: maps the .* thermal frame onto 0% of the", needs_bag=True),
]


@pytest.fixture(scope="module")
def rgbt_bag(tmp_path_factory) -> Path:
    """A small rosbag2 recording with RGB/thermal pairs (written with rosbags, as test_bag does)."""
    from taseg_ros.bag.fixtures import synthetic_frames, write_rgbt_bag

    return Path(write_rgbt_bag(tmp_path_factory.mktemp("bag") / "pairs", synthetic_frames(4, 48, 64, seed=1)).path)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_user_mistake_gets_one_line_and_changes_nothing(case, tmp_path, tiny_checkpoint, data, request, capsys):
    w = tmp_path / "w"
    write_workspace(w, tiny_checkpoint)
    bag = request.getfixturevalue("rgbt_bag") if case.needs_bag else None
    argv = [a.format(w=w, ckpt=tiny_checkpoint, data=data, bag=bag) for a in shlex.split(case.argv)]
    roots = [w, data, tiny_checkpoint.parent] + ([bag] if bag else [])
    before = snapshot(*roots)

    code, out, err = run_cli(argv, capsys)

    assert code == 2, f"exit {code}\nstdout: {out[-2000:]}\nstderr: {err[-2000:]}"
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    assert re.search(case.message, errors[0]), errors[0]
    assert snapshot(*roots) == before, "the failed command changed, created or removed files"
