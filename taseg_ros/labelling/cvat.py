"""Pre-labels to CVAT and corrected masks back: the "Segmentation mask 1.1" format (PASCAL VOC style).

``taseg label export DIR`` writes a zip CVAT imports as annotations ("Upload annotations", format
"Segmentation mask 1.1"):

    labelmap.txt                         every class of DIR/classes.yaml in id order, "name:r,g,b::"
    ImageSets/Segmentation/default.txt   the frame ids, one a line
    SegmentationClass/<id>.png           the model's prediction, 3-channel, each class in its colour
    JPEGImages/<id>.png                  the RGB frame, byte for byte as in DIR/rgb/

``taseg label import EXPORT.zip DIR`` reads what CVAT exports in the same format after correction
and writes ``DIR/labels/<id>.png`` (class ids, uint8). A colour becomes an id through the zip's own
labelmap.txt (CVAT writes the task's label colours there), matched *by class name* to
DIR/classes.yaml, so the task's colours need not be ours. CVAT adds a ``background`` label
(0,0,0) for pixels nobody labelled: those become ``ignore_index`` of classes.yaml, unless one of
the dataset's classes has the background's colour (MFNet's ``unlabeled`` is black too), which then
wins. 1-channel masks (value = labelmap line, as CVAT also accepts) are read too.
Refused, with the file named, one line, nothing written: a colour or value the labelmap does not
declare, a labelmap without one of the classes, a mask of another size than its frame, a mask for
an id DIR does not hold, a zip member whose name points outside the archive (absolute, ``..``).
The zip is never unpacked: members are read in memory, and the only files written are
``DIR/labels/<id>.png`` of ids DIR/rgb/ holds.

Written by hand rather than through Datumaro (the library CVAT's own format code uses): the format
is four small, stable parts, and Datumaro would add pandas, pyarrow, shapely and pycocotools to the
package's run-time dependencies (and pin OpenCV and numpy) for them; its reader also maps an
undeclared colour to a bare KeyError and knows neither our class list nor the ignore value. The
tests check both directions against Datumaro itself (``voc`` import, ``voc_segmentation`` export).
"""
from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

import cv2
import numpy as np

from taseg_ros.classes import ClassInfo
from taseg_ros.datasets import build_dataset
from taseg_ros.datasets.config import load_dataset_config
from taseg_ros.datasets.io import index_by_stem
from taseg_ros.errors import InputError, MissingInputError, OutputPathError
from taseg_ros.frames.files import read_image
from taseg_ros.frames.render import colorize, colour_keys, key_colour
from taseg_ros.outputs import output_dir, output_file, replacing, write_bytes_atomic

LABELMAP = "labelmap.txt"
SUBSET_LIST = "ImageSets/Segmentation/default.txt"
CLASS_MASKS = "SegmentationClass"
IMAGES = "JPEGImages"  # VOC's name; CVAT and Datumaro take any image type there
BACKGROUND = "background"  # the label CVAT adds for unlabelled pixels
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IGNORE = -1  # colour-table code: unlabelled (CVAT's background)
_IGNORE_SLOT = 255  # where unlabelled pixels sit in a converted mask until ignore_index is known (never a class id)


# --- labelmap.txt ----------------------------------------------------------------------------------


def labelmap_text(classes: ClassInfo) -> str:
    """labelmap.txt for a class list: line i is class i (CVAT requires no gaps), "name:r,g,b::"."""
    for name in classes.names:
        if ":" in name or not name.strip() or name != name.strip() or "\n" in name or name.startswith("#"):
            raise InputError(f"{classes.source or 'class list'}: class name {name!r} cannot be written to "
                             "labelmap.txt (no ':', no leading '#' or surrounding spaces)")
    lines = ["# label:color_rgb:parts:actions"]
    lines += [f"{name}:{r},{g},{b}::" for name, (r, g, b) in zip(classes.names, classes.palette.tolist())]
    return "\n".join(lines) + "\n"


