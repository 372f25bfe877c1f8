#!/usr/bin/env bash
# Every GPU path of taseg_ros in one run (< 8 minutes on one H100/H200), one Markdown + JSON report.
#
#   scripts/gpu_check.sh [OUT_DIR]     # default: $OUT when set (device machines), else ./gpu_check
#
# Random frozen weights (no SAM file needed): the timings are the real architectures'. Steps, each
# under its own time limit so that one slow step cannot eat the others:
#   1. environment: the repo's venv, or the machine's python3 plus the wheels of scripts/gpu_wheels.sh
#      carried in .whl/; onnxruntime-gpu and tensorrt-cu12 where PyPI answers (a machine without it runs
#      what it has and the report says what was missing)
#   2. vit_b, 640x480, native and SAM 1024: eager fp32/bf16/fp16, plain-SAM overhead, stage shares,
#      and ViT-H predict in every precision in both modes
#   3. vit_b native: torch.compile, and the runtimes: ONNX Runtime CUDA EP fp32 and TensorRT EP fp16, a TensorRT fp16 engine,
#      eager fp16 and LoRA-merged, argmax agreement with eager fp32, the node through DDS on CUDA per runtime
#   4. ViT-H native 640x480 with a TensorRT fp16 engine (the >= 20 fps floor; the paper: 4.65 fps on an RTX 3090)
#   5. training memory: ViT-H at each shipped recipe's geometry, predicted vs measured peak, images/s
# Never in CI: it needs an NVIDIA GPU.
set -uo pipefail
cd "$(dirname "$0")/.."

out=${1:-${OUT:-gpu_check}}
mkdir -p "$out"
log="$out/gpu_check.log"
: > "$log"
say() { echo "[gpu_check $(date +%H:%M:%S)] $*" | tee -a "$log" >&2; }
started=$(date +%s)

# --- 1. environment ----------------------------------------------------------------------------
# A device machine has its own python3 with torch and no registry: use the repo's .venv where there
# is one, else that python3 plus the pure-Python wheels scripts/gpu_wheels.sh puts into .whl/ here.
python=.venv/bin/python
if [ ! -x "$python" ]; then
  python=$(command -v python3)
  if compgen -G ".whl/*.whl" >/dev/null; then
    say "installing the carried wheels in .whl/ into /tmp/site"
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >>"$log" 2>&1 \
      || say "carried wheels did not install (see $log)"
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    say "no .venv and no .whl/: run scripts/gpu_wheels.sh on a machine with PyPI and carry .whl"
  fi
fi
pip_fast() { timeout 120 "$python" -m pip install -q --retries 0 --timeout 10 "$@" >>"$log" 2>&1; }  # offline: fail fast
if ! "$python" -c 'import onnxruntime, sys; sys.exit("CUDAExecutionProvider" not in onnxruntime.get_available_providers())' 2>/dev/null; then
  say "installing onnxruntime-gpu (replaces the CPU onnxruntime: both install the same module)"
  if pip_fast onnxruntime-gpu; then
    "$python" -m pip uninstall -y -q onnxruntime >>"$log" 2>&1
    pip_fast --force-reinstall --no-deps onnxruntime-gpu
  else
    say "onnxruntime-gpu not installed: the ONNX Runtime CUDA/TensorRT rows will say why"
  fi
fi
if ! "$python" -c 'import tensorrt' 2>/dev/null; then
  say "installing tensorrt-cu12"
  pip_fast tensorrt-cu12 || say "tensorrt-cu12 not installed: TensorRT rows will say why"
fi
# ONNX Runtime's TensorRT EP loads libnvinfer from the tensorrt wheel's folder.
trt_libs=$("$python" -c 'import os, tensorrt_libs; print(os.path.dirname(tensorrt_libs.__file__))' 2>/dev/null || true)
[ -n "$trt_libs" ] && export LD_LIBRARY_PATH="$trt_libs:${LD_LIBRARY_PATH:-}"
"$python" - >"$out/environment.json" 2>>"$log" <<'PY'
import json, platform
import torch
env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
       "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
for name in ("onnxruntime", "tensorrt", "openvino"):
    try:
        module = __import__(name)
        env[name] = module.__version__
    except Exception as exc:  # noqa: BLE001
        env[name] = f"missing ({type(exc).__name__})"
try:
    import onnxruntime
    env["onnxruntime_providers"] = onnxruntime.get_available_providers()
