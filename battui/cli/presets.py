"""`battui presets`: what can be trained out of the box."""

from __future__ import annotations

from rich.table import Table

from battui.cli.app import app, console
from battui.config import list_presets, load_config


@app.command("presets")
def presets_command() -> None:
    """List the presets: name, dataset, model, method and a one-line description."""
    table = Table(title="battui presets", title_justify="left")
    for col in ("preset", "dataset", "model", "method", "description"):
        table.add_column(col, overflow="fold", no_wrap=col == "preset")  # names stay copyable
    for name in list_presets():
        cfg = load_config(name)
        table.add_row(name, cfg.data.name, cfg.model.name, cfg.method.name, cfg.description)
    console.print(table)
    console.print("Use one with `battui train --preset NAME`; change anything with `--set section.key=value`.")
