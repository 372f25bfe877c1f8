"""The sweep of issue 14: every user mistake gets one clear line, no traceback, and nothing the
user already had is changed or half-written.

CASES is a table (one row per bad input) run in-process through `taseg_ros.cli.main`; each row
checks: exit code 2, an `error:` line matching the row's pattern, no traceback, and that every
file under the workspace, the dataset and the checkpoint is byte-identical afterwards (nothing
destroyed, nothing created: no empty output folder, no half-written output). To add a command's
cases, add rows (placeholders: {w} workspace, {ckpt} tiny MFNet checkpoint, {data} a small folder
dataset, {bag} a small rosbag2 recording of RGB/thermal pairs; needs_bag=True for rows using it,
{x} a folder of exported models (tests/test_reliability_files.py's `exports`); needs_exports=True;
{h} hostile or damaged files: checkpoints with rewritten metadata, YAML bombs, a pickle; see `hostile`).
A row may add symlinks to the workspace first (`links`: link -> target) and may run under a file
size limit (`fsize` bytes): RLIMIT_FSIZE makes every write past it fail with EFBIG, as a full disk
fails with ENOSPC, through the same paths (the libraries wrap both alike); SIGXFSZ is ignored.

Below the table: the same commands succeed with --force, and the regressions of the classes that
are not refusals (resume bookkeeping, warnings that count, homography validation).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from system_limits import file_size_limit
from taseg_ros.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# --- the workspace every case starts from ---------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from taseg_ros.demo.data import write_street_dataset

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
    (w / "tframes").mkdir()
    cv2.imwrite(str(w / "tframes" / "a.png"), rng.integers(0, 255, (32, 48), dtype=np.uint8))
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
    (w / "net.bin").write_bytes(b"the user's OpenVINO weights")  # beside an export's -o, not its own
    (w / "net.onnx.data").write_bytes(b"the user's ONNX external data")
    write_nan_mean_checkpoint(ckpt, w / "nan_mean.safetensors")
    (w / "bad_config.yaml").write_text("base: tiny\nencoder: {embed_dim: wide}\n")
    (w / "negative_config.yaml").write_text("base: tiny\nencoder: {embed_dim: -8}\n")


def write_nan_mean_checkpoint(ckpt: Path, path: Path) -> None:
    """`ckpt` with NaN in its config's pixel_mean (as a damaged or hand-edited file would have)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(ckpt), framework="pt") as f:
        metadata = dict(f.metadata())
    config = json.loads(metadata["config"])
    config["pixel_mean"] = [float("nan"), 116.28, 103.53]
    save_file(load_file(str(ckpt)), str(path), metadata={**metadata, "config": json.dumps(config)})


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file and folder under `roots` -> sha1 of its bytes ("dir" for folders, "-> target"
    for links, not followed)."""
    state = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_symlink():
                state[str(path)] = f"-> {os.readlink(path)}"
            else:
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


def _with_metadata(source: Path, target: Path, **changes) -> None:
    """A copy of checkpoint `source` whose safetensors metadata has `changes` (JSON-encoded unless str)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(source), framework="pt") as f:
        metadata = dict(f.metadata())
    metadata.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in changes.items()})
    save_file(load_file(str(source)), str(target), metadata=metadata)


LAUGHS = "\n".join(['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
                   + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]) + "\n"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, tiny_checkpoint) -> Path:
    """Hostile or damaged files (issue 19, classes 12 and 14), made once; no case may change them."""
    import torch

    from taseg_ros.model.checkpoint import read_metadata

    h = tmp_path_factory.mktemp("hostile")
    metadata = read_metadata(tiny_checkpoint)
    config, classes = json.loads(metadata["config"]), json.loads(metadata["classes"])
    deep = "[" * 100_000 + "]" * 100_000
    _with_metadata(tiny_checkpoint, h / "deep_config.safetensors", config=deep)
    _with_metadata(tiny_checkpoint, h / "deep_classes.safetensors", classes='{"classes": ' + deep + "}")
    _with_metadata(tiny_checkpoint, h / "frozen_extra_key.safetensors",
                   frozen_source={"kind": "random", "name": "", "sha256": "", "seed": 0, "evil": 1})
    _with_metadata(tiny_checkpoint, h / "frozen_list.safetensors", frozen_source=["random"])
    _with_metadata(tiny_checkpoint, h / "huge_width.safetensors",
                   config=dict(config, encoder=dict(config["encoder"], embed_dim=10**12)))
    _with_metadata(tiny_checkpoint, h / "ansi_class.safetensors",
                   classes=dict(classes, classes=["\x1b[2J\x1b[31mowned"] + classes["classes"][1:], prompts=[]))
    for name, sam in (("sam_etc_passwd", "/etc/passwd"), ("sam_dotdot", "../../models/sam_vit_b_01ec64.pth")):
        _with_metadata(tiny_checkpoint, h / f"{name}.safetensors", frozen="sam_checkpoint",
                       frozen_source={"kind": "sam_checkpoint", "name": sam, "sha256": "", "seed": 0})
    (h / "laughs_classes.yaml").write_text(LAUGHS + "classes: *l9\n")
    (h / "laughs_recipe.yaml").write_text(LAUGHS + "train: {steps: 2}\n")
    (h / "laughs_config.yaml").write_text(LAUGHS + "base: tiny\n")
    (h / "laughs_dataset.yaml").write_text(LAUGHS + "classes: [a, b]\n")
    (h / "deep_config.yaml").write_text("base: tiny\nencoder: " + "[" * 5000 + "]" * 5000 + "\n")
    (h / "ansi_classes.yaml").write_text('classes: [background, "\\e[31mcar"]\n')
    (h / "newline_classes.yaml").write_text('classes: [background, "car\\nperson: 0.99"]\n')

    class Payload:  # what a hostile pickle would run; refused before any of it is imported
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"embeddings": Payload()}, h / "pickled.pt")
    run = h / "deep_recipe_run"  # a run whose recorded recipe is a JSON bomb
    run.mkdir()
    (run / "train_state.pt").write_text("state")
    (run / "recipe.json").write_text(deep)
    return h


