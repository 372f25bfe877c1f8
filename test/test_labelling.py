"""The labelling loop: `taseg bag select` on real rosbag2 recordings, and the CVAT round trip
(`taseg label export/import`) checked against Datumaro, the library CVAT's own format code uses.

The recording has near-duplicates (every view repeated for several frames, as a robot standing
still records them) and one stretch the model is known to be unsure about (noise frames; the
premise is checked with the model before the selection is). The model is the perturbed tiny
checkpoint with its class head sharpened, so that its uncertainty varies from frame to frame.
"""
from __future__ import annotations

import csv
import shutil
import warnings
import zipfile
from pathlib import Path

import cv2
import numpy as np
import torch
import pytest

from bag_fixtures import synthetic_frames, write_rgbt_bag
from dataset_fixtures import FixtureFrame
from taseg_ros.bag.io.reader import BagError
from taseg_ros.bag.labels import stamp_id
from taseg_ros.cli import main
from taseg_ros.datasets import build_dataset
from taseg_ros.labelling.cvat import export_prelabels, import_masks, labelmap_text, parse_labelmap
from taseg_ros.labelling.select import SelectSettings, choose, select_frames
from taseg_ros.inference.segmenter import Prediction, normalized_entropy
from taseg_ros.labelling.uncertainty import frame_uncertainty

pytestmark = pytest.mark.timeout(300)

H, W = 48, 64
REPEATS = (2, 2, 3, 2, 2)  # frames per view; view 2 is the uncertain stretch
UNCERTAIN_VIEW = 2


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sharp_checkpoint(thermal_checkpoint, tmp_path_factory) -> Path:
    """The thermal-dependent tiny model with a 30x sharper class head: confident on some frames, unsure
    on others (a fresh model is near-uniform everywhere)."""
    import torch

    from taseg_ros.model.checkpoint import load_checkpoint, save_checkpoint

    model = load_checkpoint(thermal_checkpoint)
    with torch.no_grad():
        model.mask_decoder.head.weight.mul_(30.0)
    path = tmp_path_factory.mktemp("sharp") / "sharp.safetensors"
    save_checkpoint(model, path)
    return path


@pytest.fixture(scope="module")
def segmenter(sharp_checkpoint):
    from taseg_ros.inference import Segmenter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Segmenter.from_checkpoint(sharp_checkpoint)


def _views() -> list[FixtureFrame]:
    views = synthetic_frames(len(REPEATS) - 1, H, W, seed=4)
    rng = np.random.default_rng(9)
    noise = FixtureFrame(rgb=rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
                         thermal=rng.integers(0, 256, (H, W), dtype=np.uint8))
    return views[:UNCERTAIN_VIEW] + [noise] + views[UNCERTAIN_VIEW:]


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """(recording, view index of every frame, the views): each view repeated REPEATS[v] times at 10 Hz."""
    views = _views()
    view_of = [v for v, n in enumerate(REPEATS) for _ in range(n)]
    rec = write_rgbt_bag(tmp_path_factory.mktemp("rec") / "run1", [views[v] for v in view_of], seed=2)
    return rec, view_of, views


def _uncertainty(segmenter, view: FixtureFrame):
    """The view's uncertainty computed directly (mono8 thermal: the node's auto normalisation is 0..255)."""
    return frame_uncertainty(segmenter.predict_prepared(view.rgb, view.thermal / 255.0, return_entropy=True))


def _settings(rec, out, k, **kwargs) -> SelectSettings:
    kwargs.setdefault("min_gap_s", 0.05)  # below the frame period: duplicates are held back by distance alone
    return SelectSettings(recordings=(rec.path,), output=out, k=k, **kwargs)


@pytest.fixture(scope="module")
def selection(recording, segmenter, tmp_path_factory):
    rec, _, _ = recording
    out = tmp_path_factory.mktemp("sel") / "round1"
    return out, select_frames(_settings(rec, out, 3), segmenter)


def _view_of_stamp(rec, view_of) -> dict[int, int]:
    return {f.rgb_stamp_ns: view_of[f.index] for f in rec.frames}


