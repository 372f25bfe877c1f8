"""Deployment runtimes: LoRA merging, `taseg export --format onnx|openvino` round trips on real
frames, the metadata inside the files, clear errors for wrong sizes and bad files, and the node
answering over DDS with exported models. Real onnx/onnxruntime/openvino (scripts/setup.sh
installs them); TensorRT needs a GPU and is covered by scripts/gpu_check.sh."""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from taseg_ros.cli import main
from taseg_ros.inference import Segmenter
from taseg_ros.model.checkpoint import load_checkpoint
from taseg_ros.model.lora import LoRAQKV, merge_lora
from taseg_ros.runtime import backend_for, open_backend
from taseg_ros.runtime.export import export_model

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

pytestmark = pytest.mark.timeout(300)


def real_frames(samples_dir: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The shared MFNet frames (thermal in the alpha channel) and a few MSRS pairs, all 640x480."""
    frames = []
    for path in sorted((samples_dir / "mfnet" / "images").glob("*.png")):
        bgra = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        frames.append((f"mfnet/{path.name}", cv2.cvtColor(bgra[:, :, :3], cv2.COLOR_BGR2RGB), bgra[:, :, 3]))
    for path in sorted((samples_dir / "msrs" / "vi").glob("*.png"))[:2]:
        rgb = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        frames.append((f"msrs/{path.name}", rgb, cv2.imread(str(samples_dir / "msrs" / "ir" / path.name), cv2.IMREAD_GRAYSCALE)))
    return frames


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory, tiny_checkpoint):
    """The tiny checkpoint with non-zero LoRA factors (fresh LoRA B is zero: merging would be trivially exact)."""
    from taseg_ros.model.checkpoint import save_checkpoint

    model = load_checkpoint(tiny_checkpoint)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_" in name:
                param.copy_(0.2 * torch.randn(param.shape, generator=generator))
    path = tmp_path_factory.mktemp("lora") / "tiny_lora.safetensors"
    save_checkpoint(model, path)
    return path


@pytest.fixture(scope="module")
def exports(trained_checkpoint, tmp_path_factory):
    """The checkpoint exported for 640x480 frames as ONNX and as OpenVINO IR."""
    folder = tmp_path_factory.mktemp("exports")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx = export_model(trained_checkpoint, folder / "tiny.onnx", "onnx")
        ir = export_model(trained_checkpoint, folder / "tiny.xml", "openvino")
    return {"onnx": onnx, "openvino": ir}


def test_merging_lora_keeps_the_logits(trained_checkpoint):
    model = load_checkpoint(trained_checkpoint)
    merged = merge_lora(copy.deepcopy(model))
    assert not any(isinstance(m, LoRAQKV) for m in merged.modules())
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    assert merged.lora_merged and sum(p.numel() for p in merged.parameters()) < sum(p.numel() for p in model.parameters())
    from taseg_ros.model.checkpoint import save_checkpoint

    with pytest.raises(ValueError, match="LoRA merged into its frozen weights is not a TASeg checkpoint"):
        save_checkpoint(merged, Path("/nonexistent/merged.safetensors"))
    rgb, thermal = torch.randn(2, 3, 96, 128), torch.randn(2, 1, 96, 128)
    with torch.inference_mode():
        reference, result = model(rgb, thermal), merged(rgb, thermal)
        lora_effect = (reference - merge_lora(_without_lora(model))(rgb, thermal)).abs().max()
    assert lora_effect > 1e-3  # the LoRA factors change the output: the comparison below means something
    assert (result - reference).abs().max() < 1e-5 * max(1.0, float(reference.abs().max()))


def _without_lora(model):
    stripped = copy.deepcopy(model)
    with torch.no_grad():
        for name, param in stripped.named_parameters():
            if ".lora_" in name:
                param.zero_()
    return stripped


def test_segmenter_merge_lora_option(trained_checkpoint):
    rng = np.random.default_rng(0)
    rgb, thermal = rng.integers(0, 256, (100, 140, 3), dtype=np.uint8), rng.integers(0, 256, (100, 140), dtype=np.uint8)
    plain = Segmenter.from_checkpoint(trained_checkpoint).predict(rgb, thermal, return_probabilities=True)
    seg = Segmenter.from_checkpoint(trained_checkpoint, merge_lora=True)
    merged = seg.predict(rgb, thermal, return_probabilities=True)
    assert "LoRA merged" in seg.describe()
    np.testing.assert_array_equal(merged.labels, plain.labels)
    np.testing.assert_allclose(merged.probabilities, plain.probabilities, atol=1e-6)


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_export_round_trip_on_real_frames(exports, trained_checkpoint, samples_dir, fmt):
    """fp32 runtimes reproduce eager PyTorch on the shared MFNet/MSRS frames."""
    reference = Segmenter.from_checkpoint(trained_checkpoint)
    runtime = Segmenter.from_checkpoint(exports[fmt]["output"], precision="fp32")
    assert runtime.precision == "fp32" and runtime.model is None
    agreement, max_diff = [], 0.0
    for name, rgb, thermal in real_frames(samples_dir):
        expected = reference.predict(rgb, thermal, return_probabilities=True)
        got = runtime.predict(rgb, thermal, return_probabilities=True)
        agreement.append((got.labels == expected.labels).mean())
        max_diff = max(max_diff, float(np.abs(got.probabilities - expected.probabilities).max()))
    assert len(agreement) >= 3
    assert min(agreement) >= 0.999, agreement
    assert max_diff < 1e-4
    check = exports[fmt]["verification"]
    assert check["argmax_agreement"] >= 0.999 and check["max_abs_diff"] < 1e-4


def test_openvino_precision_is_the_one_asked_for(exports):
    rng = np.random.default_rng(2)
    rgb, thermal = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), rng.integers(0, 256, (480, 640), dtype=np.uint8)
    fp32 = Segmenter.from_checkpoint(exports["openvino"]["output"])
    bf16 = Segmenter.from_checkpoint(exports["openvino"]["output"], precision="bf16")
    assert fp32.precision == "fp32" and "fp32" in fp32.describe()
    assert bf16.precision in ("bf16", "fp32")  # fp32 where the CPU has no bf16 support; never silently other
    assert (bf16.backend.precision_note != "") == (bf16.precision != "bf16")  # said when another one runs
    assert bf16.backend.op_precisions.get("bf16" if bf16.precision == "bf16" else "f32", 0) > 0  # OpenVINO's count
    assert (fp32.predict(rgb, thermal).labels == bf16.predict(rgb, thermal).labels).mean() > 0.9


def test_metadata_read_back(exports, trained_checkpoint):
    from taseg_ros.weights import sha256_file

    model = load_checkpoint(trained_checkpoint)
    for fmt, result in exports.items():
        backend = open_backend(result["output"])
        meta = backend.metadata
        assert backend.name == {"onnx": "onnxruntime", "openvino": "openvino"}[fmt]
        assert meta.cfg == model.cfg and meta.cfg.name == "tiny" and meta.cfg.resolution == "native"
        assert list(meta.class_info.names) == list(model.class_info.names)
        np.testing.assert_array_equal(meta.class_info.palette, model.class_info.palette)
        assert meta.input_hw == (480, 640) and meta.frame_hw == (480, 640) and meta.batch == 1
        assert meta.source == {"name": trained_checkpoint.name, "sha256": sha256_file(trained_checkpoint)}
        assert meta.frozen_source["kind"] == "random" and meta.sam_sha256 == ""
        assert Segmenter(backend).class_info.names == model.class_info.names


def test_sam1024_export_takes_any_frame_size(trained_checkpoint, tmp_path):
    from taseg_ros.model.checkpoint import save_checkpoint

    model = load_checkpoint(trained_checkpoint)
    model.cfg = model.cfg.replace(resolution="sam1024")
    path = save_checkpoint(model, tmp_path / "sam_mode.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = export_model(path, tmp_path / "sam_mode.onnx", "onnx", size=(160, 120))  # verified at 160x120
    assert result["metadata"].input_hw == (1024, 1024) and result["verification"]["argmax_agreement"] >= 0.999
    seg, reference = Segmenter.from_checkpoint(tmp_path / "sam_mode.onnx"), Segmenter.from_checkpoint(path)
    rng = np.random.default_rng(3)
    rgb, thermal = rng.integers(0, 256, (90, 200, 3), dtype=np.uint8), rng.integers(0, 256, (90, 200), dtype=np.uint8)
    assert (seg.predict(rgb, thermal).labels == reference.predict(rgb, thermal).labels).mean() >= 0.999


def test_fixed_size_batches_and_size_mismatch(trained_checkpoint, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_model(trained_checkpoint, tmp_path / "b2.onnx", "onnx", size=(160, 120), batch=2)
    seg, reference = Segmenter.from_checkpoint(tmp_path / "b2.onnx"), Segmenter.from_checkpoint(trained_checkpoint)
    rng = np.random.default_rng(4)
    rgbs = [rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) for _ in range(3)]
    thermals = [rng.integers(0, 256, (120, 160), dtype=np.uint8) for _ in range(3)]
    for got, expected in zip(seg.predict_batch(rgbs, thermals), reference.predict_batch(rgbs, thermals)):  # 3 = 2 + padded 1
        assert (got.labels == expected.labels).mean() >= 0.999
    # Native mode pads to multiples of 16: a 160x113 frame needs the same 160x128 input as 160x120.
    seg.predict(rgbs[0][:113], thermals[0][:113])
    with pytest.raises(ValueError) as err:
        seg.predict(rgbs[0][:100, :100], thermals[0][:100, :100])
    message = str(err.value)
    assert str(tmp_path / "b2.onnx") in message and "160x128 input" in message and "100x100 frame" in message
    assert "112x112" in message and "\n" not in message


def test_the_weights_check_digests_the_file_openvino_loads(exports, tmp_path):
    """OpenVINO loads <stem>.bin beside the .xml, whatever file name the export recorded: a pair
    renamed together runs (was refused: 'tiny.bin is missing'); an .xml beside the .bin of another
    export of the same architecture is refused (was run: the digest was of the recorded tiny.bin)."""
    import shutil

    xml = exports["openvino"]["output"]
    reference = Segmenter.from_checkpoint(xml)
    rgb, thermal = np.full((480, 640, 3), 90, np.uint8), np.tile(np.arange(640, dtype=np.uint16) * 50, (480, 1))
    renamed = tmp_path / "renamed" / "model.xml"
    renamed.parent.mkdir()
    shutil.copy(xml, renamed)
    shutil.copy(xml.with_suffix(".bin"), renamed.with_suffix(".bin"))
    assert np.array_equal(Segmenter.from_checkpoint(renamed).predict(rgb, thermal).labels,
                          reference.predict(rgb, thermal).labels)
    mixed = tmp_path / "mixed" / "model.xml"  # this .xml, another export's .bin (same layout, other values)
    mixed.parent.mkdir()
    shutil.copy(xml, mixed)
    shutil.copy(xml, mixed.parent / xml.name)
    shutil.copy(xml.with_suffix(".bin"), mixed.parent / xml.with_suffix(".bin").name)  # the recorded name, intact
    other = bytearray(xml.with_suffix(".bin").read_bytes())
    other[len(other) // 2:len(other) // 2 + 64] = bytes(64)
    mixed.with_suffix(".bin").write_bytes(bytes(other))
    with pytest.raises(ValueError, match=r"mixed/model.xml and .*mixed/model.bin: not from the same export"):
        Segmenter.from_checkpoint(mixed)


def test_bad_model_files_fail_in_one_line(exports, tmp_path):
    import onnx

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not a model" * 50)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(exports["onnx"]["output"].read_bytes()[:100_000])
    foreign = tmp_path / "foreign.onnx"  # a valid ONNX model that is not a TASeg export
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])), foreign)
    not_ir = tmp_path / "notes.xml"
    not_ir.write_text("<notes><note>hello</note></notes>")
    no_bin = tmp_path / "lonely.xml"
    no_bin.write_bytes(exports["openvino"]["output"].read_bytes())
    cases = {
        garbage: "not an ONNX model", truncated: "not an ONNX model", foreign: "not a TASeg export",
        not_ir: "not an OpenVINO IR", no_bin: "lonely.bin is missing", tmp_path / "model.pt": "unknown model file type",
    }
    (tmp_path / "model.pt").write_bytes(b"x")
    for path, expected in cases.items():
        with pytest.raises(ValueError) as err:
            Segmenter.from_checkpoint(path)
        assert str(path) in str(err.value) and expected in str(err.value), err.value
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="backend 'torch' cannot run a .onnx file"):
        backend_for(exports["onnx"]["output"], "torch")
    with pytest.raises(ValueError, match="precision 'bf16' is not available"):
        Segmenter.from_checkpoint(exports["onnx"]["output"], precision="bf16")
    assert backend_for(exports["onnx"]["output"], "openvino") == "openvino"


def test_cli_export_and_failed_check_removes_the_output(trained_checkpoint, tmp_path, capsys, monkeypatch):
    out = tmp_path / "cli.xml"
    assert main(["export", str(trained_checkpoint), "--format", "openvino", "-o", str(out), "--size", "160x120"]) == 0
    printed = capsys.readouterr().out
    assert "argmax agreement 100" in printed and "input 160x128" in printed
    assert out.is_file() and out.with_suffix(".bin").is_file()
    assert open_backend(out).input_hw == (128, 160)

    from taseg_ros.runtime import export as export_module

    monkeypatch.setitem(export_module.MIN_AGREEMENT, "fp32", 1.01)  # no export can pass: the check must remove it
    bad = tmp_path / "bad.onnx"
    assert main(["export", str(trained_checkpoint), "--format", "onnx", "-o", str(bad), "--size", "160x120"]) != 0
    err = capsys.readouterr().err
    assert "does not reproduce eager PyTorch" in err and "nothing written" in err
    assert not bad.exists() and not any(tmp_path.glob("bad.onnx*")) and not any(tmp_path.glob(".taseg-*"))
    assert main(["export", str(trained_checkpoint), "--format", "onnx", "-o", str(tmp_path / "x.xml")]) != 0
    assert "--format onnx writes a '.onnx' file" in capsys.readouterr().err


def test_export_verifies_on_a_shipped_scene_or_the_users_frame(trained_checkpoint, tmp_path, capsys):
    """No development folder is read: the default verification frame is a procedural scene that ships
    with the package; --verify-frame takes the user's own pair (resized to --size)."""
    from taseg_ros.frames.files import write_image, write_rgb
    from taseg_ros.runtime.export import verification_frame
    from taseg_ros.scenes import scene_pair

    rgb, thermal, name = verification_frame(48, 64)
    assert "procedural" in name and (rgb, thermal)[0].shape == (48, 64, 3)
    assert np.array_equal(rgb, scene_pair(48, 64, seed=0, night=True)[0])
    mine_rgb, mine_thermal = scene_pair(96, 128, seed=5)
    write_rgb(tmp_path / "mine_rgb.png", mine_rgb)
    write_image(tmp_path / "mine_thermal.png", mine_thermal.astype(np.uint16) * 200)
    out = tmp_path / "mine.onnx"
    args = ["export", str(trained_checkpoint), "--format", "onnx", "-o", str(out), "--size", "64x48",
            "--verify-frame", str(tmp_path / "mine_rgb.png"), str(tmp_path / "mine_thermal.png")]
    assert main(args) == 0
    assert f"on {tmp_path / 'mine_rgb.png'} + {tmp_path / 'mine_thermal.png'}: argmax agreement" in capsys.readouterr().out
    bad = ["export", str(trained_checkpoint), "--format", "onnx", "-o", str(tmp_path / "bad.onnx"), "--size", "64x48",
           "--verify-frame", str(tmp_path / "missing.png"), str(tmp_path / "mine_thermal.png")]
    assert main(bad) == 2 and not (tmp_path / "bad.onnx").exists()
    assert "missing.png" in capsys.readouterr().err


# --- the node over DDS with exported models -------------------------------------------------------

try:  # the node tests' fixtures (real rclpy, one DDS domain per session) and probe
    from test_ros_node import checkpoint, frames, publish_pair, ros, start_node, wait_until  # noqa: F401
except pytest.skip.Exception:  # no ROS 2 Python packages: only the node tests below skip
    ros = None


@pytest.mark.skipif(ros is None, reason="rclpy (ROS 2) is not installed")
@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_node_answers_with_an_exported_model(start_node, exports, fmt):
    from taseg_ros.frames.codec import image_to_array

    path = exports[fmt]["output"]
    node, probe = start_node(checkpoint=str(path))
    assert node.segmenter.backend.name == backend_for(path) and node.segmenter.model is None
    rgb, _ = frames(480, 640, seed=3)
    thermal = np.random.default_rng(3).integers(20000, 40000, (480, 640), dtype=np.uint16)
    publish_pair(probe, rgb, thermal)
    wait_until(lambda: probe.count("labels") >= 1, what=f"labels from the node running {path.name}")
    expected = Segmenter.from_checkpoint(path).predict(rgb, thermal)
    np.testing.assert_array_equal(image_to_array(probe.last("labels")), expected.labels)
    assert image_to_array(probe.last("colorized")).shape == (480, 640, 3)


def test_predict_command_with_an_exported_model(exports, trained_checkpoint, samples_dir, tmp_path):
    images = samples_dir / "mfnet" / "images"
    for name, model in (("torch", trained_checkpoint), ("openvino", exports["openvino"]["output"])):
        assert main(["predict", "--checkpoint", str(model), "--rgb", str(images), "-o", str(tmp_path / name)]) == 0
    for ids in sorted((tmp_path / "torch" / "labels").glob("*.png")):
        torch_ids = cv2.imread(str(ids), cv2.IMREAD_UNCHANGED)
        runtime_ids = cv2.imread(str(tmp_path / "openvino" / "labels" / ids.name), cv2.IMREAD_UNCHANGED)
        assert (torch_ids == runtime_ids).mean() >= 0.999


def test_eval_command_with_an_exported_model(exports, trained_checkpoint, tmp_path, capsys):
    """`taseg eval` scores an exported file like its checkpoint (the dataset comes from the file's metadata
    when recorded; here it is given)."""
    import json

    from dataset_fixtures import synthetic_frame, write_mfnet

    rng = np.random.default_rng(5)
    root = write_mfnet(tmp_path / "mfnet", {f"0000{i}D": synthetic_frame(rng, 480, 640, 9) for i in range(2)},
                       {"test": ["00000D", "00001D"]})
    scores = {}
    for name, model in (("torch", trained_checkpoint), ("onnx", exports["onnx"]["output"])):
        assert main(["eval", "--checkpoint", str(model), "--data-root", str(root), "--dataset", "mfnet",
                     "--out", str(tmp_path / name)]) == 0
        scores[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    capsys.readouterr()
    assert scores["onnx"]["num_images"] == 2
    assert scores["onnx"]["overall"]["pixel_accuracy"] == pytest.approx(scores["torch"]["overall"]["pixel_accuracy"], abs=1e-3)


def test_bag_eval_with_an_exported_model(trained_checkpoint, tmp_path):
    """`taseg bag eval --backend openvino` on an exported model writes the same labels as the checkpoint."""
    import json

    from bag_fixtures import synthetic_frames, write_rgbt_bag
    from taseg_ros.bag.io.reader import open_bag

    rec = write_rgbt_bag(tmp_path / "bag", synthetic_frames(6, 48, 64, seed=4), storage="mcap", drop_rgb=(), drop_thermal=())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_model(trained_checkpoint, tmp_path / "m.onnx", "onnx", size=(64, 48))
    labels = {}
    for name, model, extra in (("torch", trained_checkpoint, []), ("openvino", tmp_path / "m.onnx", ["--backend", "openvino"])):
        argv = ["bag", "eval", str(rec.path), "--checkpoint", str(model), "-o", str(tmp_path / name), *extra]
        assert main(argv) == 0
        assert json.loads((tmp_path / name / "report.json").read_text())["frames"]["processed"] == 6
        with open_bag(next((tmp_path / name).glob("*_taseg"))) as out:
            labels[name] = [bytes(out.deserialize(m).data) for m in out.messages(["/taseg/labels"])]
    assert len(labels["torch"]) == 6 and labels["torch"] == labels["openvino"]
