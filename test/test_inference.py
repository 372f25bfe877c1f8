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
