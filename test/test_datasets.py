"""Dataset loaders on fixture trees in each dataset's exact on-disk layout, plus real frames."""
from __future__ import annotations

import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from taseg_ros.datasets import (
    DATASETS,
    IGNORE_INDEX,
    FolderDataset,
    MFNetDataset,
    build_dataset,
    load_dataset_config,
    register_dataset,
)
from dataset_fixtures import (
    FixtureFrame,
    synthetic_frame,
    write_fmb,
    write_folder,
    write_kp,
    write_mfnet,
    write_pst900,
)
from taseg_ros.datasets.transforms import (
    ColorJitter,
    Compose,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScale,
    Resize,
    pad_sample,
    train_transform,
)

SAMPLES = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "rgbt_samples"


def frame(seed: int, h: int = 12, w: int = 16, num_classes: int = 9, offset: int = 0) -> FixtureFrame:
    return synthetic_frame(np.random.default_rng(seed), h, w, num_classes, label_offset=offset)


def check_contract(sample: dict, h: int, w: int) -> None:
    assert set(sample) == {"id", "rgb", "thermal", "label", "condition"}
    assert sample["rgb"].shape == (h, w, 3) and sample["rgb"].dtype == np.uint8
    assert sample["thermal"].shape == (h, w) and sample["thermal"].dtype == np.float32
    assert 0.0 <= sample["thermal"].min() and sample["thermal"].max() <= 1.0
    if sample["label"] is not None:
        assert sample["label"].shape == (h, w) and sample["label"].dtype == np.int64


# ---------------------------------------------------------------------------------- MFNet
@pytest.fixture()
def mfnet_frames():
    return {i: frame(n) for n, i in enumerate(["00001D", "00002N", "00003D", "00004N", "00005D"])}


def test_mfnet_rtfnet_layout(tmp_path, mfnet_frames):
    root = write_mfnet(tmp_path / "MF", mfnet_frames, {"train": ["00001D", "00002N"], "val": ["00003D"], "test": ["00004N", "00005D"]})
    # The real format: one 4-channel PNG, thermal in alpha.
    raw = cv2.imread(str(root / "images" / "00001D.png"), cv2.IMREAD_UNCHANGED)
    assert raw.shape == (12, 16, 4)

    ds = build_dataset("mfnet", root, "train")
    assert isinstance(ds, MFNetDataset) and ds.layout == "rtfnet" and len(ds) == 2
    s = ds[0]
    check_contract(s, 12, 16)
    f = mfnet_frames["00001D"]
    assert s["id"] == "00001D" and s["condition"] == "day"
    np.testing.assert_array_equal(s["rgb"], f.rgb)
    np.testing.assert_allclose(s["thermal"], f.thermal / 255.0, atol=1e-6)
    np.testing.assert_array_equal(s["label"], f.label)
    assert ds[1]["condition"] == "night"

    assert build_dataset("mfnet", root, "trainval").ids == ["00001D", "00002N", "00003D"]  # train.txt + val.txt
    # test_day / test_night without their own files: test filtered by the D/N suffix.
    assert build_dataset("mfnet", root, "test_day").ids == ["00005D"]
    assert build_dataset("mfnet", root, "test_night").ids == ["00004N"]
    # With their own files, those files win.
    (root / "test_day.txt").write_text("00003D\n")
    assert build_dataset("mfnet", root, "test_day").ids == ["00003D"]


def test_mfnet_cmx_layout_is_detected(tmp_path, mfnet_frames):
    root = write_mfnet(tmp_path / "MF", mfnet_frames, {"train2": ["00001D", "00002N", "00003D"], "test": ["00004N"]}, layout="cmx")
    ds = build_dataset("mfnet", root, "trainval")
    assert ds.layout == "cmx" and ds.ids == ["00001D", "00002N", "00003D"]
    s = build_dataset("mfnet", root, "test")[0]
    np.testing.assert_array_equal(s["rgb"], mfnet_frames["00004N"].rgb)
    np.testing.assert_allclose(s["thermal"], mfnet_frames["00004N"].thermal / 255.0, atol=1e-6)
    np.testing.assert_array_equal(s["label"], mfnet_frames["00004N"].label)


