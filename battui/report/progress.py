"""Progress of a whole `battui table`: epochs trained across all its runs, and an ETA.

    progress = TableProgress()
    progress.add(run_dir, epochs=30, done=False)        # every run of the table
    snap = progress.snapshot(states)                      # reads new lines of each events.jsonl
    snap.line()   # "runs 3/14 done, 2 running | epochs 37.5/140 (27%) | elapsed 0:12:03 | ETA 0:31:40"

A run's position is read from its own `events.jsonl` (epoch and batch of the last `batch`
event, the epochs of `checkpoint` events, `run_finished`), a few new lines per poll, so
jobs on other processes, GPUs or Slurm nodes (on a shared file system) are all counted.
The ETA divides the epochs still to train by the rate (epochs per second) this table has
trained at so far; with N jobs at once that rate already includes the parallelism.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from battui.engine.events import RunStatus
from battui.engine.rundir import RunDir


class JobState(str, Enum):
    """Where one run of `battui table` stands (report/sweep.py); a str like `RunStatus`."""

    DONE = "done"
    RUNNING = "running"
    FAILED = "failed"  # resubmitted (it resumes its last.pt)
    MISSING = "missing"  # not submitted yet
    BLOCKED = "blocked"  # waits on a run (FRL's pre-training) that did not finish

    def __str__(self) -> str:
        return self.value


class EventTail:
    """Reads the new complete lines of one `events.jsonl` per `update()`; tracks epochs done."""

    def __init__(self, path: Path, epochs: int) -> None:
        self.path, self.epochs = path, epochs
        self.offset, self.rest = 0, b""
        self.position = 0.0  # epochs done, fractional within an epoch
        self.status: str | None = None

    def update(self) -> float:
        try:
            size = self.path.stat().st_size
        except OSError:
            return self.position
        if size < self.offset:  # rewritten: start over
            self.offset, self.rest, self.position = 0, b"", 0.0
        if size > self.offset:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = self.rest + fh.read(size - self.offset)
            self.offset = size
            *lines, self.rest = data.split(b"\n")
            for line in lines:
                try:
                    self._event(json.loads(line))
                except (ValueError, KeyError, TypeError):
                    continue
        return self.position

    def _event(self, e: dict) -> None:
        kind = e.get("type")
        if kind == "run_started":
            self.epochs = int(e["epochs"]) or self.epochs
            self.position = float(e.get("start_epoch", 0))
            self.status = None
        elif kind == "batch":
            self.position = e["epoch"] + e["batch"] / max(1, e["batches"])
        elif kind == "checkpoint" and e.get("kind") == "last":
            self.position = max(self.position, float(e["epoch"]))
        elif kind == "run_finished":
            self.status = e.get("status")
            if self.status == RunStatus.COMPLETED:
                self.position = float(self.epochs)


def clock(seconds: float) -> str:
    s = int(max(0, seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


@dataclass
class Snapshot:
    runs: int
    done: int
    running: int
    failed: int
    epochs_done: float
    epochs_total: float
    elapsed: float
    eta: float | None  # seconds, None until this table has trained something

    @property
    def fraction(self) -> float:
        return self.epochs_done / self.epochs_total if self.epochs_total else 1.0

    def line(self) -> str:
        eta = clock(self.eta) if self.eta is not None else "unknown"
        failed = f", {self.failed} failed" if self.failed else ""
        return (f"table: runs {self.done}/{self.runs} done, {self.running} running{failed} | epochs "
                f"{self.epochs_done:.1f}/{self.epochs_total:g} ({100 * self.fraction:.0f}%) | "
                f"elapsed {clock(self.elapsed)} | ETA {eta}")


class TableProgress:
    """The runs this table trains (runs reused from earlier tables count as done, with no epochs)."""

    def __init__(self) -> None:
        self.tails: dict[str, EventTail] = {}
        self.start = time.time()
        self.first: float | None = None  # epochs done at the first snapshot

    def add(self, run_dir: Path, epochs: int) -> None:
        self.tails[str(run_dir)] = EventTail(RunDir(run_dir).events, epochs)

    def snapshot(self, states: dict[str, str]) -> Snapshot:
        """`states`: run directory -> done | running | failed | missing | blocked, for every run."""
        done_epochs = sum(tail.update() for tail in self.tails.values())
        total = sum(tail.epochs for tail in self.tails.values())
        elapsed = time.time() - self.start
        if self.first is None:
            self.first = done_epochs
        trained = done_epochs - self.first
        eta = (total - done_epochs) * elapsed / trained if trained > 0 else None
        values = list(states.values())
        return Snapshot(runs=len(values), done=values.count(JobState.DONE), running=values.count(JobState.RUNNING),
                        failed=values.count(JobState.FAILED) + values.count(JobState.BLOCKED), epochs_done=done_epochs,
                        epochs_total=total, elapsed=elapsed, eta=eta)
