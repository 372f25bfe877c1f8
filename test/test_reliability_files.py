"""Issue 19, the file side (beside the sweep table of test_cli_errors.py, which holds the refusals):
what a command that succeeds writes, and how. Every file is replaced by a rename beside it (a link
at the destination is replaced, never written through); an export infers its format from the
suffix and ties its weights file to its graph; `init` names its file; a full disk is one line.
Real files, real links, real ENOSPC from /dev/full."""
from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from taseg_ros.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_force_replaces_a_link_not_the_file_it_points_to(tmp_path, tiny_checkpoint, capsys):
    """Class 1: `--force -o LINK` replaced the link's target (another checkpoint) before."""
    import onnx

    users = tmp_path / "users_model.safetensors"
    users.write_bytes(b"the user's other checkpoint")
    for name in ("init.safetensors", "export.safetensors", "export.onnx"):
        (tmp_path / name).symlink_to(users)
    code, _, err = run_cli(["init", "--config", "tiny", "--classes", "mfnet", "-o", tmp_path / "init.safetensors", "--force"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["export", tiny_checkpoint, "-o", tmp_path / "export.safetensors", "--force"], capsys)
    assert code == 0, err
    # class 7 too: no --format, the suffix says onnx (was: safetensors bytes in a .onnx file)
    code, out, err = run_cli(["export", tiny_checkpoint, "-o", tmp_path / "export.onnx", "--size", "48x32", "--force"], capsys)
    assert code == 0, err
    assert users.read_bytes() == b"the user's other checkpoint"
    for name in ("init.safetensors", "export.safetensors", "export.onnx"):
        assert not (tmp_path / name).is_symlink() and (tmp_path / name).stat().st_size > 100_000
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "export.onnx")).metadata_props}
    assert props["format"] == "taseg_ros.exported/1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.onnx", "export.safetensors", "init.safetensors",
                                                         "users_model.safetensors"]  # no temporary file left


def test_predict_force_replaces_linked_outputs_and_keeps_their_targets(tmp_path, tiny_checkpoint, capsys):
    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "rgb.png"), rng.integers(0, 255, (32, 48, 3), dtype=np.uint8))
    cv2.imwrite(str(tmp_path / "thermal.png"), rng.integers(0, 255, (32, 48), dtype=np.uint8))
    keep = tmp_path / "keep.png"
    keep.write_bytes(b"the user's picture")
    (tmp_path / "out" / "labels").mkdir(parents=True)
    (tmp_path / "out" / "labels" / "rgb.png").symlink_to(keep)
    code, out, err = run_cli(["predict", "--checkpoint", tiny_checkpoint, "--rgb", tmp_path / "rgb.png",
                              "--thermal", tmp_path / "thermal.png", "-o", tmp_path / "out", "--force"], capsys)
    assert code == 0, err
    assert keep.read_bytes() == b"the user's picture"
    labels = tmp_path / "out" / "labels" / "rgb.png"
    assert not labels.is_symlink() and cv2.imread(str(labels), cv2.IMREAD_UNCHANGED).shape == (32, 48)


def test_init_without_a_suffix_writes_a_safetensors_file_and_says_so(tmp_path, capsys):
    """Class 7: `init -o tiny` wrote a file `tiny` that predict and the node then refused."""
    code, out, err = run_cli(["init", "--config", "tiny", "--classes", "mfnet", "-o", tmp_path / "tiny"], capsys)
    assert code == 0, err
    assert f"note: writing {tmp_path / 'tiny.safetensors'}" in out
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.safetensors"]
    from taseg_ros.model.checkpoint import read_metadata

    assert read_metadata(tmp_path / "tiny.safetensors")["format"]


def test_onnx_external_data_is_tied_to_its_graph(tmp_path, tiny_checkpoint, thermal_checkpoint, monkeypatch):
    """Class 6, ONNX with an external data file (ViT-H's 2.5 GB; here the threshold is lowered so the
    tiny model takes the same path): the graph records the data file's sha256 and a foreign one is refused."""
    from taseg_ros.runtime import export, open_backend

    monkeypatch.setattr(export, "ONNX_PROTO_LIMIT", 0)
    for name, ckpt in (("a", tiny_checkpoint), ("b", thermal_checkpoint)):
        (tmp_path / name).mkdir()
        result = export.export_model(ckpt, tmp_path / name / "m.onnx", "onnx", size=(48, 32))
        assert [p.name for p in result["files"]] == ["m.onnx", "m.onnx.data"]
    backend = open_backend(tmp_path / "a" / "m.onnx", backend="onnxruntime")
    assert backend.metadata.weights["file"] == "m.onnx.data" and len(backend.metadata.weights["sha256"]) == 64
    (tmp_path / "a" / "m.onnx.data").write_bytes((tmp_path / "b" / "m.onnx.data").read_bytes())
    with pytest.raises(ValueError, match=r"a/m.onnx and .*a/m.onnx.data: not from the same export"):
        open_backend(tmp_path / "a" / "m.onnx", backend="onnxruntime")