def parse_labelmap(text: str, where: str) -> list[tuple[str, tuple[int, int, int] | None]]:
    """(name, colour or None) per line, in order; the format Datumaro's VOC reader accepts."""
    entries: list[tuple[str, tuple[int, int, int] | None]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) != 4:
            raise InputError(f"{where}: line {number}: expected 'name:r,g,b:parts:actions', got {line!r}")
        name, colour = fields[0], None
        if fields[1]:
            try:
                colour = tuple(int(c) for c in fields[1].split(","))
            except ValueError:
                colour = ()
            if len(colour) != 3 or not all(0 <= c <= 255 for c in colour):
                raise InputError(f"{where}: line {number}: colour of {name!r} must be 'r,g,b' in 0..255, got {fields[1]!r}")
        if any(name == other for other, _ in entries):
            raise InputError(f"{where}: line {number}: label {name!r} is declared twice")
        entries.append((name, colour))
    if not entries:
        raise InputError(f"{where}: declares no label")
    return entries


# --- export ------------------------------------------------------------------------------------------


@dataclass
class ExportResult:
    path: Path
    ids: list[str] = field(default_factory=list)
    classes: tuple[str, ...] = ()


def export_prelabels(
    dataset_dir: str | Path,
    segmenter,
    output: str | Path,
    *,
    split: str = "all",
    force: bool = False,
    inputs: dict | None = None,
    on_frame: Callable[[int], None] | None = None,
) -> ExportResult:
    """The frames of ``split`` of the folder dataset with the model's predictions, as a CVAT
    "Segmentation mask 1.1" zip at ``output`` (written to a temporary name, then renamed)."""
    dataset_dir = Path(dataset_dir)
    dataset = build_dataset("folder", dataset_dir, split)
    classes = dataset.class_info
    _check_model_classes(classes, segmenter.class_info, dataset_dir)
    _check_distinct_colours(classes, dataset_dir / "classes.yaml")
    labelmap = labelmap_text(classes)
    result = ExportResult(Path(output), classes=classes.names)
    with (
        output_file(output, force=force, inputs={"DIR": dataset_dir, **(inputs or {})}) as path,
        replacing(path, suffix=".zip") as tmp,
        zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf,
    ):
        zf.writestr(LABELMAP, labelmap)
        for index, record in enumerate(dataset.records):
            sample = dataset.load_inputs(index)
            labels = segmenter.predict_prepared(sample["rgb"], sample["thermal"]).labels
            zf.writestr(f"{CLASS_MASKS}/{record.id}.png", _encode_png(colorize(labels, classes.palette)[:, :, ::-1]))
            zf.write(record.rgb, f"{IMAGES}/{record.id}{record.rgb.suffix.lower()}")
            result.ids.append(record.id)
            if on_frame is not None:
                on_frame(len(result.ids))
        zf.writestr(SUBSET_LIST, "".join(f"{i}\n" for i in result.ids))
    return result


def _check_model_classes(dataset: ClassInfo, model: ClassInfo, dataset_dir: Path) -> None:
    if tuple(dataset.names) != tuple(model.names):
        raise InputError(f"{dataset_dir / 'classes.yaml'} lists classes {list(dataset.names)} but the model predicts "
                         f"{list(model.names)}; pre-label with a model of this class list")


def _check_distinct_colours(classes: ClassInfo, where: Path) -> None:
    """A colour mask holds one colour per class: two classes of one colour could not be told apart."""
    seen: dict[tuple, str] = {}
    for name, colour in zip(classes.names, map(tuple, classes.palette.tolist())):
        if colour in seen:
            raise InputError(f"{where}: classes {seen[colour]!r} and {name!r} share the colour {colour}; give each "
                             "class its own palette colour")
        seen[colour] = name


def _encode_png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image))
    if not ok:
        raise OSError(f"cannot encode a mask of shape {image.shape}")
    return buf.tobytes()


# --- import ------------------------------------------------------------------------------------------


@dataclass
class ImportResult:
    labels_dir: Path
    ids: list[str] = field(default_factory=list)
    replaced: int = 0  # label files that existed (with --force)
    unlabelled_pixels: int = 0  # CVAT background -> ignore_index