# --- the table ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    id: str
    argv: str  # a command line after `taseg`, with the placeholders of the module docstring
    message: str  # regex the `error:` line must match (re.search)
    needs_bag: bool = False
    links: tuple[tuple[str, str], ...] = ()  # (link, target) made before the run, placeholders allowed
    fsize: int | None = None  # run under RLIMIT_FSIZE: writes past this many bytes fail
    needs_exports: bool = False


PREDICT = "predict --checkpoint {ckpt} --rgb {w}/rgb.png --thermal {w}/thermal.png"
EVAL = "eval --checkpoint {ckpt} --data-root {data} --dataset folder --split test"
EVAL_STREET = EVAL.replace("{ckpt}", "{sckpt}")  # a checkpoint with the dataset's classes: runs to the writes
SCORE = "score --pred {w}/preds --gt {w}/gt --dataset mfnet"
TRAIN = "train demo_tiny --data-root {data} --no-progress data.crop=[32,48] train.steps=2 train.batch_size=2 train.micro_batch_size=2"
INIT = "init --config tiny --classes mfnet"
EXPORT = "export {ckpt}"
HOMOGRAPHY = "bag extract {bag} -o {w}/extracted --thermal-homography"
FULL = r"cannot write .*: (no space left on the device|file too large)"  # ENOSPC, or EFBIG under the row's fsize

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
    Case("bench-json-under-a-file", "bench --config tiny --quick --skip-node --json {w}/afile/b.json",
         r"cannot create .*afile/b.json: .*afile is a file"),
    Case("demo-o-is-a-file", "demo -o {w}/afile --no-node", r"afile is an existing file; give a folder path"),
    Case("init-o-is-a-folder", INIT + " -o {w}/somedir", r"somedir is an existing folder; give a file path"),
    Case("export-o-is-a-folder", EXPORT + " -o {w}/somedir", r"somedir is an existing folder; give a file path"),
    # 3: one overwrite policy: an existing output is refused without --force
    Case("init-o-existing-checkpoint", INIT + " -o {w}/trained.safetensors", r"trained.safetensors exists; pass --force"),
    Case("export-o-existing-checkpoint", EXPORT + " -o {w}/trained.safetensors", r"trained.safetensors exists; pass --force"),
    Case("predict-o-non-empty", PREDICT + " -o {w}/full", r"full exists and is not empty; pass --force"),
    Case("eval-out-non-empty", EVAL + " --out {w}/full", r"full exists and is not empty; pass --force"),
    Case("score-out-non-empty", SCORE + " --out {w}/full", r"full exists and is not empty; pass --force"),
    Case("demo-o-non-empty", "demo -o {w}/full --no-node", r"full exists and is not empty; pass --force"),
    Case("bench-json-existing", "bench --config tiny --quick --skip-node --json {w}/afile", r"afile exists; pass --force"),
    # 2: a finished run is not replaced silently
    Case("train-into-a-finished-run", TRAIN + " --output {w}/run", r"run holds a training run .*--resume.*--force"),
    Case("train-output-is-the-data-root", TRAIN + " --output {data}", r"the output is also an input \(data\.root\)"),
    Case("train-resume-corrupt-state", "train demo_tiny --data-root {data} --output {w}/run --resume",
         r"run/train_state.pt: cannot read the training state .*--force"),
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
    Case("info-config-string-for-number", "info --config {w}/bad_config.yaml", r"bad_config.yaml: encoder\.embed_dim: expected a number"),
    Case("init-config-negative-width", INIT.replace("tiny", "{w}/negative_config.yaml") + " -o {w}/new.safetensors",
         r"negative_config.yaml: encoder\.embed_dim: must be in \[1, 4096\], got -8"),
    # smaller ones
    Case("eval-unknown-dataset-lists-folder", EVAL.replace("folder", "nope") + " --out {w}/new", r"unknown dataset 'nope'.*folder"),
    Case("train-class-mismatch-names-the-checkpoint", TRAIN + " --output {w}/new init_checkpoint={ckpt}",
         r"tiny_mfnet.safetensors predicts 9 classes"),
    # 5: a degenerate homography (bag cases of the bag commands go here too)
    Case("bag-extract-homography-all-zeros", HOMOGRAPHY + " 0 0 0 0 0 0 0 0 0", r"--thermal-homography: .*all zeros", needs_bag=True),
    Case("bag-extract-homography-h33-zero", HOMOGRAPHY + " 1 0 0 0 1 0 0 0 0", r"--thermal-homography: .*h33 is 0", needs_bag=True),
    Case("bag-extract-homography-singular", HOMOGRAPHY + " 1 2 3 2 4 6 0 0 1", r"--thermal-homography: .*not invertible", needs_bag=True),
    Case("bag-extract-homography-out-of-frame", HOMOGRAPHY + " 1 0 100000 0 1 0 0 0 1",
         r"--thermal-homography: maps the .* thermal frame onto 0% of the", needs_bag=True),
    # issue 19 item 9: the network input limit is checked before anything is loaded or written
    Case("predict-max-input-size-too-small", PREDICT + " -o {w}/new --max-input-size 5",
         r"--max-input-size 5: must be 0 \(no limit\) or a whole number of pixels >= 32"),
    Case("eval-max-input-size-negative", EVAL + " --out {w}/new --max-input-size -1",
         r"--max-input-size -1: must be 0 \(no limit\)"),
    Case("bag-eval-max-input-size-too-small", "bag eval {bag} --checkpoint {ckpt} -o {w}/ev --max-input-size 8",
         r"--max-input-size 8: must be 0 \(no limit\)", needs_bag=True),
    Case("bag-extract-homography-far-off-frame-is-not-singular", HOMOGRAPHY + " 1 0 1e6 0 1 0 0 0 1",
         r"--thermal-homography: maps the .* thermal frame onto 0% of the", needs_bag=True),
    # 1, 7 and the namespace, for the bag tools: an output never is or overlaps the recording (even with
    # --force); outputs under a file; --max-pairs 0; a namespace ROS rejects (more in test_bag.py)
    Case("bag-eval-output-bag-is-the-recording", "bag eval {bag} --checkpoint {ckpt} -o {w}/ev --output-bag {bag} --force",
         r"pairs: the output is also an input \(BAG\)", needs_bag=True),
    Case("bag-eval-output-bag-inside-the-recording", "bag eval {bag} --checkpoint {ckpt} -o {w}/ev --output-bag {bag}/out --force",
         r"the output lies inside the input .*pairs \(BAG\)", needs_bag=True),
    Case("bag-eval-o-is-the-recording", "bag eval {bag} --checkpoint {ckpt} -o {bag} --no-output-bag --force",
         r"the output is also an input \(BAG\)", needs_bag=True),
    Case("bag-eval-o-under-a-file", "bag eval {bag} --checkpoint {ckpt} -o {w}/afile/ev",
         r"cannot create .*afile/ev.*: .*afile is a file", needs_bag=True),
    Case("bag-eval-output-bag-under-a-file", "bag eval {bag} --checkpoint {ckpt} -o {w}/ev --output-bag {w}/afile/rec",
         r"cannot create .*afile/rec: .*afile is a file", needs_bag=True),
    Case("bag-eval-output-bag-is-a-file", "bag eval {bag} --checkpoint {ckpt} -o {w}/ev --output-bag {w}/afile --force",
         r"afile is an existing file", needs_bag=True),
    Case("bag-extract-o-is-the-recording", "bag extract {bag} -o {bag}", r"the output is also an input \(BAG\)", needs_bag=True),
    Case("bag-extract-o-under-a-file", "bag extract {bag} -o {w}/afile/ds", r"cannot create .*afile/ds: .*afile is a file",
         needs_bag=True),
    Case("bag-replay-o-is-the-recording", "bag replay {bag} -o {bag} --force", r"the output is also an input \(BAG\)",
         needs_bag=True),
    Case("bag-extract-max-pairs-0", "bag extract {bag} -o {w}/ds --max-pairs 0", r"--max-pairs must be >= 1, got 0",
         needs_bag=True),
    Case("bag-eval-max-pairs-0", "bag eval {bag} --checkpoint {ckpt} -o {w}/ev --max-pairs 0",
         r"--max-pairs must be >= 1, got 0", needs_bag=True),
    # --- issue 19 ---------------------------------------------------------------------------------
    # 1: a folder reached through a link into an input is never written (even with --force)
    Case("predict-force-labels-linked-to-the-rgb-input",
         "predict --checkpoint {ckpt} --rgb {w}/frames --thermal {w}/tframes -o {w}/out --force",
         r"out/labels/a.png: its folder leads through a link into the input .*frames \(--rgb\)",
         links=(("{w}/out/labels", "{w}/frames"),)),
    Case("eval-force-predictions-linked-to-the-ground-truth", EVAL_STREET + " --out {w}/ev --force --save-predictions labels",
         r"predictions/labels/.*\.png: its folder leads through a link into the input .* \(--data-root\)",
         links=(("{w}/ev/predictions/labels", "{data}/labels"),)),
    # 2: every file an export writes is under the overwrite policy; a failed export keeps what was there
    Case("export-openvino-existing-bin", EXPORT + " --format openvino -o {w}/net.xml --size 48x32", r"net.bin exists; pass --force"),
    Case("export-onnx-existing-external-data", EXPORT + " -o {w}/net.onnx --size 48x32", r"net.onnx.data exists; pass --force"),
    Case("export-onnx-full-disk-keeps-the-users-data-file", EXPORT + " -o {w}/net.onnx --size 48x32 --force",
         FULL.replace(".*", ".*net.onnx", 1), fsize=500_000),
    # 5 and 11: a full disk is one line naming the file, nothing half-written, no "wrote N prediction(s)"
    Case("predict-full-disk", PREDICT + " -o {w}/new", r"cannot write .*new/.*\.png: (no space left|file too large)", fsize=1000),
    Case("eval-save-predictions-full-disk", EVAL_STREET + " --out {w}/new --save-predictions", FULL, fsize=1000),
    Case("export-safetensors-full-disk", EXPORT + " -o {w}/new.safetensors", FULL.replace(".*", ".*new.safetensors", 1), fsize=500_000),
    Case("export-openvino-full-disk", EXPORT + " -o {w}/new.xml --size 48x32", FULL, fsize=500_000),
    Case("init-full-disk", INIT + " -o {w}/new.safetensors", FULL.replace(".*", ".*new.safetensors", 1), fsize=500_000),
    Case("train-full-disk", TRAIN + " --output {w}/new data.num_workers=0", FULL, fsize=500_000),
    Case("bag-extract-full-disk", "bag extract {bag} -o {w}/new", FULL, needs_bag=True, fsize=2000),
    Case("bag-eval-full-disk", "bag eval {bag} --checkpoint {ckpt} -o {w}/new", FULL, needs_bag=True, fsize=2000),
    # 11: a name over the file system's limit; sizes that cannot be allocated
    Case("predict-o-name-too-long", PREDICT + " -o {w}/" + "n" * 300, r"the name n+\.\.\. has 300 bytes; the file system allows 255"),
    Case("export-size-too-large", EXPORT + " -o {w}/big.onnx --size 40000x30000",
         r"--size 40000x30000 --batch 1: .* needs at least \d+\.\d GiB on cpu; .* GiB is free"),
    Case("export-batch-too-large", EXPORT + " -o {w}/big.onnx --batch 100000", r"--batch 100000: .* needs at least \d+\.\d GiB"),
    Case("bench-size-too-large", "bench --config tiny --quick --skip-node --width 40000 --height 30000",
         r"40000x30000 frames, batch 1: .* needs at least \d+\.\d GiB on cpu"),
    Case("bench-batch-too-large", "bench --config tiny --quick --skip-node --batch 100000", r"batch 100000: .* needs at least"),
    # 6: an exported model runs only with its own weights and a class list that fits its graph
    Case("predict-openvino-xml-with-another-exports-bin", "predict --checkpoint {x}/mixed/m.xml --rgb {w}/rgb.png "
         "--thermal {w}/thermal.png -o {w}/new", r"m.xml and .*m.bin: not from the same export", needs_exports=True),
    Case("predict-onnx-class-list-differs-from-graph", "predict --checkpoint {x}/classes.onnx --rgb {w}/rgb.png "
         "--thermal {w}/thermal.png -o {w}/new", r"classes.onnx: the graph outputs 9 classes but its metadata lists 5",
         needs_exports=True),
    # 7: formats from suffixes, names with suffixes, finite numbers
    Case("export-format-safetensors-to-onnx-name", EXPORT + " --format safetensors -o {w}/x.onnx",
         r"x.onnx: --format safetensors writes a '.safetensors' file, not '.onnx'"),
    Case("export-no-suffix-no-format", EXPORT + " -o {w}/x", r"x: cannot tell the format from the suffix 'none'"),
    Case("init-o-other-suffix", INIT + " -o {w}/x.pt", r"x.pt: a checkpoint is a .safetensors file"),
    Case("predict-thermal-range-infinite", PREDICT + " -o {w}/new --thermal-range 0 inf", r"--thermal-\*: .*finite"),
    Case("predict-checkpoint-nan-pixel-mean", "predict --checkpoint {w}/nan_mean.safetensors --rgb {w}/rgb.png "
         "--thermal {w}/thermal.png -o {w}/new", r"nan_mean.safetensors.*pixel_mean.*must be a finite number"),
    # issue 19, 12: hostile or damaged metadata and YAML (was: RecursionError, TypeError, a hang, a traceback)
    Case("info-checkpoint-deep-json", "info --checkpoint {h}/deep_config.safetensors",
         r"deep_config.safetensors: damaged TASeg metadata \(config: JSON nested deeper than 64 levels\)"),
    Case("predict-checkpoint-deep-json", PREDICT.replace("{ckpt}", "{h}/deep_classes.safetensors") + " -o {w}/new",
         r"deep_classes.safetensors: damaged TASeg metadata \(classes: JSON nested deeper than 64 levels\)"),
    Case("predict-frozen-source-extra-key", PREDICT.replace("{ckpt}", "{h}/frozen_extra_key.safetensors") + " -o {w}/new",
         r"frozen_extra_key.safetensors: damaged TASeg metadata \(frozen_source: unknown key 'evil'"),
    Case("predict-frozen-source-a-list", PREDICT.replace("{ckpt}", "{h}/frozen_list.safetensors") + " -o {w}/new",
         r"frozen_list.safetensors: damaged TASeg metadata \(frozen_source: expected a mapping"),
    Case("info-checkpoint-absurd-width", "info --checkpoint {h}/huge_width.safetensors",
         r"huge_width.safetensors: damaged TASeg metadata \(model config: encoder\.embed_dim: must be in \[1, 4096\]"),
    Case("info-config-billion-laughs", "info --config {h}/laughs_config.yaml", r"laughs_config.yaml: not valid YAML: YAML aliases"),
    Case("info-config-deep-yaml", "info --config {h}/deep_config.yaml", r"deep_config.yaml: not valid YAML: nested deeper than 64"),
    Case("init-classes-billion-laughs", INIT.replace("mfnet", "{h}/laughs_classes.yaml") + " -o {w}/new.safetensors",
         r"laughs_classes.yaml: not valid YAML: YAML aliases"),
    Case("train-recipe-billion-laughs", "train {h}/laughs_recipe.yaml --data-root {data} --output {w}/new",
         r"laughs_recipe.yaml: not valid YAML: YAML aliases"),
    Case("train-dataset-yaml-billion-laughs", TRAIN + " --output {w}/new data.dataset={h}/laughs_dataset.yaml",
         r"laughs_dataset.yaml: not valid YAML: YAML aliases"),
    Case("train-resume-deep-recorded-recipe", "train demo_tiny --data-root {data} --output {h}/deep_recipe_run --resume",
         r"deep_recipe_run/recipe.json: cannot read the recorded recipe \(.*nested deeper than 64"),
    Case("init-text-embeddings-pickle", INIT + " --text-embeddings {h}/pickled.pt -o {w}/new.safetensors",
         r"pickled.pt: not a plain tensor file \(refused"),
    # 13: values
    Case("train-seed-negative", TRAIN + " --output {w}/new train.seed=-1", r"train\.seed: must be in \[0, 4294967295\], got -1"),
    Case("train-seed-over-2-64", TRAIN + " --output {w}/new train.seed=18446744073709551617",
         r"train\.seed: must be in \[0, 4294967295\], got 18446744073709551617"),
    Case("bench-budget-negative", "bench --config tiny --quick --skip-node --budget -5",
         r"--budget: expected a positive number of seconds, got -5"),
    # 14: text from files never reaches a terminal raw; a SAM file named in metadata stays in models/
    Case("info-checkpoint-ansi-class-name", "info --checkpoint {h}/ansi_class.safetensors",
         r"class name '\\x1b\[2J\\x1b\[31mowned' contains control characters"),
    Case("init-classes-ansi", INIT.replace("mfnet", "{h}/ansi_classes.yaml") + " -o {w}/new.safetensors",
         r"ansi_classes.yaml: class name '\\x1b\[31mcar' contains control characters"),
    Case("init-classes-newline", INIT.replace("mfnet", "{h}/newline_classes.yaml") + " -o {w}/new.safetensors",
         r"newline_classes.yaml: class name 'car\\nperson: 0.99' contains control characters"),
    Case("predict-sam-file-absolute-path", PREDICT.replace("{ckpt}", "{h}/sam_etc_passwd.safetensors") + " -o {w}/new",
         r"names the SAM checkpoint '/etc/passwd': only a file name in .* is accepted"),
    Case("predict-sam-file-dotdot", PREDICT.replace("{ckpt}", "{h}/sam_dotdot.safetensors") + " -o {w}/new",
         r"names the SAM checkpoint '\.\./\.\./models/sam_vit_b_01ec64.pth': only a file name"),
    Case("bag-eval-namespace-ros-rejects", "bag eval {bag} --checkpoint {ckpt} -o {w}/ev --namespace 'bad name!'",
         r"--namespace 'bad name!': not a valid ROS 2 namespace", needs_bag=True),
]