except Exception:  # noqa: BLE001
    pass
print(json.dumps(env, indent=1))
PY
cat "$out/environment.json" | tee -a "$log" >&2
if ! "$python" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  say "CUDA is not available: nothing to check"
  exit 1
fi

# --- 2-4. the benchmarks (each writes its printed report and its JSON) ------------------------
run_step() {  # name, time limit (s), taseg bench arguments...
  local name=$1 limit=$2
  shift 2
  say "step $name: taseg bench $*"
  local t0=$(date +%s)
  timeout --signal=INT --kill-after=20 "$limit" "$python" -m taseg_ros.cli bench "$@" --json "$out/$name.json" --force \
    >"$out/$name.txt" 2>>"$log"
  local rc=$?
  say "step $name: exit $rc after $(( $(date +%s) - t0 )) s"
  echo "$rc" >"$out/$name.rc"
}
# Time limits add up to 7.5 minutes (60 + 170 + 130 + 90 s); engine builds (TensorRT, ONNX Runtime's
# TensorRT EP) dominate.
run_step vit_b_torch 60 --config vit_b --device cuda --resolution both --precision fp32 --repeats 5 --skip-node
run_step vit_b_runtimes 170 --config vit_b --device cuda --resolution native --compile --backends torch,onnxruntime,tensorrt \
  --backend-precisions fp16 --repeats 10 --node-frames 30 --no-vit-h
run_step vit_h_tensorrt 130 --config vit_h --device cuda --resolution native --backends tensorrt \
  --backend-precisions fp16 --repeats 10 --skip-node --no-vit-h
# Training memory: vit_h at each shipped recipe's crop and micro-batch, two optimiser steps, the
# planner's predicted peak against torch.cuda.max_memory_allocated, images/s (train/gpu_check.py;
# ~25 s a recipe expected, not yet timed on a GPU; rows are written as they finish).
say "step train_memory: python -m taseg_ros.train.gpu_check"
t0=$(date +%s)
timeout --signal=INT --kill-after=20 90 "$python" -m taseg_ros.train.gpu_check --out "$out" >"$out/train_memory.txt" 2>>"$log"
echo "$?" >"$out/train_memory.rc"
say "step train_memory: exit $(cat "$out/train_memory.rc") after $(( $(date +%s) - t0 )) s"

# --- report ------------------------------------------------------------------------------------
"$python" - "$out" "$(( $(date +%s) - started ))" >>"$log" 2>&1 <<'PY'
import json, sys
from pathlib import Path
out, seconds = Path(sys.argv[1]), int(sys.argv[2])
steps = ("vit_b_torch", "vit_b_runtimes", "vit_h_tensorrt", "train_memory")
report = {"environment": json.loads((out / "environment.json").read_text()), "seconds": seconds, "steps": {}}
md = ["# taseg_ros GPU check", "", f"{report['environment'].get('gpu')}, torch {report['environment'].get('torch')}, "
      f"CUDA {report['environment'].get('cuda')}, onnxruntime {report['environment'].get('onnxruntime')}, "
      f"TensorRT {report['environment'].get('tensorrt')}; {seconds} s in all. RANDOM frozen weights (timing only).", ""]
for step in steps:
    rc = (out / f"{step}.rc").read_text().strip() if (out / f"{step}.rc").exists() else "not run"
    data = json.loads((out / f"{step}.json").read_text()) if (out / f"{step}.json").exists() else None
    report["steps"][step] = {"exit": rc, "result": data}
    md += [f"## {step} (exit {rc})", "", "```"]
    md += [(out / f"{step}.txt").read_text() if (out / f"{step}.txt").exists() else "(no output)", "```", ""]
    if data and "backends" in data:
        for mode, section in data["backends"].items():
            vit = [v for v in section["variants"].items() if v[0].startswith("tensorrt")]
            for name, v in vit:
                md.append(f"- {data['config']} {mode} {name}: {v['fps']:.1f} fps")
        md.append("")
(out / "gpu_check.json").write_text(json.dumps(report, indent=1, allow_nan=False, default=str))
(out / "gpu_check.md").write_text("\n".join(md))
print(f"wrote {out / 'gpu_check.md'} and {out / 'gpu_check.json'}")
PY
say "done in $(( $(date +%s) - started )) s: $out/gpu_check.md, $out/gpu_check.json"
