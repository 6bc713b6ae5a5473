"""Avg and worst-class robust error after each epoch, from the runs' event streams.

    fig = curves_figure(group(loaded.curves))

One colour per method; solid = average over classes, dashed = worst class (the
paper's robust-fairness gap is the distance between them). Several seeds of one
method: the line is the mean over the seeds that reached that epoch and the band
one standard deviation (n - 1) either side.
"""

from __future__ import annotations

from matplotlib.figure import Figure

from battui.figures.sources import Curve
from battui.figures.style import color, legend_above, new_figure, styled
from battui.report.layouts import mean_std

LINES = (("avg", "-", "avg"), ("worst", "--", "worst class"))


def seed_band(curves: list[Curve], which: str) -> tuple[list[int], list[float], list[float]]:
    """Epochs, mean over seeds and std (0 where one seed) of `which` ("avg" or "worst")."""
    epochs = sorted({e for c in curves for e in c.epochs})
    means, stds = [], []
    for epoch in epochs:
        values = [getattr(c, which)[c.epochs.index(epoch)] for c in curves if epoch in c.epochs]
        stat = mean_std(values)
        means.append(stat.mean)
        stds.append(stat.std)
    return epochs, means, stds


def curves_figure(groups: list[tuple[str, list[Curve]]]) -> Figure:
    fig = new_figure(height=2.2)
    with styled():
        ax = fig.subplots()
        for i, (label, curves) in enumerate(groups):
            for which, style, text in LINES:
                epochs, means, stds = seed_band(curves, which)
                ax.plot(epochs, means, linestyle=style, color=color(i), marker="o", markersize=2,
                        label=f"{label}, {text}")
                if len(curves) > 1:
                    ax.fill_between(epochs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                                    color=color(i), alpha=0.2, linewidth=0, label="_band")
        last = max(e for _, curves in groups for c in curves for e in c.epochs)
        ax.set_xlim(0.5 if last < 10 else 0, last + (0.5 if last < 10 else 0))
        if last < 10:
            ax.set_xticks(range(1, last + 1))
        first = groups[0][1][0]
        seeds = max(len(curves) for _, curves in groups)
        spread = f"; mean ± std over {seeds} seeds" if seeds > 1 else ""
        ax.set_xlabel(f"epoch; {first.dataset}, {first.split} split{spread}")
        ax.set_ylabel("Robust error (%)")
        ax.grid(linewidth=0.3, alpha=0.5)
        legend_above(fig, ax, ncol=2)
    return fig
