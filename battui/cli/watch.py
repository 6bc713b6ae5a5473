"""`battui watch RUN_DIR`: re-attach to a run, live or finished, on the dashboard or as a plain log."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import typer

from battui.cli.app import app, console, err_console
from battui.engine.events import follow_events


def event_line(event: dict[str, Any]) -> str | None:
    """A minimal one-line rendering of an event for the plain log (None: not worth a line)."""
    kind = event.get("type")
    if kind == "run_started":
        return (f"run {event.get('run_name')}: {event.get('method')} on {event.get('dataset')} "
                f"({event.get('model')}, {event.get('device')}), {event.get('epochs')} epochs")
    if kind == "batch":
        return (f"epoch {int(event.get('epoch', 0)) + 1} batch {event.get('batch')}/{event.get('batches')} "
                f"loss {float(event.get('loss', 0.0)):.4f} lr {float(event.get('lr', 0.0)):.3g} "
                f"{float(event.get('images_per_s', 0.0)):.0f} img/s")
    if kind == "eval":
        avg, worst = event.get("avg") or {}, event.get("worst") or {}
        return (f"eval epoch {int(event.get('epoch', 0)) + 1} ({event.get('split')}): "
                + "  ".join(f"{k} avg {float(avg.get(k, 0)):.1f} worst {float(worst.get(k, 0)):.1f}"
                            for k in ("standard", "boundary", "robust")))
    if kind == "checkpoint":
        return f"checkpoint {event.get('kind')}: {event.get('path')}"
    if kind == "run_finished":
        reason = f" ({event.get('reason')})" if event.get("reason") else ""
        return f"run {event.get('status')}{reason}"
    if kind == "message":
        return f"{event.get('level', 'info')}: {event.get('text')}"
    return None


def _printer():
    """The engine's own log format (with ETA), falling back to one short line for an odd event."""
    from battui.engine.headless import HeadlessLog

    log = HeadlessLog()

    def show(event: dict[str, Any]) -> None:
        try:
            log(event)
        except (KeyError, TypeError, ValueError, IndexError):
            line = event_line(event)
            if line:
                print(line, flush=True)  # whole lines: no wrapping at the terminal's width

    return show


def _plain_log(run_dir: Path, events_path: Path, idle_exit: float) -> None:
    """Print every event, then follow new ones until the run finishes or goes quiet.

    Waits for a run that is still starting, and keeps following while a trainer
    holds the run (a resumed or handed-over run appends a new start after a finish).
    """
    from battui.engine.runlock import live_pid

    show = _printer()
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
    if finished and finished.get("status") == "interrupted":
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
