"""The look every figure shares: Okabe-Ito colours, column-width sizes, fonts, and saving.

Figures are `matplotlib.figure.Figure` objects drawn on the Agg canvas; pyplot is
never imported, so nothing needs a display (plotting works over SSH) and no global
figure state leaks between calls.

    fig = new_figure(height=2.4)                 # 3.4 in wide: one column of a two-column paper
    bars = grouped_bars(ax, classes, [("BAT", values, errors), ...])
    paths = save(fig, "figs", "per_class", ["png", "pdf"])
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from battui.errors import UserError

# Okabe & Ito (2008), distinguishable under the common colour-vision deficiencies;
# yellow and black last (yellow is faint on white, black reads as "axis").
OKABE_ITO = ["#0072B2", "#D55E00", "#009E73", "#E69F00", "#56B4E9", "#CC79A7", "#F0E442", "#000000"]
HEATMAP = "cividis"  # perceptually uniform and colour-blind safe
COLUMN_WIDTH = 3.4  # inches; one column of a two-column paper (AAAI, NeurIPS, ICML)
WIDE_WIDTH = 7.0  # both columns, for many classes
FORMATS = ("png", "pdf", "svg")
DPI = 200

STYLE = {
    "font.size": 7,
    "axes.titlesize": 7.5,
    "axes.labelsize": 7,
    "xtick.labelsize": 6.5,
    "ytick.labelsize": 6.5,
    "legend.fontsize": 6.5,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.6,
    "lines.linewidth": 1.2,
    "pdf.fonttype": 42,  # embedded TrueType: text stays text in the PDF (editable, searchable)
    "ps.fonttype": 42,
    "svg.fonttype": "path",
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.02,
}


def color(i: int) -> str:
    return OKABE_ITO[i % len(OKABE_ITO)]


def width_for(num_classes: int) -> float:
    """Column width up to 10 classes, both columns beyond (CIFAR-100 needs the room)."""
    return COLUMN_WIDTH if num_classes <= 12 else WIDE_WIDTH


def new_figure(height: float, width: float = COLUMN_WIDTH, **kwargs) -> Figure:
    """A Figure on the Agg canvas, styled (call inside `styled()` when adding axes)."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(width, height), **kwargs)
    FigureCanvasAgg(fig)
    return fig


def styled():
    """`with styled(): ...` applies STYLE while axes and artists are created."""
    return matplotlib.rc_context(STYLE)


def parse_formats(text: str) -> list[str]:
    """`png,pdf` -> ["png", "pdf"]; an unknown one is a `UserError`."""
    out = []
    for item in text.split(","):
        fmt = item.strip().lower().lstrip(".")
        if not fmt:
            continue
        if fmt not in FORMATS:
            raise UserError(f"unknown figure format '{fmt}'; use some of: {', '.join(FORMATS)} (e.g. --format png,pdf)")
        if fmt not in out:
            out.append(fmt)
    if not out:
        raise UserError(f"--format is empty; use some of: {', '.join(FORMATS)}")
    return out


def slug(text: str) -> str:
    """A file-name-safe version of a label: `TRADES(1/λ=6)` -> `trades-1-λ-6`."""
    out = re.sub(r"[^\w.=-]+", "-", text.lower(), flags=re.UNICODE).strip("-.")
    return out or "figure"


def save(fig: Figure, out_dir: str | Path, name: str, formats: Sequence[str]) -> list[Path]:
    """Write `out_dir/name.<fmt>` for each format; returns the paths."""
    out = Path(out_dir)
    paths = []
    with styled():
        for fmt in formats:
            path = out / f"{name}.{fmt}"
            try:
                fig.savefig(path, format=fmt, dpi=DPI)
            except OSError as exc:
                raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
            paths.append(path)
    return paths


def class_axis(ax, classes: Sequence[str]) -> None:
    """Class names on the x axis, slanted when they would collide."""
    ax.set_xticks(range(len(classes)))
    longest = max((len(c) for c in classes), default=1)
    slant = longest * len(classes) > 40
    ax.set_xticklabels(classes, rotation=40 if slant else 0, ha="right" if slant else "center",
                       rotation_mode="anchor")
    ax.set_xlim(-0.6, len(classes) - 0.4)
    ax.tick_params(axis="x", length=0)


def _error_lengths(heights: list[float], errors: Sequence) -> list | list[list[float]]:
    """Matplotlib's yerr: lengths, or [below, above] for (low, high) intervals; no error draws none."""
    if not any(isinstance(e, tuple) for e in errors):
        return [0.0 if e is None or math.isnan(e) else float(e) for e in errors]
    below, above = [], []
    for h, e in zip(heights, errors):
        ok = isinstance(e, tuple) and not math.isnan(h)
        below.append(max(0.0, h - e[0]) if ok else 0.0)
        above.append(max(0.0, e[1] - h) if ok else 0.0)
    return [below, above]


def grouped_bars(ax, classes: Sequence[str], series: Sequence[tuple[str, Sequence[float], Sequence[float] | None]]):
    """One bar per class and series, series side by side; `None` values draw no bar.

    `series` = [(label, values, errors or None)], an error being a symmetric length or a
    (low, high) interval; returns the BarContainers in order (each labelled with its series' label).
    """
    n = max(1, len(series))
    width = 0.8 / n
    containers = []
    for i, (label, values, errors) in enumerate(series):
        xs = [c - 0.4 + width * (i + 0.5) for c in range(len(classes))]
        heights = [math.nan if v is None else float(v) for v in values]
        err = None
        if errors is not None:
            err = _error_lengths(heights, errors)
        bars = ax.bar(xs, heights, width=width * 0.92, color=color(i), label=label, yerr=err,
                      error_kw={"elinewidth": 0.6, "capsize": 1.2, "ecolor": "#333333"}, linewidth=0)
        containers.append(bars)
    class_axis(ax, classes)
    ax.grid(axis="y", linewidth=0.3, alpha=0.5)
    ax.set_axisbelow(True)
    return containers


def legend_above(fig: Figure, ax, ncol: int | None = None) -> None:
    """The methods' legend in one row above the axes (no space lost inside the plot)."""
    handles, labels = ax.get_legend_handles_labels()
    if len(labels) > 1:
        ncol = ncol or min(len(labels), 4)
        ax.legend(handles, labels, loc="lower left", bbox_to_anchor=(0.0, 1.02), ncol=ncol, borderaxespad=0.0,
                  handlelength=1.2, columnspacing=1.0)
