"""`battui export tensorboard RUN`: a finished or copied run's event stream as TensorBoard files."""

from __future__ import annotations

from pathlib import Path

import typer

from battui.cli.app import app, console

export_app = typer.Typer(help="Export a run to other tools (TensorBoard).", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("tensorboard")
def export_tensorboard(
    run_dir: Path = typer.Argument(..., help="A run folder (or its events.jsonl)."),
    output: Path = typer.Option(None, "--output", "-o", help="Folder for the files (default RUN/tensorboard)."),
    force: bool = typer.Option(False, "--force", help="Replace TensorBoard files already in the folder."),
) -> None:
    """Write RUN/tensorboard/ from RUN/events.jsonl: the same scalars, histograms and images that
    `battui train --tensorboard` writes live. View with `tensorboard --logdir RUN/tensorboard`."""
    from battui.report.tensorboard import export_run

    out, counts = export_run(run_dir, output, force=force)
    console.print(f"wrote {counts['scalar']} scalars, {counts['histogram']} histograms and {counts['image']} images "
                  f"to {out}", highlight=False, markup=False, soft_wrap=True)
    console.print(f"view with: tensorboard --logdir {out}", highlight=False, markup=False, soft_wrap=True)
