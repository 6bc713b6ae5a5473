"""Shared drawing helpers for the dashboard panels: colours, bars, sparklines, class order."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from rich.console import Console, ConsoleOptions, RenderResult
from rich.style import Style
from rich.text import Text

from battui.tui.state import RunState

SPARK = "▁▂▃▄▅▆▇█"
EIGHTHS = " ▏▎▍▌▋▊▉"
SORTS = ("class", "robust", "boundary", "standard")


@dataclass
class ViewOptions:
    """What the person picked: the selected class, the class order, the confusion source."""

    selected: int = 0
    sort: str = "class"
    target_source: str = "eval"


class Row(NamedTuple):
    """A line that shows class `cls`: `View.lines` yields it so the panel knows which line each class is on."""

    cls: int
    text: Text


class View(abc.ABC):
    """A width-aware panel renderable: `lines(width)` runs once per width, however often Textual asks.

    Textual renders a widget's content to measure its height and again to paint
    it; caching keeps a 100-class panel cheap to redraw. A class's line is
    yielded as a `Row`, so `line_of` finds it without counting header lines.
    """

    def __init__(self, state: RunState, view: ViewOptions):
        self.state, self.view = state, view
        self._cache: dict[int, tuple[Text, dict[int, int]]] = {}

    @abc.abstractmethod
    def lines(self, width: int) -> Iterable[Text | Row]:
        """The panel's lines at `width` columns, each class's line as a `Row`."""

    def laid_out(self, width: int) -> tuple[Text, dict[int, int]]:
        """The text at `width` columns and the line number of each class's row in it."""
        if width not in self._cache:
            texts: list[Text] = []
            rows: dict[int, int] = {}
            for line in self.lines(width):
                if isinstance(line, Row):
                    rows[line.cls] = len(texts)
                    line = line.text
                texts.append(line)
            text = Text("\n").join(texts)
            text.no_wrap, text.overflow = True, "crop"
            self._cache[width] = text, rows
        return self._cache[width]

    def line_of(self, cls: int, width: int) -> int | None:
        """The line class `cls` is drawn on at `width` columns (None when it is not drawn)."""
        return self.laid_out(width)[1].get(cls)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.laid_out(options.max_width)[0]


def error_style(value: float) -> Style:
    """Green (0%) through yellow to red (>= 60%) for an error percentage."""
    t = max(0.0, min(1.0, value / 60.0))
    if t < 0.5:
        r, g = int(80 + 350 * t), 200
    else:
        r, g = 255, int(200 - 300 * (t - 0.5))
    return Style(color=f"rgb({min(r, 255)},{max(g, 40)},60)")


def delta_text(delta: float | None, width: int = 6) -> Text:
    """`+2.1` in red (error went up), `-0.5` in green, blank without a previous eval."""
    if delta is None:
        return Text(" " * width)
    if abs(delta) < 0.05:
        return Text(f"{'±0.0':>{width}}", style="dim")
    return Text(f"{delta:>+{width}.1f}", style="red" if delta > 0 else "green")


def hbar(value: float, scale: float, width: int) -> str:
    """A horizontal bar of `value / scale` of `width` cells, in eighths of a cell."""
    if width <= 0 or scale <= 0:
        return ""
    cells = max(0.0, min(1.0, value / scale)) * width
    full = int(cells)
    rest = int((cells - full) * 8)
    bar = "█" * full + (EIGHTHS[rest] if rest and full < width else "")
    return bar.ljust(width)


def sparkline(values: Sequence[float], width: int) -> str:
    """Block-character sparkline of the whole history in `width` cells (bucket means, or stretched)."""
    if width <= 0 or not values:
        return ""
    points = resample(list(values), width)
    if len(points) < width:
        points = [points[i * len(points) // width] for i in range(width)]
    lo, hi = min(points), max(points)
    span = hi - lo
    if span <= 1e-12:
        return SPARK[3] * len(points)
    return "".join(SPARK[min(7, int((p - lo) / span * 7.999))] for p in points)


def resample(values: list[float], width: int) -> list[float]:
    """At most `width` points: bucket means over the whole history, oldest first."""
    n = len(values)
    if n <= width:
        return values
    out = []
    for i in range(width):
        a, b = i * n // width, (i + 1) * n // width
        chunk = values[a:b] or values[a : a + 1]
        out.append(sum(chunk) / len(chunk))
    return out


def heat_color(share: float) -> str:
    """Dark red through orange to yellow for a share in 0..1."""
    t = max(0.0, min(1.0, share))
    r = int(60 + 195 * min(1.0, t * 1.6))
    g = int(40 + 180 * max(0.0, t - 0.4))
    b = int(70 * (1 - t))
    return f"rgb({r},{g},{b})"


def heat_style(share: float) -> Style:
    """Background heat for a share in 0..1 (confusion cells); zero stays unpainted."""
    t = max(0.0, min(1.0, share))
    if t <= 0.0:
        return Style(color="grey42")
    return Style(bgcolor=heat_color(t), color="black" if t > 0.55 else "white")


def fit(name: str, width: int) -> str:
    """Cut a class name to `width` cells (with an ellipsis) and pad it."""
    return (name if len(name) <= width else name[: max(1, width - 1)] + "…").ljust(width)


def name_width(state: RunState, limit: int = 14) -> int:
    return max(5, min(limit, max((len(c) for c in state.classes), default=5)))


def class_order(state: RunState, sort: str) -> list[int]:
    """Class indices in display order: by index, or by an error kind (worst first)."""
    k = state.num_classes
    values = (state.latest_eval or {}).get(sort) if sort != "class" else None
    if not values or len(values) != k:
        return list(range(k))
    return sorted(range(k), key=lambda c: (-values[c], c))


def join(parts: Iterable[Text | str]) -> Text:
    out = Text()
    for part in parts:
        out.append_text(part) if isinstance(part, Text) else out.append(part)
    return out


def format_duration(seconds: float | None) -> str:
    """`1:02:03`, `4:05` or `--:--`: deterministic, from the events' own numbers."""
    if seconds is None:
        return "--:--"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"
