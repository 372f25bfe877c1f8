#!/usr/bin/env bash
# One-command set-up of taseg_ros for development and use outside a ROS 2 workspace.
#
#   scripts/setup.sh            # creates .venv (or uses the active virtual environment) and installs
#                               # taseg_ros (editable) with torch, SAM, open_clip, peft, the ROS 2
#                               # kilted Python wheels and the test tools
#   scripts/setup.sh --no-ros   # the same without the ROS 2 wheels, for machines with ROS 2 from apt
#                               # (source /opt/ros/<distro>/setup.bash first; the venv then sees
#                               # the system rclpy, and no second rclpy is installed)
#   scripts/setup.sh --if-needed  # only when the environment is missing or stale (setup.py or this script
#                               # changed since it was set up; scripts/demo.sh and scripts/test.sh call it)
set -euo pipefail
cd "$(dirname "$0")/.."

with_ros=1
if_needed=0
for arg in "$@"; do
  case "$arg" in
    --no-ros) with_ros=0 ;;
    --if-needed) if_needed=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "setup.sh: $python is $("$python" --version 2>&1); taseg_ros needs Python >= 3.10 (set PYTHON=...)" >&2
  exit 1
fi

venv=${VIRTUAL_ENV:-.venv}
# What the environment was set up from: a change to the dependencies (setup.py) or to this script makes
# it stale. The stamp also keeps the options it was set up with (--no-ros), for --if-needed.
stamp="$venv/.taseg-setup"
inputs=$("$python" -c 'import hashlib, sys; print(hashlib.sha256(b"".join(open(f, "rb").read() for f in sys.argv[1:])).hexdigest())' \
  setup.py setup.cfg scripts/setup.sh)
if [ "$if_needed" = 1 ] && [ -f "$stamp" ]; then
  if [ -x "$venv/bin/python" ] && grep -qx "inputs $inputs" "$stamp"; then
    exit 0
  fi
  grep -qx "ros 0" "$stamp" && with_ros=0  # set up again as it was set up before
fi

if [ -n "${VIRTUAL_ENV:-}" ]; then
  echo "using the active virtual environment $venv"
else
  if [ ! -x "$venv/bin/python" ]; then
    venv_opts=()
    # With ROS 2 from apt, rclpy lives in the system site-packages: let the venv see it.
    [ "$with_ros" = 0 ] && venv_opts+=(--system-site-packages)
    "$python" -m venv "${venv_opts[@]}" "$venv" || {
      echo "setup.sh: could not create a virtual environment; on Debian/Ubuntu: sudo apt install python3-venv" >&2
      exit 1
    }
  fi
fi

# runtimes: ONNX, ONNX Runtime and OpenVINO (CPU), so `taseg export` and the tests cover them;
# cluster: Ray, for `taseg bag eval|select --engine ray` and its tests.
extras="test,runtimes,cluster"
[ "$with_ros" = 1 ] && extras="ros,test,runtimes,cluster"
"$venv/bin/python" -m pip install --upgrade pip
# torch comes from PyPI (its CUDA build also runs on the CPU); torchvision, which
# segment-anything and open_clip import, must match it.
"$venv/bin/python" -m pip install -e ".[$extras]"
"$venv/bin/python" -c "import taseg_ros, torch, segment_anything, open_clip, peft, onnx, onnxruntime, openvino; print('taseg_ros ready, torch', torch.__version__)"
if [ "$with_ros" = 1 ]; then
  "$venv/bin/python" -c "import rclpy, sensor_msgs.msg; print('ROS 2 Python wheels ready')"
fi
printf 'inputs %s\nros %s\n' "$inputs" "$with_ros" > "$stamp"
echo "activate with: source $venv/bin/activate"