@pytest.fixture(scope="module")
def rgbt_bag(tmp_path_factory) -> Path:
    """A small rosbag2 recording with RGB/thermal pairs (written with rosbags, as test_bag does)."""
    from bag_fixtures import synthetic_frames, write_rgbt_bag

    return Path(write_rgbt_bag(tmp_path_factory.mktemp("bag") / "pairs", synthetic_frames(4, 48, 64, seed=1)).path)


@pytest.fixture(scope="module")
def street_checkpoint(tmp_path_factory, data) -> Path:
    """An untrained tiny model for the street dataset's classes ({sckpt})."""
    from taseg_ros.model.checkpoint import init_checkpoint

    path = tmp_path_factory.mktemp("street_ckpt") / "street.safetensors"
    init_checkpoint("tiny", data / "classes.yaml", path)
    return path


@pytest.fixture(scope="module")
def exports(tmp_path_factory, tiny_checkpoint, thermal_checkpoint) -> Path:
    """Exported models that do not belong together: an OpenVINO .xml beside the .bin of another export
    of the same architecture (mixed/), an ONNX file whose class list is not its graph's (classes.onnx)."""
    import onnx

    from taseg_ros.classes import load_classes
    from taseg_ros.runtime.export import export_model

    x = tmp_path_factory.mktemp("exports")
    for name, ckpt in (("a", tiny_checkpoint), ("b", thermal_checkpoint)):
        (x / name).mkdir()
        export_model(ckpt, x / name / "m.xml", "openvino", size=(48, 32))
    (x / "mixed").mkdir()
    shutil.copy(x / "a" / "m.xml", x / "mixed" / "m.xml")
    shutil.copy(x / "b" / "m.bin", x / "mixed" / "m.bin")
    export_model(tiny_checkpoint, x / "tiny.onnx", "onnx", size=(48, 32))
    proto = onnx.load(str(x / "tiny.onnx"))
    for entry in proto.metadata_props:
        if entry.key == "classes":
            entry.value = json.dumps(load_classes("pst900").to_mapping())
    onnx.save(proto, str(x / "classes.onnx"))
    return x


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_user_mistake_gets_one_line_and_changes_nothing(case, tmp_path, tiny_checkpoint, data, hostile, request, capsys):
    w = tmp_path / "w"
    write_workspace(w, tiny_checkpoint)
    bag = request.getfixturevalue("rgbt_bag") if case.needs_bag else None
    exports = request.getfixturevalue("exports") if case.needs_exports else None
    street = request.getfixturevalue("street_checkpoint") if "{sckpt}" in case.argv else None
    places = dict(w=w, ckpt=tiny_checkpoint, data=data, bag=bag, x=exports, sckpt=street, h=hostile)
    for link, target in case.links:
        Path(link.format(**places)).parent.mkdir(parents=True, exist_ok=True)
        Path(link.format(**places)).symlink_to(target.format(**places), target_is_directory=True)
    argv = [a.format(**places) for a in shlex.split(case.argv)]
    roots = [w, data, tiny_checkpoint.parent, hostile] + [p for p in (bag, exports, street and street.parent) if p]
    before = snapshot(*roots)

    with file_size_limit(case.fsize):
        code, out, err = run_cli(argv, capsys)

    assert code == 2, f"exit {code}\nstdout: {out[-2000:]}\nstderr: {err[-2000:]}"
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    assert re.search(case.message, errors[0]), errors[0]
    assert snapshot(*roots) == before, "the failed command changed, created or removed files"
    assert not re.search(r"\bwrote \d+ ", out), out  # a failed run never says it wrote anything


