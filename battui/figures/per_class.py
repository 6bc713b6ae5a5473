"""Figure 1 of the paper: per-class clean and robust error, methods side by side.

    fig = per_class_figure(group(loaded.results))

Two panels sharing the class axis: clean (standard) error on top, robust error
below, one bar per method and class. Several seeds of a method: the bar is the mean
over seeds and the whisker one standard deviation (n - 1), as in `battui table`.
"""

from __future__ import annotations

from matplotlib.figure import Figure

from battui.figures.sources import Result
from battui.figures.style import grouped_bars, legend_above, new_figure, styled, width_for
from battui.report.layouts import mean_std

PANELS = (("standard", "Clean error (%)"), ("robust", "Robust error (%)"))


def seed_stats(results: list[Result], kind: str) -> tuple[list[float], list[float] | None]:
    """Per-class mean over seeds of `kind` error, and the std (None for one seed)."""
    k = len(results[0].classes)
    stats = [mean_std([float(getattr(r, kind)[c]) for r in results]) for c in range(k)]
    return [s.mean for s in stats], ([s.std for s in stats] if len(results) > 1 else None)


def per_class_figure(groups: list[tuple[str, list[Result]]]) -> Figure:
    classes = groups[0][1][0].classes
    fig = new_figure(height=3.3, width=width_for(len(classes)))
    with styled():
        axes = fig.subplots(2, 1, sharex=True)
        for ax, (kind, ylabel) in zip(axes, PANELS):
            series = [(label, *seed_stats(results, kind)) for label, results in groups]
            grouped_bars(ax, classes, series)
            ax.set_ylabel(ylabel)
            ax.set_ylim(0, 100 if max((max(s[1]) for s in series), default=0) > 60 else None)
        axes[0].tick_params(axis="x", labelbottom=False)
        legend_above(fig, axes[0])
        seeds = max(len(results) for _, results in groups)
        spread = f"; mean ± std over {seeds} seeds" if seeds > 1 else ""
        first = groups[0][1][0]
        axes[1].set_xlabel(f"{first.dataset} {first.split} split, {attack_text(first.attack)}{spread}")
        fig.align_ylabels(axes)
    return fig


def attack_text(attack: dict) -> str:
    """`PGD-20, ε=0.2` for the axis note."""
    name = attack.get("name", "pgd")
    if name == "pgd":
        head = f"PGD-{attack.get('steps', '?')}"
    else:
        head = "AutoAttack" if name == "autoattack" else str(name)
    eps = attack.get("eps")
    if eps is None:
        return head
    eps_text = f"{round(eps * 255)}/255" if abs(eps * 255 - round(eps * 255)) < 1e-6 and eps < 0.2 else f"{eps:g}"
    return f"{head}, ε={eps_text}"
