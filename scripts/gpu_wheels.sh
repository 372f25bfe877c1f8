#!/usr/bin/env bash
# Wheels a GPU device machine lacks (it has python3 3.12 with torch, onnx, onnxruntime, peft, opencv,
# safetensors, but no registry), downloaded here into .whl/ for scripts/gpu_check.sh to install there.
# TensorRT and onnxruntime-gpu are too large to carry; gpu_check.sh says when they are missing.
#   scripts/gpu_wheels.sh [PYTHON_VERSION]     # default 3.12
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-3.12}
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
platforms=()
for n in 2_17 2_27 2_28; do platforms+=(--platform "manylinux_${n}_x86_64"); done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
  "${platforms[@]}" --platform manylinux2014_x86_64 -d .whl \
  segment-anything open_clip_torch ftfy wcwidth rosbags rosbags-image ruamel.yaml ruamel.yaml.clib lz4 \
  backports.zstd apsw
du -sh .whl
