"""`battui methods`: every training method with its source and parameters, and the contract checks.

    battui methods                                  # built-in methods and installed entry points
    battui methods my_pkg.losses:MyLoss             # one from outside battui, with its parameters
    battui methods my-loss --check                  # run the method contract on it (exit 1 if it fails)
"""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from battui.cli.app import app, console
from battui.config import check_method_name
from battui.methods import MethodError, available_methods, check_method, method_class, method_source, paper_label


def _value(v: object) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(map(_value, v)) + "]"
    return f"{v:.6g}" if isinstance(v, float) else repr(v) if isinstance(v, str) else str(v)


def _params(name: str) -> str:
    return ", ".join(f"{k}={_value(v)}" for k, v in method_class(name).defaults().items())


def _row(name: str) -> tuple[str, str, str, str]:
    try:
        return name, paper_label(name, {}), method_source(name).describe(), _params(name)
    except MethodError as exc:  # a broken entry point is listed, with why, rather than hiding the others
        return name, "", "entry point", f"unusable: {exc}"


@app.command("methods")
def methods_command(
    names: list[str] = typer.Argument(None, metavar="[NAME]...",
                                      help="Methods to show (default: all): a built-in or entry-point name, "
                                           "or module:Class."),
    check: bool = typer.Option(False, "--check",
                               help="Run the method contract checks (docs/METHODS.md) on each; exit 1 if one fails."),
) -> None:
    """List the training methods: name (for --method and table --methods), the paper's label, where the class
    comes from (built-in, a module:Class, or an installed package's `battui.methods` entry point) and every
    parameter with its default (set with --set method.NAME=VALUE)."""
    chosen = list(names or available_methods())
    for name in chosen:  # every name resolves before anything runs: a bad one is one line, exit 2
        check_method_name(name)
        if names:
            method_class(name)
    if not check:
        table = Table(title="battui methods", title_justify="left")
        for col in ("method", "label", "source", "parameters (defaults)"):
            table.add_column(col, overflow="fold", no_wrap=col == "method")
        for name in chosen:
            table.add_row(*map(escape, _row(name)))
        console.print(table)
        console.print("Train one with `battui train --method NAME`; a Method subclass of your own with "
                      "`--method my_pkg.module:MyMethod` (docs/METHODS.md).", highlight=False)
        return
    failed = 0
    for name in chosen:
        checks = check_method(name)
        bad = [c for c in checks if not c.ok]
        failed += bool(bad)
        console.print(f"{escape(name)}: {len(checks) - len(bad)}/{len(checks)} contract checks passed",
                      highlight=False)
        for c in checks:
            mark = "[green]ok[/]  " if c.ok else "[red]FAIL[/]"
            console.print(f"  {mark} {escape(c.name)}" + (f": {escape(c.detail)}" if c.detail else ""),
                          highlight=False)
    if failed:
        raise typer.Exit(1)
