"""The benchmark's printed table: one column per resolution mode, footnotes on method."""
from __future__ import annotations

import math
import textwrap
from typing import Any

from taseg_ros.bench.models import STAGE_LABELS, STAGES
from taseg_ros.devices import PRECISIONS

MODE_TITLES = {"sam1024": "SAM 1024 pad", "native": "native"}


def _ms(stats: dict[str, float] | None) -> str:
    """A timing.summarize_ms summary as 'median ±IQR/2 unit' ('-' when it has no samples)."""
    if not stats or not stats.get("count"):
        return "-"
    median = stats["median"]
    half_iqr = (stats["q3"] - stats["q1"]) / 2
    unit, scale = ("s", 1e-3) if median >= 10_000 else ("ms", 1.0)
    median, half_iqr = median * scale, half_iqr * scale
    decimals = 0 if median >= 100 else 1 if median >= 10 else 2 if median >= 1 else 3
    return f"{median:.{decimals}f} ±{half_iqr:.{decimals}f} {unit}"


def _ratio(stats: dict[str, float] | None, unit: str = "x") -> str:
    if not stats or not stats.get("n") or not math.isfinite(stats["median"]):
        return "-"
    if unit == "%":
        return f"{stats['median']:.1%} [{stats['min']:.0%}-{stats['max']:.0%}]"
    return f"{stats['median']:.3g}{unit} [{stats['min']:.3g}-{stats['max']:.3g}]"


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    return f"{value / 2**20:.0f} MiB" if value < 10 * 2**30 else f"{value / 2**30:.1f} GiB"


def _g(value: float | None, scale: float = 1e9, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value / scale:.{digits}g}"


def format_report(result: dict[str, Any]) -> str:
    modes = result["modes"]
    lines = _header_lines(result) + [""] + _mode_table(modes)
    lines.append(f"model parameters + buffers: {_bytes(result['model_bytes'])}; "
                 f"process peak RSS: {_bytes(result['process_peak_rss_bytes'])}")

    lines.append("")
    lines.extend(_node_lines(result.get("node", {})))
    for mode, section in result.get("backends", {}).items():
        lines.append("")
        lines.extend(backend_lines(mode, section))
    lines.extend(_vit_h_lines(result))
    lines.append("")
    lines.extend(_method_lines(modes))
    return "\n".join(lines)


def _header_lines(result: dict[str, Any]) -> list[str]:
    env = result["environment"]
    lines = [
        f"taseg bench: config {result['config']}, {result['frame_hw'][1]}x{result['frame_hw'][0]} frames, "
        f"{result['device']} {result['precision']}, torch {env['torch']}, {env['torch_threads']} threads"
        + (f", {env['gpu']}" if "gpu" in env else f", {env.get('cpu', '')}")
        + (f" ({' '.join(env['cpu_flags'])})" if env.get("cpu_flags") else ""),
        f"weights: {result['weights']}",
    ]
    if result.get("precision_note"):
        lines.append(f"precision: {result['precision_note']}")
    if "loadavg_start" in env:
        lines.append(
            f"machine load (1-min loadavg, {env['cpu_count']} CPUs): {env['loadavg_start'][0]:.1f} at start, "
            f"{env.get('loadavg_end', [math.nan])[0]:.1f} at end"
        )
    return lines