def _read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


# --- uncertainty and the greedy choice: known values ---------------------------------------------------


def prediction_of(probabilities: np.ndarray) -> Prediction:
    """The Prediction a Segmenter makes from these (K, H, W) probabilities (its entropy map, its confidence)."""
    p = torch.from_numpy(probabilities)[None]
    confidence, labels = p.max(dim=1)
    return Prediction(labels[0].numpy().astype(np.uint8), confidence[0].numpy(), entropy=normalized_entropy(p)[0].numpy())


def test_uncertainty_known_values():
    k, h, w = 4, 6, 8
    uniform = np.full((k, h, w), 1 / k, np.float32)
    one_hot = np.zeros((k, h, w), np.float32)
    one_hot[2] = 1.0
    assert frame_uncertainty(prediction_of(uniform)).entropy == pytest.approx(1.0, abs=1e-6)
    assert frame_uncertainty(prediction_of(uniform)).low_confidence == 1.0  # 1/4 < 0.5 everywhere
    assert frame_uncertainty(prediction_of(one_hot)).entropy == pytest.approx(0.0, abs=1e-6)
    assert frame_uncertainty(prediction_of(one_hot)).low_confidence == 0.0
    half = one_hot.copy()
    half[:, :3] = 1 / k  # the top half uniform, the bottom half certain
    assert frame_uncertainty(prediction_of(half)).entropy == pytest.approx(0.5, abs=1e-6)
    assert frame_uncertainty(prediction_of(half)).low_confidence == pytest.approx(0.5)
    two = np.stack([np.full((h, w), 0.6), np.full((h, w), 0.4)]).astype(np.float32)
    assert frame_uncertainty(prediction_of(two)).entropy == pytest.approx(-(0.6 * np.log(0.6) + 0.4 * np.log(0.4)) / np.log(2), abs=1e-6)
    assert frame_uncertainty(prediction_of(two), low_confidence=0.5).low_confidence == 0.0
    assert frame_uncertainty(prediction_of(two), low_confidence=0.7).low_confidence == 1.0


def test_choose_known_order():
    # 0 and 1 identical (1 a duplicate), 3 close to 0, 2 far from both; one recording, 1 s apart
    thumbs = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.05, 0.05]])
    scores = np.array([0.9, 0.9, 0.5, 0.8])
    stamps = np.arange(4) * 1_000_000_000
    same = np.zeros(4, int)
    assert choose(scores, thumbs, same, stamps, 4, 0, 0.02) == [0, 2, 3]  # 1 never: distance 0 < 0.02
    # 3's value: 0.8 x 0.05 = 0.04 < 2's 0.5 x 1.0; without the distance floor the duplicate comes last
    assert choose(scores, thumbs, same, stamps, 4, 0, 0.0) == [0, 2, 3, 1]
    # a gap of 1.5 s blocks 1 (1 s after 0) but not 2 or 3 (2 and 3 s)
    assert choose(scores, thumbs, same, stamps, 4, 1_500_000_000, 0.0) == [0, 2]  # 3 is 1 s after 2
    # frames of another recording are not blocked by the gap
    assert choose(scores, thumbs, np.array([0, 1, 1, 1]), stamps, 2, 10**12, 0.0) == [0, 2]
    assert choose(scores, thumbs, same, stamps, 0, 0, 0.0) == []
    # an earlier round holds a frame like 2 and one within the gap of 0: 3 comes first, then nothing
    earlier = np.array([0.0, 0.0, 0.0, 0.5])  # distances to the earlier round's frames
    assert choose(scores, thumbs, same, stamps, 4, 0, 0.02, nearest=earlier, blocked=[True, True, False, False]) == [3]


# --- bag select on a real recording ---------------------------------------------------------------------


