"""The cells of a report: titled `Section`s of strings, numbers, `Bar`s, `MeanStd`s and `Estimate`s.

Every output format (`formats.py`: Rich, Markdown, CSV, JSON; `latex.py`) renders these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

BAR_WIDTH = 12
_EIGHTHS = " ▏▎▍▌▋▊▉█"


@dataclass
class Bar:
    """A percentage drawn as a bar; `delta` (points) against the reference column, if any."""

    value: float
    delta: float | None = None

    def bar(self, width: int = BAR_WIDTH) -> str:
        filled = max(0.0, min(self.value, 100.0)) / 100.0 * width
        full = int(filled)
        rest = _EIGHTHS[int((filled - full) * 8)] if full < width else ""
        return ("█" * full + rest.strip()).ljust(width)

    def number(self) -> str:
        out = f"{self.value:.1f}"
        if self.delta is not None:
            out += f" ({self.delta:+.1f})"
        return out


@dataclass
class Section:
    """One titled table. `bold` holds (row, column) cells to emphasise; `notes` print under it."""

    title: str
    columns: list[str]
    rows: list[list[Any]]
    bold: set[tuple[int, int]] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


def cell_text(value: Any) -> str:
    """Plain text for one cell (Markdown, CSV, and the Rich fallback)."""
    if value is None:
        return "–"
    if isinstance(value, Bar):
        return f"{value.bar()} {value.number()}"
    if isinstance(value, Estimate):
        return value.text()
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def lowest_bold(rows: list[list[Any]], columns: range | list[int]) -> set[tuple[int, int]]:
    """Cells holding the lowest number of each column (ties all bold), as the paper marks the best."""
    out: set[tuple[int, int]] = set()
    for c in columns:
        values = [(_number(row[c]), r) for r, row in enumerate(rows)]
        values = [(v, r) for v, r in values if v is not None]
        if len(values) < 2:
            continue
        best = min(v for v, _ in values)
        out |= {(r, c) for v, r in values if abs(v - best) < 1e-9}
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, Bar):
        return value.value
    if isinstance(value, MeanStd):
        return value.mean
    if isinstance(value, Estimate) and not value.signed:
        return value.value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value):
        return float(value)
    return None


@dataclass
class MeanStd:
    """mean ± std over seeds (std 0 for a single seed)."""

    mean: float
    std: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.2f} ± {self.std:.2f}" if self.n > 1 else f"{self.mean:.2f}"


MARK = "*"  # a difference significant at 0.05 after Holm correction


@dataclass
class Estimate:
    """A number with its 95% interval [low, high]; a difference (`signed`) may carry its (Holm-adjusted)
    p-value and whether it is significant, marked with MARK in text formats."""

    value: float
    low: float | None = None
    high: float | None = None
    p: float | None = None
    significant: bool | None = None
    signed: bool = False

    def interval(self) -> str:
        if self.low is None or self.high is None:
            return ""
        f = "{:+.2f}" if self.signed else "{:.2f}"
        return f" [{f.format(self.low)}, {f.format(self.high)}]"

    def text(self, mark: str = MARK) -> str:
        number = f"{self.value:+.2f}" if self.signed else f"{self.value:.2f}"
        return number + self.interval() + (mark if self.significant else "")