def _mode_table(modes: dict[str, Any]) -> list[str]:
    """One column per resolution mode: latency, overhead against plain SAM, stage shares, FLOP/s, memory."""
    names = list(modes)
    lines: list[str] = []
    width = 36
    col = 28

    def row(label: str, values: list[str]) -> None:
        lines.append(f"{label:<{width}}" + "".join(f"{v:>{col}}" for v in values))

    row("", [f"{MODE_TITLES.get(n, n)} ({modes[n]['input_hw'][1]}x{modes[n]['input_hw'][0]})" for n in names])
    row("timed rounds", [str(modes[n]["repeats"]) for n in names])
    row("latency, predict() (median ±IQR/2)", [_ms(modes[n]["latency"]["predict"]) for n in names])
    row("  forward", [_ms(modes[n]["latency"]["forward"]) for n in names])
    if all("pre_post" in modes[n]["latency"] for n in names):
        row("  pre/post-processing", [_ms(modes[n]["latency"]["pre_post"]) for n in names])
    row("throughput", [f"{modes[n]['throughput']['fps']:.3g} fps (batch {modes[n]['throughput']['batch']})" for n in names])
    row("plain SAM encoder", [_ms(modes[n]["latency"]["plain_encoder"]) for n in names])
    row("TASeg encoder", [_ms(modes[n]["latency"]["taseg_encoder"]) for n in names])
    row("TASeg forward / plain SAM enc", [_ratio(modes[n]["overhead_vs_plain_encoder"]["forward"]) for n in names])
    row("TASeg encoder / plain SAM enc", [_ratio(modes[n]["overhead_vs_plain_encoder"]["encoder"]) for n in names])
    lines.append("share of forward time:")
    for stage in STAGES:
        row(f"  {STAGE_LABELS[stage]}", [f"{modes[n]['shares'][stage]:.1%} ({modes[n]['stages_ms'][stage]:.3g} ms)" for n in names])
    row("  (sum of stages / forward)", [f"{modes[n]['stages_sum_vs_forward']:.3f}" for n in names])
    row("GFLOP/frame: TASeg enc/plain", [f"{_g(modes[n]['flops']['taseg_encoder'])} / {_g(modes[n]['flops']['plain_encoder'])}" for n in names])
    row("GFLOP/frame: whole forward", [_g(modes[n]["flops"]["forward"]) for n in names])
    row("achieved GFLOP/s: TASeg enc", [_g(modes[n]["achieved_flops_per_s"]["taseg_encoder"]) for n in names])
    row("achieved GFLOP/s: plain enc", [_g(modes[n]["achieved_flops_per_s"]["plain_encoder"]) for n in names])
    row(
        "dense matmul GFLOP/s",
        [f"{_g(modes[n]['matmul']['flops_per_s'])} ({modes[n]['matmul']['n']}^2 {modes[n]['matmul']['dtype']})" for n in names],
    )
    row("TASeg enc FLOP/s / matmul", [_ratio(modes[n]["efficiency_vs_matmul"]["taseg_encoder"], "%") for n in names])
    row("plain enc FLOP/s / matmul", [_ratio(modes[n]["efficiency_vs_matmul"]["plain_encoder"], "%") for n in names])
    row("peak memory, one predict()", [_bytes(modes[n]["memory"]["peak_bytes"]) for n in names])
    row("  growth during the call", [_bytes(modes[n]["memory"]["delta_bytes"]) for n in names])
    if any("precisions" in modes[n] for n in names):
        for precision in PRECISIONS:
            row(f"predict {precision}", [_fps_cell(modes[n].get("precisions", {}).get(precision)) for n in names])
        row("forward, wall (synchronised)", [_ms(modes[n]["latency"].get("forward_wall")) for n in names])
    if any("compiled" in modes[n] for n in names):
        row("predict, torch.compile", [_fps_cell(modes[n].get("compiled")) for n in names])
        row("  speedup over eager", [_ratio(modes[n].get("compiled", {}).get("speedup")) for n in names])
    return lines


def _vit_h_lines(result: dict[str, Any]) -> list[str]:
    if "vit_h" not in result:
        return []
    vit_h = result["vit_h"]
    lines = ["", f"ViT-H at {result['frame_hw'][1]}x{result['frame_hw'][0]} (paper: {vit_h['paper_fps_rtx3090']} fps on an RTX 3090):"]
    for mode, by_precision in vit_h["modes"].items():
        lines.append(f"  {MODE_TITLES.get(mode, mode):<14}" + "  ".join(f"{p} {v['fps']:.2f} fps" for p, v in by_precision.items()))
    return lines


def _method_lines(modes: dict[str, Any]) -> list[str]:
    memory_kind = {m["memory"]["kind"] for m in modes.values()}
    clock = "CUDA events" if any(m["timing_clock"] == "cuda_events" for m in modes.values()) else "wall clock"
    if "cuda_max_memory_allocated" in memory_kind:
        memory = "torch.cuda.max_memory_allocated over one predict (tensors only); growth = peak minus tensors before."
    elif memory_kind == {"rss_peak_during_call"}:
        memory = ("resident-set high-water mark over one predict (reset via /proc/self/clear_refs); growth = peak "
                  "minus the resident set before the call.")
    else:
        memory = "the process's lifetime resident-set peak (this kernel cannot reset it)."
    method = (
        "All figures come from this one process. Candidates (predict, plain SAM encoder, matmul, ...) run in "
        "interleaved rounds after warm-up, so each round's ratios compare runs made seconds apart; ratios are "
        "per-round medians [min-max], latencies medians ± half the interquartile range. Every timed call runs in "
        "one long-lived worker thread, as the node's inference thread runs the model. "
        "predict() is the Python API on a uint8 RGB + uint16 thermal pair (normalise, pad, forward, logits back to "
        "the frame, argmax). The plain SAM encoder is segment_anything's ImageEncoderViT of the same size with the "
        "same frozen weights on the same padded input (at native size with its position table resampled, as TASeg "
        f"does). Stage times come from module hooks inside the timed forward passes ({clock}): SAM ViT = encoder "
        "minus thermal embed, DFFM and LoRA (LoRA = LoRA-wrapped qkv minus the frozen qkv inside it); decoder = mask "
        "decoder minus text head; shares are stage medians over their sum. FLOPs: torch.utils.flop_counter on a "
        "shape-only model (2 per multiply-add); efficiency = achieved encoder FLOP/s / square-matmul FLOP/s, per "
        f"round. Peak memory: {memory}"
    )
    return ["method:"] + textwrap.wrap(method, width=108, initial_indent="  ", subsequent_indent="  ", break_on_hyphens=False)


