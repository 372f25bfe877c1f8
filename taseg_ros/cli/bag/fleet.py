"""`taseg bag eval` over several recordings: the options turned into a fleet run (taseg_ros.bag.fleet)."""
from __future__ import annotations

from pathlib import Path

from taseg_ros.bag.evaluate.compare import is_report
from taseg_ros.bag.evaluate.run import EvalSettings
from taseg_ros.bag.fleet.evaluate import EvalWorker, run_fleet
from taseg_ros.bag.fleet.recordings import find_recordings
from taseg_ros.bag.fleet.rollup import exit_code
from taseg_ros.bag.fleet.store import RUN_FILE, FleetRun, settings_record
from taseg_ros.bag.pairs import PairSource
from taseg_ros.cli.bag.common import engine_from_args, gates_from_args
from taseg_ros.cli.options import frame_settings_from_args, model_spec_from_args
from taseg_ros.errors import InputError
from taseg_ros.inference.spec import model_digest
from taseg_ros.outputs import check_not_overlapping, check_output_dir

DEFAULT_OUTPUT = "fleet_eval"


def run_fleet_eval(args) -> int:
    run, worker, engine, out_root = fleet_eval_from_args(args)
    print(f"{len(run.recordings)} recordings -> {out_root}/ on the {engine.name} engine, {engine.workers} worker(s)")
    report = run_fleet(run, worker, engine, out_root, rerun=args.rerun)
    print(f"  fleet report: {out_root / 'fleet.md'} (+ fleet.json, timings.md)")
    return exit_code(report)


def fleet_eval_from_args(args):
    """(FleetRun, EvalWorker, engine, output folder) the options ask for, all checked before any work."""
    engine = engine_from_args(args)  # first: without Ray, one line and nothing else done
    if args.output_bag is not None:
        raise InputError("--output-bag names one recording's output; a fleet run writes reports only")
    recordings = find_recordings(args.bag)
    out_root = Path(args.output or DEFAULT_OUTPUT)
    inputs = {"--checkpoint": args.checkpoint, "--sam-checkpoint": args.sam_checkpoint, "--labels": args.labels,
              "--baseline": args.baseline, "--gates": args.gates, **{f"BAG {r.path}": r.path for r in recordings}}
    check_not_overlapping(out_root, inputs)
    if not (out_root / RUN_FILE).is_file():  # a fleet folder is taken up again (skip what is done); else as today
        check_output_dir(out_root, force=args.force, inputs=inputs)
    baseline, baseline_model = _baseline(args)
    gates = gates_from_args(args, model_baseline=baseline_model is not None)
    settings = EvalSettings(
        PairSource(recordings[0].path, args.rgb_topic, args.thermal_topic, args.slop, args.max_pairs),
        frame=frame_settings_from_args(args), mode=args.mode, labels_dir=args.labels, label_topic=args.label_topic,
        label_tolerance_s=args.label_tolerance, output_namespace=args.namespace, checkpoint_name=str(args.checkpoint),
        low_confidence=args.low_confidence, thermal_reliance=args.thermal_reliance,
        segment_window_s=args.segment_window, worst_segments=args.worst_segments,
    )
    model = model_spec_from_args(args, threads=args.threads_per_worker)
    if not model.checkpoint.is_file():
        raise InputError(f"--checkpoint {model.checkpoint}: no such model file")
    run = FleetRun(recordings, {"path": str(args.checkpoint), "sha256": model.digest()}, settings_record(settings),
                   [str(g) for g in gates], baseline)
    worker = EvalWorker(model, settings, baseline_model, args.baseline, args.threads_per_worker)
    return run, worker, engine, out_root


def _baseline(args):
    """(the baseline as the run records it, the baseline ModelSpec or None). A fleet's baseline
    report is an earlier fleet run's output folder (each recording compared with its own report)."""
    if args.baseline is None:
        return None, None
    path = Path(args.baseline)
    if (path / RUN_FILE).is_file():
        return {"kind": "reports", "path": str(path)}, None
    if is_report(path):
        raise InputError(f"--baseline {path}: one recording's report; over several recordings give the output "
                         "folder of an earlier fleet run (or a model)")
    if not path.is_file():
        raise InputError(f"--baseline {path}: no such model file or fleet output folder")
    spec = model_spec_from_args(args, checkpoint=path, threads=args.threads_per_worker)
    return {"kind": "model", "path": str(path), "sha256": model_digest(path)}, spec
