"""MFNet (Ha et al., IROS 2017) in either of its two common layouts, detected from the folders.

RTFNet / original layout (RTFNet, MFNet-pytorch, EAEFNet, CRM read this):
    images/<ID>.png   4-channel PNG: RGB + thermal in the alpha channel (read with
                      IMREAD_UNCHANGED; a default cv2.imread silently drops the thermal)
    labels/<ID>.png   1-channel uint8, ids 0..8 (0 = unlabeled, a scored class)
    train.txt val.txt test.txt test_day.txt test_night.txt   bare ids, e.g. 01402D

CMX / Sigma / DFormer layout:
    RGB/<ID>.png  Modal/<ID>.png (1-channel thermal)  Label/<ID>.png
    train2.txt (= train + val, 1176) test.txt (393), sometimes train.txt/val.txt

Ids end in D (day) or N (night). Split `trainval` is trainval.txt, else train2.txt (CMX),
else train.txt + val.txt. `test_day`/`test_night` fall back to filtering test.txt by suffix.
"""
from __future__ import annotations

import numpy as np

from taseg_ros.datasets.base import RGBTDataset, SampleRecord
from taseg_ros.frames.files import read_image
from taseg_ros.datasets.io import read_label
from taseg_ros.errors import InputError, MissingInputError

LAYOUTS = {
    "rtfnet": ("images", None, "labels"),
    "cmx": ("RGB", "Modal", "Label"),
}


def _candidates(split: str):
    if split == "trainval":
        return ["trainval.txt", "train2.txt", ("train.txt", "val.txt")]
    return [f"{split}.txt"]


class MFNetDataset(RGBTDataset):
    def _detect_layout(self) -> str:
        for name, folders in LAYOUTS.items():
            if all((self.root / f).is_dir() for f in folders if f):
                return name
        raise MissingInputError(
            f"{self.root}: not an MFNet folder: expected images/ + labels/ (RTFNet layout) "
            f"or RGB/ + Modal/ + Label/ (CMX layout)"
        )

    def _records(self, split: str) -> list[SampleRecord]:
        self.layout = self._detect_layout()
        rgb_dir, th_dir, label_dir = LAYOUTS[self.layout]
        ids, only = self._resolve_split(split, _candidates)
        return self._records_of(
            ids,
            only,
            lambda i: (
                self.root / rgb_dir / f"{i}.png",
                None if th_dir is None else self.root / th_dir / f"{i}.png",
                self.root / label_dir / f"{i}.png",
            ),
        )

    def _read(self, record: SampleRecord):
        if record.thermal is not None:  # CMX layout: separate files
            return super()._read(record)
        image = read_image(record.rgb)
        if image.ndim != 3 or image.shape[2] != 4 or image.dtype != np.uint8:
            raise InputError(
                f"{record.rgb}: MFNet images/ files are 8-bit 4-channel PNGs (RGB + thermal in alpha); "
                f"this one has shape {image.shape}, dtype {image.dtype} (re-saved without the thermal channel?)"
            )
        rgb = np.ascontiguousarray(image[:, :, 2::-1])  # BGRA -> RGB
        thermal = np.ascontiguousarray(image[:, :, 3])
        return rgb, thermal, read_label(record.label, self.label_channel)