def test_select_skips_duplicates_and_takes_the_uncertain_stretch(recording, segmenter, selection):
    rec, view_of, views = recording
    out, result = selection
    scores = [_uncertainty(segmenter, v).entropy for v in views]
    assert int(np.argmax(scores)) == UNCERTAIN_VIEW  # the premise: the noise stretch is the least sure
    view = _view_of_stamp(rec, view_of)
    chosen_views = [view[c.stamp_ns] for c in result.chosen]
    assert len(chosen_views) == 3 and len(set(chosen_views)) == 3  # no two frames of one view
    assert chosen_views[0] == UNCERTAIN_VIEW
    first_of_stretch = next(f for f in rec.frames if view_of[f.index] == UNCERTAIN_VIEW)
    assert result.chosen[0].stamp_ns == first_of_stretch.rgb_stamp_ns  # ties: the earliest copy
    rows = _read_csv(out / "selection.csv")
    assert [r["rank"] for r in rows] == ["1", "2", "3"]
    assert [r["id"] for r in rows] == result.ids == [stamp_id(c.stamp_ns) for c in result.chosen]
    for row, v in zip(rows, chosen_views):  # the recorded figures are the model's on that view
        assert float(row["entropy"]) == pytest.approx(scores[v], abs=2e-5)
        assert float(row["uncertainty"]) == pytest.approx(scores[v], abs=2e-5)
        assert row["recording"] == str(rec.path)


def test_select_is_deterministic(recording, sharp_checkpoint, selection, tmp_path, capsys):
    """The same choice again, through the command line this time."""
    rec, _, _ = recording
    out, first = selection
    again = tmp_path / "again"
    assert main(["bag", "select", str(rec.path), "--checkpoint", str(sharp_checkpoint), "-k", "3", "-o", str(again),
                 "--min-gap", "0.05"]) == 0
    assert "3 frames chosen of 11 scored pairs" in capsys.readouterr().out
    assert (again / "selection.csv").read_text() == (out / "selection.csv").read_text()
    assert sorted(p.name for p in (again / "rgb").iterdir()) == sorted(f"{i}.png" for i in first.ids)


def test_selection_is_an_extract_folder(recording, selection):
    rec, view_of, views = recording
    out, result = selection
    for name in ("classes.yaml", "train.txt", "frames.csv", "selection.csv"):
        assert (out / name).is_file(), name
    assert sorted(p.stem for p in (out / "rgb").glob("*.png")) == sorted(result.ids)
    assert "thermal:" in (out / "classes.yaml").read_text()  # the preparation record of bag extract
    dataset = build_dataset("folder", out, "all")
    view = _view_of_stamp(rec, view_of)
    by_id = {stamp_id(c.stamp_ns): views[view[c.stamp_ns]] for c in result.chosen}
    assert len(dataset) == 3
    for i in range(len(dataset)):
        sample = dataset.load(i)
        source = by_id[sample["id"]]
        assert np.array_equal(sample["rgb"], source.rgb)
        assert np.allclose(sample["thermal"], source.thermal / 255.0, atol=1e-6)
    train_val = (out / "train.txt").read_text().split() + (out / "val.txt").read_text().split()
    assert sorted(train_val) == sorted(result.ids)


def test_second_round_adds_the_other_views(recording, segmenter, selection, tmp_path):
    """Asked for more than there is, a second round into the same folder takes each view not chosen
    yet once: frames of the first round's views are near-duplicates of frames already there."""
    rec, view_of, _ = recording
    out, first = selection
    folder = tmp_path / "dataset"
    shutil.copytree(out, folder)
    second = select_frames(_settings(rec, folder, 10), segmenter)
    view = _view_of_stamp(rec, view_of)
    first_views = {view[c.stamp_ns] for c in first.chosen}
    assert sorted(view[c.stamp_ns] for c in second.chosen) == sorted(set(range(len(REPEATS))) - first_views)
    assert second.already_in_folder == 3
    assert any("only 2 of the 10" in note for note in second.notes)
    rows = _read_csv(folder / "selection.csv")
    assert sorted(r["id"] for r in rows) == sorted(first.ids + second.ids)
    assert len(build_dataset("folder", folder, "all")) == 5


