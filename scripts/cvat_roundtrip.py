"""The CVAT round trip on real frames, checked with Datumaro (the library CVAT's format code uses).

    python scripts/cvat_roundtrip.py ../shared/data/rgbt_samples/mfnet

1. The MFNet frames (RGBA: RGB + thermal) become a folder dataset with MFNet's classes.
2. CVAT -> taseg: their real labels are written by Datumaro's voc_segmentation exporter the way
   CVAT exports a task (its own label colours, plus 'background' (0,0,0) first), zipped, and read
   back with `taseg label import`: every pixel must come back as the same class id.
3. taseg -> CVAT: `taseg label export` pre-labels them with the tiny model; Datumaro's VOC
   segmentation reader must give every pixel the model's class.
Prints the pixels compared and how many differ. Needs datumaro (pip install .[test]).
"""
from __future__ import annotations

import argparse
import tempfile
import warnings
import zipfile
from pathlib import Path

import cv2
import numpy as np
import yaml


def folder_dataset(mfnet: Path, root: Path) -> dict[str, np.ndarray]:
    """rgb/ thermal/ classes.yaml from MFNet's RGBA images; returns {id: real label}."""
    from taseg_ros.classes import load_classes

    labels = {}
    for image in sorted((mfnet / "images").glob("*.png")):
        bgra = cv2.imread(str(image), cv2.IMREAD_UNCHANGED)
        (root / "rgb").mkdir(parents=True, exist_ok=True)
        (root / "thermal").mkdir(exist_ok=True)
        cv2.imwrite(str(root / "rgb" / image.name), bgra[:, :, :3])
        cv2.imwrite(str(root / "thermal" / image.name), bgra[:, :, 3])
        labels[image.stem] = cv2.imread(str(mfnet / "labels" / image.name), cv2.IMREAD_UNCHANGED)
    data = load_classes("mfnet").to_mapping()
    data["ignore_index"] = 255
    (root / "classes.yaml").write_text(yaml.safe_dump(data))
    return labels


def cvat_like_export(labels: dict[str, np.ndarray], names: list[str], out: Path) -> Path:
    import datumaro
    from datumaro.components.annotation import AnnotationType, LabelCategories, Mask, MaskCategories

    colours = [(10 + 20 * i, 200 - 15 * i, 5 + 7 * i) for i in range(len(names))]  # a CVAT task's own colours
    items = [datumaro.DatasetItem(id=i, annotations=[Mask(image=(lab == c).astype(np.uint8), label=int(c))
                                                     for c in np.unique(lab)])
             for i, lab in labels.items()]
    categories = {AnnotationType.label: LabelCategories.from_iterable(names),
                  AnnotationType.mask: MaskCategories(dict(enumerate(colours)))}
    label_map = {"background": [(0, 0, 0), [], []], **{n: [c, [], []] for n, c in zip(names, colours)}}
    datumaro.Dataset.from_iterable(items, categories=categories).export(
        str(out / "export"), "voc_segmentation", save_media=False, apply_colormap=True, label_map=label_map)
    archive = out / "cvat_export.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted((out / "export").rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(out / "export").as_posix())
    return archive


def datumaro_labels(archive: Path, out: Path) -> dict[str, np.ndarray]:
    import datumaro
    from datumaro.components.annotation import AnnotationType

    with zipfile.ZipFile(archive) as zf:
        zf.extractall(out / "unzipped")
    result = {}
    for item in datumaro.Dataset.import_from(str(out / "unzipped"), "voc_segmentation"):
        masks = [a for a in item.annotations if a.type == AnnotationType.mask]
        labels = np.full(masks[0].image.shape, 255, np.uint8)
        for mask in masks:
            labels[mask.image.astype(bool)] = mask.label
        result[item.id] = labels
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mfnet", type=Path, help="an MFNet-style folder (images/ RGBA, labels/)")
    args = parser.parse_args()
    from taseg_ros.datasets import build_dataset
    from taseg_ros.inference import Segmenter
    from taseg_ros.labelling.cvat import export_prelabels, import_masks
    from taseg_ros.model.checkpoint import init_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        truth = folder_dataset(args.mfnet, work / "dataset")
        names = list(build_dataset("folder", work / "dataset", "all").class_info.names)
        import_masks(cvat_like_export(truth, names, work), work / "dataset")
        back = {i: cv2.imread(str(work / "dataset" / "labels" / f"{i}.png"), cv2.IMREAD_UNCHANGED) for i in truth}
        pixels = sum(t.size for t in truth.values())
        differ = sum(int((back[i] != t).sum()) for i, t in truth.items())
        print(f"CVAT (Datumaro voc_segmentation export) -> taseg label import: {len(truth)} frames, "
              f"{pixels} pixels compared ({len(np.unique(np.concatenate([t.ravel() for t in truth.values()])))} classes), "
              f"{differ} differ")

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            init_checkpoint("tiny", "mfnet", work / "tiny.safetensors", seed=0)
            segmenter = Segmenter.from_checkpoint(work / "tiny.safetensors")
        export_prelabels(work / "dataset", segmenter, work / "prelabels.zip")
        dataset = build_dataset("folder", work / "dataset", "all")
        predicted = {}
        for i in range(len(dataset)):
            sample = dataset.load_inputs(i)
            predicted[sample["id"]] = segmenter.predict_prepared(sample["rgb"], sample["thermal"]).labels
        read = datumaro_labels(work / "prelabels.zip", work)
        pixels = sum(p.size for p in predicted.values())
        differ = sum(int((read[i] != p).sum()) for i, p in predicted.items())
        classes = len(np.unique(np.concatenate([p.ravel() for p in predicted.values()])))
        print(f"taseg label export -> Datumaro voc_segmentation import: {len(predicted)} frames, "
              f"{pixels} pixels compared ({classes} classes), {differ} differ")


if __name__ == "__main__":
    main()
