"""A plain folder format for a user's own recordings (what the rosbag extraction tool writes).

    <root>/classes.yaml            class names, palette, prompts, ignore_index (taseg_ros.classes
                                   schema) and optionally the dataset keys of config.py
    <root>/rgb/<id>.png            8-bit RGB (any of png/jpg/tif/bmp)
    <root>/thermal/<id>.png        thermal on the RGB pixel grid: 8- or 16-bit PNG, float TIFF
    <root>/labels/<id>.png         optional: class ids 0..K-1; `ignore_index` marks ignored pixels
    <root>/train.txt val.txt test.txt   ids (file stems), one per line
    <root>/day.txt night.txt       optional: ids recorded by day / by night

Split `all` is every image in rgb/ (no split file needed), for unlabelled extraction; its samples
carry the label where labels/ has one and label=None otherwise (frames still to be labelled: the
labelling loop adds frames to a labelled folder). Without a labels/ folder, samples carry label=None. `test_day` etc. without a file of their
own are the ids of `test` listed in day.txt / night.txt.
"""
from __future__ import annotations

from taseg_ros.datasets.base import RGBTDataset, SampleRecord
from taseg_ros.datasets.io import index_by_stem, read_split_file
from taseg_ros.errors import InputError, MissingInputError


class FolderDataset(RGBTDataset):
    def _records(self, split: str) -> list[SampleRecord]:
        if not (self.root / "rgb").is_dir():
            raise MissingInputError(f"{self.root}: not a dataset folder: rgb/ missing")
        rgb_files = index_by_stem(self.root / "rgb")
        thermal_files = index_by_stem(self.root / "thermal")
        has_labels = (self.root / "labels").is_dir()
        label_files = index_by_stem(self.root / "labels") if has_labels else {}
        conditions = self._conditions()
        if split == "all":
            ids, only = sorted(rgb_files), None
            if not ids:
                raise InputError(f"{self.root / 'rgb'}: split 'all' is empty: no images")
        else:
            ids, only = self._resolve_split(split, lambda s: [f"{s}.txt"])
        return self._records_of(
            ids,
            only,
            lambda i: (
                rgb_files.get(i, self.root / "rgb" / f"{i}.png"),
                thermal_files.get(i, self.root / "thermal" / f"{i}.png"),
                label_files.get(i, None if split == "all" else self.root / "labels" / f"{i}.png") if has_labels else None,
            ),
            condition_of=conditions.get,
        )

    def _conditions(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for cond in ("day", "night"):
            path = self.root / f"{cond}.txt"
            if path.is_file():
                for i in read_split_file(path):
                    if out.get(i, cond) != cond:
                        raise InputError(f"{path}: id '{i}' is listed in both day.txt and night.txt")
                    out[i] = cond
        return out
