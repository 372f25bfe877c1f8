"""PST900 (Shivakumar et al., ICRA 2020).

    <root>/{train,test}/rgb/<name>.png          1280x720 RGB
    <root>/{train,test}/thermal/<name>.png      8-bit thermal reprojected into the RGB frame
                                                (zero-valued holes where no thermal pixel lands)
    <root>/{train,test}/thermal_raw/<name>.png  16-bit radiometric (optional; read with
                                                thermal_source="thermal_raw")
    <root>/{train,test}/labels/<name>.png       ids 0..4, 0 = background (a scored class)

Names look like `60_bag23_rect_rgb_frame0000000198.png`: `<n>_bag<k>[a]` is the recording.

Splits: `test` is test/ (288). There is no official val split, so `train/` (597) is divided
by recording: `val` is every frame of the bags whose number k is divisible by 5 (bag5, bag10,
bag15, bag20 and their `a` re-recordings: whole recordings, so no near-duplicate frame of a
val image is trained on); `train` is the rest; `trainval` is all of train/. The rule lives in
pst900.yaml (`val_holdout`); names without `_bag<k>` fall back to crc32(name) % 5 == 0.
"""
from __future__ import annotations

from taseg_ros.datasets.base import FolderSplitDataset
from taseg_ros.errors import InputError


class PST900Dataset(FolderSplitDataset):
    modality_dirs = ("rgb", "thermal", "labels")

    def _thermal_dir(self) -> str:
        source = self.config.thermal.source
        if source not in ("thermal", "thermal_raw"):
            raise InputError(f"pst900: thermal source must be 'thermal' or 'thermal_raw', got {source!r}")
        return source

    def _thermal_normalization(self):
        if self.config.thermal.source == "thermal_raw":
            return self.config.thermal.raw_normalization
        return self.config.thermal.normalization
