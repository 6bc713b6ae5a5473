"""Waiting on child processes and on the runs they write: poll, check, kill."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from battui.engine.runlock import live_pid


def wait_for(predicate, timeout: float = 10.0, step: float = 0.1) -> bool:
    """Poll `predicate` every `step` seconds; whether it came true within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def running(pid: int | None) -> bool:
    """Alive and not a zombie (an orphan may wait a moment for its reaper)."""
    try:
        return pid is not None and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def kill(pid: int | None) -> None:
    if running(pid):
        os.kill(pid, signal.SIGKILL)


def run_events(run: Path) -> list[dict]:
    """The events a live run has written so far (a torn last line left out)."""
    try:
        lines = (run / "events.jsonl").read_text().splitlines()
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.endswith("}")]


def of_type(run: Path, kind: str) -> list[dict]:
    return [e for e in run_events(run) if e["type"] == kind]


def training(run: Path) -> bool:
    """The run has trained two batches and its trainer holds the lock."""
    return len(of_type(run, "batch")) >= 2 and live_pid(run) is not None


def log_has(run: Path, text: str) -> bool:
    """RUN/train.log (a run's log after its terminal was lost) holds `text`."""
    try:
        return text in (run / "train.log").read_text()
    except OSError:
        return False


def batches_after(run: Path, moment: float) -> list[dict]:
    """The batch events the run wrote after `moment` (time.time()): proof its trainer lived on past it."""
    return [e for e in of_type(run, "batch") if e["time"] > moment]
