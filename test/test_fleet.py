"""`taseg bag eval` and `bag select` over a fleet of recordings, on the local engine and on a real Ray
cluster (``ray.cluster_utils.Cluster``: a head without CPUs and two nodes of one CPU and one logical GPU
each, shared by the module and run in one child process, so that Ray's driver stays out of pytest's), with real rosbag2 recordings written by the rosbags writer from the real
MSRS RGB-T frames in ../shared (generated frames when it is absent) and a truncated one.

The local run with one worker is the reference: the other runs (two workers, Ray, a node removed
mid-run) must leave byte-identical folders and fleet report (the files named timings.* aside).
"""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bag_fixtures import msrs_frames, synthetic_frames, write_rgbt_bag
from taseg_ros.bag.fleet.engines import LocalEngine, RayEngine
from taseg_ros.bag.fleet.evaluate import run_fleet
from taseg_ros.bag.fleet.store import TIMING_FILES
from taseg_ros.cli import build_parser, main
from taseg_ros.cli.bag.fleet import fleet_eval_from_args
from taseg_ros.evaluation.gates import parse_gate
from taseg_ros.evaluation.quality import FIGURES

ray = pytest.importorskip("ray", reason="the cluster extra (pip install 'taseg_ros[cluster]')")

pytestmark = pytest.mark.timeout(600)
REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "data" / "rgbt_samples" / "msrs"
FRAMES = 10  # per recording: small, the figures need a few consecutive pairs
GATES = ("flicker_compensated:max=0.5", "mean_confidence:min=0.05")
GOOD = ("drive_a", "drive_b", "drive_c")


