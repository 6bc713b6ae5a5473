"""Entry points the CLI calls: the dashboard over a training run here, or over a run directory.

    code = run_live(trainer, control)          # `battui train` on a terminal
    code = run_watch("runs/x")                 # `battui watch runs/x`
    code = run_watch(run_dir, detached_pid=pid)  # `battui train --detach`: quitting leaves it running
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from battui.errors import UserError
from battui.tui.app import DashboardApp
from battui.tui.feeds import LiveFeed, WatchFeed, pid_alive


def run_live(trainer: Any, control: Any) -> int:
    """Train in a thread worker under the dashboard; `q` stops, saves last.pt and exits.

    Returns 0 when the run completed or was stopped from the dashboard, 1 when it failed.
    """
    feed = LiveFeed(trainer, control)
    app = DashboardApp(feed)
    try:
        code = app.run()
    finally:
        if feed.result is None:
            # The app ended without waiting (crash, signal): still stop the loop cleanly.
            feed.stop()
    console = Console()
    run_dir = getattr(trainer, "run_dir", "")
    status = feed.result or app.state.status
    console.print(f"run {status}: {run_dir}" + (f" ({feed.error})" if feed.error else ""), highlight=False)
    if status != "failed" and run_dir:
        console.print(f"look again with: battui watch {run_dir}", highlight=False)
    return 1 if status == "failed" else int(code or 0)


def events_file(run_dir: str | Path, *, must_exist: bool = True) -> Path:
    """The events.jsonl of a run directory (or the file itself); UserError when it is not a run."""
    path = Path(run_dir)
    if path.is_file() and path.name.endswith(".jsonl"):
        return path
    if not path.is_dir():
        raise UserError(f"no run directory at {path}: pass a folder under runs/ (see `ls runs/`)")
    events = path / "events.jsonl"
    if must_exist and not events.is_file():
        raise UserError(f"{path} has no events.jsonl, so it is not a battui run directory; pick one under runs/")
    return events


def run_watch(run_dir: str | Path, *, detached_pid: int | None = None) -> int:
    """Follow a run's events (live or finished) on the dashboard; `q` detaches and leaves it running."""
    events = events_file(run_dir, must_exist=detached_pid is None)
    app = DashboardApp(WatchFeed(events, pid=detached_pid))
    app.run()
    console = Console()
    shown = events.parent
    if app.state.finished:
        console.print(f"run {app.state.status}: {shown}", highlight=False)
    elif detached_pid is not None and pid_alive(detached_pid):
        console.print(f"training continues in the background (pid {detached_pid}).", highlight=False)
        console.print(f"re-attach with: battui watch {shown}", highlight=False)
    else:
        console.print(f"detached from {shown}; re-attach with: battui watch {shown}", highlight=False)
    return 0
