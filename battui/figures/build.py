"""Every figure the sources allow, by file name, and writing them.

    figures = build_figures(loaded)                  # [("per_class", Figure), ...]
    paths = write_figures(figures, "figs", ["png", "pdf"])

Per-class, steps-to-flip, target-class and one confusion heat map per method come
from the evaluations; the robust-error curve needs at least one run's event stream.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from battui.errors import UserError
from battui.figures.curves import curves_figure
from battui.figures.per_class import per_class_figure
from battui.figures.sources import Loaded, group
from battui.figures.steps import steps_figure
from battui.figures.style import save, slug
from battui.figures.targets import confusion_figure, pooled_confusion, target_figure

FIGURES = ("per_class", "steps_to_flip", "target_classes", "confusion", "robust_error_curves")


def build_figures(loaded: Loaded, only: list[str] | None = None) -> list[tuple[str, Figure]]:
    wanted = set(only or FIGURES)
    out: list[tuple[str, Figure]] = []
    if loaded.results:
        groups = group(loaded.results)
        if "per_class" in wanted:
            out.append(("per_class", per_class_figure(groups)))
        if "steps_to_flip" in wanted:
            out.append(("steps_to_flip", steps_figure(groups)))
        if "target_classes" in wanted:
            out.append(("target_classes", target_figure(groups)))
        if "confusion" in wanted:
            seen: set[str] = set()
            for label, results in groups:
                name = slug(label)
                name = name if name not in seen else f"{name}-{len(seen) + 1}"
                seen.add(name)
                out.append((f"confusion-{name}",
                            confusion_figure(pooled_confusion(results), results[0].classes, label)))
    if loaded.curves and "robust_error_curves" in wanted:
        out.append(("robust_error_curves", curves_figure(group(loaded.curves))))
    if not out:
        raise UserError("nothing to draw: the robust-error curves need a run folder or events.jsonl")
    return out


def write_figures(figures: list[tuple[str, Figure]], out_dir: str | Path, formats: list[str]) -> list[Path]:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"-o {out} is a file; give a folder for the figures")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {out}: {exc.strerror}") from None
    paths: list[Path] = []
    for name, fig in figures:
        paths += save(fig, out, name, formats)
    return paths