# --- the same commands with --force, and the classes that are not refusals ------------------------
def test_force_replaces_a_file_and_writes_into_a_folder(tmp_path, tiny_checkpoint, capsys):
    w = tmp_path / "w"
    write_workspace(w, tiny_checkpoint)
    code, _, err = run_cli(["init", "--config", "tiny", "--classes", "mfnet", "-o", str(w / "trained.safetensors"), "--force"], capsys)
    assert code == 0, err
    from taseg_ros.model.checkpoint import read_metadata

    assert read_metadata(w / "trained.safetensors")["format"]  # a real checkpoint replaced the placeholder
    code, _, err = run_cli(["predict", "--checkpoint", str(tiny_checkpoint), "--rgb", str(w / "rgb.png"),
                            "--thermal", str(w / "thermal.png"), "-o", str(w / "full"), "--force"], capsys)
    assert code == 0, err
    assert (w / "full" / "keep.txt").read_text() == "the user's report\n"  # written into, not emptied
    assert (w / "full" / "labels" / "rgb.png").is_file()


def test_failed_run_removes_only_what_it_added(tmp_path):
    """outputs.output_dir: an existing folder keeps its files; new files and folders go."""
    from taseg_ros.outputs import output_dir

    out = tmp_path / "out"
    (out / "old").mkdir(parents=True)
    (out / "old" / "a.txt").write_text("kept")
    with pytest.raises(KeyboardInterrupt):
        with output_dir(out, force=True) as folder:
            (folder / "old" / "b.txt").write_text("new")
            (folder / "new").mkdir()
            (folder / "new" / "c.txt").write_text("new")
            raise KeyboardInterrupt  # Ctrl-C half-way
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["old", "old/a.txt"]
    with pytest.raises(ValueError):
        with output_dir(tmp_path / "fresh" / "deeper"):
            raise ValueError("failed")
    assert not (tmp_path / "fresh").exists()  # no empty folders left behind


