"""One config mechanism (taseg_ros.config_io) for model configs, recipes, dataset configs and node
parameters; the shared command-line option groups (taseg_ros.cli.options)."""
from __future__ import annotations

import argparse
import array
from dataclasses import dataclass, field

import pytest

from taseg_ros.cli import build_parser, main
from taseg_ros.cli.options import add_thermal_options, thermal_norm_from_args
from taseg_ros.config_io import ConfigError, from_mapping, merge, setting
from taseg_ros.datasets.config import load_dataset_config
from taseg_ros.devices import PRECISIONS, resolve_device
from taseg_ros.errors import TasegError
from taseg_ros.model.config import get_config
from taseg_ros.frames.thermal import THERMAL_MODES, ThermalNormalization
from taseg_ros.ros.params import NodeParams
from taseg_ros.train.recipe import load_recipe


# --- the reader -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Inner:
    size: tuple[int, int] = setting((32, 32), ge=16, multiple_of=16, form="[height, width]")
    gain: float = setting(1.0, gt=0)


@dataclass(frozen=True)
class Outer:
    name: str
    inner: Inner = field(default_factory=Inner)
    mode: str = setting("a", choices=("a", "b"))
    limit: int | None = None
    values: list[float] = field(default_factory=list)


def test_reader_converts_by_type_hints_and_merges_nested_configs():
    cfg = from_mapping(Outer, {"name": "x", "inner": {"size": [64, 48], "gain": 2}, "values": array.array("q", [1, 2])})
    assert cfg == Outer("x", Inner((64, 48), 2.0), values=[1.0, 2.0])
    assert isinstance(cfg.inner.gain, float) and isinstance(cfg.inner.size, tuple)
    assert from_mapping(Outer, {"name": "x", "limit": None}).limit is None
    changed = merge(cfg, {"inner": {"gain": "1e-3"}})  # YAML 1.1 reads 1e-3 as a string
    assert changed.inner == Inner((64, 48), 1e-3) and changed.name == "x"


@pytest.mark.parametrize(
    "data, message",
    [
        ({"name": "x", "inner": {"size": [0, 0]}}, "f.yaml: inner.size: values must be >= 16 and multiples of 16, got [0, 0]"),
        ({"name": "x", "inner": {"size": 32}}, "f.yaml: inner.size: expected [height, width] (a list of 2 integers), got 32"),
        ({"name": "x", "inner": {"gain": "big"}}, "f.yaml: inner.gain: expected a number, got 'big'"),
        ({"name": "x", "inner": {"gain": -1}}, "f.yaml: inner.gain: must be > 0, got -1"),
        ({"name": "x", "mode": "c"}, "f.yaml: mode: expected one of a, b, got 'c'"),
        ({"name": "x", "limit": True}, "f.yaml: limit: expected a number (an integer) or null, got True"),
        ({"name": "x", "inner": {"gian": 1}}, "f.yaml: inner: unknown key 'gian' (known: gain, size)"),
        ({"inner": {}}, "f.yaml: missing key 'name'"),
        ({"name": 3}, "f.yaml: name: expected a string, got 3"),
    ],
)
def test_reader_errors_name_file_key_and_expected_form(data, message):
    with pytest.raises(ConfigError) as info:
        from_mapping(Outer, data, "f.yaml")
    assert str(info.value) == message
    assert isinstance(info.value, ValueError) and isinstance(info.value, TasegError)


# --- the four kinds of config -------------------------------------------------------------------
def _write(path, text):
    path.write_text(text)
    return str(path)


def test_model_config_file_errors(tmp_path):
    bad = _write(tmp_path / "bad.yaml", "base: tiny\ndffm_hidden: wide\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: dffm_hidden: expected a number \(an integer\), got 'wide'"):
        get_config(bad)
    neg = _write(tmp_path / "neg.yaml", "base: tiny\nencoder: {embed_dim: -64}\n")
    with pytest.raises(ConfigError, match=r"neg.yaml: encoder.embed_dim: must be in \[1, 4096\], got -64"):
        get_config(neg)
    good = _write(tmp_path / "good.yaml", "base: tiny\nencoder: {depth: 2, global_attn_indexes: [1]}\nlora_alpha: 2\n")
    cfg = get_config(good)
    assert (cfg.encoder.depth, cfg.encoder.global_attn_indexes, cfg.lora_alpha, cfg.name) == (2, (1,), 2.0, "tiny:good")
    assert type(cfg).from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "crop, why",
    [("[0,0]", "values must be >= 16 and multiples of 16"), ("[-32,32]", "values must be >= 16"),
     ("32", r"expected \[height, width\]")],
)
def test_recipe_crop_errors(crop, why):
    with pytest.raises(ConfigError, match=rf"mfnet.yaml: data.crop: {why}"):
        load_recipe("mfnet", [f"data.crop={crop}"])


