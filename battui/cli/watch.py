"""`battui watch RUN_DIR`: re-attach to a run, live or finished, on the dashboard or as a plain log."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import typer

from battui.cli.app import app, console
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
    try:
        from battui.engine.headless import print_event  # the engine's own log format, when present
    except ImportError:
        return lambda event: (line := event_line(event)) and console.print(line, highlight=False, markup=False)
    return print_event


def _plain_log(events_path: Path, idle_exit: float) -> None:
    """Print every event, then follow new ones until the run finishes or goes quiet."""
    show = _printer()
    finished, last = False, time.monotonic()
    for event in follow_events(events_path):
        if event is None:
            # Stop only once caught up: a resumed run appends a new start after a finish.
            if finished or time.monotonic() - last > idle_exit:
                break
            continue
        last = time.monotonic()
        show(event)
        finished = event.get("type") == "run_finished"
    sys.stdout.flush()


@app.command("watch")
def watch_command(
    run_dir: Path = typer.Argument(..., help="A run directory under runs/ (or its events.jsonl)."),
    headless: bool = typer.Option(False, "--headless", help="Print the plain event log instead of the dashboard."),
    idle_exit: float = typer.Option(
        120.0, "--idle-exit", help="Headless: stop following after this many seconds without a new event."
    ),
) -> None:
    """Re-attach to a run, live or finished: the dashboard follows new events as they are written.

    `q` detaches and leaves the run alone (it never stops someone else's training).
    """
    from battui.tui.launch import events_file, run_watch

    path = events_file(run_dir)
    if headless or not sys.stdout.isatty():
        _plain_log(path, idle_exit)
        return
    raise typer.Exit(run_watch(run_dir))