def test_cli_prints_the_package_errors_and_keeps_tracebacks_of_bugs(monkeypatch, capsys):
    """Item 9's last sentence: the error path catches the package's own type (here one that is not
    a ValueError), not everything."""
    import taseg_ros.cli.info as info
    from taseg_ros.errors import TasegError

    class NotAValueError(TasegError):
        pass

    monkeypatch.setattr(info, "run", lambda args: (_ for _ in ()).throw(NotAValueError("models/x.yaml: key 'y': bad\nvalue")))
    code, _, err = run_cli(["info", "--config", "tiny"], capsys)
    assert code == 2 and err.strip() == "taseg info: error: models/x.yaml: key 'y': bad value"
    monkeypatch.setattr(info, "run", lambda args: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError):
        main(["info", "--config", "tiny"])
    monkeypatch.setattr(info, "run", lambda args: (_ for _ in ()).throw(ValueError("a bug deep in a library")))
    with pytest.raises(ValueError):
        main(["info", "--config", "tiny"])


def test_constant_alpha_is_refused_but_mfnet_alpha_thermal_is_used(tmp_path, tiny_checkpoint, capsys):
    rgb = np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    thermal = np.tile(np.arange(48, dtype=np.uint8) * 5, (32, 1))
    cv2.imwrite(str(tmp_path / "mfnet.png"), np.dstack([rgb, thermal]))
    code, _, err = run_cli(["predict", "--checkpoint", str(tiny_checkpoint), "--rgb", str(tmp_path / "mfnet.png"),
                            "-o", str(tmp_path / "out")], capsys)
    assert code == 0, err
    assert (tmp_path / "out" / "labels" / "mfnet.png").is_file()