def _frames(seed: int):
    """Real MSRS pairs (a different run of them per recording) at 48x64, or generated ones."""
    if SAMPLES.is_dir():
        frames = msrs_frames(SAMPLES, size=(48, 64))
        return [frames[(seed * 3 + i) % len(frames)] for i in range(FRAMES)]
    return synthetic_frames(FRAMES, 48, 64, seed=seed)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """drives/: three recordings (mcap, sqlite3, compressed) and one whose mcap was cut short (a
    recorder killed); each with its own start time (stamps differ between drives)."""
    root = tmp_path_factory.mktemp("fleet") / "drives"
    styles = ({"storage": "mcap"}, {"storage": "sqlite3"}, {"storage": "mcap", "compressed": True})
    for i, (name, style) in enumerate(zip(GOOD, styles)):
        write_rgbt_bag(root / name, _frames(i), seed=i, start_ns=1_700_000_000_000_000_000 + i * 10**12, **style)
    broken = write_rgbt_bag(root / "drive_z_cut", _frames(3), seed=3).path
    mcap = next(broken.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    return root


def _args(fleet, out, checkpoint, *extra):
    return build_parser().parse_args(["bag", "eval", str(fleet), "--checkpoint", str(checkpoint), "-o", str(out),
                                      *sum((["--gate", g] for g in GATES), []), *map(str, extra)])


class Counting:
    """An engine wrapped to count the tasks it is given and the events it reports (and, given
    ``on_started``, to act when a task starts: a node removed)."""

    def __init__(self, engine, on_started=None) -> None:
        self.engine, self.on_started = engine, on_started
        self.name, self.workers = engine.name, engine.workers
        self.tasks: list[str] = []
        self.events: list = []

    def run(self, spec, tasks, on_event) -> None:
        self.tasks += [t.key for t in tasks]

        def hook(event):
            self.events.append(event)
            on_event(event)
            if event.kind == "started" and self.on_started is not None:
                self.on_started(event)

        self.engine.run(spec, tasks, hook)


def _run(fleet, out, checkpoint, engine, *extra, rerun=False) -> tuple[dict, Counting]:
    run, worker, _, out_root = fleet_eval_from_args(_args(fleet, out, checkpoint, *extra))
    counting = engine if isinstance(engine, Counting) else Counting(engine)
    report = run_fleet(run, worker, counting, out_root, rerun=rerun, print_line=lambda line: None)
    return report, counting


def _same_folders(a: Path, b: Path) -> None:
    """Every file of a and b byte-identical, the timings.* files aside."""
    def names(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name not in TIMING_FILES)

    assert names(a) == names(b)
    _, mismatch, errors = filecmp.cmpfiles(a, b, names(a), shallow=False)
    assert not mismatch and not errors, mismatch + errors


@pytest.fixture(scope="module")
def local_run(fleet, tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("local1") / "eval"
    report, engine = _run(fleet, out, tiny_checkpoint, LocalEngine(1))
    return out, report, engine


def _events(engine) -> list[dict]:
    return [{"kind": e.kind, "key": e.key, "attempt": e.attempt, "worker": e.worker} for e in engine.events]


def _on_ray(fleet: Path, checkpoint: Path, out: Path) -> dict:
    """The module's Ray runs, in a child process (Ray's driver threads stay out of the pytest process):
    one cluster, a head without CPUs and two worker nodes of 1 CPU and 1 logical GPU each."""
    from ray.cluster_utils import Cluster

    from taseg_ros.inference.spec import ModelSpec
    from taseg_ros.labelling.select import select_frames

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    try:
        _, gpus = _run(fleet, out / "gpus", checkpoint, RayEngine(2, gpus_per_worker=1))
        on_ray = select_frames(_select_settings(fleet, out / "select"), engine=RayEngine(2), model=ModelSpec(checkpoint))
        lost = {}

        def remove(event):  # the node running the first recording, a moment after it started there
            if lost or event.key not in GOOD:
                return
            time.sleep(0.3)
            node = next(n for n in nodes if n.node_id == event.worker["node"])
            cluster.remove_node(node)
            lost["key"] = event.key

        _, removing = _run(fleet, out / "lost", checkpoint, Counting(RayEngine(2), on_started=remove))
        return {"gpus": _events(gpus), "lost": _events(removing), "lost_key": lost.get("key"),
                "select": {"ids": on_ray.ids, "scored": on_ray.scored}}
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def on_ray(fleet, tiny_checkpoint, tmp_path_factory):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    out = tmp_path_factory.mktemp("ray")
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_on_ray, fleet, tiny_checkpoint, out).result(timeout=540), out


def _select_settings(fleet: Path, out: Path):
    from taseg_ros.labelling.select import SelectSettings

    return SelectSettings(recordings=tuple(fleet / d for d in GOOD), output=out, k=4, min_gap_s=0.15)


# --- one reference run: 3 reports + 1 failure -----------------------------------------------------------


def test_four_recordings_one_cut_short(local_run, fleet):
    out, report, engine = local_run
    assert sorted(engine.tasks) == sorted([*GOOD, "drive_z_cut"])
    rows = {r["name"]: r for r in report["recordings"]}
    assert [rows[n]["status"] for n in GOOD] == ["done"] * 3
    failed = rows["drive_z_cut"]
    assert failed["status"] == "failed" and "\n" not in failed["reason"]
    assert "drive_z_cut" in failed["reason"] and "truncated" in failed["reason"]
    for name in GOOD:
        files = sorted(p.name for p in (out / name).iterdir())
        assert files == ["quality.png", "report.json", "report.md", "run.json", "summary.json", "timings.json"]
    assert sorted(p.name for p in (out / "drive_z_cut").iterdir()) == ["failure.json", "run.json", "timings.json"]
    assert not list(out.glob(".taseg-*"))  # nothing half-written
    assert report["counts"] == {"done": 3, "failed": 1, "stale": 0, "pending": 0, "recordings": 4,
                                "pairs": sum(rows[n]["processed"] for n in GOOD)}
    text = (out / "fleet.md").read_text()
    assert "| drive_z_cut |" in text and "FAILED" in text and "each applied to every recording and to the roll-up" in text


def test_rollup_is_the_mean_over_the_fleets_pairs(local_run):
    """Known values: each figure's roll-up from the recordings' per-frame figures in report.json."""
    out, report, _ = local_run
    per_frame = [f["quality"] for name in GOOD for f in json.loads((out / name / "report.json").read_text())["per_frame"]
                 if f["quality"] is not None]
    for name in FIGURES:
        values = [q[name] for q in per_frame if q.get(name) is not None]
        expected = float(np.mean(values)) if values else None
        assert report["rollup"]["figure_pairs"][name] == len(values)
        assert report["rollup"]["figures"][name] == pytest.approx(expected, rel=1e-12) if values else \
            report["rollup"]["figures"][name] is None
    # the gates: every recording's verdicts are its own figures', the roll-up's the fleet's
    gates = [parse_gate(g) for g in GATES]
    for row in report["recordings"]:
        if row["status"] == "done":
            assert [v["passed"] for v in row["gates"]] == [g.check(row["figures"][g.figure], None)["passed"] for g in gates]
    assert [v["passed"] for v in report["rollup"]["gates"]] == [
        g.check(report["rollup"]["figures"][g.figure], None)["passed"] for g in gates]


def test_exit_code_says_a_recording_failed(local_run):
    from taseg_ros.bag.fleet.rollup import exit_code

    assert exit_code(local_run[1]) == 2


# --- the same figures on every engine -----------------------------------------------------------------------


def test_two_local_workers_write_the_same_folders(local_run, fleet, tiny_checkpoint, tmp_path):
    out = tmp_path / "eval"
    report, engine = _run(fleet, out, tiny_checkpoint, LocalEngine(2))
    _same_folders(local_run[0], out)
    assert len({e.worker["pid"] for e in engine.events if e.kind == "finished"}) == 2  # both worked
    assert {e.worker["loads"] for e in engine.events if e.kind == "finished"} == {1}  # the model loaded once each


def test_ray_with_logical_gpus_writes_the_same_folders(local_run, on_ray):
    results, out = on_ray
    _same_folders(local_run[0], out / "gpus")
    finished = [e for e in results["gpus"] if e["kind"] == "finished"]
    assert len({e["worker"]["node"] for e in finished}) == 2 and {e["worker"]["loads"] for e in finished} == {1}


def test_a_node_lost_mid_run(local_run, on_ray):
    """The node running the first recording is removed (its raylet and workers killed) a moment after
    the recording started there: it runs again on the other node; every recording is written once."""
    results, out = on_ray
    events, lost = results["lost"], results["lost_key"]
    assert lost in GOOD
    assert any(e["kind"] == "retry" and e["key"] == lost for e in events)
    finished = [e for e in events if e["kind"] == "finished"]
    assert sorted(e["key"] for e in finished) == sorted([*GOOD, "drive_z_cut"])  # each finished exactly once
    assert {e["key"]: e["attempt"] for e in finished}[lost] == 2
    assert json.loads((out / "lost" / lost / "timings.json").read_text())["attempt"] == 2
    _same_folders(local_run[0], out / "lost")


# --- idempotent, restartable ------------------------------------------------------------------------------------


def test_a_rerun_recomputes_nothing_done(local_run, fleet, tiny_checkpoint, tmp_path):
    import shutil

    out = tmp_path / "eval"
    shutil.copytree(local_run[0], out)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.parent.name in GOOD}
    report, engine = _run(fleet, out, tiny_checkpoint, LocalEngine(1))
    assert engine.tasks == ["drive_z_cut"]  # only the failed recording is tried again
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.parent.name in GOOD}
    assert json.loads((out / "timings.json").read_text())["skipped"] == 3
    _same_folders(local_run[0], out)


