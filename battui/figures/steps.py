"""Figure 2 of the paper (source-class fairness): attack steps until each class flips.

    fig = steps_figure(group(loaded.results))

Per source class and method: the mean number of PGD steps to the first
misclassification over the samples the attack flipped, with the spread (standard
deviation of the steps) as a whisker; the histograms of several seeds are added up.
Classes that flip in fewer steps sit closer to the decision boundary.
"""

from __future__ import annotations

import math

from matplotlib.figure import Figure

from battui.figures.per_class import attack_text
from battui.figures.sources import Result
from battui.figures.style import grouped_bars, legend_above, new_figure, styled, width_for


def pooled_hist(results: list[Result]) -> list[list[int]]:
    """The step histograms of several seeds, added up (rows: class; columns: steps 0..K, never)."""
    rows = [list(r) for r in results[0].step_hist]
    for other in results[1:]:
        for c, row in enumerate(other.step_hist):
            rows[c] = [a + b for a, b in zip(rows[c], row)]
    return rows


def step_stats(hist: list[list[int]]) -> tuple[list[float | None], list[float | None]]:
    """Mean and standard deviation of the steps to flip per class, over flipped samples."""
    means, stds = [], []
    for row in hist:
        flipped = row[:-1]
        n = sum(flipped)
        if not n:
            means.append(None)
            stds.append(None)
            continue
        mean = sum(s * c for s, c in enumerate(flipped)) / n
        means.append(mean)
        stds.append(math.sqrt(sum(c * (s - mean) ** 2 for s, c in enumerate(flipped)) / n))
    return means, stds


def steps_figure(groups: list[tuple[str, list[Result]]]) -> Figure:
    classes = groups[0][1][0].classes
    fig = new_figure(height=2.0, width=width_for(len(classes)))
    with styled():
        ax = fig.subplots()
        series = [(label, *step_stats(pooled_hist(results))) for label, results in groups]
        grouped_bars(ax, classes, series)
        ax.set_ylabel("Steps to misclassify")
        ax.set_ylim(bottom=0)
        legend_above(fig, ax)
        first = groups[0][1][0]
        ax.set_xlabel(f"source class; {first.dataset} {first.split} split, {attack_text(first.attack)}; "
                      "mean ± std over flipped samples")
    return fig
