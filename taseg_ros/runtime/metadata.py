"""What an exported model file says about itself: the same string-to-string metadata in every
format (ONNX metadata_props, OpenVINO rt_info, a JSON file beside a TensorRT engine), so a
runtime without the nn.Module can rebuild the class table and the pre/post-processing."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from taseg_ros.classes import ClassInfo
from taseg_ros.config_io import parse_json, read_json
from taseg_ros.errors import InputError
from taseg_ros.model.config import TASegConfig
from taseg_ros.model.inputs import FrameTransform
from taseg_ros.weights import sha256_file

FORMAT = "taseg_ros.exported/1"
RT_INFO_SECTION = "taseg"  # OpenVINO rt_info path: ["taseg", key]


@dataclass
class ExportMetadata:
    cfg: TASegConfig
    class_info: ClassInfo
    input_hw: tuple[int, int]  # the network's fixed input (padded) size
    frame_hw: tuple[int, int]  # the frame size the export was made for
    batch: int
    precision: str  # what the file computes in (fp32; fp16 for a TensorRT fp16 engine)
    source: dict = field(default_factory=dict)  # {"name", "sha256"} of the source checkpoint
    frozen_source: dict = field(default_factory=dict)  # FrozenSource fields (SAM file + sha256)
    verification: dict = field(default_factory=dict)  # the export's comparison with eager PyTorch
    text_source: str = ""
    version: str = ""
    dataset: str = ""  # the dataset the checkpoint was trained on (its metadata), for `taseg eval`
    # {"file", "sha256"} of the weights file beside the model file (OpenVINO .bin, ONNX external
    # data, the TensorRT engine its JSON describes); written by the exporter, checked at load.
    weights: dict = field(default_factory=dict)

    @property
    def transform(self) -> FrameTransform:
        return FrameTransform(self.cfg)

    @property
    def sam_sha256(self) -> str:
        return self.frozen_source.get("sha256", "")

    def to_strings(self) -> dict[str, str]:
        return {
            "format": FORMAT,
            "taseg_ros_version": self.version,
            "config_name": self.cfg.name,
            "config": json.dumps(self.cfg.to_dict()),
            "classes": json.dumps(self.class_info.to_mapping()),
            "class_names": json.dumps(list(self.class_info.names)),
            "palette": json.dumps([list(map(int, c)) for c in self.class_info.palette]),
            "resolution": self.cfg.resolution,
            "input_hw": json.dumps(list(self.input_hw)),
            "frame_hw": json.dumps(list(self.frame_hw)),
            "batch": str(self.batch),
            "precision": self.precision,
            "lora_merged": "true",
            "source_checkpoint": json.dumps(self.source),
            "frozen_source": json.dumps(self.frozen_source),
            "sam_sha256": self.sam_sha256,
            "text_source": self.text_source,
            "verification": json.dumps(self.verification),
            "dataset": self.dataset,
        }

    @classmethod
    def from_strings(cls, strings: dict[str, str], path: str | Path) -> "ExportMetadata":
        """Parse file metadata; a foreign or damaged file fails with one line naming it."""
        if strings.get("format") != FORMAT:
            found = strings.get("format", "no taseg metadata")
            raise InputError(f"{path}: not a TASeg export (format '{found}', expected '{FORMAT}')")
        try:
            return cls(
                cfg=TASegConfig.from_dict(parse_json(strings["config"], "config")),
                class_info=ClassInfo.from_mapping(parse_json(strings["classes"], "classes"), source=str(path)),
                input_hw=tuple(parse_json(strings["input_hw"], "input_hw")),
                frame_hw=tuple(parse_json(strings["frame_hw"], "frame_hw")),
                batch=int(strings["batch"]),
                precision=strings.get("precision", "fp32"),
                source=_mapping(strings, "source_checkpoint"),
                frozen_source=_mapping(strings, "frozen_source"),
                verification=_mapping(strings, "verification"),
                text_source=strings.get("text_source", ""),
                version=strings.get("taseg_ros_version", ""),
                dataset=strings.get("dataset", ""),
                weights=_mapping(strings, "weights"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{path}: damaged TASeg export metadata ({type(exc).__name__}: {exc})") from exc


def _mapping(strings: dict[str, str], key: str) -> dict:
    """An optional JSON object among the metadata strings ({} when absent)."""
    value = parse_json(strings.get(key) or "{}", key)
    if not isinstance(value, dict):
        raise ValueError(f"{key}: expected a JSON object, got {type(value).__name__}")
    return value


def check_weights(record: dict, model_path: str | Path, weights: str | Path) -> None:
    """``weights``, the file the runtime will load (OpenVINO: ``<stem>.bin`` beside the .xml; TensorRT:
    the engine; ONNX Runtime: the data file the graph names), is the one exported with ``model_path``
    (its sha256 recorded at export): an OpenVINO .xml with the .bin of another export of the same
    architecture would load and run with the wrong weights. The digest, not the name the record
    gives, decides: a pair renamed together is the same export. Exports older than the record are
    not checked."""
    model_path, weights = Path(model_path), Path(weights)
    if not record:
        return
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
        raise InputError(f"{model_path}: damaged TASeg export metadata (its weights record has no sha256)")
    if not weights.is_file():
        raise InputError(f"{model_path}: its weights file {weights.name} is missing beside it")
    if sha256_file(weights) != record["sha256"]:
        raise InputError(f"{model_path} and {weights}: not from the same export (the sha256 of {weights.name} differs "
                         "from the one recorded at export); keep the files of one export together, or export again")


def onnx_external_data(path: str | Path) -> Path | None:
    """The one external data file an ONNX graph names (what ONNX Runtime loads; `taseg export` writes
    at most one), beside the graph; None when its weights are inside it. A location outside the
    graph's folder, or several files, are refused: the package never follows a path out of a folder."""
    import onnx

    path = Path(path)
    proto = onnx.load(str(path), load_external_data=False)
    locations = {entry.value for tensor in proto.graph.initializer for entry in tensor.external_data
                 if entry.key == "location"}
    if not locations:
        return None
    name = next(iter(locations))
    if len(locations) > 1 or Path(name).name != name or name in (".", ".."):
        raise InputError(f"{path}: its weights are in {sorted(locations)}; an export keeps one data file beside "
                         "its graph (export again)")
    return path.parent / name