def test_dataset_config_errors(tmp_path):
    text = "classes: [a, b]\nmetric: {eval_resolution: [0, 640]}\n"
    with pytest.raises(ConfigError, match=r"classes.yaml: metric.eval_resolution: values must be >= 1, got \[0, 640\]"):
        load_dataset_config(_write(tmp_path / "classes.yaml", text))
    text = "classes: [a, b]\nthermal: {normalization: {mode: fixed, low: cold}}\n"
    with pytest.raises(ConfigError, match=r"thermal.normalization.low: expected a number, got 'cold'"):
        load_dataset_config(_write(tmp_path / "classes.yaml", text))
    with pytest.raises(ConfigError, match=r"unknown key 'day_nigth'"):
        load_dataset_config(_write(tmp_path / "classes.yaml", "classes: [a, b]\nday_nigth: id_suffix\n"))
    cfg = load_dataset_config(_write(tmp_path / "classes.yaml", "classes: [a, b]\nignore_index: 255\n"))
    assert cfg.metric.nan_policy == "nanmean" and cfg.label_map.ignore == (255,)


def test_node_parameters_from_ros_values():
    values = {**NodeParams.defaults(), "checkpoint": "m", "slop": 0, "thermal_range": array.array("q", [0, 65535]),
              "thermal_homography": None, "thermal_normalization": "fixed"}
    params = NodeParams.from_parameters(values)
    params.validate()
    assert params.slop == 0.0 and params.thermal_range == [0.0, 65535.0] and params.thermal_homography == []
    with pytest.raises(ConfigError) as info:
        NodeParams.from_parameters({"slop": "fast"}, base=params)
    assert str(info.value) == "parameter 'slop' = 'fast': expected a value like 0.02"
    with pytest.raises(ConfigError) as info:
        NodeParams.from_parameters({"overlay_alpha": 1.5}, base=params)
    assert str(info.value) == "parameter 'overlay_alpha' = 1.5: must be in [0, 1]"
    assert NodeParams.from_parameters({"overlay_alpha": 1}, base=params).overlay_alpha == 1.0


# --- through the command line: one line on stderr, exit 2, nothing written ----------------------
def _cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.err


def test_cli_reports_bad_model_configs_in_one_line(tmp_path, capsys):
    bad = _write(tmp_path / "bad.yaml", "base: tiny\nencoder: {embed_dim: -64}\n")
    for argv in (["info", "--config", bad], ["init", "--config", bad, "--classes", "mfnet", "-o", str(tmp_path / "m.safetensors")]):
        code, err = _cli(capsys, *argv)
        assert code == 2 and err.strip() == f"taseg {argv[0]}: error: {bad}: encoder.embed_dim: must be in [1, 4096], got -64"
    assert not (tmp_path / "m.safetensors").exists()
    code, err = _cli(capsys, "info", "--config", _write(tmp_path / "s.yaml", "base: tiny\ntext_dim: many\n"))
    assert code == 2 and "s.yaml: text_dim: expected a number" in err and "Traceback" not in err


@pytest.mark.parametrize("crop", ["[0,0]", "[-32,32]", "32"])
def test_cli_reports_bad_recipe_values_in_one_line(crop, tmp_path, capsys):
    code, err = _cli(capsys, "train", "demo_tiny", f"data.crop={crop}", "--data-root", str(tmp_path), "--output", str(tmp_path / "run"))
    assert code == 2 and err.count("\n") == 1 and "demo_tiny.yaml: data.crop: " in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


# --- shared option groups ---------------------------------------------------------------------
def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub = subparsers.choices[name]
    if name == "bag":
        sub = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction)).choices["eval"]
    return sub


@pytest.mark.parametrize("command", ["predict", "eval", "bench", "bag"])
def test_every_command_spells_device_options_the_same(command):
    actions = {a.dest: a for a in _subparser(command)._actions}
    assert actions["device"].default == "auto"
    assert tuple(actions["precision"].choices) == tuple(PRECISIONS)
    if command != "bench":
        assert {"thermal_normalization", "thermal_range", "thermal_percentiles"} <= set(actions)
        assert all(mode in actions["thermal_normalization"].help for mode in THERMAL_MODES)


def test_thermal_options_build_one_normalisation():
    parser = argparse.ArgumentParser()
    add_thermal_options(parser, default_help="auto")

    def norm(*argv):
        return thermal_norm_from_args(parser.parse_args(list(argv)))

    assert norm() is None
    assert norm("--thermal-range", "0", "65535") == ThermalNormalization("fixed", 0.0, 65535.0)
    assert norm("--thermal-percentiles", "2", "98") == ThermalNormalization("percentile", percentiles=(2.0, 98.0))
    assert norm("--thermal-normalization", "minmax") == ThermalNormalization("minmax")
    assert norm("--thermal-norm", "fixed:10:20") == ThermalNormalization("fixed", 10.0, 20.0)  # the older spelling
    with pytest.raises(ValueError, match="fixed range needs high > low"):
        norm("--thermal-range", "5", "1")
    with pytest.raises(SystemExit):
        norm("--thermal-normalization", "log")


def test_device_auto_resolves_to_an_available_device():
    import torch

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cuda:1") == "cuda:1"
