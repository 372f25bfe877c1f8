"""Train/serve parity: the same raw frame gives the same network input on the node's path and on the
dataset path, for every thermal encoding, geometry and normalisation mode.

node path     the recording's messages -> inference.pipeline.FramePipeline.process_messages (what the
              node's worker runs on each pair; test_ros_node.py checks the node over DDS against it)
dataset path  `taseg bag extract` of the same recording -> the folder loader (what training,
              validation and `taseg eval` read) -> Segmenter.predict_prepared

Both reach Segmenter.prepare; its outputs (the tensors the network gets) are compared. The bound is
exact equality: both paths run the same ThermalPreparation (frames.thermal) on the same pixels (the
extracted files are lossless: PNG for 8/16-bit, float TIFF with NaN kept), so even the resample of a
resize or a warp happens once, identically. The labels of a model whose output depends on thermal
are then equal too.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from taseg_ros.bag.extract import ExtractSettings, extract_pairs
from taseg_ros.bag.labels import stamp_id
from taseg_ros.bag.io.messages import compressed_message, image_message
from taseg_ros.bag.io.msgtypes import COMPRESSED_IMAGE, IMAGE
from taseg_ros.bag.pairs import BagPairing, PairSource
from taseg_ros.bag.io.reader import open_bag
from taseg_ros.bag.io.topics import resolve_image_topics
from taseg_ros.bag.io.writer import BagWriter
from taseg_ros.datasets import build_dataset
from taseg_ros.frames.settings import FrameSettings
from taseg_ros.frames.thermal import ThermalNormalization
from taseg_ros.inference import Segmenter
from taseg_ros.inference.pipeline import FramePipeline
from taseg_ros.scenes import street_scene

RGB_HW = (48, 64)
START_NS = 1_700_000_000 * 10**9
FRAMES = 3

# thermal camera geometry -> (thermal size (h, w), homography thermal px -> RGB px or None)
GEOMETRIES = {
    "same_size": (RGB_HW, None),
    "smaller_resized": ((24, 32), None),
    # a narrower thermal view: 40x30 scaled by 1.2 to 48x36 and placed at (9, 7); the warp leaves a
    # border of the RGB frame uncovered (where a normalisation after the warp would see zeros)
    "smaller_homography": ((30, 40), np.array([[1.2, 0.0, 9.0], [0.0, 1.2, 7.0], [0.0, 0.0, 1.0]])),
}
ENCODINGS = ("mono8", "mono16_le", "mono16_be", "32FC1_nan", "bgr8_grey", "mono16_png")
FIXED_RANGE = {np.uint8: (0.0, 255.0), np.uint16: (20000.0, 40000.0), np.float32: (15.0, 45.0)}


def thermal_counts(index: int, hw: tuple[int, int], kind: type) -> np.ndarray:
    """A camera's thermal frame with structure (a street scene's heat) and sensor noise, in its own units."""
    frame = street_scene(np.random.default_rng(100 + index), hw[0], hw[1], night=bool(index % 2))
    heat = frame.thermal.astype(np.float32) / 255.0  # 0..1
    noise = np.random.default_rng(200 + index).normal(0.0, 0.02, hw).astype(np.float32)
    if kind is np.uint8:
        return np.clip((heat + noise) * 255.0, 0, 255).astype(np.uint8)
    if kind is np.uint16:
        return np.clip(22000.0 + (heat + noise) * 15000.0, 0, 65535).astype(np.uint16)
    celsius = (18.0 + (heat + noise) * 20.0).astype(np.float32)
    celsius[1, 2:9] = np.nan  # dead pixels of a radiometric camera
    celsius[3, 0] = np.inf
    return celsius


def dtype_of(encoding: str) -> type:
    return {"mono8": np.uint8, "bgr8_grey": np.uint8, "32FC1_nan": np.float32}.get(encoding, np.uint16)


def thermal_message(encoding: str, stamp: int, thermal: np.ndarray):
    """(topic type, message) as a camera driver publishes the frame in this encoding."""
    if encoding == "mono8":
        return IMAGE, image_message(stamp, "thermal", thermal, "mono8")
    if encoding == "mono16_le":
        return IMAGE, image_message(stamp, "thermal", thermal, "mono16")
    if encoding == "mono16_be":  # a big-endian camera: bytes swapped, is_bigendian set
        msg = image_message(stamp, "thermal", thermal, "mono16")
        msg.data = np.ascontiguousarray(thermal.astype(">u2")).reshape(-1).view(np.uint8)
        msg.is_bigendian = 1
        return IMAGE, msg
    if encoding == "32FC1_nan":
        return IMAGE, image_message(stamp, "thermal", thermal, "32FC1")
    if encoding == "bgr8_grey":  # grey replicated into three channels (some drivers' colour-mapped off)
        return IMAGE, image_message(stamp, "thermal", np.repeat(thermal[:, :, None], 3, axis=2), "bgr8")
    assert encoding == "mono16_png"  # image_transport's compressed plugin: lossless 16-bit PNG
    return COMPRESSED_IMAGE, compressed_message(stamp, "thermal", thermal, "mono16", codec="png")


def write_recording(path: Path, encoding: str, thermal_hw) -> Path:
    with BagWriter(path, storage="mcap") as out:
        for i in range(FRAMES):
            stamp = START_NS + i * 100_000_000
            rgb = street_scene(np.random.default_rng(i), *RGB_HW, night=bool(i % 2)).rgb
            msgtype, thermal = thermal_message(encoding, stamp + 3_000_000, thermal_counts(i, thermal_hw, dtype_of(encoding)))
            topic = "/thermal/image_raw" + ("/compressed" if msgtype == COMPRESSED_IMAGE else "")
            out.write("/camera/color/image_raw", IMAGE, stamp + 1_000_000, image_message(stamp, "rgb", rgb, "rgb8"))
            out.write(topic, msgtype, stamp + 5_000_000, thermal)
    return path


def normalizations(encoding: str) -> dict[str, ThermalNormalization]:
    low, high = FIXED_RANGE[dtype_of(encoding)]
    return {
        "auto": ThermalNormalization(),
        "fixed": ThermalNormalization("fixed", low, high),
        "minmax": ThermalNormalization("minmax"),
        "percentile": ThermalNormalization("percentile", percentiles=(2.0, 98.0)),
    }


class InputRecorder:
    """Keeps what Segmenter.prepare returned (the network's inputs), keyed by the caller's frame."""

    def __init__(self, segmenter: Segmenter) -> None:
        self.segmenter, self.inputs = segmenter, []
        self._prepare = segmenter.prepare

    def __enter__(self):
        def prepare(rgbs, thermals01):
            prepared = self._prepare(rgbs, thermals01)
            self.inputs.append((prepared[0].clone(), prepared[1].clone()))
            return prepared

        self.segmenter.prepare = prepare
        return self

    def __exit__(self, *exc):
        del self.segmenter.prepare  # back to the class's method


@pytest.fixture(scope="module")
def segmenter(thermal_checkpoint):
    return Segmenter.from_checkpoint(thermal_checkpoint)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    return {(e, g): write_recording(root / f"{e}_{g}", e, GEOMETRIES[g][0]) for e in ENCODINGS for g in GEOMETRIES}


def node_path(segmenter, bag_path: Path, settings: FrameSettings, thermal_missing: bool = False) -> dict:
    """{sample id: (network inputs, labels)} from the recorded messages, through the node's pipeline
    (``thermal_missing``: as the node's input_fallback blank gets them, without the thermal message)."""
    pipeline, out = FramePipeline(segmenter, settings), {}
    with open_bag(bag_path) as bag:
        rgb, thermal = resolve_image_topics(bag, None, None)
        for arrival in BagPairing(bag, rgb.name, thermal.name, 0.02):
            if arrival.pair is None:
                continue
            with InputRecorder(segmenter) as recorder:
                thermal_msg = None if thermal_missing else arrival.pair.thermal.msg
                result = pipeline.process_messages(arrival.pair.rgb.msg, thermal_msg, outputs=())
            assert result.ok, result.error
            out[stamp_id(arrival.pair.rgb_stamp_ns)] = (recorder.inputs[0], result.labels)
    return out


def dataset_path(segmenter, bag_path: Path, settings: FrameSettings, folder: Path) -> dict:
    """{sample id: (network inputs, labels)} through `bag extract` and the folder loader."""
    extract_pairs(ExtractSettings(PairSource(bag_path), folder, val_fraction=0.0, thermal_norm=settings.thermal_norm,
                                  homography=settings.homography))
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the loader's notes (NaN pixels, resize) are said by other tests
        dataset = build_dataset("folder", folder, "all")
        for index in range(len(dataset)):
            sample = dataset[index]
            with InputRecorder(segmenter) as recorder:
                labels = segmenter.predict_prepared(sample["rgb"], sample["thermal"]).labels
            out[sample["id"]] = (recorder.inputs[0], labels)
    return out


@pytest.mark.parametrize("mode", ["auto", "fixed", "minmax", "percentile"])
@pytest.mark.parametrize("geometry", list(GEOMETRIES))
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_node_and_dataset_paths_give_the_same_network_input(segmenter, recordings, tmp_path, encoding, geometry, mode):
    settings = FrameSettings(normalizations(encoding)[mode], GEOMETRIES[geometry][1])
    bag_path = recordings[(encoding, geometry)]
    served = node_path(segmenter, bag_path, settings)
    trained = dataset_path(segmenter, bag_path, settings, tmp_path / "ds")
    assert sorted(served) == sorted(trained) and len(served) == FRAMES
    for sample_id, ((rgb_node, thermal_node), labels_node) in served.items():
        (rgb_data, thermal_data), labels_data = trained[sample_id]
        assert rgb_node.equal(rgb_data), sample_id
        assert thermal_node.equal(thermal_data), f"{sample_id}: max |diff| {(thermal_node - thermal_data).abs().max()}"
        assert np.array_equal(labels_node, labels_data), sample_id


def test_the_model_used_for_parity_depends_on_thermal(segmenter):
    """Equal labels mean something only for a model whose labels move with its thermal input."""
    frame = street_scene(np.random.default_rng(7), *RGB_HW, night=True)
    thermal01 = frame.thermal.astype(np.float32) / 255.0
    with_thermal = segmenter.predict_prepared(frame.rgb, thermal01).labels
    blanked = segmenter.predict_prepared(frame.rgb, np.zeros_like(thermal01)).labels
    assert np.mean(with_thermal != blanked) > 0.05


def test_the_border_of_a_warp_never_reaches_the_statistics():
    """The order the parity rests on (frames.thermal): normalise the camera's pixels, then warp. Warping
    the raw counts first (what `bag extract` did before) lets the uncovered border's zeros set the
    1st percentile and squeezes the scene into the top of the range."""
    from taseg_ros.frames.thermal import ThermalPreparation, align_thermal, normalize_thermal

    counts, norm = thermal_counts(0, (30, 40), np.uint16), ThermalNormalization("percentile")
    homography = GEOMETRIES["smaller_homography"][1]
    prepared, notes = ThermalPreparation(norm, homography)(counts, RGB_HW)
    assert np.array_equal(prepared, align_thermal(normalize_thermal(counts, norm), RGB_HW, homography))
    assert [n.kind for n in notes] == ["thermal_aligned"]
    covered = cv2.warpPerspective(np.ones((30, 40), np.uint8), homography, RGB_HW[::-1], flags=cv2.INTER_NEAREST)
    inner = cv2.erode(covered, np.ones((3, 3), np.uint8)) > 0  # away from the warp's own edge
    warped_first = normalize_thermal(align_thermal(counts, RGB_HW, homography), norm)
    assert prepared[inner].min() < 0.05 and prepared[inner].max() > 0.95
    assert warped_first[inner].min() > 0.5  # the skew the parity tests guard against


def test_thermal_blanked_is_the_same_for_evaluation_and_the_node(segmenter, recordings, tmp_path):
    """`taseg eval --blank-thermal` (evaluation.run.evaluate) and the node's `input_fallback: blank`
    (FramePipeline with no thermal message) give the network the same input and the same labels: the
    accuracy with thermal blanked that evaluation reports is what the node delivers in that fault."""
    from taseg_ros.evaluation.run import evaluate
    from taseg_ros.frames.files import write_image

    bag_path = recordings[("mono16_le", "same_size")]
    folder = tmp_path / "ds"
    extract_pairs(ExtractSettings(PairSource(bag_path), folder, val_fraction=0.0))
    for rgb_file in (folder / "rgb").iterdir():  # a label per frame, so that evaluate scores them
        write_image(folder / "labels" / f"{rgb_file.stem}.png", np.zeros(RGB_HW, np.uint8))
    evaluated = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = build_dataset("folder", folder, "all")
        with InputRecorder(segmenter) as recorder:
            evaluate(segmenter, dataset, blank_thermal=True,
                     on_prediction=lambda sample, labels: evaluated.update({sample["id"]: (recorder.inputs[-1], labels)}))
    served = node_path(segmenter, bag_path, FrameSettings(), thermal_missing=True)
    assert sorted(served) == sorted(evaluated) and len(served) == FRAMES
    for sample_id, ((node_rgb, node_thermal), labels) in served.items():
        (eval_rgb, eval_thermal), eval_labels = evaluated[sample_id]
        assert node_rgb.equal(eval_rgb) and node_thermal.equal(eval_thermal), sample_id
        assert (node_thermal == node_thermal.flatten()[0]).all()  # one value: zeros, standardised
        assert np.array_equal(labels, eval_labels), sample_id