def test_a_full_disk_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    """Class 11 with the system's own ENOSPC (/dev/full): through the one write mechanism the file is
    named and nothing is left; a write outside it still ends as one line, not a traceback."""
    from taseg_ros.errors import OutputPathError
    from taseg_ros.outputs import replacing

    with pytest.raises(OutputPathError, match=re.escape(f"cannot write {tmp_path / 'a.json'}: no space left on the device")):
        with replacing(tmp_path / "a.json"), open("/dev/full", "w") as full:
            full.write("{}")
    assert list(tmp_path.iterdir()) == []

    import taseg_ros.cli.info as info

    monkeypatch.setattr(info, "run", lambda args: Path("/dev/full").write_text("x"))
    code, _, err = run_cli(["info", "--config", "tiny"], capsys)
    assert code == 2 and err.strip() == "taseg info: error: cannot write a file: no space left on the device"


def test_write_error_names_each_refusal():
    from taseg_ros.outputs import write_error

    assert str(write_error(OSError(errno.ENOSPC, "x"), "a.png")) == "cannot write a.png: no space left on the device"
    assert str(write_error(OSError(errno.EROFS, "x"), "a.png")) == "cannot write a.png: read-only file system"
    assert write_error(OSError(errno.EIO, "x"), "a.png") is None  # not the user's to fix: a traceback
    assert write_error(ValueError("x"), "a.png") is None


def test_tensor_bytes_known_values():
    """The lower bound `--size`/`--batch` are refused with: frames, padded inputs and logits, float32."""
    from taseg_ros.model.config import get_config
    from taseg_ros.model.inputs import tensor_bytes

    tiny = get_config("tiny")
    # 48x32 pads to itself (multiples of 16): 4 bytes x 2 frames x (4 + (4 + 9) + 9) x 1536 px
    assert tensor_bytes(tiny, 9, (32, 48), 2) == 4 * 2 * 26 * 1536 == 319488
    # sam1024: frames of 40x30, inputs and logits at 1024x1024
    assert tensor_bytes(tiny.replace(resolution="sam1024"), 2, (30, 40), 1) == 4 * ((4 + 2) * 1200 + (4 + 2) * 1024 * 1024)


def test_atomic_writes_keep_the_users_permissions(tmp_path, tiny_checkpoint):
    """mkstemp-style private files (and safetensors' own) would leave checkpoints unreadable to others."""
    from taseg_ros.model.checkpoint import load_checkpoint, save_checkpoint
    from taseg_ros.outputs import write_text_atomic

    mask = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
        save_checkpoint(load_checkpoint(tiny_checkpoint), tmp_path / "m.safetensors")
    finally:
        os.umask(mask)
    assert oct((tmp_path / "a.txt").stat().st_mode & 0o777) == oct(0o644)
    assert oct((tmp_path / "m.safetensors").stat().st_mode & 0o777) == oct(0o644)
    assert json.loads(json.dumps(sorted(p.name for p in tmp_path.iterdir()))) == ["a.txt", "m.safetensors"]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_a_recording_that_fills_the_disk_is_one_line_naming_it(tmp_path, storage):
    """Class 11 for what `bag replay` and `bag eval` record with (BagWriter): mcap raises the
    system's OSError, sqlite3 its own "disk I/O error"; both end as one line naming the recording."""
    from test_cli_errors import file_size_limit

    from taseg_ros.bag.io.messages import image_message
    from taseg_ros.bag.io.msgtypes import IMAGE
    from taseg_ros.bag.io.writer import BagWriter
    from taseg_ros.errors import OutputPathError

    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(200)]  # does not compress
    with pytest.raises(OutputPathError, match=re.escape(f"cannot write {tmp_path / 'rec'}: file too large")):
        with file_size_limit(50_000), BagWriter(tmp_path / "rec", storage=storage) as writer:
            for i, image in enumerate(noise):
                writer.write("/camera/image", IMAGE, i, image_message(i, "cam", image, "rgb8"))