def test_empty_selection_is_one_line_and_writes_nothing(recording, segmenter, tmp_path, capsys):
    rec, _, _ = recording
    out = tmp_path / "none"
    assert main(["bag", "select", str(rec.path), "--checkpoint", "unused.safetensors", "-k", "0", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "-k must be >= 1" in err
    assert not out.exists()
    # no RGB/thermal pair: the thermal stamps sit 6 ms after the RGB ones, beyond a 0.1 ms slop
    with pytest.raises(BagError, match="no frame to select: no RGB/thermal pair matched"):
        select_frames(_settings(rec, out, 3, slop_s=0.0001), segmenter)
    assert not out.exists()


# --- CVAT: our zip, Datumaro, and back ------------------------------------------------------------------


@pytest.fixture(scope="module")
def prelabels(selection, segmenter, tmp_path_factory):
    """(dataset folder, zip, {id: the model's labels}) for the selection."""
    out, _ = selection
    archive = tmp_path_factory.mktemp("zip") / "prelabels.zip"
    export_prelabels(out, segmenter, archive)
    dataset = build_dataset("folder", out, "all")
    predicted = {}
    for i in range(len(dataset)):
        sample = dataset.load_inputs(i)
        predicted[sample["id"]] = segmenter.predict_prepared(sample["rgb"], sample["thermal"]).labels
    return out, archive, predicted


def _copy_dataset(prelabels, tmp_path) -> Path:
    folder = tmp_path / "dataset"
    shutil.copytree(prelabels[0], folder)
    return folder


def test_export_layout(prelabels, segmenter):
    out, archive, predicted = prelabels
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        labelmap = zf.read("labelmap.txt").decode()
        listed = zf.read("ImageSets/Segmentation/default.txt").decode().split()
    classes = segmenter.class_info
    assert parse_labelmap(labelmap, "x") == [(n, tuple(c)) for n, c in zip(classes.names, classes.palette.tolist())]
    assert "unlabeled:0,0,0::" in labelmap.splitlines() and labelmap == labelmap_text(classes)
    assert sorted(listed) == sorted(predicted)
    for i in predicted:
        assert {f"SegmentationClass/{i}.png", f"JPEGImages/{i}.png"} <= names
        assert zipfile.ZipFile(archive).read(f"JPEGImages/{i}.png") == (out / "rgb" / f"{i}.png").read_bytes()


def test_datumaro_reads_our_zip_with_the_same_masks(prelabels, segmenter, tmp_path):
    """CVAT's own import path: Datumaro's VOC segmentation reader on the unpacked zip."""
    datumaro = pytest.importorskip("datumaro")
    from datumaro.components.annotation import AnnotationType

    _, archive, predicted = prelabels
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp_path / "unzipped")
    # CVAT calls its Datumaro's 'voc' importer, which there covers every VOC task; in Datumaro 1.x the
    # segmentation part of it is 'voc_segmentation' ('voc' looks for ImageSets/Main only).
    dataset = datumaro.Dataset.import_from(str(tmp_path / "unzipped"), "voc_segmentation")
    names = [c.name for c in dataset.categories()[AnnotationType.label].items]
    assert names[: segmenter.class_info.num_classes] == list(segmenter.class_info.names)
    compared = 0
    for item in dataset:
        labels = np.full((H, W), 255, np.uint8)
        for ann in item.annotations:
            if ann.type == AnnotationType.mask:
                labels[ann.image.astype(bool)] = ann.label
        assert np.array_equal(labels, predicted[item.id]), item.id
        compared += labels.size
    assert compared == len(predicted) * H * W and len(dataset) == len(predicted)


def test_our_import_of_our_export_gives_the_predictions(prelabels, tmp_path, capsys):
    folder = _copy_dataset(prelabels, tmp_path)
    _, archive, predicted = prelabels
    assert main(["label", "import", str(archive), str(folder)]) == 0
    for i, labels in predicted.items():
        assert np.array_equal(cv2.imread(str(folder / "labels" / f"{i}.png"), cv2.IMREAD_UNCHANGED), labels)
    assert len(build_dataset("folder", folder, "train")) > 0  # the folder now trains
    # a frame still without a label (a later round): export reads its inputs, training would not
    missing = sorted(predicted)[0]
    (folder / "labels" / f"{missing}.png").unlink()
    dataset = build_dataset("folder", folder, "all")
    index = dataset.ids.index(missing)
    assert dataset.load(index)["label"] is None and dataset.load_inputs(index)["rgb"].shape == (H, W, 3)
    assert sum(dataset.load(i)["label"] is not None for i in range(len(dataset))) == len(predicted) - 1
    split = "train" if missing in (folder / "train.txt").read_text().split() else "val"
    with pytest.raises(FileNotFoundError, match=missing):  # ... but the splits training reads need it
        build_dataset("folder", folder, split)
    (folder / "labels" / f"{missing}.png").write_bytes(cv2.imencode(".png", predicted[missing])[1].tobytes())
    # again without --force: refused, nothing changed
    assert main(["label", "import", str(archive), str(folder)]) == 2
    assert "pass --force" in capsys.readouterr().err


def _datumaro_export(tmp_path, labels_by_id, names, colours, rgb_by_id, apply_colormap=True):
    """What CVAT writes: Datumaro's voc_segmentation exporter with CVAT's colormap (its task label
    colours, plus 'background' (0,0,0) first), zipped; without the colormap, 1-channel masks whose
    value is the labelmap line."""
    datumaro = pytest.importorskip("datumaro")
    from datumaro.components.annotation import AnnotationType, LabelCategories, Mask, MaskCategories
    from datumaro.components.media import Image

    items = []
    for sample_id, labels in labels_by_id.items():
        masks = [Mask(image=(labels == c).astype(np.uint8), label=c) for c in np.unique(labels) if c != 255]
        items.append(datumaro.DatasetItem(id=sample_id, media=Image.from_numpy(rgb_by_id[sample_id][:, :, ::-1]),
                                          annotations=masks))
    categories = {
        AnnotationType.label: LabelCategories.from_iterable(names),
        AnnotationType.mask: MaskCategories({i: tuple(c) for i, c in enumerate(colours)}),
    }
    dataset = datumaro.Dataset.from_iterable(items, categories=categories)
    label_map = {"background": [(0, 0, 0), [], []], **{n: [tuple(c), [], []] for n, c in zip(names, colours)}}
    export_dir = tmp_path / "cvat_export"
    dataset.export(str(export_dir), "voc_segmentation", save_media=False, apply_colormap=apply_colormap,
                   label_map=label_map)
    archive = tmp_path / "cvat_export.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(export_dir.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(export_dir).as_posix())
    return archive


@pytest.mark.parametrize("apply_colormap", [True, False], ids=["colour", "index"])
def test_datumaro_export_imports_into_the_same_ids(prelabels, segmenter, tmp_path, apply_colormap):
    folder = _copy_dataset(prelabels, tmp_path)
    _, _, predicted = prelabels
    names = list(segmenter.class_info.names)
    # the CVAT task's own colours (not ours): the import must go by name
    colours = [(10 + 20 * i, 200 - 15 * i, 5 + 7 * i) for i in range(len(names))]
    rng = np.random.default_rng(3)
    truth = {}
    for i in predicted:
        labels = rng.integers(0, len(names), (H, W)).astype(np.uint8)
        labels[:4, :] = 255  # a strip nobody labelled: CVAT's background
        truth[i] = labels
    rgb = {i: cv2.imread(str(folder / "rgb" / f"{i}.png"))[:, :, ::-1] for i in predicted}
    archive = _datumaro_export(tmp_path, truth, names, colours, rgb, apply_colormap)
    with zipfile.ZipFile(archive) as zf:  # the mask kind this case is about
        mask = cv2.imdecode(np.frombuffer(zf.read(f"SegmentationClass/{next(iter(truth))}.png"), np.uint8),
                            cv2.IMREAD_UNCHANGED)
    assert mask.ndim == (3 if apply_colormap else 2)
    result = import_masks(archive, folder)
    assert sorted(result.ids) == sorted(truth)
    compared = 0
    for i, labels in truth.items():
        got = cv2.imread(str(folder / "labels" / f"{i}.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(got, labels)  # 255: classes.yaml's ignore_index
        compared += labels.size
    assert result.unlabelled_pixels == 4 * W * len(truth) and compared == len(truth) * H * W


# --- bad CVAT exports: one line, nothing written --------------------------------------------------------


def _rewrite(src: Path, dst: Path, replace: dict[str, bytes | None] = {}, add: dict[str, bytes] = {}) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            if name in replace:
                if replace[name] is not None:
                    zout.writestr(name, replace[name])
            else:
                zout.writestr(name, zin.read(name))
        for name, data in add.items():
            zout.writestr(zipfile.ZipInfo(name), data)
    return dst


def _png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def _first_mask(prelabels) -> tuple[str, str, np.ndarray]:
    """(first frame id, its mask member, the mask as the zip holds it) of the pre-label export."""
    _, archive, predicted = prelabels
    first = sorted(predicted)[0]
    member = f"SegmentationClass/{first}.png"
    with zipfile.ZipFile(archive) as zf:
        return first, member, cv2.imdecode(np.frombuffer(zf.read(member), np.uint8), cv2.IMREAD_UNCHANGED)


@pytest.mark.parametrize("case", ["unknown_colour", "labelmap_without_a_class", "wrong_size", "zip_slip", "unknown_id"])
def test_bad_exports_are_refused(prelabels, tmp_path, capsys, case):
    folder = _copy_dataset(prelabels, tmp_path)
    _, archive, predicted = prelabels
    first, member, mask = _first_mask(prelabels)
    with zipfile.ZipFile(archive) as zf:
        labelmap = zf.read("labelmap.txt").decode()
    if case == "unknown_colour":
        mask[5:9, 5:9] = (3, 2, 1)  # BGR of (1, 2, 3)
        bad, expected = _rewrite(archive, tmp_path / "bad.zip", {member: _png(mask)}), "colour (1, 2, 3)"
    elif case == "labelmap_without_a_class":
        text = "".join(line + "\n" for line in labelmap.splitlines() if not line.startswith("bump:"))
        bad, expected = _rewrite(archive, tmp_path / "bad.zip", {"labelmap.txt": text.encode()}), "lacks the classes ['bump']"
    elif case == "wrong_size":
        bad = _rewrite(archive, tmp_path / "bad.zip", {member: _png(cv2.resize(mask, (W + 2, H)))})
        expected = f"mask is {W + 2}x{H}"
    elif case == "zip_slip":
        bad, expected = _rewrite(archive, tmp_path / "bad.zip", add={"../../labels/evil.png": _png(mask)}), "outside the archive"
    else:
        bad = _rewrite(archive, tmp_path / "bad.zip", add={"SegmentationClass/1_000000000.png": _png(mask)})
        expected = "no frame '1_000000000'"
    assert main(["label", "import", str(bad), str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and expected in err, err
    assert str(bad) in err
    assert not (folder / "labels").exists() and not (tmp_path / "labels").exists()


# --- archives a zip reader must refuse (issue 27, class d): one line, nothing inflated whole --------------


def _central_entry(data: bytearray, name: str) -> int:
    """Offset of ``name``'s entry in the zip's central directory (the record zipfile reads first)."""
    offset = data.find(b"PK\x01\x02")
    while offset >= 0:
        length = int.from_bytes(data[offset + 28:offset + 30], "little")
        if data[offset + 46:offset + 46 + length] == name.encode():
            return offset
        offset = data.find(b"PK\x01\x02", offset + 46)
    raise AssertionError(name)


def _damaged(archive: Path, dst: Path, member: str, case: str) -> Path:
    """``archive`` with one member made unreadable the way real zips are: the encryption flag, a method
    this reader does not know, a CRC that does not match, a deflate stream cut in its middle."""
    data = bytearray(archive.read_bytes())
    entry = _central_entry(data, member)
    if case == "encrypted":
        data[entry + 8] |= 0x1
    elif case == "unknown_method":
        data[entry + 10:entry + 12] = (99).to_bytes(2, "little")  # 99: AES, which zipfile cannot read
    elif case == "bad_crc":
        data[entry + 16:entry + 20] = bytes(x ^ 0xFF for x in data[entry + 16:entry + 20])
    else:  # broken_stream: garbage in the middle of the deflated bytes
        with zipfile.ZipFile(archive) as zf:
            info = zf.getinfo(member)
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
        data[start + 2:start + 12] = b"\xff" * 10
    dst.write_bytes(bytes(data))
    return dst


def _deflated_copy(src: Path, dst: Path, replace: dict[str, bytes] = {}, add: list[tuple[str, bytes]] = ()) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_DEFLATED) as zout:
        for name in zin.namelist():
            zout.writestr(name, replace.get(name, zin.read(name)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile's "Duplicate name" warning: that case is the point
            for name, data in add:
                zout.writestr(name, data)
    return dst


@pytest.mark.parametrize("case", ["encrypted", "unknown_method", "bad_crc", "broken_stream"])
def test_an_unreadable_member_is_one_line_naming_it(prelabels, tmp_path, capsys, case):
    folder = _copy_dataset(prelabels, tmp_path)
    _, archive, predicted = prelabels
    member = f"SegmentationClass/{sorted(predicted)[0]}.png"
    bad = _damaged(_deflated_copy(archive, tmp_path / "deflated.zip"), tmp_path / "bad.zip", member, case)
    assert main(["label", "import", str(bad), str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    expected = {"encrypted": "is encrypted", "unknown_method": "zip method 99"}.get(case, "damaged member")
    assert err.count("\n") == 0 and f"{bad}:{member}" in err and expected in err, err
    assert not (folder / "labels").exists()


def test_a_zip_bomb_is_refused_before_it_is_inflated(prelabels, tmp_path, capsys):
    """A mask member declaring 512 MiB (deflated to 0.5 MiB of zeros) for a 64x48 frame."""
    folder = _copy_dataset(prelabels, tmp_path)
    _, archive, predicted = prelabels
    member = f"SegmentationClass/{sorted(predicted)[0]}.png"
    bomb = _deflated_copy(archive, tmp_path / "bomb.zip", {member: bytes(512 << 20)})
    assert bomb.stat().st_size < 1 << 20
    assert main(["label", "import", str(bomb), str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{512 << 20} bytes uncompressed" in err and "refused unread" in err and member in err, err


@pytest.mark.parametrize("case", ["same_name_twice", "nested_and_top", "nested_only"])
def test_a_frame_with_two_masks_is_refused_naming_both(prelabels, tmp_path, capsys, case):
    """A CVAT task from an uploaded folder keeps the folder in its ids: a nested mask alone is its
    frame's; two masks for one frame (twice the same name, or nested and at the top) are refused."""
    folder = _copy_dataset(prelabels, tmp_path)
    _, archive, predicted = prelabels
    first, member, mask = _first_mask(prelabels)
    other = mask.copy()
    other[:8] = mask[0, 0]  # a different mask of the same frame, in the same colours
    nested = f"SegmentationClass/uploaded/{first}.png"
    if case == "same_name_twice":
        bad, names = _deflated_copy(archive, tmp_path / "bad.zip", add=[(member, _png(other))]), [member]
    elif case == "nested_and_top":
        bad, names = _deflated_copy(archive, tmp_path / "bad.zip", add=[(nested, _png(other))]), [nested, member]
    else:
        with zipfile.ZipFile(archive) as zin, zipfile.ZipFile(tmp_path / "nested.zip", "w") as zout:
            for name in zin.namelist():
                zout.writestr(nested if name == member else name, zin.read(name))
        assert main(["label", "import", str(tmp_path / "nested.zip"), str(folder)]) == 0
        assert np.array_equal(cv2.imread(str(folder / "labels" / f"{first}.png"), cv2.IMREAD_UNCHANGED), predicted[first])
        return
    assert main(["label", "import", str(bad), str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and all(repr(n) in err for n in names), err
    assert not (folder / "labels").exists()