def test_all_nan_thermal_is_warned_and_counted_by_predict_and_eval(tmp_path, tiny_checkpoint, data, capsys):
    w = tmp_path / "w"
    write_workspace(w, tiny_checkpoint)
    cv2.imwrite(str(w / "nan.tiff"), np.full((32, 48), np.nan, np.float32))
    code, _, err = run_cli(["predict", "--checkpoint", str(tiny_checkpoint), "--rgb", str(w / "rgb.png"),
                            "--thermal", str(w / "nan.tiff"), "-o", str(w / "out")], capsys)
    assert code == 0, err
    assert "nan.tiff: no finite thermal pixel" in err and "1 of 1 thermal image(s) had no finite pixel" in err

    root = tmp_path / "data"
    shutil.copytree(data, root)
    first = (root / "test.txt").read_text().split()[0]
    (root / "thermal" / f"{first}.png").unlink()
    cv2.imwrite(str(root / "thermal" / f"{first}.tiff"), np.full((32, 48), np.nan, np.float32))
    from taseg_ros.model.checkpoint import init_checkpoint

    ckpt = init_checkpoint("tiny", root / "classes.yaml", tmp_path / "street.safetensors") and tmp_path / "street.safetensors"
    code, _, err = run_cli(["eval", "--checkpoint", str(ckpt), "--data-root", str(root), "--dataset", "folder",
                            "--split", "test", "--out", str(tmp_path / "ev"), "--device", "cpu"], capsys)
    assert code == 0, err
    assert f"{first}.tiff: no finite thermal pixel" in err and "1 of 2 thermal image(s) had no finite pixel" in err


