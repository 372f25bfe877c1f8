"""Progress of a fleet run, one line per event in the terminal (and in logs: no bars, so a CI log
reads the same), and the run's timings for timings.json / timings.md.

    run2: started on host

    [2/4] run2: done, 35 pairs in 3.1 s (11.3 pairs/s)
    fleet: 2 done, 1 failed, 0 skipped of 4 | 10.2 pairs/s | ETA 4 s

The ETA assumes the recordings still to do take as long per byte as the ones done so far.
"""

from __future__ import annotations

import time
from typing import Callable

from taseg_ros.bag.fleet.engines import Event


def print_now(line: str) -> None:
    """A line on stdout at once, also when stdout is a file or a pipe (a CI log)."""
    print(line, flush=True)


class FleetProgress:
    def __init__(self, recordings, print_line: Callable[[str], None] = print_now) -> None:
        self.print = print_line
        self.total = len(recordings)
        self.sizes = {}
        for r in recordings:
            try:
                self.sizes[r.name] = r.size_bytes
            except OSError:
                self.sizes[r.name] = 0
        self.start = time.perf_counter()
        self.per_recording: dict[str, dict] = {r.name: {"status": "pending"} for r in recordings}
        self.finished = 0

    def _count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.per_recording.values())

    def skipped(self, name: str) -> None:
        self.per_recording[name] = {"status": "skipped"}
        self.finished += 1
        self.print(f"[{self.finished}/{self.total}] {name}: done before with this model and settings: skipped")

    def failed(self, name: str, reason: str, **extra) -> None:
        self.per_recording[name] = {**self.per_recording[name], "status": "failed", "reason": reason, **extra}
        self.finished += 1
        self.print(f"[{self.finished}/{self.total}] {name}: FAILED: {reason}")

    def event(self, event: Event) -> None:
        row = self.per_recording.get(event.key)
        worker = f"{event.worker.get('host', '?')}:{event.worker.get('pid', '?')}" if event.worker.get("pid") else \
            event.worker.get("host", "")
        if event.kind == "started":
            row.update(status="running", attempts=event.attempt, worker=worker, since=time.perf_counter())
            self.print(f"{event.key}: started" + (f" on {worker}" if worker else "")
                       + (f" (attempt {event.attempt})" if event.attempt > 1 else ""))
        elif event.kind == "retry":
            self.print(f"{event.key}: its worker was lost ({event.reason}); retrying on another")
        elif event.kind == "lost":
            self.failed(event.key, event.reason, attempts=event.attempt)
            self._fleet_line()
        elif event.kind == "waiting":
            self.print(f"fleet: waiting: {event.reason}")
        elif event.kind == "finished":
            self._finished(event, row, worker)

    def _finished(self, event: Event, row: dict, worker: str) -> None:
        outcome = event.result
        seconds = outcome.seconds
        row.update(attempts=event.attempt, worker=worker, seconds=seconds, pairs=outcome.pairs,
                   pairs_per_s=outcome.pairs / seconds if seconds > 0 else None)
        row.pop("since", None)
        if outcome.status == "done":
            row["status"] = "done"
            self.finished += 1
            rate = f" ({row['pairs_per_s']:.1f} pairs/s)" if row["pairs_per_s"] else ""
            self.print(f"[{self.finished}/{self.total}] {event.key}: done, {outcome.pairs} pairs in {seconds:.1f} s{rate}")
        else:
            self.failed(event.key, outcome.reason, **{k: v for k, v in row.items() if k != "status"})
        self._fleet_line()

    def pairs(self) -> int:
        return sum(r.get("pairs", 0) for r in self.per_recording.values() if r["status"] == "done")

    def _fleet_line(self) -> None:
        elapsed = time.perf_counter() - self.start
        rate = self.pairs() / elapsed if elapsed > 0 else 0.0
        computed = [n for n, r in self.per_recording.items() if r["status"] == "done" and "seconds" in r]
        left = [n for n, r in self.per_recording.items() if r["status"] in ("pending", "running")]
        done_bytes = sum(self.sizes[n] for n in computed)
        eta = ""
        if left and done_bytes:
            eta = f" | ETA {elapsed / done_bytes * sum(self.sizes[n] for n in left):.0f} s"
        elif not left:
            eta = f" | finished in {elapsed:.1f} s"
        self.print(f"fleet: {self._count('done')} done, {self._count('failed')} failed, {self._count('skipped')} skipped "
                   f"of {self.total} | {rate:.1f} pairs/s{eta}")

    def summary(self) -> dict:
        elapsed = time.perf_counter() - self.start
        return {
            "recordings": self.total, "done": self._count("done"), "failed": self._count("failed"),
            "skipped": self._count("skipped"), "wall_s": elapsed, "pairs": self.pairs(),
            "pairs_per_s": self.pairs() / elapsed if elapsed > 0 else 0.0,
            "per_recording": {n: {k: v for k, v in r.items() if k != "since"} for n, r in self.per_recording.items()},
        }

    def final(self, report: dict) -> None:
        c = report["counts"]
        self.print(f"fleet report: {c['done']} done, {c['failed']} failed, {c['pending']} pending of {c['recordings']}; "
                   + ("PASS" if report["verdict"]["passed"] else "FAIL"
                      + (f" (gates: {', '.join(report['verdict']['failed_gates'])})" if report["verdict"]["failed_gates"]
                         else "")))