def test_a_changed_model_recomputes_everything(local_run, fleet, thermal_checkpoint, tmp_path):
    import shutil

    out = tmp_path / "eval"
    shutil.copytree(local_run[0], out)
    report, engine = _run(fleet, out, thermal_checkpoint, LocalEngine(1))
    assert sorted(engine.tasks) == sorted([*GOOD, "drive_z_cut"])
    for name in GOOD:
        run = json.loads((out / name / "run.json").read_text())
        assert run["model"]["path"] == str(thermal_checkpoint)
        assert (out / name / "summary.json").read_bytes() != (local_run[0] / name / "summary.json").read_bytes()


def test_the_report_rebuilt_from_the_folders_alone(local_run, tmp_path, capsys):
    import shutil

    out = tmp_path / "eval"
    shutil.copytree(local_run[0], out)
    for name in ("fleet.json", "fleet.md"):
        (out / name).unlink()
    assert main(["bag", "report", str(out)]) == 2  # a recording failed
    for name in ("fleet.json", "fleet.md"):
        assert (out / name).read_bytes() == (local_run[0] / name).read_bytes()
    shutil.rmtree(out / "drive_b")  # a partial run: drive_b not done yet
    assert main(["bag", "report", str(out)]) == 2
    rows = {r["name"]: r["status"] for r in json.loads((out / "fleet.json").read_text())["recordings"]}
    assert rows["drive_b"] == "pending"
    assert "1 pending of 4" in capsys.readouterr().out


# --- labels: one confusion matrix over the fleet ------------------------------------------------------------------


def test_labelled_fleet_miou_from_the_summed_confusion_matrix(tiny_checkpoint, tmp_path):
    from taseg_ros.evaluation.metrics import compute_scores
    from taseg_ros.datasets.config import MetricProtocol

    drives = tmp_path / "labelled"
    for i in range(2):
        write_rgbt_bag(drives / f"l{i}", synthetic_frames(6, 48, 64, seed=10 + i), label_topic="/labels", seed=i)
    out = tmp_path / "eval"
    assert main(["bag", "eval", str(drives), "--checkpoint", str(tiny_checkpoint), "--label-topic", "/labels",
                 "-o", str(out)]) == 0
    reports = [json.loads((out / f"l{i}" / "report.json").read_text()) for i in range(2)]
    matrix = sum(np.array(r["scores"]["overall"]["confusion_matrix"]) for r in reports)
    expected = compute_scores(matrix, MetricProtocol(nan_policy="nanmean")).miou
    fleet = json.loads((out / "fleet.json").read_text())
    assert fleet["rollup"]["scores"]["miou"] == pytest.approx(expected, rel=1e-12)
    assert [r["miou"] for r in fleet["recordings"]] == [r["scores"]["overall"]["miou"] for r in reports]
    assert "mIoU (nanmean, one confusion matrix over 2 recordings)" in (out / "fleet.md").read_text()