def test_homography_validation_names_the_reason():
    from taseg_ros.frames.thermal import ThermalAligner, validate_homography
    from taseg_ros.ros.params import NodeParams

    identity = [1, 0, 0, 0, 1, 0, 0, 0, 1]
    assert validate_homography(identity, (48, 64), (48, 64)).shape == (3, 3)
    validate_homography([1, 0, 40, 0, 1, 0, 0, 0, 1], (48, 64), (48, 64))  # partly in view: fine
    for matrix, reason in (([0] * 9, "all zeros"), ([1, 0, 0, 0, 1, 0, 0, 0, 0], "h33 is 0"),
                           ([1, 2, 3, 2, 4, 6, 0, 0, 1], "not invertible"), ([1, 0, 0, 0, float("nan"), 0, 0, 0, 1], "NaN")):
        with pytest.raises(ValueError, match=reason):
            validate_homography(matrix)
        with pytest.raises(ValueError, match=f"parameter 'thermal_homography'.*{reason}"):
            NodeParams(checkpoint="m", thermal_homography=[float(v) for v in matrix]).validate()
    with pytest.raises(ValueError, match="onto 0% of the 64x48 RGB frame"):
        validate_homography([1, 0, 100000, 0, 1, 0, 0, 0, 1], (48, 64), (48, 64))
    # A valid but off-frame registration (determinant 1) was refused as "singular" (a condition-number
    # test): it is invertible, and the frames say why it is useless.
    far = [1, 0, 1e6, 0, 1, 0, 0, 0, 1]
    assert np.array_equal(validate_homography(far), np.reshape(far, (3, 3)))
    NodeParams(checkpoint="m", thermal_homography=[float(v) for v in far]).validate()
    with pytest.raises(ValueError, match="onto 0% of the 64x48 RGB frame") as off_frame:
        validate_homography(far, (48, 64), (48, 64))
    assert "invertible" not in str(off_frame.value)
    validate_homography([1e-3, 0, 0, 0, 1e-3, 0, 0, 0, 1])  # a strong zoom-out is invertible (coverage judges it)
    with pytest.raises(ValueError, match=r"not invertible \(determinant 0"):
        validate_homography([1, 2, 0, 2, 4, 0, 0, 0, 1])
    aligner = ThermalAligner(np.array([[1, 0, -1000], [0, 1, 0], [0, 0, 1.0]]))
    with pytest.raises(ValueError, match="black"):  # every frame of that size is refused, not warped to black
        aligner(np.zeros((48, 64), np.uint8), (48, 64))
    with pytest.raises(ValueError, match="black"):
        aligner(np.zeros((48, 64), np.uint8), (48, 64))


def _log_steps(run: Path) -> tuple[list[int], list[int]]:
    """(steps of the train rows, steps of the validation rows) of train_log.csv."""
    rows = [line.split(",") for line in (run / "train_log.csv").read_text().splitlines()[1:]]
    return [int(r[0]) for r in rows if r[1]], [int(r[0]) for r in rows if not r[1]]