def import_masks(archive: str | Path, dataset_dir: str | Path, *, force: bool = False) -> ImportResult:
    """A CVAT "Segmentation mask 1.1" export -> ``DIR/labels/<id>.png`` (see the module docstring).
    Every mask is checked and converted before the first file is written."""
    archive, dataset_dir = Path(archive), Path(dataset_dir)
    classes_yaml = dataset_dir / "classes.yaml"
    if not classes_yaml.is_file():
        raise MissingInputError(f"{dataset_dir}: not a dataset folder: classes.yaml missing (see taseg bag extract)")
    config = load_dataset_config(classes_yaml)
    if config.label_map.offset:
        raise InputError(f"{classes_yaml}: label_map offset {config.label_map.offset}: import writes class ids as they "
                         "are; use a folder whose labels are plain class ids")
    frames = index_by_stem(dataset_dir / "rgb")
    converted = _read_export(archive, config.classes, classes_yaml, frames)
    labels_dir = dataset_dir / "labels"
    result = ImportResult(labels_dir, ids=sorted(converted))
    existing = [i for i in result.ids if (labels_dir / f"{i}.png").exists()]
    if existing and not force:
        raise OutputPathError(f"{labels_dir / (existing[0] + '.png')} exists ({len(existing)} of the {len(result.ids)} "
                              "labels do); pass --force to replace them")
    result.replaced = len(existing)
    # The frames and the class list are inputs too: a labels/ that links into rgb/ is refused, and every
    # label is written beside its destination and renamed over it (a label file that is a link is
    # replaced, never written through; a full disk leaves the old label whole and names the file).
    inputs = {"EXPORT": archive, "DIR/rgb": dataset_dir / "rgb", "DIR/thermal": dataset_dir / "thermal",
              "DIR/classes.yaml": classes_yaml}
    with output_dir(labels_dir, force=True, inputs=inputs):
        for sample_id in result.ids:
            png, unlabelled = converted[sample_id]
            write_bytes_atomic(labels_dir / f"{sample_id}.png", png)
            result.unlabelled_pixels += unlabelled
    return result


def _read_export(archive: Path, classes: ClassInfo, classes_yaml: Path, frames: dict[str, Path]) -> dict:
    """{id: (label PNG bytes, unlabelled pixels)} of every mask in the export, all checked."""
    if not archive.is_file():
        raise MissingInputError(f"CVAT export not found: {archive}")
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise InputError(f"{archive}: not a zip file (export the task as 'Segmentation mask 1.1')") from None
    with zf:
        members = _checked_members(zf, archive)
        root = _root(list(members), archive)
        where = f"{archive}:{root}{LABELMAP}"
        labelmap = parse_labelmap(_read_member(zf, members[root + LABELMAP], MAX_LABELMAP_BYTES, where)
                                  .decode("utf-8", errors="replace"), where)
        table = ColourTable(labelmap, classes, where, classes_yaml)
        converted = {}
        for sample_id, info in _masks_by_frame(members, root, archive).items():
            where = f"{archive}:{info.filename}"
            if sample_id not in frames:
                raise InputError(f"{where}: the dataset {classes_yaml.parent} has no frame {sample_id!r} in rgb/")
            frame_hw = _image_size(frames[sample_id])
            data = _read_member(zf, info, max_mask_bytes(frame_hw), where)
            _check_size(data, frames[sample_id], frame_hw, where)
            labels, unlabelled = table.labels(data, where)
            if unlabelled and classes.ignore_index is None:
                raise InputError(f"{where}: {unlabelled} pixels are unlabelled ({BACKGROUND}) but {classes_yaml} has no "
                                 "ignore_index to store them as; label them or set ignore_index")
            if unlabelled:
                labels[labels == _IGNORE_SLOT] = classes.ignore_index
            converted[sample_id] = (_encode_png(labels), unlabelled)
    return converted


def _checked_members(zf: zipfile.ZipFile, archive: Path) -> dict[str, zipfile.ZipInfo]:
    """The file members by name, every one refused that would point outside the archive if unpacked,
    and a name that is in the archive twice (a reader would silently take one of the two)."""
    members: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        name = info.filename
        parts = PurePosixPath(name).parts
        if name.startswith(("/", "\\")) or "\\" in name or ".." in parts or (parts and ":" in parts[0]):
            raise InputError(f"{archive}: member {name!r} points outside the archive; refused")
        if name.endswith("/"):
            continue
        if name in members:
            raise InputError(f"{archive}: member {name!r} is in the archive twice; keep one")
        members[name] = info
    return members