def _fps_cell(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "-"
    return f"{entry['fps']:.3g} fps ({entry['latency']['median']:.3g} ms)"


def _node_lines(node: dict[str, Any]) -> list[str]:
    if "skipped" in node:
        return [f"node through DDS: skipped ({node['skipped']})"]
    if "failed" in node:
        return [f"node through DDS: FAILED ({node['failed']})"]
    if not node:
        return []
    lines = [
        f"node through DDS (rclpy, {node['mode']} resolution, {node['processed']} frames after 3 warm-up, "
        f"one pair in flight, {node['dropped']} dropped, errors {node['errors'] or 0}):",
        f"  node {node['fps']:.3g} fps vs model alone {node['model_fps']:.3g} fps -> ratio {node['ratio']:.3f}",
        f"  (model alone, same checkpoint: predict() back to back, {node['model_fps_before']:.3g} fps before "
        f"and {node['model_fps_after']:.3g} fps after the node run)",
    ]
    for name in ("inference", "overhead", "prepare", "publish", "latency"):  # as bench_node reports them
        stats = node.get(name, {})
        if stats:
            lines.append(f"  {name:<10} mean {stats['mean']:.4g} ms, p95 {stats['p95']:.4g} ms, max {stats['max']:.4g} ms")
    return lines


def backend_lines(mode: str, section: dict[str, Any]) -> list[str]:
    """The runtime comparison of one resolution mode (bench/backends.py) as a Markdown table."""
    frames = ", ".join(section["agreement_frames"])
    lines = [
        f"runtimes, {MODE_TITLES.get(mode, mode)} ({section['repeats']} interleaved rounds of predict(); speed-ups are "
        "per-round eager-time / runtime-time, median [min-max]; agreement = argmax equal to eager fp32's, over "
        f"{frames}):",
        "",
        "| runtime | ran as | latency | fps | vs eager fp32 | vs eager, precision it ran | argmax agreement |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, v in section["variants"].items():
        agreement = v.get("argmax_agreement_vs_eager_fp32")
        lines.append(
            f"| {name} | {v['ran']} | {_ms(v['latency'])} | {v['fps']:.3g} | {_ratio(v['speedup_vs_eager_fp32'])} | "
            f"{_ratio(v.get('speedup_vs_eager_same_precision'))} | {'-' if agreement is None else f'{agreement:.3%}'} |"
        )
    encoder = section.get("merged_encoder") or {}
    if encoder:
        lines.append("")
        lines.append(
            f"TASeg encoder / plain segment_anything encoder ({encoder['precision']}, same frozen weights): LoRA merged "
            f"{_ratio(encoder['merged_vs_plain'])}, unmerged {_ratio(encoder['unmerged_vs_plain'])}"
        )
    node = section.get("node", {})
    if node and "skipped" not in node:
        lines.append("")
        lines.append("| node through DDS with | node fps | runtime alone fps | ratio |")
        lines.append("|---|---|---|---|")
        for name, n in node.items():
            if "skipped" in n:
                lines.append(f"| {name} | skipped: {n['skipped']} | | |")
            elif "failed" in n:
                lines.append(f"| {name} | FAILED: {n['failed']} | | |")
            else:
                lines.append(f"| {name} | {n['fps']:.3g} | {n['model_fps']:.3g} | {n['ratio']:.3f} |")
    for key, export in section.get("exports", {}).items():
        check = export["verification"]
        lines.append(f"export {key}: verified on {export['frame']}, argmax agreement {check['argmax_agreement']:.4%}, "
                     f"max |logit difference| {check['max_abs_diff']:.2g}")
    return lines