# --- bag select on the engines ----------------------------------------------------------------------------------


def test_select_chooses_the_same_frames_on_every_engine(fleet, tiny_checkpoint, tmp_path, on_ray):
    """Ray with two workers (one recording each at a time) against this process scoring every recording
    in turn with the workers' thread count: the same frames, the same selection.csv."""
    import torch

    from taseg_ros.bag.fleet.engines import set_threads
    from taseg_ros.inference.spec import ModelSpec
    from taseg_ros.labelling.select import select_frames

    settings = _select_settings(fleet, tmp_path / "here")
    threads = torch.get_num_threads()
    try:
        set_threads(1)
        here = select_frames(settings, ModelSpec(tiny_checkpoint).load())
    finally:
        set_threads(threads)
    results, out = on_ray
    assert results["select"]["ids"] == here.ids and len(here.ids) == 4
    assert results["select"]["scored"] == here.scored == 3 * FRAMES  # every pair of every recording
    csv = (out / "select" / "selection.csv").read_text().replace(str(out / "select"), "")
    assert csv == (settings.output / "selection.csv").read_text().replace(str(settings.output), "")


# --- Ray absent ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["eval", "select"])
def test_without_ray_one_line_and_exit_2(fleet, tiny_checkpoint, tmp_path, command):
    out = tmp_path / "out"
    extra = ["-k", "2"] if command == "select" else []
    code = ("import sys; sys.modules['ray'] = None\n"  # what Python does when the package is not installed
            "from taseg_ros.cli import main\n"
            f"sys.exit(main({['bag', command, str(fleet / GOOD[0]), '--checkpoint', str(tiny_checkpoint), '-o', str(out), '--engine', 'ray', *extra]!r}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "RAY_ADDRESS": ""})
    assert proc.returncode == 2
    assert proc.stderr.strip() == "taseg bag: error: --engine ray needs Ray, an optional extra: pip install 'taseg_ros[cluster]'"
    assert not out.exists()


def test_help_does_not_import_ray():
    code = "import sys; from taseg_ros.cli import build_parser; build_parser(); print('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


# --- the parts: folder writes, fingerprints, names --------------------------------------------------------------


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path):
    from taseg_ros.outputs import TEMP_PREFIX, remove_dead_temporaries, replacing_dir

    dest = tmp_path / "drive"
    with replacing_dir(dest) as stage:
        (stage / "a.json").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drive"]
    with pytest.raises(RuntimeError):
        with replacing_dir(dest) as stage:
            (stage / "b.json").write_text("half")
            raise RuntimeError("killed while writing")
    assert [p.name for p in dest.iterdir()] == ["a.json"] and sorted(p.name for p in tmp_path.iterdir()) == ["drive"]
    with replacing_dir(dest) as stage:
        (stage / "c.json").write_text("2")
    assert [p.name for p in dest.iterdir()] == ["c.json"]  # the old folder's files do not stay
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / f"{TEMP_PREFIX}{dead.stdout.strip()}-abcd1234").mkdir()  # what a SIGKILLed run leaves
    (tmp_path / f"{TEMP_PREFIX}{os.getppid()}-0123abcd").mkdir()  # a running writer's: left alone
    assert [p.name for p in remove_dead_temporaries(tmp_path)] == [f"{TEMP_PREFIX}{dead.stdout.strip()}-abcd1234"]
    assert (tmp_path / f"{TEMP_PREFIX}{os.getppid()}-0123abcd").is_dir()


def test_fingerprints_and_names(fleet, tmp_path):
    import shutil

    from taseg_ros.bag.fleet.recordings import find_recordings, fingerprint

    copy = tmp_path / "elsewhere" / "drive_a"
    shutil.copytree(fleet / "drive_a", copy)
    assert fingerprint(copy) == fingerprint(fleet / "drive_a")  # a copy is the same recording
    mcap = next(copy.glob("*.mcap"))
    data = bytearray(mcap.read_bytes())
    data[-100] ^= 1  # one byte near the end (the summary: a re-written file)
    mcap.write_bytes(bytes(data))
    assert fingerprint(copy) != fingerprint(fleet / "drive_a")
    found = find_recordings([fleet, copy])  # two recordings named drive_a: each named apart
    names = [r.name for r in found]
    assert len(set(names)) == 5 and sum(n.startswith("drive_a_") for n in names) == 2
    assert [r.name for r in find_recordings([fleet])] == [*GOOD, "drive_z_cut"]