def _masks_by_frame(members: dict[str, zipfile.ZipInfo], root: str, archive: Path) -> dict[str, zipfile.ZipInfo]:
    """The mask member of each frame id. A CVAT task made from an uploaded folder keeps the folder in
    its ids (``SegmentationClass/<folder>/<id>.png``), so a mask is matched to its frame by file name:
    right only while that is unambiguous, so two masks for one frame are refused, naming both."""
    prefix = f"{root}{CLASS_MASKS}/"
    by_frame: dict[str, zipfile.ZipInfo] = {}
    for name in sorted(members):
        if not (name.startswith(prefix) and name.lower().endswith(".png")):
            continue
        sample_id = PurePosixPath(name).stem
        if sample_id in by_frame:
            raise InputError(f"{archive}: {by_frame[sample_id].filename!r} and {name!r} are both masks of frame "
                             f"{sample_id!r}; keep one")
        by_frame[sample_id] = members[name]
    if not by_frame:
        raise InputError(f"{archive}: no {prefix}*.png masks (export as 'Segmentation mask 1.1')")
    return by_frame


# A labelmap is a line per label; a mask PNG holds at most 8 bytes a pixel (16-bit RGBA) and a filter
# byte a row, stored uncompressed at worst, plus chunk and metadata overhead. A member declaring more
# is refused before it is inflated (a zip bomb); zipfile never inflates past the declared size.
MAX_LABELMAP_BYTES = 1 << 20
MASK_OVERHEAD_BYTES = 1 << 20


def max_mask_bytes(frame_hw: tuple[int, int]) -> int:
    """The most bytes a mask PNG of a frame this size can need."""
    height, width = frame_hw
    raw = (8 * width + 1) * height
    return raw + raw // 64 + MASK_OVERHEAD_BYTES


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, where: str) -> bytes:
    """A member's bytes, or InputError in one line: encrypted, compressed with a method zipfile does
    not know, damaged (a bad CRC, a broken stream), or more than ``limit`` bytes (its declared size,
    checked before inflating)."""
    if info.flag_bits & 0x1:
        raise InputError(f"{where}: the member is encrypted; export the task again without a password")
    if info.file_size > limit:
        raise InputError(f"{where}: {info.file_size} bytes uncompressed, more than the {limit} its frame's mask "
                         "can need; refused unread")
    try:
        with zf.open(info) as stream:
            return stream.read(limit + 1)
    except NotImplementedError:
        raise InputError(f"{where}: compressed with zip method {info.compress_type}, which this reader does not "
                         "know; export it again (stored or deflated)") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, OSError) as exc:
        raise InputError(f"{where}: damaged member ({type(exc).__name__}: {exc}); download the export again") from None


def _root(names: list[str], archive: Path) -> str:
    """The folder of the export inside the zip ('' at the top, or one wrapping folder)."""
    found = sorted((n for n in names if PurePosixPath(n).name == LABELMAP), key=lambda n: (n.count("/"), n))
    if not found:
        raise InputError(f"{archive}: no {LABELMAP} (export the task as 'Segmentation mask 1.1')")
    return found[0][: -len(LABELMAP)]


def _check_size(png: bytes, frame: Path, frame_hw: tuple[int, int], where: str) -> None:
    """The mask's size from its PNG header (before decoding: a huge mask is refused undecoded)
    against the frame's (``frame_hw``)."""
    if not png.startswith(_PNG_SIGNATURE) or len(png) < 24:
        raise InputError(f"{where}: not a PNG file")
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    frame_h, frame_w = frame_hw
    if (width, height) != (frame_w, frame_h):
        raise InputError(f"{where}: mask is {width}x{height}, its frame {frame} is {frame_w}x{frame_h}")


def _image_size(path: Path) -> tuple[int, int]:
    return read_image(path).shape[:2]