def test_mfnet_flip_ids_keep_their_condition(tmp_path, mfnet_frames):
    frames = {"00001D_flip": mfnet_frames["00001D"], "00002N_flip": mfnet_frames["00002N"]}
    root = write_mfnet(tmp_path / "MF", frames, {"train": list(frames)})
    assert [s["condition"] for s in build_dataset("mfnet", root, "train")] == ["day", "night"]


def test_mfnet_image_without_alpha_is_a_clear_error(tmp_path, mfnet_frames):
    root = write_mfnet(tmp_path / "MF", mfnet_frames, {"test": ["00001D"]})
    cv2.imwrite(str(root / "images" / "00001D.png"), mfnet_frames["00001D"].rgb[:, :, ::-1])  # alpha lost
    ds = build_dataset("mfnet", root, "test")
    with pytest.raises(ValueError, match=r"00001D\.png.*4-channel"):
        ds[0]


# --------------------------------------------------------------------------------- PST900
PST_TRAIN = [
    "31_bag1a_rect_rgb_frame0000000001",
    "35_bag5a_rect_rgb_frame0000000113",
    "37_bag7_rect_rgb_frame0000002619",
    "43_bag10_rect_rgb_frame0000000001",
    "44_bag10a_rect_rgb_frame0000000300",
]
PST_TEST = ["58_bag21_rect_rgb_frame0000000440", "62_bag25_rect_rgb_frame0000001607"]


def test_pst900_splits_hold_out_whole_recordings(tmp_path):
    train = {n: frame(i, num_classes=5) for i, n in enumerate(PST_TRAIN)}
    test = {n: frame(10 + i, num_classes=5) for i, n in enumerate(PST_TEST)}
    root = write_pst900(tmp_path / "PST", train, test)
    val = build_dataset("pst900", root, "val").ids
    tr = build_dataset("pst900", root, "train").ids
    # bags divisible by 5 (bag5a, bag10, bag10a) are val, whole recordings at a time
    assert val == ["35_bag5a_rect_rgb_frame0000000113", "43_bag10_rect_rgb_frame0000000001", "44_bag10a_rect_rgb_frame0000000300"]
    assert tr == ["31_bag1a_rect_rgb_frame0000000001", "37_bag7_rect_rgb_frame0000002619"]
    assert sorted(build_dataset("pst900", root, "trainval").ids) == sorted(PST_TRAIN)
    ds = build_dataset("pst900", root, "test")
    assert ds.ids == sorted(PST_TEST)
    s = ds[0]
    check_contract(s, 12, 16)
    np.testing.assert_array_equal(s["label"], test[PST_TEST[0]].label)
    np.testing.assert_array_equal(s["rgb"], test[PST_TEST[0]].rgb)
    assert s["condition"] is None


