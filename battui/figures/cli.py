"""`battui figures SOURCE... -o DIR`: draw the paper's figures and print the files written."""

from __future__ import annotations

from pathlib import Path

import typer

from battui.cli.app import DEVICE_HELP, app, console, err_console
from battui.errors import UserError

SOURCE_HELP = ("Run folders (or their events.jsonl), checkpoints (.pt, evaluated on their test split) or JSON from "
               "`battui eval/compare/table -f json`. Sources of one method with different seeds are drawn as mean "
               "and spread.")
ONLY_HELP = "Comma-separated subset of: per_class, steps_to_flip, target_classes, confusion, robust_error_curves."


@app.command("figures")
def figures_command(
    sources: list[str] = typer.Argument(..., help=SOURCE_HELP),
    output: str = typer.Option("figures", "--output", "-o", help="Folder for the figure files (created)."),
    formats: str = typer.Option("png,pdf", "--format", "-f", help="Comma-separated: png, pdf (vector), svg."),
    only: str = typer.Option(None, "--only", help=ONLY_HELP),
    device: str = typer.Option("auto", "--device", help=f"For evaluating checkpoints: {DEVICE_HELP}"),
    limit: int = typer.Option(0, "--limit", help="Checkpoints: evaluate at most N test images (0 = all)."),
) -> None:
    """Per-class error bars (paper Fig. 1), steps to flip (Fig. 2), target classes and confusion heat maps
    (Fig. 3), and robust error per epoch; PNG/PDF/SVG at one-column width. Prints the paths written."""
    from battui.figures.build import FIGURES, build_figures, write_figures
    from battui.figures.sources import load_sources
    from battui.figures.style import parse_formats

    kinds = parse_formats(formats)
    picked = None
    if only:
        picked = [name.strip() for name in only.split(",") if name.strip()]
        unknown = [name for name in picked if name not in FIGURES]
        if unknown or not picked:
            raise UserError(f"--only: unknown figure '{(unknown or [only])[0]}'; choose from {', '.join(FIGURES)}")
    if limit < 0:
        raise UserError(f"--limit must be >= 0, got {limit}")

    def evaluate(path: str) -> dict:
        from battui.cli.report import _evaluate

        return _evaluate(path, {}, device, limit, True)

    if Path(output).exists() and not Path(output).is_dir():
        raise UserError(f"-o {output} is a file; give a folder for the figures")
    loaded = load_sources(sources, evaluate)
    paths = write_figures(build_figures(loaded, picked), output, kinds)
    for r in loaded.results:
        err_console.print(f"drew {r.name}: {r.label}, seed {r.seed}, {r.dataset} {r.split} split ({r.n} images)",
                          highlight=False, markup=False, soft_wrap=True)
    for path in paths:
        console.print(str(path), highlight=False, markup=False, soft_wrap=True)
