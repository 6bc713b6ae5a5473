"""`battui` command line: `battui --help` lists the commands.

Every user mistake raises `UserError`; `main()` prints it on one line and exits
with code 2, without a traceback.
"""

from __future__ import annotations

import sys

import click

from battui.cli import presets, report, train, watch  # noqa: F401  (each registers its commands)
from battui.cli.app import app, err_console
from battui.errors import UserError


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, standalone_mode=False)
    except UserError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
