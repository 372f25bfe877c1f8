"""FMB, the Full-time Multi-modality Benchmark (Liu et al., SegMiF, ICCV 2023).

    <root>/{train,test}/Visible/<name>.png    800x600 RGB
    <root>/{train,test}/Infrared/<name>.png   8-bit thermal (1 or 3 channels)
    <root>/{train,test}/Label/<name>.png      raw ids: 0 unlabeled, 1..14 classes; read from the
                                              red channel when stored with 3 channels, as
                                              MMSFormer reads channel 0
    <root>/{train,test}/color/<name>.png      colour visualisation (not read)

Raw 0 -> ignored (255) and raw 1..14 -> 0..13, as MMSFormer / StitchFusion / Road-Former.
Splits: `train`, `test` by folder; no official val: `val` is the train images with
crc32(name) % 5 == 0 (fmb.yaml `val_holdout`), `train` the rest, `trainval` all of train/.
FMB names carry no recording id, so this holdout is per frame, not per sequence.
"""
from __future__ import annotations

from taseg_ros.datasets.base import FolderSplitDataset


class FMBDataset(FolderSplitDataset):
    modality_dirs = ("Visible", "Infrared", "Label")
    label_channel = "red"
