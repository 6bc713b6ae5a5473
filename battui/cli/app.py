"""The Typer application every `battui` command registers on, and its error handling."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(
    name="battui",
    help=(
        "Robust-fair adversarial training in the terminal: train BAT, PGD-AT, TRADES, FRL, FAT, "
        "GAIRAT, CFA, DAFA or WAT with a live dashboard of per-class errors, attack steps and target classes; "
        "evaluate and compare checkpoints in the paper's table format.\n\n"
        "Start with `battui train` (digits, CPU, about a minute) or `battui presets`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from importlib import metadata

        try:
            version = metadata.version("battui")
        except metadata.PackageNotFoundError:
            version = "unknown (not installed)"
        typer.echo(f"battui {version}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Robust-fair adversarial training in the terminal (BAT and eight baselines)."""

console = Console()
err_console = Console(stderr=True)

SET_HELP = "Override a config value: section.key=value (repeatable), e.g. --set train.epochs=5 --set method.beta=6."
DEVICE_HELP = "auto (CUDA when present), cpu, cuda or cuda:N."
