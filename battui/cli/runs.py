"""`battui runs`: the runs under runs/ with their status, progress, best result and live pid."""

from __future__ import annotations

import typer

from battui.cli.app import app


@app.command("runs")
def runs_command(
    root: str = typer.Option("runs", "--root", help="The folder that holds the run directories (run.root)."),
) -> None:
    """List runs: name, method, status (running, paused, completed, interrupted, failed, stale),
    epochs done / planned, best worst-class robust error on validation, and the trainer's pid while live."""
    from battui.report.listing import format_runs, list_runs

    runs = list_runs(root)
    if not runs:
        print(f"no runs under {root}/; start one with `battui train`")
        return
    for line in format_runs(runs):
        print(line)
    print("watch one with: battui watch RUN_DIR (no argument: the newest)")
