"""The per-frame pipeline (taseg_ros.inference.pipeline) without ROS: decode -> thermal -> predict -> render."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from taseg_ros.frames.settings import STEPS
from taseg_ros.inference.pipeline import FramePipeline
from taseg_ros.frames.settings import FrameSettings
from taseg_ros.frames.thermal import ThermalPreparation
from taseg_ros.inference import Segmenter
from taseg_ros.frames.thermal import ThermalNormalization, align_thermal, normalize_thermal
from taseg_ros.frames.render import colorize, overlay
from taseg_ros.frames.codec import encode_image


def raw(array: np.ndarray, encoding: str):
    fields = encode_image(array, encoding)
    return SimpleNamespace(height=fields.height, width=fields.width, encoding=encoding, step=fields.step,
                           is_bigendian=int(fields.is_bigendian), data=fields.data.tobytes())


@pytest.fixture(scope="module")
def segmenter(tiny_checkpoint):
    return Segmenter.from_checkpoint(tiny_checkpoint)


def frames(seed: int = 0):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    thermal = rng.integers(20000, 40000, (24, 32), dtype=np.uint16)
    return rgb, thermal


def test_pipeline_equals_the_steps_done_by_hand(segmenter):
    """Normalise at the camera's size, then resize, then predict on [0, 1]; render with the palette."""
    rgb, thermal = frames()
    settings = FrameSettings(ThermalNormalization("percentile", percentiles=(2.0, 98.0)), overlay_alpha=0.3)
    result = FramePipeline(segmenter, settings).process_messages(raw(rgb, "rgb8"), raw(thermal, "mono16"))
    assert result.ok and set(result.timings) == {*STEPS, "total"}
    assert result.timings["total"] == pytest.approx(sum(result.timings[s] for s in STEPS))
    thermal01 = align_thermal(normalize_thermal(thermal, settings.thermal_norm), rgb.shape[:2])
    expected = segmenter.predict(rgb, thermal01, ThermalNormalization("fixed", 0.0, 1.0))
    np.testing.assert_array_equal(result.labels, expected.labels)
    np.testing.assert_array_equal(result.colorized, colorize(expected.labels, segmenter.class_info.palette))
    np.testing.assert_array_equal(result.overlay, overlay(rgb, result.colorized, 0.3))


def test_only_requested_outputs_are_rendered(segmenter):
    rgb, thermal = frames()
    pipeline = FramePipeline(segmenter)
    labels_only = pipeline.process(rgb, thermal, outputs=())
    assert labels_only.colorized is None and labels_only.overlay is None and labels_only.labels is not None
    colour_only = pipeline.process(rgb, thermal, outputs={"colorized"})
    assert colour_only.colorized is not None and colour_only.overlay is None
    with pytest.raises(ValueError, match="unknown outputs"):
        pipeline.process(rgb, thermal, outputs={"depth"})


def test_notes_nan_pixels_every_frame_and_the_resize_once(segmenter):
    rgb, thermal = frames()
    hot = thermal.astype(np.float32)
    hot[0, :4] = np.nan
    hot[1, 0] = np.inf
    pipeline = FramePipeline(segmenter)
    first = pipeline.process(rgb, hot)
    second = pipeline.process(rgb, hot)
    assert [n.kind for n in first.notes] == ["nonfinite_thermal", "thermal_aligned"]
    assert first.notes[0].text.startswith("5 of 768 pixels are NaN/inf")
    assert first.notes[1].text == "thermal frames (32x24) are resized to the RGB frame (64x48)"
    assert [n.kind for n in second.notes] == ["nonfinite_thermal"]
    # a new registration is a new situation: said again
    pipeline.update(FrameSettings(homography=np.diag([2.0, 2.0, 1.0])))
    assert [n.kind for n in pipeline.process(rgb, hot).notes] == ["nonfinite_thermal", "thermal_aligned"]


def test_undecodable_messages_skip_the_pair_with_the_reason(segmenter):
    rgb, thermal = frames()
    bad = raw(rgb, "rgb8")
    bad.encoding = "yuv420"
    result = FramePipeline(segmenter).process_messages(bad, raw(thermal, "mono16"))
    assert not result.ok and result.labels is None
    assert (result.error.kind, result.error.stream, result.error.detail) == ("bad_rgb", "rgb", "encoding")
    truncated = raw(thermal, "mono16")
    truncated.data = truncated.data[:10]
    result = FramePipeline(segmenter).process_messages(raw(rgb, "rgb8"), truncated)
    assert (result.error.kind, result.error.detail) == ("bad_thermal", "truncated")


def test_a_model_failure_skips_the_pair(segmenter, monkeypatch):
    rgb, thermal = frames()

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (injected)")

    pipeline = FramePipeline(segmenter)
    monkeypatch.setattr(segmenter, "predict_prepared", out_of_memory)
    result = pipeline.process(rgb, thermal)
    assert result.error.kind == "model" and "CUDA out of memory (injected)" in result.error.text


def test_thermal_preparation_keeps_all_nan_frames_finite():
    thermal01, notes = ThermalPreparation()(np.full((4, 6), np.nan, np.float32), (4, 6))
    assert np.all(thermal01 == 0.0) and [n.kind for n in notes] == ["blank_thermal"]
