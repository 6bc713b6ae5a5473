"""The Typer application every `battui` command registers on, and its error handling."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(
    name="battui",
    help=(
        "Robust-fair adversarial training in the terminal: train BAT, PGD-AT, TRADES, FRL, FAT "
        "or GAIRAT with a live dashboard of per-class errors, attack steps and target classes; "
        "evaluate and compare checkpoints in the paper's table format.\n\n"
        "Start with `battui train` (digits, CPU, about a minute) or `battui presets`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

console = Console()
err_console = Console(stderr=True)

SET_HELP = "Override a config value: section.key=value (repeatable), e.g. --set train.epochs=5 --set method.beta=6."
DEVICE_HELP = "auto (CUDA when present), cpu, cuda or cuda:N."
