"""The Python API on numpy frames, and the `taseg info` / `taseg init` commands."""
from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from taseg_ros.cli import main
from taseg_ros.inference import Segmenter
from taseg_ros.frames.thermal import ThermalNormalization


def test_api_on_a_real_mfnet_frame(tiny_checkpoint, samples_dir):
    """`taseg init` output, loaded by the API, on a real 640x480 MFNet frame (thermal = alpha)."""
    bgra = cv2.imread(str(samples_dir / "mfnet" / "images" / "01234N.png"), cv2.IMREAD_UNCHANGED)
    assert bgra.shape == (480, 640, 4)
    rgb = cv2.cvtColor(bgra[:, :, :3], cv2.COLOR_BGR2RGB)
    thermal = bgra[:, :, 3]
    seg = Segmenter.from_checkpoint(tiny_checkpoint)
    pred = seg.predict(rgb, thermal, return_probabilities=True)
    assert pred.labels.shape == (480, 640) and pred.labels.dtype == np.uint8
    assert pred.labels.max() < seg.class_info.num_classes == 9
    assert pred.probabilities.shape == (9, 480, 640)
    np.testing.assert_allclose(pred.probabilities.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(pred.labels, pred.probabilities.argmax(axis=0))
    np.testing.assert_allclose(pred.confidence, pred.probabilities.max(axis=0))


def test_thermal_bit_depths_and_batches(tiny_checkpoint):
    seg = Segmenter.from_checkpoint(tiny_checkpoint)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (120, 200, 3), dtype=np.uint8)
    t8 = rng.integers(0, 256, (120, 200), dtype=np.uint8)
    t16 = t8.astype(np.uint16) * 257  # same image in 16 bits
    a = seg.predict(rgb, t8, ThermalNormalization("fixed", 0, 255))
    b = seg.predict(rgb, t16, ThermalNormalization("fixed", 0, 65535))
    np.testing.assert_array_equal(a.labels, b.labels)
    auto16 = seg.predict(rgb, t16)  # percentile normalisation by default for 16-bit
    assert auto16.labels.shape == (120, 200)
    batch = seg.predict_batch([rgb, rgb[::-1].copy()], [t8, t8[::-1].copy()], ThermalNormalization("fixed", 0, 255))
    np.testing.assert_array_equal(batch[0].labels, a.labels)
    assert batch[0].probabilities is None


def test_api_rejects_bad_frames(tiny_checkpoint):
    seg = Segmenter.from_checkpoint(tiny_checkpoint)
    rgb = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="not on the RGB grid"):
        seg.predict(rgb, np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match=r"rgb must be \(H, W, 3\) uint8"):
        seg.predict(rgb.astype(np.float32), np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match="fp16 is not supported on the CPU"):
        Segmenter.from_checkpoint(tiny_checkpoint, precision="fp16")
    seg.release()
    with pytest.raises(RuntimeError, match="released"):
        seg.predict(rgb, np.zeros((64, 64), np.uint8))


def test_bf16_on_cpu_agrees_mostly_with_fp32(tiny_checkpoint):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    thermal = rng.integers(0, 256, (96, 96), dtype=np.uint8)
    fp32 = Segmenter.from_checkpoint(tiny_checkpoint).predict(rgb, thermal)
    bf16 = Segmenter.from_checkpoint(tiny_checkpoint, precision="bf16").predict(rgb, thermal)
    assert (fp32.labels == bf16.labels).mean() > 0.9


