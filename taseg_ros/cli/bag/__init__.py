"""`taseg bag`: rosbag2 tools for your own RGB-T recordings (sqlite3 or mcap).

info     topics, rates, gaps, and how many RGB/thermal pairs match (with the stamp offsets)
extract  matched pairs -> the plain folder dataset (rgb/ thermal/ [labels/] classes.yaml splits)
select   the K frames most worth labelling (uncertain, spread out), written as extract writes them
eval     run a checkpoint on every pair (or at the real rate): label-free quality (confidence,
         entropy, flicker, worst segments), scores against labels when given, timing; compare
         with a baseline model or report and gate the change (exit 1); write a report and an
         output recording with labels/colorized/overlay/confidence and per-frame figure topics;
         over several recordings (or folders of them): one folder each and a fleet report, on
         local worker processes or a Ray cluster (--engine, --workers)
report   rebuild the fleet report of an eval over several recordings from its folders
replay   publish the recording over DDS to a running taseg_node and record what it publishes
calibrate  thermal -> RGB homography from a recording of a calibration target -> node parameters file
refine   refine a registration (or check the plain resize) on ordinary frames, no target needed
"""

from __future__ import annotations

import argparse
import sys

from taseg_ros.cli import main as taseg_main
from taseg_ros.cli.bag import evaluate, extract, info, registration, replay, select

EPILOG = """\
examples:
  taseg bag info run1
  taseg bag extract run1 -o data/mine --hz 2
  taseg bag select run1 run2 --checkpoint model.safetensors -k 50 -o data/to_label
  taseg bag eval run1 --checkpoint model.safetensors --labels data/mine -o eval_run1
  taseg bag eval run1 --checkpoint model.safetensors --mode realtime --no-output-bag
  taseg bag eval run1 --checkpoint new.safetensors --baseline old.safetensors \
      --gate mean_confidence:change_min=-0.02 --gate baseline_agreement:min=0.9 -o eval_new
  taseg bag eval run1 --checkpoint new.safetensors --baseline eval_old/report.json --gates gates.yaml
  taseg bag eval drives/ --checkpoint new.safetensors --workers 2 --gate flicker_compensated:max=0.05 -o fleet_new
  taseg bag eval drives/ --checkpoint new.safetensors --engine ray --gpus-per-worker 1 -o fleet_new
  taseg bag report fleet_new
  taseg bag replay run1 --rate 1.0 -o run1_replay
  taseg bag calibrate board_run --board 9x6 --square 0.04 -o registration.yaml
  taseg bag refine run1 --thermal-homography registration.yaml -o registration_refined.yaml
The RGB and thermal topics are guessed from the recording's image topics when not given
(thermal: a name with thermal/lwir/ir/flir, or a 16-bit/float encoding).
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bag",
        help="rosbag2 tools: info, extract, select, eval, report, replay, calibrate, refine",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="bag_command", metavar="ACTION", required=True)
    for add in (info.add_info, extract.add_extract, select.add_select, evaluate.add_eval, evaluate.add_report,
                replay.add_replay,
                registration.add_calibrate, registration.add_refine):
        add(sub)


def main(argv: list[str] | None = None) -> int:
    """`python -m taseg_ros.cli.bag ...`: the same as `taseg bag ...`, through the one entry point
    (its error handling: one line for a user mistake, exit code 2)."""
    return taseg_main(["bag", *(sys.argv[1:] if argv is None else argv)])
