"""`taseg bench`: the end-to-end quick run (model, plain SAM encoder, FLOPs, memory, node over DDS)
and the parts its figures rest on (weight sharing with plain SAM, FLOP counts, stage arithmetic)."""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import warnings

import numpy as np
import pytest
import torch

from taseg_ros.bench.memory import measure_peak
from taseg_ros.bench.models import (
    STAGES,
    attach_stage_clock,
    build_random_model,
    count_flops,
    derive_stages,
    plain_encoder_forward,
    plain_sam_encoder,
)
from taseg_ros.bench.mode import prepared_inputs
from taseg_ros.bench.report import _ms, format_report
from taseg_ros.bench.run import BenchOptions, run_benchmark
from taseg_ros.bench.timing import StageClock, auto_repeats
from taseg_ros.timing import summarize_ms
from taseg_ros.classes import load_classes
from taseg_ros.cli import bench as bench_cli
from taseg_ros.inference import Segmenter
from taseg_ros.model.config import get_config


def _bench_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taseg")
    bench_cli.register(parser.add_subparsers(dest="command"))
    return parser


def _reject_nan(token: str):
    raise AssertionError(f"JSON contains {token}")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """`taseg bench --config tiny --quick --json PATH`, run once for the tests below."""
    pytest.importorskip("rclpy")
    path = tmp_path_factory.mktemp("bench") / "tiny.json"
    args = _bench_parser().parse_args(["bench", "--config", "tiny", "--quick", "--json", str(path)])
    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert args.func(args) == 0
    return json.loads(path.read_text(), parse_constant=_reject_nan), out.getvalue()


def test_quick_run_reports_every_figure(quick_run):
    result, table = quick_run
    assert result["config"] == "tiny" and result["frame_hw"] == [480, 640]
    assert "RANDOM" in result["weights"] and "RANDOM frozen weights" in table
    assert set(result["modes"]) == {"sam1024", "native"}
    assert result["modes"]["sam1024"]["input_hw"] == [1024, 1024]
    assert result["modes"]["native"]["input_hw"] == [480, 640]
    for mode in result["modes"].values():
        assert mode["repeats"] == 3
        for name in ("predict", "forward", "plain_encoder", "taseg_encoder", "pre_post"):
            stats = mode["latency"][name]
            assert stats["count"] == 3 and 0 < stats["min"] <= stats["median"] <= stats["max"]
        assert mode["fps"] > 0 and mode["throughput"]["fps"] > 0
        for ratio in (*mode["overhead_vs_plain_encoder"].values(), *mode["efficiency_vs_matmul"].values()):
            assert math.isfinite(ratio["median"]) and ratio["median"] > 0 and ratio["n"] == 3
        assert set(mode["shares"]) == set(STAGES)
        assert sum(mode["shares"].values()) == pytest.approx(1.0, abs=1e-9)
        # Hook intervals nest, so no stage is negative even on a noisy machine.
        assert all(v >= 0 for v in mode["stages_ms"].values())
        assert mode["flops"]["forward"] > mode["flops"]["taseg_encoder"] > mode["flops"]["plain_encoder"] > 0
        assert mode["matmul"]["flops_per_s"] > 0 and mode["matmul"]["n"] == 512
        assert all(v > 0 for v in mode["achieved_flops_per_s"].values())
        assert mode["memory"]["peak_bytes"] > 0
    for row in ("TASeg forward / plain SAM enc", "share of forward time", "dense matmul GFLOP/s", "peak memory"):
        assert row in table
    latency_row = next(line for line in table.splitlines() if line.startswith("latency, predict()"))
    assert latency_row.count(" ms") == 2 and " - " not in latency_row + " ", latency_row  # was "-" per mode


def test_quick_run_drives_the_real_node(quick_run):
    result, table = quick_run
    node = result["node"]
    assert node["processed"] == node["frames"] == 3
    assert node["errors"] == {} and node["dropped"] == 0
    assert node["fps"] > 0 and node["model_fps"] > 0
    assert math.isfinite(node["ratio"]) and node["ratio"] > 0
    assert node["ratio"] == pytest.approx(node["fps"] / node["model_fps"])
    assert "node through DDS" in table and "vs model alone" in table