def read_ir_weights_record(xml: str | Path) -> dict:
    """The weights record in an OpenVINO IR's rt_info (net/rt_info/taseg/weights), read from the XML
    itself: OpenVINO's own reader may already fail on another export's .bin (its constants are
    laid out differently), which must be reported as the mismatch it is."""
    from xml.etree import ElementTree

    path = []
    try:
        for event, element in ElementTree.iterparse(str(xml), events=("start", "end")):
            if event == "start":
                path.append(element.tag)
                continue
            if path == ["net", "rt_info", RT_INFO_SECTION, "weights"]:
                return parse_json(element.get("value", "{}"), f"{xml}: weights record")
            path.pop()
            if len(path) < 3:
                element.clear()  # layers are not needed: keep memory flat on a large IR
    except (ElementTree.ParseError, ValueError) as exc:
        raise InputError(f"{xml}: not an OpenVINO IR ({exc})") from exc
    return {}


def sidecar_path(engine: str | Path) -> Path:
    """The JSON beside a TensorRT engine (an engine has no room for free-form metadata)."""
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def read_onnx_metadata(path: str | Path) -> ExportMetadata:
    import onnx

    try:
        # load_external_data=False: only the graph header is needed, not gigabytes of weights.
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types on garbage
        raise InputError(f"{path}: not an ONNX model ({type(exc).__name__}: {exc})") from exc
    return ExportMetadata.from_strings({p.key: p.value for p in proto.metadata_props}, path)


def read_openvino_metadata(model, path: str | Path) -> ExportMetadata:
    """From an ov.Model read from IR (rt_info), or from ONNX (its metadata_props)."""
    if Path(path).suffix == ".onnx":
        return read_onnx_metadata(path)
    strings = {}
    if model.has_rt_info([RT_INFO_SECTION]):
        section = model.get_rt_info([RT_INFO_SECTION])
        strings = {key: value.astype(str) for key, value in section.astype(dict).items()}
    return ExportMetadata.from_strings(strings, path)


def read_tensorrt_metadata(engine: str | Path) -> ExportMetadata:
    sidecar = sidecar_path(engine)
    if not sidecar.is_file():
        raise InputError(f"{engine}: no metadata file {sidecar.name} beside the engine (write engines with `taseg export`)")
    try:
        strings = read_json(sidecar)
        if not isinstance(strings, dict):
            raise ValueError("expected a mapping")
    except (OSError, ValueError) as exc:
        raise InputError(f"{sidecar}: unreadable TASeg metadata ({exc})") from exc
    return ExportMetadata.from_strings(strings, engine)
