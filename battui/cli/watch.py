"""`battui watch RUN_DIR`: re-attach to a run, live or finished, on the dashboard or as a plain log."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from battui.cli.app import app, console, err_console
from battui.engine.events import follow_events


def _plain_log(run_dir: Path, events_path: Path, idle_exit: float) -> None:
    """Print every event, then follow new ones until the run finishes or goes quiet.

    Waits for a run that is still starting, and keeps following while a trainer
    holds the run (a resumed or handed-over run appends a new start after a finish).
    """
    from battui.engine.events import RunStatus
    from battui.engine.headless import HeadlessLog
    from battui.engine.runlock import live_pid

    show = HeadlessLog()
    finished, last = None, time.monotonic()
    for event in follow_events(events_path):
        if event is None:
            quiet = time.monotonic() - last > idle_exit
            if (finished or quiet) and live_pid(run_dir) is None:
                break
            continue
        last = time.monotonic()
        show(event)
        finished = event if event.get("type") == "run_finished" else None
    if finished and finished.get("status") == RunStatus.INTERRUPTED:
        print(f"continue with: battui train --resume {run_dir}")
    sys.stdout.flush()


@app.command("watch")
def watch_command(
    run_dir: Path = typer.Argument(None, help="A run directory under runs/ (or its events.jsonl); "
                                              "default: the newest run under ./runs."),
    headless: bool = typer.Option(False, "--headless", help="Print the plain event log instead of the dashboard."),
    idle_exit: float = typer.Option(
        120.0, "--idle-exit", help="Headless: stop following after this many seconds without a new event "
                                   "(and no trainer holding the run)."
    ),
    send: str = typer.Option(None, "--send", metavar="COMMAND",
                             help="Send pause, resume, save or stop to the run's trainer and exit "
                                  "(same user only; the dashboard's p, s and x keys do the same)."),
) -> None:
    """Re-attach to a run, live or finished: the dashboard follows new events as they are written.

    `q` detaches and leaves the run alone; `p` pauses / resumes it, `s` saves
    checkpoints/last.pt, `x` stops it (after asking). Without a terminal (or with
    TERM=dumb, or --headless) it prints the plain log, whole lines.
    """
    from battui.engine.channel import send_command
    from battui.engine.terminal import dumb_terminal
    from battui.report.listing import newest_run
    from battui.tui.launch import events_file, run_watch

    if run_dir is None:
        run_dir = newest_run("runs")
        err_console.print(f"watching {run_dir}", highlight=False, markup=False, soft_wrap=True)
    path = events_file(run_dir)
    if send is not None:
        send_command(path.parent, send)
        console.print(f"sent {send} to the trainer of {path.parent}", highlight=False, markup=False, soft_wrap=True)
        return
    if headless or not sys.stdout.isatty() or dumb_terminal():
        _plain_log(path.parent, path, idle_exit)
        return
    raise typer.Exit(run_watch(run_dir))
