"""`battui` command line: `battui --help` lists the commands.

Every user mistake raises `UserError`; `main()` prints it on one line and exits
with code 2, without a traceback. Usage errors (unknown option, missing
argument) also exit with 2, through Typer.
"""

from __future__ import annotations

import sys

from rich.markup import escape

from battui.cli import export, methods, presets, report, runs, train, watch  # noqa: F401  (each registers its commands)
from battui.cli.app import app, err_console
from battui.errors import UserError
from battui.figures import cli as _figures_cli  # noqa: F401  (registers `battui figures`)


def one_line(text: str) -> str:
    """The message as one printable line: control characters (newlines, ANSI escapes) shown escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text.strip())


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, prog_name="battui")
    except UserError as exc:
        err_console.print(f"[bold red]error:[/] {escape(one_line(str(exc)))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
