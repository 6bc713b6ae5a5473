"""Figure 1 of the paper: per-class clean and robust error, methods side by side.

    fig = per_class_figure(group(loaded.results))

Two panels sharing the class axis: clean (standard) error on top, robust error
below, one bar per method and class. The whiskers are 95% intervals (`battui.report.stats`),
labelled as such under the axes: for one seed the Wilson interval of the class's error on its
test images; for several seeds of a method the bar is the mean over seeds and the whisker the
t interval of that mean, as `battui table` reports it.
"""

from __future__ import annotations

from matplotlib.figure import Figure

from battui.figures.sources import Result
from battui.figures.style import grouped_bars, legend_above, new_figure, styled, width_for
from battui.report.stats import seed_interval, wilson

PANELS = (("standard", "Clean error (%)"), ("robust", "Robust error (%)"))


def seed_stats(results: list[Result], kind: str) -> tuple[list[float], list[tuple[float, float] | None]]:
    """Per-class mean over seeds of `kind` error and its 95% interval: over seeds (t) for several,
    Wilson on the class's images for one."""
    k = len(results[0].classes)
    values = [[float(getattr(r, kind)[c]) for r in results] for c in range(k)]
    means = [sum(v) / len(v) for v in values]
    if len(results) > 1:
        return means, [seed_interval(v) for v in values]
    only = results[0]
    counts = [sum(row) for row in only.step_hist]
    return means, [wilson(round(e * n / 100.0), n) for e, n in zip(means, counts)]


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
        seeds = {len(results) for _, results in groups}
        if seeds == {1}:
            spread = "; whiskers: 95% Wilson interval"
        elif 1 in seeds:
            spread = "; whiskers: 95% interval (t over seeds; Wilson for one seed)"
        else:
            spread = f"; mean over {max(seeds)} seeds, whiskers: 95% t interval"
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