def test_a_precision_the_device_cannot_run_natively_falls_back_and_says_so(tiny_checkpoint, tmp_path, monkeypatch,
                                                                           capsys):
    """bf16 on a CPU without bf16 instructions was run emulated (vit_b 0.13x fp32 on an AVX2-only
    EPYC), silently. The decision is the CPU's flags (injected here: this machine has avx512_bf16)."""
    from taseg_ros import devices

    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset({"avx2", "fma"}), raising=False)  # the previous machine
    seg = Segmenter.from_checkpoint(tiny_checkpoint, precision="bf16")
    assert seg.precision == "fp32" and seg.backend.precision_note.startswith(
        "bf16 asked, fp32 runs: this CPU has no bf16 instructions (avx512_bf16 or amx_bf16)")
    assert seg.describe().startswith("torch on cpu, fp32") and "bf16 asked" in seg.describe()  # the node's diagnostics
    rgb, thermal = np.zeros((32, 48, 3), np.uint8), np.zeros((32, 48), np.uint8)
    assert np.array_equal(seg.predict(rgb, thermal).labels, Segmenter.from_checkpoint(tiny_checkpoint).predict(rgb, thermal).labels)
    for folder in ("rgb", "thermal"):
        (tmp_path / folder).mkdir()
    from taseg_ros.frames.files import write_image

    write_image(tmp_path / "rgb" / "a.png", rgb)
    write_image(tmp_path / "thermal" / "a.png", thermal)
    assert main(["predict", "--checkpoint", str(tiny_checkpoint), "--rgb", str(tmp_path / "rgb"), "--thermal",
                 str(tmp_path / "thermal"), "-o", str(tmp_path / "out"), "--precision", "bf16"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]
    assert notes == ["note: " + seg.backend.precision_note]
    monkeypatch.undo()
    assert devices.runnable_precision("bf16", "cpu", frozenset({"avx2", "avx512_bf16"})) == ("bf16", "")
    assert devices.runnable_precision("bf16", "cpu", frozenset({"asimd", "bf16"})) == ("bf16", "")  # aarch64
    assert devices.runnable_precision("bf16", "cuda:0", cuda_capability=(8, 0)) == ("bf16", "")
    assert devices.runnable_precision("fp16", "cuda", cuda_capability=(7, 5)) == ("fp16", "")
    ran, why = devices.runnable_precision("bf16", "cuda", cuda_capability=(7, 0))
    assert ran == "fp32" and "compute capability 7.0" in why


def test_info_prints_the_breakdown(capsys):
    assert main(["info", "--config", "vit_h"]) == 0
    out = capsys.readouterr().out
    assert "total trainable" in out and "28,586,761" in out
    for label in ("thermal patch embedding", "DFFM", "encoder LoRA", "decoder LoRA", "text cross-attention", "class head", "frozen"):
        assert label in out


def test_info_for_vit_h_needs_no_weights_in_memory():
    """ViT-H has 641 M frozen parameters (2.5 GB in fp32); counting them must not allocate them."""
    # Linux keeps ru_maxrss across fork/exec, so a child of a large pytest process would report
    # the parent's peak; reset the high-water mark in the child first (clear_refs 5) and read VmHWM.
    code = (
        "import contextlib, io\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "from taseg_ros.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()): main(['info', '--config', 'vit_h'])\n"
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
    )
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    peak_kib = int(result.stdout.split()[-1])
    assert peak_kib < 1_200_000, f"peak RSS {peak_kib / 1024:.0f} MiB"


