"""`taseg bag eval`: a checkpoint on a recording: quality, scores, timing, baseline and gates."""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from taseg_ros.bag.evaluate.compare import (
    check_baseline_model,
    compare,
    is_report,
    load_baseline_report,
)
from taseg_ros.bag.io.reader import open_bag
from taseg_ros.bag.fleet.recordings import is_recording
from taseg_ros.bag.io.stop import stop_on_sigint
from taseg_ros.bag.io.topics import resolve_image_topics
from taseg_ros.bag.io.writer import check_output_recording, output_recording
from taseg_ros.cli.bag.common import (
    bag_and_topics,
    bag_name,
    fleet_options,
    fleet_options_given,
    force_option,
    gates_from_args,
    max_pairs_option,
    progress,
    source_from_args,
)
from taseg_ros.cli.options import (
    add_backend_options,
    add_device_options,
    add_model_options,
    add_overlay_option,
    add_thermal_options,
    frame_settings_from_args,
    segmenter_from_args,
)
from taseg_ros.errors import InputError
from taseg_ros.evaluation.figures import (
    DEFAULT_LOW_CONFIDENCE,
    DEFAULT_SEGMENT_WINDOW_S,
    DEFAULT_WORST_SEGMENTS,
    FIGURES,
)
from taseg_ros.evaluation.gates import GATE_SYNTAX
from taseg_ros.outputs import check_output_dir, output_dir

FLEET_HELP = (
    "Several recordings (or folders holding recordings, found by their metadata.yaml), or any of the "
    "engine options: one folder per recording in -o (default ./fleet_eval) plus the fleet report "
    "(fleet.md, fleet.json): each recording's figures and verdict, the roll-up weighted by pairs, the worst "
    "recordings and segments; --gate applies to every recording and to the roll-up. A recording done before "
    "with the same model and settings is skipped (--rerun redoes it); one that cannot be read is reported as "
    "failed and the others go on. Exit code 2 when a recording failed, else 1 when a gate failed. No output "
    "recordings. `taseg bag report DIR` rebuilds the fleet report from the folders."
)


def add_eval(sub) -> None:
    ev = sub.add_parser(
        "eval",
        help="run a checkpoint on the recording: scores, latency, drops, output bag",
        description="Run a checkpoint on every matched pair (--mode offline) or at the recording's "
        "rate with the node's newest-pair-wins policy (--mode realtime). Reports, without labels, the "
        "label-free quality of every pair (confidence, entropy, flicker against the previous pair raw "
        "and motion compensated, class shares, the worst segments of the recording), and with labels "
        "per-class IoU and mIoU as well; latency statistics and the share of pairs a real-time node "
        "would drop; writes report.json, report.md, plots and an mcap recording with the inputs plus "
        "<ns>/labels, colorized, overlay, confidence and <ns>/quality/<figure> topics. With --baseline "
        "(a previous model, run on the same pairs, or a previous report.json of this recording) it "
        "reports the change of every figure; --gate/--gates set pass ranges: exit code 1 when one "
        "fails (2: bad input, nothing written). " + FLEET_HELP,
    )
    bag_and_topics(ev, many="rosbag2 recordings (folders with metadata.yaml, or bare .mcap / .db3 files), or "
                   "folders holding recordings; one recording: as before, several: a fleet run (see above)")
    add_model_options(ev, "the model to evaluate")
    labels = ev.add_mutually_exclusive_group()
    labels.add_argument(
        "--labels",
        metavar="DIR",
        help="label PNGs named <sec>_<nanosec>.png (a dataset folder from `bag extract`, or its labels/)",
    )
    labels.add_argument("--label-topic", metavar="TOPIC", help="class-id label images recorded in the bag")
    ev.add_argument(
        "--label-tolerance",
        type=float,
        default=0.001,
        metavar="S",
        help="max difference between a label's stamp and the RGB stamp (default 0.001 s)",
    )
    ev.add_argument(
        "--mode",
        choices=("offline", "realtime"),
        default="offline",
        help="offline: every pair, as fast as possible (drops simulated); realtime: only the pairs a "
        "live node would process (default offline)",
    )
    ev.add_argument("-o", "--output", metavar="DIR",
                    help="report folder (default ./<bag name>_eval; several recordings: ./fleet_eval)")
    out_bag = ev.add_mutually_exclusive_group()
    out_bag.add_argument("--output-bag", metavar="PATH", help="output recording (default <output>/<bag name>_taseg)")
    out_bag.add_argument("--no-output-bag", action="store_true", help="write the report only")
    force_option(ev)
    ev.add_argument(
        "--namespace", default="/taseg", help="namespace of the output topics (default /taseg, as the node's)"
    )
    add_device_options(ev)
    add_backend_options(ev)
    add_thermal_options(ev, default_help="auto, as the node's parameter", homography=True)
    add_overlay_option(ev)
    max_pairs_option(ev, "stop after N pairs")
    _quality_options(ev)
    fleet_options(ev).add_argument(
        "--rerun", action="store_true", help="evaluate again the recordings done before with this model and settings")
    ev.set_defaults(func=run_eval)


