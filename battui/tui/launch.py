"""Entry points the CLI calls: the dashboard over a training run here, or over a run directory.

    code = run_live(trainer, control, guard)   # `battui train` on a terminal (guard: TerminalGuard)
    code = run_watch("runs/x")                 # `battui watch runs/x`
    code = run_watch(run_dir, detached_pid=pid)  # `battui train --detach`: quitting leaves it running
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from rich.console import Console

from battui.engine.control import RunControl
from battui.engine.events import RunStatus
from battui.engine.headless import HeadlessLog
from battui.engine.rundir import RunDir
from battui.engine.terminal import TerminalGuard, spawn_detached
from battui.errors import UserError
from battui.tui.app import DashboardApp
from battui.tui.driver import hangup_safe_driver
from battui.tui.feeds import LiveFeed, Trainable, WatchFeed, pid_alive


def _say(text: str) -> None:
    Console().print(text, highlight=False, markup=False, soft_wrap=True)


def run_live(trainer: Trainable, control: RunControl, guard: TerminalGuard | None = None,
             on_hangup: str = "continue") -> int:
    """Train in a thread under the dashboard; returns 0 (completed, stopped, detached) or 1 (failed).

    `q` asks, then stops (saving last.pt) or detaches; `d` detaches: last.pt is saved
    and a background `--resume` process takes the run (and its lock) over. When the
    terminal is lost (`guard.lost`), the dashboard closes and, with on_hangup
    "continue", training goes on here, headless, logging to RUN/train.log.
    """
    guard = guard or TerminalGuard(trainer.run_dir)
    feed = LiveFeed(trainer, control)
    app = DashboardApp(feed, lost=guard.lost, driver_class=hangup_safe_driver(guard.lost))
    try:
        code = app.run()
    finally:
        feed.detach_app()
        if guard.lost.is_set():
            guard.to_log()
        elif feed.running and not app.detaching and not control.stop.is_set():
            feed.stop()  # the app ended without waiting (crash): still stop the loop cleanly
    run_dir = trainer.run_dir
    if feed.running and guard.lost.is_set():
        if on_hangup == "stop":
            control.request_stop("terminal lost (run.on_hangup=stop)", signal=signal.SIGHUP)
        else:
            log = HeadlessLog()
            if feed.started_event:
                log(feed.started_event)  # the run's shape (epochs, classes) for the lines that follow
            trainer.listeners.append(log)
            _say(f"terminal lost: training continues headless in pid {os.getpid()}; "
                 f"re-attach with: battui watch {run_dir}")
    feed.join()
    status = feed.result or app.state.status
    if app.detaching and trainer.files.keep_lock:
        trainer.files.keep_lock = False
        lock = trainer.files.lock
        if status == RunStatus.INTERRUPTED:
            pid = spawn_detached(run_dir, lock)
            _say(f"detached: training continues in the background (pid {pid}), log in {RunDir(run_dir).log}")
            _say(f"re-attach with: battui watch {run_dir}")
            _say(f"stop it with: battui watch {run_dir} --send stop   (saves last.pt)")
            return 0
        if lock is not None:
            lock.release()
    _say(f"run {status}: {run_dir}" + (f" ({feed.error})" if feed.error else ""))
    if status == RunStatus.INTERRUPTED and run_dir:
        _say(f"continue with: battui train --resume {run_dir}")
    elif status != RunStatus.FAILED and run_dir:
        _say(f"look again with: battui watch {run_dir}")
    return 1 if status == RunStatus.FAILED else int(code or 0)


def events_file(run_dir: str | Path, *, must_exist: bool = True) -> Path:
    """The events.jsonl of a run directory (or the file itself); UserError when it is not a run.

    A run directory that is still starting (config.yaml, no events yet) is accepted:
    the viewer waits for its first events.
    """
    path = Path(run_dir)
    if path.is_file() and path.name.endswith(".jsonl"):
        return path
    if not path.is_dir():
        raise UserError(f"no run directory at {path}: pass a folder under runs/ (see `ls runs/`)")
    events = RunDir(path).events
    if must_exist and not RunDir(path).holds_run():
        raise UserError(f"{path} has no events.jsonl, so it is not a battui run directory; pick one under runs/")
    return events


def run_watch(run_dir: str | Path, *, detached_pid: int | None = None) -> int:
    """Follow a run's events (live or finished) on the dashboard; `q` detaches and leaves it running."""
    events = events_file(run_dir)
    guard = TerminalGuard(events.parent)
    app = DashboardApp(WatchFeed(events, pid=detached_pid), lost=guard.lost,
                       driver_class=hangup_safe_driver(guard.lost))
    app.run()
    if guard.lost.is_set():
        return 0  # nobody left to read a closing line
    shown = events.parent
    if app.state.finished:
        _say(f"run {app.state.status}: {shown}")
        if app.state.status == RunStatus.INTERRUPTED:
            _say(f"continue with: battui train --resume {shown}")
    elif detached_pid is not None and pid_alive(detached_pid):
        _say(f"training continues in the background (pid {detached_pid}).")
        _say(f"re-attach with: battui watch {shown}")
    else:
        _say(f"detached from {shown}; re-attach with: battui watch {shown}")
    return 0
