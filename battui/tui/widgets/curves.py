"""Curves panel: loss, its named parts and the learning rate per logged batch; errors per eval.

One sparkline per series, scaled to that series' own min..max, with the
latest value and the range beside it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from rich.text import Text

from battui.tui.widgets.common import View, sparkline

COLOURS = ["cyan", "magenta", "yellow", "green", "blue", "bright_red"]


def _number(value: float) -> str:
    """At most about 6 characters: 3.375, 0.01, 28.21, 1e-05."""
    return f"{value:.4g}"


class CurvesView(View):
    """Loss parts, learning rate and per-eval error curves: labelled sparklines, as wide as the panel allows."""

    def series(self) -> list[tuple[str, Sequence[float], str]]:
        state = self.state
        out: list[tuple[str, Sequence[float], str]] = [("loss", state.loss_history, "bold white")]
        for i, (name, values) in enumerate(state.part_history.items()):
            out.append((f" {name}", values, COLOURS[i % len(COLOURS)]))
        out.append(("lr", state.lr_history, "bright_black"))
        for kind, which, colour in (("robust", "avg", "rgb(240,150,50)"), ("robust", "worst", "red"),
                                    ("boundary", "avg", "rgb(240,190,120)"), ("standard", "avg", "rgb(90,140,230)")):
            values = [float((e.get(which) or {}).get(kind, 0.0)) for e in state.eval_history]
            out.append((f"{kind[:3]} {which} %", values, colour))
        return out

    def lines(self, width: int) -> Iterator[Text]:
        state = self.state
        if not state.loss_history:
            yield Text("waiting for the first logged batch…", style="dim")
            return
        head = Text(f"step {state.step:,}", style="bold")
        head.append(f" · {len(state.loss_history)} logged batches · {len(state.eval_history)} evals", style="dim")
        yield head
        label_w = 13
        spark_w = max(8, width - label_w - 8 - 14)
        for label, values, colour in self.series():
            line = Text(label[:label_w].ljust(label_w), style=colour if label.strip() == label else "")
            if not values:
                line.append("—", style="dim")
                yield line
                continue
            line.append(sparkline(values, spark_w).ljust(spark_w), style=colour)
            line.append(f" {_number(values[-1]):>7}", style="bold")
            line.append(f" {_number(min(values))}–{_number(max(values))}"[:14], style="dim")
            yield line