def add_report(sub) -> None:
    rep = sub.add_parser(
        "report",
        help="rebuild the fleet report of a `bag eval` over several recordings from its folders",
        description="Rebuild fleet.md and fleet.json from the per-recording folders of a fleet `bag eval` "
        "output (also after a partial or killed run: recordings not done yet are listed as pending). Exit "
        "code as bag eval's: 2 when a recording failed or is not done, else 1 when a gate failed.",
    )
    rep.add_argument("output", metavar="DIR", help="the -o folder of the fleet run")
    rep.set_defaults(func=run_report)


def run_report(args) -> int:
    from taseg_ros.bag.fleet.rollup import exit_code, write_fleet_report

    report = write_fleet_report(args.output)
    c = report["counts"]
    print(f"{args.output}/fleet.md: {c['done']} done, {c['failed']} failed, {c['stale']} stale, {c['pending']} pending "
          f"of {c['recordings']}; " + ("PASS" if report["verdict"]["passed"] else "FAIL"))
    return exit_code(report)


def _quality_options(ev: argparse.ArgumentParser) -> None:
    group = ev.add_argument_group("label-free quality and regression against a baseline")
    group.add_argument("--low-confidence", type=float, default=DEFAULT_LOW_CONFIDENCE, metavar="T",
                       help=f"a pixel whose chosen class has probability below T counts as low-confidence "
                       f"(default {DEFAULT_LOW_CONFIDENCE})")
    group.add_argument("--thermal-reliance", action="store_true",
                       help="also measure the share of pixels whose label changes with the thermal input blanked: "
                       "costs a second forward per pair (two more with a model --baseline)")
    group.add_argument("--segment-window", type=float, default=DEFAULT_SEGMENT_WINDOW_S, metavar="S",
                       help=f"length of the worst segments reported (default {DEFAULT_SEGMENT_WINDOW_S:g} s)")
    group.add_argument("--worst-segments", type=int, default=DEFAULT_WORST_SEGMENTS, metavar="N",
                       help=f"how many non-overlapping worst segments per figure (default {DEFAULT_WORST_SEGMENTS})")
    group.add_argument("--baseline", metavar="MODEL|REPORT",
                       help="a previous model (any file --checkpoint takes; it runs on the same pairs: a second "
                       "forward per pair, and the per-frame agreement of the two models) or a previous report.json "
                       "of bag eval on this recording (or its folder; figures only); same class list required")
    group.add_argument("--gate", action="append", default=[], metavar="FIGURE:BOUND=VALUE",
                       help=f"pass range of a figure, repeatable: {GATE_SYNTAX} (change: new - baseline); "
                       f"figures: {', '.join(FIGURES)}; e.g. mean_confidence:change_min=-0.02. Exit code 1 "
                       "when a gate fails")
    group.add_argument("--gates", metavar="YAML",
                       help="gates from a YAML file: 'gates: {FIGURE: {BOUND: VALUE}}' (added to --gate)")


