"""KP: KAIST Multispectral Pedestrian images with MS-UDA segmentation labels, in the
pre-organised layout of CRM_RGBTSeg (the public RGB-T KP benchmark).

    <root>/images/setXX/VYYY/visible/IZZZZZ.jpg   640x512 RGB JPEG
    <root>/images/setXX/VYYY/lwir/IZZZZZ.jpg      thermal JPEG, grey stored in 3 channels
                                                  (the channel mean is used, as CRM does)
    <root>/labels/setXX_VYYY_IZZZZZ.png           Cityscapes train ids 0..18, 19 = void
    <root>/{train,val,test}.txt and *_day.txt / *_night.txt   entries `set00_V000_I00050.png`

Void (19) -> ignored (255); 255 (MS-UDA's pseudo-label ignore) is accepted as ignored too.
A split is `<split>.txt`, else `<split>_day.txt` + `<split>_night.txt` (CRM's loader reads the
pair). Day/night comes from the set: set00-02, 06-08 day; set03-05, 09-11 night.
"""
from __future__ import annotations

import re

from taseg_ros.datasets.base import RGBTDataset, SampleRecord
from taseg_ros.errors import InputError, MissingInputError

_KP_ID = re.compile(r"^(set\d+)_(V\d+)_(I\d+)$")


def _candidates(split: str):
    return [f"{split}.txt", (f"{split}_day.txt", f"{split}_night.txt")]


def kaist_image_path(root, sample_id: str, modality: str):
    m = _KP_ID.match(sample_id)
    if m is None:
        raise InputError(f"KP id '{sample_id}' is not of the form setXX_VYYY_IZZZZZ")
    s, v, i = m.groups()
    return root / "images" / s / v / modality / f"{i}.jpg"


class KPDataset(RGBTDataset):
    def _records(self, split: str) -> list[SampleRecord]:
        for folder in ("images", "labels"):
            if not (self.root / folder).is_dir():
                raise MissingInputError(
                    f"{self.root}: not a KP folder: {folder}/ missing (expected images/setXX/VYYY/"
                    "{visible,lwir}/IZZZZZ.jpg and labels/setXX_VYYY_IZZZZZ.png)"
                )
        ids, only = self._resolve_split(split, _candidates)
        ids = sorted(ids)  # CRM's loader sorts the concatenated day + night lists
        return self._records_of(
            ids,
            only,
            lambda i: (
                kaist_image_path(self.root, i, "visible"),
                kaist_image_path(self.root, i, "lwir"),
                self.root / "labels" / f"{i}.png",
            ),
        )