def test_pst900_thermal_raw_16bit(tmp_path):
    f = frame(0, num_classes=5)
    raw = np.linspace(20000, 30000, 12 * 16).reshape(12, 16).astype(np.uint16)
    f.thermal_raw = raw
    root = write_pst900(tmp_path / "PST", {}, {PST_TEST[0]: f})
    assert cv2.imread(str(root / "test" / "thermal_raw" / f"{PST_TEST[0]}.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    t = build_dataset("pst900", root, "test", thermal_source="thermal_raw")[0]["thermal"]
    lo, hi = np.percentile(raw.astype(np.float32), [1, 99])  # the yaml's raw_normalization
    np.testing.assert_allclose(t, np.clip((raw - lo) / (hi - lo), 0, 1), atol=1e-5)


def test_pst900_inpaints_zero_holes_when_asked(tmp_path):
    f = frame(0, num_classes=5)
    f.thermal = np.full((12, 16), 100, np.uint8)
    f.thermal[4:7, 5:9] = 0  # reprojection hole
    root = write_pst900(tmp_path / "PST", {}, {PST_TEST[0]: f})
    plain = build_dataset("pst900", root, "test")[0]["thermal"]
    assert (plain == 0).sum() == 12
    filled = build_dataset("pst900", root, "test", inpaint_zeros=True)[0]["thermal"]
    np.testing.assert_allclose(filled, 100 / 255.0, atol=1e-6)


# ------------------------------------------------------------------------------------ FMB
def test_fmb_label_mapping_and_val_holdout(tmp_path):
    names = [f"{i:05d}" for i in range(12)]
    train = {n: frame(i, num_classes=15) for i, n in enumerate(names)}  # raw 0..14
    test = {"00100": frame(50, num_classes=15)}
    cfg = load_dataset_config("fmb")
    root = write_fmb(tmp_path / "FMB", train, test, palette=cfg.classes.palette, label_channels=3)
    assert (root / "train" / "color" / "00000.png").is_file()
    ds = build_dataset("fmb", root, "test")
    s = ds[0]
    raw = test["00100"].label.astype(np.int64)
    expected = np.where(raw == 0, IGNORE_INDEX, raw - 1)  # MMSFormer: raw 0 -> 255, 1..14 -> 0..13
    np.testing.assert_array_equal(s["label"], expected)
    assert (s["label"] == IGNORE_INDEX).any() and s["label"][s["label"] != IGNORE_INDEX].max() <= 13

    val = build_dataset("fmb", root, "val").ids
    assert val == [n for n in names if zlib.crc32(n.encode()) % 5 == 0] and val
    tr = build_dataset("fmb", root, "train").ids
    assert not set(val) & set(tr) and sorted(set(val) | set(tr)) == names


def test_fmb_three_channel_label_read_from_red_channel(tmp_path):
    f = frame(3, num_classes=15)
    root = write_fmb(tmp_path / "FMB", {}, {"a": f})
    lab = f.label.copy()
    bgr = np.dstack([np.zeros_like(lab), np.zeros_like(lab), lab])  # only red carries the ids
    cv2.imwrite(str(root / "test" / "Label" / "a.png"), bgr)
    got = build_dataset("fmb", root, "test")[0]["label"]
    np.testing.assert_array_equal(got, np.where(lab == 0, 255, lab.astype(np.int64) - 1))


# ------------------------------------------------------------------------------------- KP
def kp_frame(seed: int) -> FixtureFrame:
    # flat 8x8 blocks so JPEG is almost lossless; labels include void (19)
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 20, (2, 2))
    label = np.kron(blocks, np.ones((8, 8), np.int64)).astype(np.uint8)
    rgb = np.broadcast_to(np.array([200, 90, 20], np.uint8), (16, 16, 3)).copy()  # one colour: JPEG-exact
    thermal = np.kron(rng.integers(0, 256, (2, 2)), np.ones((8, 8), np.int64)).astype(np.uint8)
    return FixtureFrame(rgb=rgb, thermal=thermal, label=label)


def test_kp_layout_splits_and_void(tmp_path):
    ids = ["set00_V000_I00050", "set04_V001_I00117", "set07_V000_I00001", "set09_V000_I00050", "set11_V001_I00093"]
    frames = {i: kp_frame(n) for n, i in enumerate(ids)}
    frames[ids[0]].label[0, 0] = 19
    root = write_kp(
        tmp_path / "KP",
        frames,
        {"train_day": [ids[0]], "train_night": [ids[1]], "test_day": [ids[2]], "test_night": [ids[4], ids[3]]},
    )
    assert (root / "images" / "set07" / "V000" / "lwir" / "I00001.jpg").is_file()
    assert cv2.imread(str(root / "images" / "set07" / "V000" / "lwir" / "I00001.jpg"), cv2.IMREAD_UNCHANGED).shape == (16, 16, 3)
    assert (root / "test_night.txt").read_text().splitlines()[0] == "set11_V001_I00093.png"  # CRM's entry format

    test = build_dataset("kp", root, "test")  # test_day.txt + test_night.txt, sorted as CRM
    assert test.ids == [ids[2], ids[3], ids[4]]
    assert [s["condition"] for s in test] == ["day", "night", "night"]
    assert build_dataset("kp", root, "test_night").ids == [ids[3], ids[4]]  # sorted, as CRM
    train = build_dataset("kp", root, "train")
    s = train[0]
    check_contract(s, 16, 16)
    assert s["condition"] == "day"
    raw = frames[ids[0]].label.astype(np.int64)
    np.testing.assert_array_equal(s["label"], np.where(raw == 19, IGNORE_INDEX, raw))
    assert s["label"][0, 0] == IGNORE_INDEX
    np.testing.assert_allclose(s["thermal"], frames[ids[0]].thermal / 255.0, atol=3 / 255)
    assert np.abs(s["rgb"].astype(int) - frames[ids[0]].rgb).max() <= 3  # RGB order, JPEG-rounded
    # A combined test.txt takes precedence over the day/night pair.
    (root / "test.txt").write_text(f"{ids[2]}.png\n")
    assert build_dataset("kp", root, "test").ids == [ids[2]]


# --------------------------------------------------------------------------------- folder
CLASSES = {"classes": ["background", "person", "car"], "palette": [[0, 0, 0], [220, 20, 60], [0, 0, 142]], "ignore_index": 255}


def test_folder_format(tmp_path):
    f1 = frame(1, num_classes=3)
    f1.label[0, :] = 255
    f2 = frame(2, num_classes=3)
    f2.thermal = np.linspace(1000, 5000, 12 * 16).reshape(12, 16).astype(np.uint16)  # 16-bit camera
    f3 = frame(3, num_classes=3)
    f3.thermal = np.linspace(20.0, 40.0, 12 * 16, dtype=np.float32).reshape(12, 16)  # float temperatures
    root = write_folder(
        tmp_path / "own", {"a": f1, "b": f2, "c": f3}, {"train": ["a", "b"], "test": ["c", "a"]}, CLASSES, day=["a"], night=["c"]
    )
    assert (root / "thermal" / "c.tiff").is_file()
    ds = build_dataset("folder", root, "train")
    assert isinstance(ds, FolderDataset) and ds.class_info.names == ("background", "person", "car")
    a, b = ds[0], ds[1]
    check_contract(a, 12, 16)
    assert a["condition"] == "day" and b["condition"] is None
    assert (a["label"][0] == IGNORE_INDEX).all()
    np.testing.assert_allclose(a["thermal"], f1.thermal / 255.0, atol=1e-6)
    assert b["thermal"].min() == 0.0 and b["thermal"].max() == 1.0  # 16-bit: percentile 1..99
    c = build_dataset(root / "classes.yaml", root, "test")[0]
    assert c["condition"] == "night" and 0 <= c["thermal"].min() and c["thermal"].max() == 1.0
    assert build_dataset("folder", root, "test_day").ids == ["a"]
    assert build_dataset("folder", root, "all").ids == ["a", "b", "c"]


def test_folder_without_labels_gives_none(tmp_path):
    f = frame(1, num_classes=3)
    f.label = None
    root = write_folder(tmp_path / "own", {"x": f}, {}, CLASSES)
    ds = build_dataset("folder", root, "all")
    assert not ds.has_labels and ds[0]["label"] is None


def test_registry_and_unknown_names(tmp_path):
    assert set(DATASETS) == {"mfnet", "pst900", "fmb", "kp", "folder"}
    with pytest.raises(ValueError, match="unknown dataset 'cityscapes'"):
        build_dataset("cityscapes", tmp_path, "train")
    yml = tmp_path / "x.yaml"
    yml.write_text(yaml.safe_dump({**CLASSES, "layout": "nope"}))
    with pytest.raises(ValueError, match="unknown layout 'nope'"):
        build_dataset(yml, tmp_path, "train")

    class MyFolder(FolderDataset):
        pass

    register_dataset("mine", MyFolder)
    try:
        write_folder(tmp_path / "own", {"x": frame(0, num_classes=3)}, {"train": ["x"]}, {**CLASSES, "layout": "mine"})
        assert isinstance(build_dataset("folder", tmp_path / "own", "train"), MyFolder)
    finally:
        del DATASETS["mine"]


def test_builtin_configs_carry_the_protocols():
    mf, pst, fmb, kp = (load_dataset_config(n) for n in ("mfnet", "pst900", "fmb", "kp"))
    assert mf.num_classes == 9 and mf.label_map.ignore == () and mf.metric.conditions == ("day", "night")
    assert pst.num_classes == 5 and pst.metric.nan_policy == "zero" and pst.val_holdout.modulus == 5
    assert fmb.num_classes == 14 and fmb.label_map.ignore == (0,) and fmb.label_map.offset == 1
    assert kp.num_classes == 19 and 19 in kp.label_map.ignore and kp.day_night == "kaist_set"
    assert all(c.metric.nan_policy == "zero" for c in (mf, pst, fmb, kp))


# --------------------------------------------------------------------------------- errors
@pytest.fixture()
def mf_root(tmp_path, mfnet_frames):
    return write_mfnet(tmp_path / "MF", mfnet_frames, {"train": ["00001D", "00002N"], "test": ["00004N"]}, layout="cmx")


def test_error_missing_thermal_file_names_it(mf_root):
    (mf_root / "Modal" / "00002N.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"Modal/00002N\.png"):
        build_dataset("mfnet", mf_root, "train")


def test_error_missing_label_file_names_it(mf_root):
    (mf_root / "Label" / "00001D.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"Label/00001D\.png"):
        build_dataset("mfnet", mf_root, "train")


def test_thermal_of_another_size_is_resized_with_a_warning_as_predict_does(mf_root):
    """One behaviour for `taseg eval`/training, `taseg predict` and the node: normalise the file's own
    pixels, resize onto the RGB grid, and say so once (frames.thermal.ThermalPreparation)."""
    import warnings

    from taseg_ros.errors import InputWarning
    from taseg_ros.frames.thermal import align_thermal, normalize_thermal

    small = np.random.default_rng(0).integers(0, 256, (6, 8), dtype=np.uint8)
    cv2.imwrite(str(mf_root / "Modal" / "00001D.png"), small)
    ds = build_dataset("mfnet", mf_root, "train")
    with pytest.warns(InputWarning, match=r"Modal/00001D\.png: thermal frames \(8x6\) are resized to the RGB frame \(16x12\)"):
        sample = ds[0]
    np.testing.assert_array_equal(sample["thermal"], align_thermal(normalize_thermal(small), (12, 16)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per dataset, not once per sample
        ds[0]


def test_error_label_size_mismatch_names_files(mf_root):
    cv2.imwrite(str(mf_root / "Label" / "00001D.png"), np.zeros((10, 16), np.uint8))
    ds = build_dataset("mfnet", mf_root, "train")
    with pytest.raises(ValueError, match=r"sizes differ.*Label/00001D\.png is 16x10"):
        ds[0]


def test_error_label_values_out_of_range_names_file_and_values(mf_root):
    lab = np.zeros((12, 16), np.uint8)
    lab[0, 0], lab[1, 1] = 9, 200
    cv2.imwrite(str(mf_root / "Label" / "00001D.png"), lab)
    ds = build_dataset("mfnet", mf_root, "train")
    with pytest.raises(ValueError, match=r"Label/00001D\.png: label values \[9, 200\] are outside"):
        ds[0]


def test_error_unreadable_image_names_it(mf_root):
    (mf_root / "RGB" / "00001D.png").write_bytes(b"not a png")
    ds = build_dataset("mfnet", mf_root, "train")
    with pytest.raises(ValueError, match=r"RGB/00001D\.png: cannot be read as an image"):
        ds[0]


def test_error_empty_split(mf_root, tmp_path):
    (mf_root / "val.txt").write_text("\n# nothing\n")
    with pytest.raises(ValueError, match=r"val\.txt: split file lists no ids"):
        build_dataset("mfnet", mf_root, "val")
    # PST900 val with no recording held out
    root = write_pst900(tmp_path / "PST", {PST_TRAIN[0]: frame(0, num_classes=5)}, {})
    with pytest.raises(ValueError, match="split 'val' has no samples"):
        build_dataset("pst900", root, "val")


def test_error_missing_split_file_names_it(mf_root):
    with pytest.raises(FileNotFoundError, match=r"no split file for split 'val'.*val\.txt.*present: \['test\.txt', 'train\.txt'\]"):
        build_dataset("mfnet", mf_root, "val")


def test_error_duplicate_id_in_split_file(mf_root):
    (mf_root / "train.txt").write_text("00001D\n00001D\n")
    with pytest.raises(ValueError, match=r"train\.txt:2: id '00001D' is listed twice"):
        build_dataset("mfnet", mf_root, "train")


def test_error_not_a_dataset_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        build_dataset("mfnet", tmp_path / "nope", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not an MFNet folder"):
        build_dataset("mfnet", tmp_path / "empty", "train")


# ----------------------------------------------------------------------------- transforms
def aligned_sample(h: int = 24, w: int = 32) -> dict:
    """rgb channel 0, thermal and label all encode the same pixel index: alignment is checkable."""
    label = (np.arange(h * w).reshape(h, w) % 7).astype(np.int64)
    return {
        "id": "x",
        "rgb": np.dstack([label * 30, np.arange(h * w).reshape(h, w) % 256, np.zeros((h, w), np.int64)]).astype(np.uint8),
        "thermal": (label / 10.0).astype(np.float32),
        "label": label,
        "condition": None,
    }


def test_transforms_keep_modalities_aligned():
    s = aligned_sample()
    flipped = RandomHorizontalFlip(p=1.0)(s, np.random.default_rng(0))
    np.testing.assert_array_equal(flipped["label"], s["label"][:, ::-1])
    np.testing.assert_array_equal(flipped["rgb"], s["rgb"][:, ::-1])
    np.testing.assert_array_equal(flipped["thermal"], s["thermal"][:, ::-1])

    cropped = RandomCrop(10, 12)(s, np.random.default_rng(3))
    assert cropped["label"].shape == (10, 12)
    np.testing.assert_array_equal(cropped["rgb"][:, :, 0], cropped["label"] * 30)
    np.testing.assert_allclose(cropped["thermal"], cropped["label"] / 10.0, atol=1e-6)

    up = RandomScale(2.0, 2.0)(s, np.random.default_rng(0))  # nearest labels: exact 2x repeat
    np.testing.assert_array_equal(up["label"], np.repeat(np.repeat(s["label"], 2, 0), 2, 1))
    assert up["rgb"].shape == (48, 64, 3) and up["thermal"].shape == (48, 64)


def test_crop_larger_than_image_pads_label_with_ignore():
    s = aligned_sample(8, 8)
    out = RandomCrop(10, 12)(s, np.random.default_rng(0))
    assert out["label"].shape == (10, 12)
    assert (out["label"][8:] == IGNORE_INDEX).all() and (out["label"][:, 8:] == IGNORE_INDEX).all()
    np.testing.assert_array_equal(out["label"][:8, :8], s["label"])
    assert (out["rgb"][8:] == 0).all() and (out["thermal"][:, 8:] == 0).all()
    padded = pad_sample(s, (16, 16))
    assert padded["label"].shape == (16, 16) and padded["label"][15, 15] == IGNORE_INDEX


def test_color_jitter_touches_rgb_only():
    s = aligned_sample()
    out = ColorJitter(0.5, 0.5, 0.5, 0.1, p=1.0)(s, np.random.default_rng(1))
    assert not np.array_equal(out["rgb"], s["rgb"])
    assert out["thermal"] is s["thermal"] and out["label"] is s["label"]


def test_transforms_are_deterministic_given_the_generator():
    s = aligned_sample()
    t = train_transform((16, 16))
    a = t(s, np.random.default_rng(7))
    b = t(s, np.random.default_rng(7))
    c = t(s, np.random.default_rng(8))
    for k in ("rgb", "thermal", "label"):
        np.testing.assert_array_equal(a[k], b[k])
    assert any(not np.array_equal(a[k], c[k]) for k in ("rgb", "thermal", "label"))
    assert Resize(12, 16)(s, None)["label"].shape == (12, 16)


def test_dataset_transform_depends_on_seed_epoch_index(tmp_path, mfnet_frames):
    root = write_mfnet(tmp_path / "MF", mfnet_frames, {"train": ["00001D", "00002N"]})
    ds = build_dataset("mfnet", root, "train", transform=Compose([RandomCrop(8, 8), ColorJitter(p=1.0)]), seed=3)
    x0, x0_again = ds[0], ds[0]
    np.testing.assert_array_equal(x0["rgb"], x0_again["rgb"])
    ds.set_epoch(1)
    assert not np.array_equal(ds[0]["rgb"], x0["rgb"])
    assert ds[0]["label"].shape == (8, 8)


# ------------------------------------------------------------------------------ real data
def test_real_mfnet_frames():
    root = SAMPLES / "mfnet"
    if not (root / "images").is_dir():
        pytest.skip("shared RGB-T samples not present")
    ds = build_dataset("mfnet", root, "test")
    assert ds.ids == ["01234N", "01477D"]
    for s in ds:
        check_contract(s, 480, 640)
        rgba = cv2.imread(str(root / "images" / f"{s['id']}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(s["rgb"], rgba[:, :, 2::-1])
        np.testing.assert_allclose(s["thermal"], rgba[:, :, 3] / 255.0, atol=1e-6)
        assert s["thermal"].std() > 0.02  # real thermal content, not an empty alpha
        # labels there are pseudo-labels (LASNet predictions) but in the real label format
        assert set(np.unique(s["label"])) <= set(range(9))
    assert [s["condition"] for s in ds] == ["night", "day"]
    assert build_dataset("mfnet", root, "test_day").ids == ["01477D"]


def test_real_pst900_frame():
    root = SAMPLES / "pst900"
    if not (root / "test" / "rgb").is_dir():
        pytest.skip("shared RGB-T samples not present")
    ds = build_dataset("pst900", root, "test")
    s = ds[0]
    check_contract(s, 720, 1280)
    assert set(np.unique(s["label"])) == {0, 1, 2, 3}
    holes = int((s["thermal"] == 0).sum())
    filled = build_dataset("pst900", root, "test", inpaint_zeros=True)[0]["thermal"]
    assert holes > 0 and int((filled == 0).sum()) < holes


def test_torch_dataloader_batches_samples(tmp_path):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    from taseg_ros.datasets import collate_samples

    train = {n: frame(i, num_classes=5) for i, n in enumerate(PST_TRAIN)}
    root = write_pst900(tmp_path / "PST", train, {})
    ds = build_dataset("pst900", root, "trainval", transform=train_transform((8, 8)))
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate_samples)))
    assert batch["rgb"].shape == (4, 8, 8, 3) and batch["rgb"].dtype == torch.uint8
    assert batch["thermal"].dtype == torch.float32 and batch["label"].dtype == torch.int64
    assert batch["condition"] == [None] * 4 and batch["id"] == ds.ids[:4]
    np.testing.assert_array_equal(batch["label"][1].numpy(), ds[1]["label"])