def test_skip_node_and_bad_options(tmp_path):
    parser = _bench_parser()
    with pytest.raises(ValueError, match="fp16 is not supported on the CPU"):
        args = parser.parse_args(["bench", "--precision", "fp16", "--device", "cpu"])
        args.func(args)
    with pytest.raises(ValueError, match="unknown model config"):
        args = parser.parse_args(["bench", "--config", "vit_x"])
        args.func(args)
    (tmp_path / "afile").write_text("")
    with pytest.raises(ValueError, match="afile is a file"):  # checked before any timing (taseg_ros.outputs)
        args = parser.parse_args(["bench", "--json", str(tmp_path / "afile" / "out.json")])
        args.func(args)
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "--repeats", "0"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_benchmark(
            BenchOptions(config="tiny", height=64, width=96, resolutions=("native",), node=False, quick=True),
            log=lambda _: None,
        )
    assert result["node"] == {"skipped": "--skip-node"}
    assert list(result["modes"]) == ["native"] and result["modes"]["native"]["input_hw"] == [64, 96]
    # The text report shows the latencies the JSON holds (it printed "-" for each after a key rename).
    table = format_report(result)
    for label, key in (("latency, predict()", "predict"), ("  forward", "forward"), ("plain SAM encoder", "plain_encoder")):
        row = next(line for line in table.splitlines() if line.startswith(label))
        median = result["modes"]["native"]["latency"][key]["median"]
        assert row.rstrip().endswith(" ms") and _ms(result["modes"]["native"]["latency"][key]).split()[0] in row, row
        assert median > 0


def test_latency_cell_shows_median_and_half_iqr():
    assert _ms(summarize_ms([0.004, 0.001, 0.003, 0.002, 0.005])) == "3.00 ±1.00 ms"
    assert _ms(summarize_ms([12.0, 14.0, 16.0])) == "14.0 ±1.0 s"
    assert _ms(summarize_ms([])) == "-" and _ms(None) == "-"


@pytest.mark.parametrize("mode", ["sam1024", "native"])
def test_plain_sam_encoder_shares_the_frozen_weights(mode):
    """At initialisation DFFM's output layer and LoRA's B are zero, so TASeg's encoder must give
    exactly what segment_anything's encoder gives with the mapped weights; once DFFM is
    non-zero, they differ (the comparison is against SAM, not against TASeg itself)."""
    cfg = get_config("tiny").replace(resolution=mode)
    model = build_random_model(cfg, load_classes("mfnet"), seed=3)
    plain = plain_sam_encoder(model)
    assert plain.blocks[0].attn.qkv.weight.data_ptr() == model.image_encoder.vit.blocks[0].attn.qkv.qkv.weight.data_ptr()
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (120, 200, 3), dtype=np.uint8)
    thermal = rng.integers(0, 65535, (120, 200), dtype=np.uint16)
    rgb_t, thermal_t = prepared_inputs(Segmenter(model), rgb, thermal)
    with torch.inference_mode():
        reference = plain_encoder_forward(plain, rgb_t)
        torch.testing.assert_close(model.image_encoder(rgb_t, thermal_t), reference, rtol=0, atol=0)
    with torch.no_grad():
        model.image_encoder.dffm[0].conv_out.bias.fill_(0.5)
    with torch.inference_mode():
        assert not torch.allclose(model.image_encoder(rgb_t, thermal_t), reference)