def _tensorboard_steps(run: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return [e.step for e in events.Scalars(tag)]


def test_interrupted_resume_changed_recipe_and_force_keep_the_run_records_right(tmp_path, data, monkeypatch, capsys):
    """Item 4 (Ctrl-C + --resume logs each step once; a changed recipe needs a flag and is recorded)
    and item 2 (--force replaces a run, only its files)."""
    from taseg_ros.train import loop

    run = tmp_path / "run"
    args = ["train", "demo_tiny", f"--data-root={data}", f"--output={run}", "--no-progress", "data.crop=[32,48]",
            "data.num_workers=0", "train.steps=6", "train.batch_size=2", "train.micro_batch_size=2",
            "train.val_every=3", "train.log_every=1", "train.checkpoint_every=3"]
    real_factor = loop.learning_rate_factor

    def ctrl_c_in_step_6(step, recipe):
        if step == 5:  # steps 4 and 5 are logged after the state of step 3: the resume replays them
            raise KeyboardInterrupt
        return real_factor(step, recipe)

    monkeypatch.setattr(loop, "learning_rate_factor", ctrl_c_in_step_6)
    assert run_cli(args, capsys)[0] == 130
    assert _log_steps(run) == ([1, 2, 3, 4, 5], [3])
    monkeypatch.setattr(loop, "learning_rate_factor", real_factor)
    code, _, err = run_cli([*args, "--resume"], capsys)
    assert code == 0, err
    assert _log_steps(run) == ([1, 2, 3, 4, 5, 6], [3, 6])  # was: 4 and 5 twice
    assert _tensorboard_steps(run, "train/loss") == [1, 2, 3, 4, 5, 6]
    assert _tensorboard_steps(run, "val/miou") == [3, 6]

    code, _, err = run_cli([*args, "--resume", "train.steps=9"], capsys)
    assert code == 2 and "train.steps: 6 -> 9" in err and "--allow-recipe-change" in err
    code, _, err = run_cli([*args, "--resume", "train.steps=9", "--allow-recipe-change"], capsys)
    assert code == 0, err
    assert "warning:" in err and "continuing from step 6 with a changed recipe (train.steps: 6 -> 9)" in err
    history = json.loads((run / "recipe_history.json").read_text())
    assert [h["from_step"] for h in history] == [0, 6]
    assert history[0]["recipe"]["train"]["steps"] == 6 and history[1]["recipe"]["train"]["steps"] == 9
    assert history[1]["changes"] == {"train.steps": {"from": 6, "to": 9}}
    assert json.loads((run / "recipe.json").read_text())["train"]["steps"] == 9
    assert _log_steps(run)[0] == list(range(1, 10))

    (run / "notes.txt").write_text("the user's notes")
    assert run_cli(args, capsys)[0] == 2  # a finished run: refused without --resume / --force
    code, _, err = run_cli([*args, "--force"], capsys)
    assert code == 0, err
    assert _log_steps(run) == ([1, 2, 3, 4, 5, 6], [3, 6])
    assert not (run / "recipe_history.json").exists() and (run / "notes.txt").read_text() == "the user's notes"
    assert _tensorboard_steps(run, "train/loss") == [1, 2, 3, 4, 5, 6]  # the old run's events are gone


@pytest.mark.parametrize("command", ["predict", "eval", "score", "init", "export", "train", "demo", "bench"])
def test_every_command_that_writes_states_the_overwrite_policy_in_its_help(command):
    from taseg_ros.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    text = " ".join(sub.format_help().split())
    assert "--force" in text and ("refused" in text or "replace" in text), text


def test_the_frame_pipeline_skips_a_pair_a_homography_warps_out_of_view():
    """The node and bag eval: the pair is skipped with the reason (a per-kind note), not warped to black."""
    from taseg_ros.inference.pipeline import FramePipeline
    from taseg_ros.frames.settings import FrameSettings

    pipeline = FramePipeline(None, FrameSettings(homography=np.array([[1, 0, 5000], [0, 1, 0], [0, 0, 1.0]])))
    result = pipeline.process(np.zeros((48, 64, 3), np.uint8), np.zeros((48, 64), np.uint16))
    assert not result.ok and result.error.kind == "bad_thermal"
    assert "onto 0% of the 64x48 RGB frame" in result.error.text and result.error.text.endswith("pair skipped")


def test_info_escapes_the_text_a_checkpoint_carries(tmp_path, tiny_checkpoint, capsys):
    """Class 14: `taseg info` printed a checkpoint's config name and text source raw (ANSI codes
    reached the terminal); they are shown escaped, like class names in errors."""
    from taseg_ros.model.checkpoint import read_metadata

    config = json.loads(read_metadata(tiny_checkpoint)["config"])
    ckpt = tmp_path / "ansi_meta.safetensors"
    _with_metadata(tiny_checkpoint, ckpt, config=dict(config, name="tiny\x1b[2J"), text_source="clip\x1b[31m\nok")
    code = main(["info", "--checkpoint", str(ckpt)])
    out = capsys.readouterr().out
    assert code == 0 and "\x1b" not in out, out
    assert "TASeg config 'tiny\\x1b[2J'" in out and "text=clip\\x1b[31m\\nok" in out
