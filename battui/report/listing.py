"""What is under runs/: one summary per run directory, for `battui runs` and `battui watch` without an argument.

    for run in list_runs("runs"):
        run.name, run.method, run.status, run.epoch, run.epochs, run.best, run.pid
    newest_run("runs")        # the run written to last (UserError when there is none)

Read-only: a run's status comes from its events and its lock (`runlock.live_pid`):
`running` / `paused` while a trainer holds the lock, else the last `run_finished`
status, `starting` before any event, or `stale` when the trainer died mid-run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from battui.engine.events import DisplayState
from battui.engine.rundir import RunDir
from battui.engine.runlock import live_pid
from battui.errors import UserError

# Big, frequent events that say nothing about status; skipped without parsing.
_SKIP = ('{"type":"batch"', '{"type":"train_attack"', '{"type":"eval"')


@dataclass
class RunSummary:
    path: Path
    name: str
    method: str = ""
    status: str = DisplayState.STARTING
    epoch: int = 0  # epochs completed (the last checkpoint's)
    epochs: int = 0
    best: float | None = None  # best worst-class robust error on validation, %
    pid: int | None = None
    mtime: float = 0.0


def _is_run(path: Path) -> bool:
    return path.is_dir() and RunDir(path).holds_run()


def _mtime(path: Path) -> float:
    times = [p.stat().st_mtime for p in (RunDir(path).events, RunDir(path).config) if p.exists()]
    return max(times, default=0.0)


def summarize(path: str | Path) -> RunSummary:
    path = Path(path)
    run = RunSummary(path=path, name=path.name, mtime=_mtime(path))
    finished, paused = None, False
    events = RunDir(path).events
    lines = events.open(encoding="utf-8", errors="replace") if events.is_file() else []
    for line in lines:
        if line.startswith(_SKIP):
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        kind = event.get("type") if isinstance(event, dict) else None
        if kind == "run_started":
            run.method, run.epochs = str(event.get("method", "")), int(event.get("epochs", 0))
            finished, paused, run.status = None, False, DisplayState.STALE
        elif kind == "checkpoint":
            run.epoch = max(run.epoch, int(event.get("epoch", 0)))
            if event.get("kind") == "best" and event.get("metric") is not None:
                run.best = float(event["metric"]) if run.best is None else min(run.best, float(event["metric"]))
        elif kind in ("paused", "resumed"):
            paused = kind == "paused"
        elif kind == "run_finished":
            finished = str(event.get("status", ""))
    if hasattr(lines, "close"):
        lines.close()
    pid = live_pid(path)
    if pid is not None:
        run.pid = pid if pid > 0 else None
        run.status = DisplayState.PAUSED if paused else DisplayState.RUNNING
    elif finished:
        run.status = finished
    return run


def list_runs(root: str | Path = "runs") -> list[RunSummary]:
    """Every run directory directly under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = [summarize(p) for p in root.iterdir() if _is_run(p)]
    return sorted(runs, key=lambda r: (r.mtime, r.name))


def newest_run(root: str | Path = "runs") -> Path:
    root = Path(root)
    candidates = [p for p in root.iterdir() if _is_run(p)] if root.is_dir() else []
    if not candidates:
        raise UserError(f"no runs under {root}/; start one with `battui train` or pass a run directory")
    return max(candidates, key=lambda p: (_mtime(p), p.name))


def format_runs(runs: list[RunSummary]) -> list[str]:
    """Aligned plain lines (a header first): whole lines in a pipe, easy to grep."""
    rows = [("run", "method", "status", "epoch", "best worst-class rob err", "pid")]
    for r in runs:
        rows.append((r.name, r.method or "-", r.status, f"{r.epoch}/{r.epochs or '?'}",
                     "-" if r.best is None else f"{r.best:.1f}%", str(r.pid) if r.pid else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