def run_eval(args) -> int:
    if _is_fleet(args):
        from taseg_ros.cli.bag.fleet import run_fleet_eval

        return run_fleet_eval(args)
    args.bag = args.bag[0]
    if args.rerun:
        raise InputError("--rerun is for several recordings (a fleet run); one recording is always evaluated")
    return _run_one(args)


def _is_fleet(args) -> bool:
    """Several recordings, a folder holding recordings, or an engine option: a fleet run."""
    if len(args.bag) > 1 or fleet_options_given(args):
        return True
    path = Path(args.bag[0])
    return path.is_dir() and not is_recording(path)


def _run_one(args) -> int:
    from taseg_ros.bag.evaluate.report import format_summary, write_eval_report  # matplotlib
    from taseg_ros.bag.evaluate.run import EvalSettings, evaluate_bag  # the model, OpenCV

    out_dir, output_bag, inputs = _eval_outputs(args)
    settings = EvalSettings(
        source_from_args(args), frame=frame_settings_from_args(args), mode=args.mode, labels_dir=args.labels,
        label_topic=args.label_topic, label_tolerance_s=args.label_tolerance, output_namespace=args.namespace,
        checkpoint_name=str(args.checkpoint), low_confidence=args.low_confidence,
        thermal_reliance=args.thermal_reliance, segment_window_s=args.segment_window, worst_segments=args.worst_segments,
    )
    gates = gates_from_args(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # model-building noise; checkpoint problems raise
        segmenter = segmenter_from_args(args)
        baseline_model, baseline_report = _baseline_from_args(args, segmenter)
    bar, update = progress(None, "pair")
    with (
        output_dir(out_dir, force=args.force, inputs=inputs) as out,
        output_recording(output_bag, force=args.force, inputs=inputs) as bag_out,
        stop_on_sigint() as stop,
        bar,
    ):
        result = evaluate_bag(settings, segmenter, output_bag=bag_out, baseline=baseline_model,
                              stop=lambda: bool(stop), on_pair=update)
        comparison = compare(result, gates, args.baseline, baseline_report)
        files = write_eval_report(result, out)
    print(format_summary(result))
    print(f"  report: {files['markdown']} (+ report.json, plots)")
    if result.interrupted:
        return 130
    return 0 if comparison["passed"] else 1


def _eval_outputs(args):
    """(report folder, output recording or None, the inputs), checked before the model is loaded:
    an output that is or overlaps an input is refused even with --force."""
    inputs = {"BAG": args.bag, "--checkpoint": args.checkpoint, "--sam-checkpoint": args.sam_checkpoint}
    inputs["--labels"] = args.labels
    inputs["--baseline"] = args.baseline
    inputs["--gates"] = args.gates
    name = bag_name(args.bag)
    out_dir = Path(args.output or f"{name}_eval")
    output_bag = None
    if not args.no_output_bag:
        output_bag = args.output_bag or out_dir / f"{name}_taseg"
        check_output_recording(output_bag, force=args.force, inputs=inputs)
    check_output_dir(out_dir, force=args.force, inputs=inputs)
    return out_dir, output_bag, inputs


def _baseline_from_args(args, segmenter):
    """(baseline Segmenter or None, BaselineReport or None), refused in one line when it cannot be
    compared (another class list, a report of another recording)."""
    if args.baseline is None:
        return None, None
    if is_report(args.baseline):
        with open_bag(args.bag) as bag:
            rgb, thermal = resolve_image_topics(bag, args.rgb_topic, args.thermal_topic)
            start = bag.start_ns
        names = segmenter.class_info.names
        return None, load_baseline_report(args.baseline, names, start, (rgb.name, thermal.name))
    baseline = segmenter_from_args(argparse.Namespace(**{**vars(args), "checkpoint": args.baseline}))
    check_baseline_model(baseline, segmenter, args.baseline)
    return baseline, None