@pytest.mark.parametrize("mode,padded_hw", [("sam1024", (1024, 1024)), ("native", (480, 640))])
def test_flop_count_covers_exactly_the_tasegs_additions(mode, padded_hw):
    """TASeg encoder FLOPs - plain SAM FLOPs = thermal patch embed + DFFM + q/v LoRA, by hand."""
    cfg = get_config("tiny").replace(resolution=mode)
    flops = count_flops(cfg, load_classes("mfnet"), padded_hw)
    dim, hidden, rank, window = cfg.encoder.embed_dim, cfg.dffm_hidden, cfg.encoder_lora_rank, cfg.encoder.window_size
    grid_h, grid_w = padded_hw[0] // 16, padded_hw[1] // 16
    tokens = grid_h * grid_w
    window_tokens = (-(-grid_h // window) * window) * (-(-grid_w // window) * window)  # windows pad the grid
    thermal_embed = 2 * tokens * dim * 16 * 16
    se = 2 * 2 * hidden * (hidden // cfg.se_reduction)  # on the pooled (1x1) features
    dffm = cfg.encoder.depth * (2 * tokens * 3 * dim * hidden + se)
    lora = sum(
        2 * 2 * 2 * (tokens if i in cfg.encoder.global_attn_indexes else window_tokens) * dim * rank
        for i in range(cfg.encoder.depth)
    )
    assert flops["taseg_encoder"] - flops["plain_encoder"] == thermal_embed + dffm + lora


def test_stage_clock_partitions_a_real_forward():
    cfg = get_config("tiny")
    model = build_random_model(cfg, load_classes("mfnet"), seed=0)
    clock = StageClock(torch.device("cpu"))
    attach_stage_clock(model, clock)
    rgb = torch.randn(1, 3, 64, 96)
    thermal = torch.rand(1, 1, 64, 96)
    with torch.inference_mode():
        model(rgb, thermal)  # clock disabled: nothing recorded
        assert clock.collect() is None
        clock.enabled = True
        model(rgb, thermal)
        clock.enabled = False
    record = clock.collect()
    assert {"forward", "encoder", "thermal_embed", "dffm", "qkv_with_lora", "qkv_frozen", "decoder_total", "text_head"} <= set(record)
    stages = derive_stages(record)
    assert list(stages) == list(STAGES)
    assert sum(stages.values()) == pytest.approx(record["forward"], rel=1e-9)
    assert all(v >= 0 for v in stages.values())
    clock.detach()
    clock.enabled = True
    with torch.inference_mode():
        model(rgb, thermal)
    assert clock.collect() is None  # hooks removed


def test_derive_stages_arithmetic():
    record = {"forward": 10.0, "encoder": 6.0, "thermal_embed": 0.5, "dffm": 1.0, "qkv_with_lora": 2.0,
              "qkv_frozen": 1.5, "decoder_total": 3.0, "text_head": 0.75}
    assert derive_stages(record) == {
        "sam_vit": 4.0, "thermal_embed": 0.5, "dffm": 1.0, "lora": 0.5, "decoder": 2.25, "text_head": 0.75, "upsample": 1.0,
    }


def test_summaries_and_repeat_budget():
    stats = summarize_ms([0.004, 0.001, 0.003, 0.002, 0.005])
    assert {k: stats[k] for k in ("median", "q1", "q3", "min", "max", "count")} == {
        "median": 3.0, "q1": 2.0, "q3": 4.0, "min": 1.0, "max": 5.0, "count": 5}
    assert auto_repeats(2.0, 30.0) == 15
    assert auto_repeats(60.0, 30.0) == 3  # never fewer than 3 rounds
    assert auto_repeats(0.001, 30.0) == 50


def test_peak_memory_sees_a_large_allocation():
    size = 256 * 2**20

    def allocate():
        block = np.ones(size, dtype=np.uint8)  # ones: the pages are written, hence resident
        return int(block[::4096].sum())

    memory = measure_peak(allocate, torch.device("cpu"))
    if memory["kind"] != "rss_peak_during_call":
        pytest.skip("this kernel does not let the peak resident set be reset")
    assert memory["delta_bytes"] >= 0.9 * size


def test_backends_are_timed_side_by_side():
    """--backends: every runtime exported, verified and timed in the same rounds as eager fp32, with the
    precision each one reports, argmax agreement with eager fp32, and the merged-LoRA encoder ratio."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    from taseg_ros.bench.backends import plan_variants
    from taseg_ros.bench.report import backend_lines
    from taseg_ros.devices import runnable_precision

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_benchmark(
            BenchOptions(config="tiny", height=64, width=96, resolutions=("native",), node=False, quick=True,
                         backends=("torch", "onnxruntime", "openvino")),
            log=lambda _: None,
        )
    section = result["backends"]["native"]
    variants = section["variants"]
    assert list(variants) == [v.name for v in plan_variants(("torch", "onnxruntime", "openvino"), ("fp32", "bf16"), False)]
    expected = {"torch fp32", "torch bf16", "torch fp32 merged", "onnxruntime fp32", "openvino CPU fp32", "openvino CPU bf16"}
    if runnable_precision("bf16", "cpu")[1]:  # eager bf16 only where this CPU runs it natively
        expected.discard("torch bf16")
    assert expected <= set(variants)
    for name, v in variants.items():
        assert v["latency"]["count"] == 3 and v["fps"] > 0 and math.isfinite(v["speedup_vs_eager_fp32"]["median"])
        assert v["precision"] in ("fp32", "bf16") and v["precision"] in v["ran"]
        if v["requested_precision"] == "fp32":
            assert v["precision"] == "fp32" and v["argmax_agreement_vs_eager_fp32"] >= 0.999, name
    assert variants["torch fp32"]["speedup_vs_eager_fp32"]["median"] == 1.0
    assert section["exports"]["onnx-fp32"]["verification"]["argmax_agreement"] >= 0.999
    encoder = section["merged_encoder"]
    assert encoder["precision"] == "fp32" and encoder["merged_vs_plain"]["n"] == 3
    table = "\n".join(backend_lines("native", section))
    assert "| onnxruntime fp32 | onnxruntime on CPUExecutionProvider, fp32" in table and "LoRA merged" in table
    with pytest.raises(ValueError, match="unknown"):
        BenchOptions(backends=("tflite",))


def test_each_runtime_is_compared_with_the_eager_run_of_the_precision_it_ran(monkeypatch):
    """On an AVX2-only CPU (injected: this one has avx512_bf16) OpenVINO runs a bf16 hint as f32 (forced
    here as it would choose) and eager bf16 is emulated: the "vs eager, same precision" column compared
    that f32 run with emulated eager bf16 (11.1x). Now eager is timed only natively, the row says what
    OpenVINO ran and is compared with eager fp32, and `--precision bf16` runs fp32 and says so."""
    pytest.importorskip("openvino")
    from taseg_ros import devices
    from taseg_ros.bench.report import backend_lines, format_report
    from taseg_ros.runtime import openvino_backend

    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset({"avx2", "fma"}), raising=False)
    monkeypatch.setattr(openvino_backend, "HINTS", {"fp32": "f32", "bf16": "f32", "fp16": "f32"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_benchmark(
            BenchOptions(config="tiny", height=64, width=96, resolutions=("native",), node=False, quick=True,
                         precision="bf16", backends=("torch", "openvino")),
            log=lambda _: None,
        )
    assert result["precision"] == "fp32" and result["requested_precision"] == "bf16"
    assert "this CPU has no bf16 instructions" in result["precision_note"] and "precision: bf16 asked" in format_report(result)
    variants = result["backends"]["native"]["variants"]
    assert "torch bf16" not in variants and "torch bf16 merged" not in variants
    row = variants["openvino CPU bf16"]
    assert row["precision"] == "fp32" and row["precision_note"].startswith("bf16 asked, OpenVINO runs fp32")
    assert row["op_precisions"] == {"f32": row["op_precisions"]["f32"]}  # OpenVINO's own account: all f32
    assert row["speedup_vs_eager_same_precision"] == row["speedup_vs_eager_fp32"]  # eager fp32: what it ran
    assert "| openvino CPU bf16 | openvino on CPU, fp32, input 96x64 (bf16 asked" in "\n".join(
        backend_lines("native", result["backends"]["native"]))