def test_init_then_info_on_the_checkpoint(tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    assert main(["init", "--config", "tiny", "--classes", "pst900", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "*** WARNING: NO SAM CHECKPOINT" in text and "*** WARNING: NO CLIP TEXT WEIGHTS" in text
    assert main(["info", "--checkpoint", str(out)]) == 0
    text = capsys.readouterr().out
    assert "5: background, fire_extinguisher, backpack, hand_drill, survivor" in text
    assert "frozen=embedded" in text


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["init", "--config", "vit_q", "--classes", "mfnet", "-o", str(tmp_path / "x")]) == 2
    assert "unknown model config 'vit_q'" in capsys.readouterr().err
    assert main(["init", "--config", "tiny", "--classes", "nope", "-o", str(tmp_path / "x")]) == 2
    assert "unknown class list 'nope'" in capsys.readouterr().err
    assert main(["info", "--checkpoint", str(tmp_path / "missing.safetensors")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_a_huge_frame_is_capped_before_the_network_and_labels_come_back_full_size(thermal_checkpoint):
    """max_input_size (issue 19: one 4000x3000 pair made the tiny model ask for > 24 GB in native mode):
    the network sees the frame resized down to the cap (aspect kept, padded to the patch size), the
    labels and confidence come back at 4000x3000, they match a prediction on the frame shrunk by hand,
    and the call's memory stays bounded. The pipeline says so once."""
    import torch

    from taseg_ros.bench.memory import measure_peak
    from taseg_ros.inference.pipeline import FramePipeline
    from taseg_ros.model.config import DEFAULT_MAX_INPUT_SIZE
    from taseg_ros.scenes import scene_pair

    small_rgb, small_thermal = scene_pair(120, 160, seed=2)
    # A 4000x3000 frame with the small scene's content (nearest: each pixel a 25x25 block).
    rgb = cv2.resize(small_rgb, (4000, 3000), interpolation=cv2.INTER_NEAREST)
    thermal = cv2.resize(small_thermal, (4000, 3000), interpolation=cv2.INTER_NEAREST)
    assert Segmenter.from_checkpoint(thermal_checkpoint).transform.max_input_size == DEFAULT_MAX_INPUT_SIZE
    seg = Segmenter.from_checkpoint(thermal_checkpoint, max_input_size=160)
    assert seg.cfg.resolution == "native"
    thermal01 = seg.thermal(thermal, rgb.shape[:2])[0]
    rgb_in, thermal_in, geometry = seg.prepare([rgb], [thermal01])
    assert geometry.capped and geometry.resized_hw == (120, 160) and tuple(rgb_in.shape) == (1, 3, 128, 160)
    assert tuple(thermal_in.shape) == (1, 1, 128, 160)

    result = {}
    memory = measure_peak(lambda: result.setdefault("pred", seg.predict(rgb, thermal)), torch.device("cpu"))
    pred = result["pred"]
    assert pred.labels.shape == (3000, 4000) and pred.confidence.shape == (3000, 4000)
    if memory["kind"] == "rss_peak_during_call":  # ~1 GB measured: logits restored at 4000x3000
        assert memory["delta_bytes"] < 3 * 2**30, memory
    shrunk = seg.predict(small_rgb, small_thermal).labels
    up = cv2.resize(shrunk, (4000, 3000), interpolation=cv2.INTER_NEAREST)
    assert (up == pred.labels).mean() > 0.9
    assert len(np.unique(pred.labels)) > 1  # a real segmentation, not one class everywhere

    uncapped = Segmenter.from_checkpoint(thermal_checkpoint, max_input_size=0)
    assert not uncapped.transform.geometry(3000, 4000).capped
    assert uncapped.transform.geometry(3000, 4000).padded_hw == (3008, 4000)

    pipeline = FramePipeline(seg)
    first = pipeline.process(rgb[:1500, :2000], thermal[:1500, :2000], outputs=())
    assert [n.kind for n in first.notes] == ["input_resized"]
    assert first.notes[0].text == ("2000x1500 frames are larger than max_input_size (160 px, the longest side): "
                                   "the network sees them at 160x120 and the labels are resized back to 2000x1500")
    assert first.labels.shape == (1500, 2000)
    assert pipeline.process(rgb[:1500, :2000], thermal[:1500, :2000], outputs=()).notes == []  # said once


def test_predict_max_input_size_option(tiny_checkpoint, tmp_path, capsys):
    """`taseg predict --max-input-size`: the frame goes through the capped network, the outputs keep the
    frame's size, and the command says once that frames were resized for the network."""
    rng = np.random.default_rng(4)
    cv2.imwrite(str(tmp_path / "rgb.png"), rng.integers(0, 256, (60, 100, 3), dtype=np.uint8))
    cv2.imwrite(str(tmp_path / "thermal.png"), rng.integers(0, 256, (60, 100), dtype=np.uint8))
    code = main(["predict", "--checkpoint", str(tiny_checkpoint), "--rgb", str(tmp_path / "rgb.png"),
                 "--thermal", str(tmp_path / "thermal.png"), "-o", str(tmp_path / "out"), "--max-input-size", "48"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "100x60 frames are larger than max_input_size (48 px, the longest side): the network sees them at 48x29" in err
    assert cv2.imread(str(tmp_path / "out" / "labels" / "rgb.png"), cv2.IMREAD_UNCHANGED).shape == (60, 100)
