"""Typed run events and the `events.jsonl` stream that carries them.

The engine talks to the world only through these records; the dashboard, the
headless log, `battui watch` and the reports read the same stream.

    writer = EventWriter(run_dir / "events.jsonl")
    writer.write(BatchEvent(epoch=0, batch=3, batches=10, step=3, loss=1.2))
    for event in read_events(run_dir / "events.jsonl"):     # dicts with "type", "time"
        ...
    for event in follow_events(path, stop=lambda: done):     # tail -f, for live runs
        ...

Each line is one JSON object with `type` and `time` (unix seconds). Lines are
appended and flushed as they happen; a reader skips a half-written last line.
Per-class fields are lists indexed by class (the order of `run_started.classes`);
matrices are lists of rows (rows = true class, columns = predicted class).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

from battui.engine.faults import WriteFault


class RunStatus(str, Enum):
    """A run's status: how it ended (`run_finished.status`) or, in the views, where it stands.

    A str: it compares equal to, prints and serialises (JSON, CSV) as its plain value.
    """

    COMPLETED = "completed"
    INTERRUPTED = "interrupted"  # stopped on purpose (q, x, a signal); --resume continues it
    FAILED = "failed"
    STARTING = "starting"  # `battui runs`: a run directory with no event yet
    WAITING = "waiting"  # the dashboard, before `run_started`
    RUNNING = "running"
    PAUSED = "paused"
    SAVING = "saving"  # the dashboard, stopping or detaching: last.pt is being saved
    STALE = "stale"  # unfinished, and its trainer is gone (or silent)

    def __str__(self) -> str:
        return self.value


@dataclass
class Event:
    type: ClassVar[str] = "event"
    time: float = field(default_factory=time.time, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **dataclasses.asdict(self)}


@dataclass
class RunStarted(Event):
    """The run's identity and shape; everything a viewer needs before numbers arrive."""

    type: ClassVar[str] = "run_started"
    run_name: str
    run_dir: str
    preset: str
    method: str
    dataset: str
    model: str
    device: str
    classes: list[str]
    epochs: int
    batches_per_epoch: int
    attack_steps: int  # training attack steps K: step histograms have K + 2 bins
    train_size: int = 0
    eval_size: int = 0
    start_epoch: int = 0  # > 0 when resumed
    start_batch: int = 0  # > 0 when resumed from a mid-epoch last.pt
    world_size: int = 1
    seed: int = 0
    config: dict = field(default_factory=dict)
    precision: str = ""  # the training precision and why: "fp32 (train.amp=auto, not a CUDA device)"


@dataclass
class BatchEvent(Event):
    """Progress: written every `train.log_every` batches and on the last batch of an epoch."""

    type: ClassVar[str] = "batch"
    epoch: int  # 0-based
    batch: int  # batches done in this epoch (1..batches)
    batches: int
    step: int  # global optimiser step
    loss: float
    parts: dict[str, float] = field(default_factory=dict)  # named loss terms
    lr: float = 0.0
    images_per_s: float = 0.0
    elapsed: float = 0.0  # seconds since the run (or resume) started


@dataclass
class TrainAttack(Event):
    """What the training attack did, accumulated over the epoch so far.

    step_hist[c][s]: samples of class c first misclassified after s attack steps,
    s = 0..K; the last column (index K + 1) counts samples never misclassified.
    target_confusion[c][j]: samples of class c whose adversarial example was predicted j.
    """

    type: ClassVar[str] = "train_attack"
    epoch: int
    batch: int  # batches covered so far
    batches: int
    partial: bool  # True while the epoch is still running
    step_hist: list[list[int]]
    target_confusion: list[list[int]]


@dataclass
class EvalEvent(Event):
    """Per-class evaluation (docs/DESIGN.md section 4); errors are percentages."""

    type: ClassVar[str] = "eval"
    epoch: int
    split: str  # val | test
    attack: dict  # name, eps, step_size, steps, restarts, seed, precision (fp32 | bf16)
    n: int
    counts: list[int]  # samples per class
    standard: list[float]
    boundary: list[float]
    robust: list[float]
    avg: dict[str, float]  # standard/boundary/robust -> mean over classes
    worst: dict[str, float]  # standard/boundary/robust -> max over classes
    adv_confusion: list[list[int]]
    step_hist: list[list[int]]
    method: dict = field(default_factory=dict)  # method state worth showing (e.g. FRL's)


@dataclass
class CheckpointEvent(Event):
    type: ClassVar[str] = "checkpoint"
    epoch: int  # epochs completed
    path: str
    kind: str  # last | best | manual
    metric: float | None = None  # worst-class robust error on val, for best


@dataclass
class RunFinished(Event):
    type: ClassVar[str] = "run_finished"
    status: RunStatus  # COMPLETED | INTERRUPTED | FAILED (a plain str is converted)
    reason: str = ""
    epoch: int = 0

    def __post_init__(self) -> None:
        self.status = RunStatus(self.status)


@dataclass
class Message(Event):
    """A line worth showing to the person watching (pause, resume, warnings)."""

    type: ClassVar[str] = "message"
    text: str
    level: str = "info"  # info | warning | error


@dataclass
class Paused(Event):
    """Training waits before batch `batch` (0-based) of `epoch` until resumed or stopped."""

    type: ClassVar[str] = "paused"
    epoch: int
    batch: int


@dataclass
class Resumed(Event):
    """Training goes on after a pause."""

    type: ClassVar[str] = "resumed"


EVENT_TYPES = {
    cls.type: cls
    for cls in (RunStarted, BatchEvent, TrainAttack, EvalEvent, CheckpointEvent, RunFinished, Message, Paused,
                Resumed)
}


class EventWriter:
    """Appends events to a JSONL file, one flushed line each."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, event: Event | dict) -> dict:
        """Append one line; `faults.WriteFault` when the disk refuses it (full, removed, read-only)."""
        record = event.to_dict() if isinstance(event, Event) else event
        try:
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._file.flush()
        except OSError as exc:
            raise WriteFault(self.path, exc) from None
        return record

    def close(self) -> None:
        if not self._file.closed:
            for finish in (lambda: os.fsync(self._file.fileno()), self._file.close):
                try:
                    finish()
                except OSError:  # reported where it happened; a torn last line is repaired on resume
                    pass

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _parse(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and "type" in record else None


def read_events(path: str | Path) -> list[dict]:
    """All complete events in the file; a half-written or corrupt line is skipped."""
    events = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            record = _parse(line)
            if record is not None:
                events.append(record)
    return events


def follow_events(
    path: str | Path,
    stop: Callable[[], bool] = lambda: False,
    poll: float = 0.2,
) -> Iterator[dict | None]:
    """Yield events as they are appended (like `tail -f`), from the start of the file.

    Yields None after each poll that found nothing new, so a caller can check
    its own state (and notice a writer that went quiet). Ends when `stop()` is
    true. A partial last line is held back until its newline arrives.
    """
    path = Path(path)
    while not path.exists():
        if stop():
            return
        yield None
        time.sleep(poll)
    with open(path, encoding="utf-8", errors="replace") as fh:
        pending = ""
        while not stop():
            chunk = fh.read()
            if not chunk:
                yield None
                time.sleep(poll)
                continue
            pending += chunk
            *lines, pending = pending.split("\n")
            for line in lines:
                record = _parse(line)
                if record is not None:
                    yield record
