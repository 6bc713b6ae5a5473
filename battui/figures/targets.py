"""Figure 3 of the paper (target-class fairness): where adversarial examples land.

    fig = target_figure(group(loaded.results))              # target-class distribution per method
    fig = confusion_figure(confusion, classes, "BAT")       # adversarial confusion heat map

The target distribution is the share of flipped samples (off the diagonal of the
adversarial confusion matrix) predicted as each class; a fair attack spreads them
evenly (the dashed line, 1/K). The heat map shows, per source class (row), the
percentage of its samples whose adversarial example was predicted as each class
(column); the diagonal (samples that stayed correct) is left blank so the target
tendencies are visible. Several seeds: their matrices are added up.
"""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from battui.engine.metrics import kl_to_uniform, target_distribution
from battui.figures.per_class import attack_text
from battui.figures.sources import Result
from battui.figures.style import (
    COLUMN_WIDTH,
    HEATMAP,
    class_axis,
    grouped_bars,
    legend_above,
    new_figure,
    styled,
    width_for,
)


def pooled_confusion(results: list[Result]) -> list[list[int]]:
    total = np.zeros((len(results[0].confusion),) * 2, dtype=np.int64)
    for r in results:
        total += np.asarray(r.confusion, dtype=np.int64)
    return total.tolist()


def confusion_percent(confusion: list[list[int]]) -> np.ma.MaskedArray:
    """Row-normalised percentages with the diagonal masked (what the heat map shows)."""
    m = np.asarray(confusion, dtype=float)
    rows = m.sum(axis=1, keepdims=True)
    pct = np.divide(100.0 * m, rows, out=np.zeros_like(m), where=rows > 0)
    return np.ma.masked_array(pct, mask=np.eye(len(m), dtype=bool))


def target_figure(groups: list[tuple[str, list[Result]]]) -> Figure:
    classes = groups[0][1][0].classes
    fig = new_figure(height=2.0, width=width_for(len(classes)))
    with styled():
        ax = fig.subplots()
        series = []
        for label, results in groups:
            dist = target_distribution(pooled_confusion(results))
            series.append((f"{label} (KL {kl_to_uniform(dist):.2f})", [100.0 * q for q in dist], None))
        grouped_bars(ax, classes, series)
        ax.axhline(100.0 / len(classes), color="#555555", linewidth=0.7, linestyle="--", label="uniform")
        ax.set_ylabel("Share of flipped samples (%)")
        legend_above(fig, ax, ncol=2)
        first = groups[0][1][0]
        ax.set_xlabel(f"adversarial (target) class; {first.dataset} {first.split} split, {attack_text(first.attack)}")
    return fig


def confusion_figure(confusion: list[list[int]], classes: list[str], title: str, dpi: float | None = None) -> Figure:
    k = len(classes)
    side = COLUMN_WIDTH if k <= 12 else min(7.0, 0.07 * k + 1.5)
    fig = new_figure(height=side * 0.88, width=side, **({"dpi": dpi} if dpi else {}))
    with styled():
        ax = fig.subplots()
        cmap = matplotlib.colormaps[HEATMAP].with_extremes(bad="#f2f2f2")
        image = ax.imshow(confusion_percent(confusion), cmap=cmap, vmin=0, aspect="equal", interpolation="nearest")
        class_axis(ax, classes)
        ax.set_yticks(range(k))
        ax.set_yticklabels(classes)
        ax.set_ylim(k - 0.5, -0.5)
        ax.tick_params(axis="y", length=0)
        ax.spines[:].set_visible(False)
        ax.set_xlabel("adversarial prediction (target class)")
        ax.set_ylabel("true (source) class")
        ax.set_title(f"{title}: adversarial confusion, % of each row (diagonal blank)")
        bar = fig.colorbar(image, ax=ax, fraction=0.045, pad=0.03)
        bar.ax.tick_params(labelsize=6)
        bar.outline.set_linewidth(0.4)
    return fig