class ColourTable:
    """Mask colours (or 1-channel values) -> class ids of the dataset, through the export's labelmap."""

    def __init__(self, labelmap, classes: ClassInfo, where: str, classes_yaml: Path) -> None:
        declared = [name for name, _ in labelmap]
        missing = [n for n in classes.names if n not in declared]
        if missing:
            raise InputError(f"{where}: lacks the classes {missing} of {classes_yaml}; the CVAT task needs every "
                             "class of the dataset, with the same names")
        ids = {name: i for i, name in enumerate(classes.names)}
        self.by_value = [ids.get(name, _IGNORE if name == BACKGROUND else name) for name, _ in labelmap]
        self.by_colour: dict[int, int | str] = {}
        ours = [(n, c) for n, c in labelmap if n in ids]
        others = [(n, c) for n, c in labelmap if n not in ids]
        for name, colour in ours:
            if colour is None:
                raise InputError(f"{where}: class {name!r} has no colour")
            key = int(colour_keys(colour))
            if key in self.by_colour:
                raise InputError(f"{where}: classes {classes.names[self.by_colour[key]]!r} and {name!r} share the "
                                 f"colour {colour}; their pixels cannot be told apart")
            self.by_colour[key] = ids[name]
        for name, colour in others:
            if colour is None:
                continue
            key = int(colour_keys(colour))
            if key in self.by_colour:
                if name == BACKGROUND:
                    continue  # CVAT's background shares its colour with one of our classes: the class wins
                raise InputError(f"{where}: label {name!r} has the colour {colour} of a dataset class; their pixels "
                                 "cannot be told apart")
            self.by_colour[key] = _IGNORE if name == BACKGROUND else name

    def labels(self, png: bytes, where: str) -> tuple[np.ndarray, int]:
        """(H, W) uint8 class ids (unlabelled pixels at _IGNORE_SLOT) and the unlabelled count."""
        image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
        if image is None or image.dtype != np.uint8:
            raise InputError(f"{where}: cannot be read as an 8-bit PNG mask")
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if image.ndim == 2:
            keys, lookup = image.astype(np.int64), self._value_code
        elif image.shape[2] in (3, 4):  # BGR(A): alpha carries nothing in CVAT's masks
            keys, lookup = colour_keys(image[:, :, 2::-1]), self._colour_code
        else:
            raise InputError(f"{where}: a mask must have 1 or 3 channels, got {image.shape[2]}")
        values, inverse = np.unique(keys, return_inverse=True)
        counts = np.bincount(inverse.ravel(), minlength=len(values))
        codes = np.array([lookup(int(v), int(n), where) for v, n in zip(values, counts)], dtype=np.int64)
        unlabelled = int(counts[codes == _IGNORE].sum())
        codes[codes == _IGNORE] = _IGNORE_SLOT
        return codes[inverse].reshape(keys.shape).astype(np.uint8), unlabelled

    def _colour_code(self, key: int, count: int, where: str) -> int:
        code = self.by_colour.get(key)
        colour = key_colour(key)
        if code is None:
            raise InputError(f"{where}: {count} pixels of colour {colour}, which labelmap.txt does not declare")
        return self._class_code(code, count, f"colour {colour}", where)

    def _value_code(self, value: int, count: int, where: str) -> int:
        if value >= len(self.by_value):
            raise InputError(f"{where}: {count} pixels of value {value}, but labelmap.txt declares only "
                             f"{len(self.by_value)} labels (values 0..{len(self.by_value) - 1})")
        return self._class_code(self.by_value[value], count, f"value {value}", where)

    @staticmethod
    def _class_code(code, count: int, what: str, where: str) -> int:
        if isinstance(code, str):
            raise InputError(f"{where}: {count} pixels of label {code!r} ({what}), which the dataset's classes.yaml "
                             "does not list")
        return code


def format_export(result: ExportResult) -> str:
    return (f"{len(result.ids)} frames with pre-labels -> {result.path} (CVAT 'Segmentation mask 1.1')\n"
            f"  CVAT: create a task from the frames (the zip's {IMAGES}/) with the labels, in this order: "
            f"{', '.join(result.classes)}\n"
            f"  then Actions > Upload annotations > 'Segmentation mask 1.1' > {result.path.name}; after correcting, "
            "Export task dataset in the same format and run: taseg label import EXPORT.zip DIR")


def format_import(result: ImportResult) -> str:
    lines = [f"{len(result.ids)} label images -> {result.labels_dir}"
             + (f" ({result.replaced} replaced)" if result.replaced else "")]
    if result.unlabelled_pixels:
        lines.append(f"  {result.unlabelled_pixels} unlabelled pixels (CVAT's background) stored as ignore_index")
    return "\n".join(lines)
