"""Per-class error panel: standard + boundary = robust error for every class, from the latest eval.

Each bar is the robust error, split into its standard part (blue) and boundary
part (orange; `▒` instead of `█` under NO_COLOR, where colours are dropped);
`┆` marks the class average. The worst class carries `▲`, the
selected one `▸`; `Δ` columns are the change since the previous eval.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

from rich.text import Text

from battui.tui.widgets.common import Row, View, class_order, delta_text, error_style, fit, name_width

STANDARD = "rgb(90,140,230)"
BOUNDARY = "rgb(240,150,50)"
KINDS = ("standard", "boundary", "robust")


def boundary_glyph() -> str:
    """Without colour (NO_COLOR) the boundary part of a bar must still differ from the standard part."""
    return "▒" if "NO_COLOR" in os.environ else "█"


class ClassErrorsView(View):
    """Per-class standard/boundary/robust error bars from the latest `eval` event, laid out for the width."""

    def lines(self, width: int) -> Iterator[Text | Row]:
        state, ev = self.state, self.state.latest_eval
        if not ev or not ev.get("robust"):
            yield Text("waiting for the first evaluation (at the end of epoch 1)…", style="dim")
            return
        attack = ev.get("attack") or {}
        prev = state.previous_eval
        head = Text(f"eval epoch {int(ev.get('epoch', 0)) + 1} · {ev.get('split', 'val')} · "
                    f"{str(attack.get('name', 'pgd')).upper()}-{attack.get('steps', '?')} "
                    f"ε={attack.get('eps', '?')}", style="bold")
        head.append(f" · Δ vs epoch {int(prev.get('epoch', 0)) + 1}" if prev else " · first eval", style="dim")
        yield head
        nw = name_width(state)
        all_deltas = width >= 100
        numbers = 3 * 6 + (3 if all_deltas else 1) * 7
        bar_w = max(8, width - nw - 4 - numbers)  # 2 marks, name, space; bar's trailing space
        peak = max(ev["robust"] + [1.0])
        scale = min(100.0, math.ceil(peak / 10.0) * 10.0)
        legend = Text(" " * (nw + 3))
        legend.append("standard", style=STANDARD)
        legend.append(" + ")
        legend.append("boundary" if boundary_glyph() == "█" else "boundary ▒", style=BOUNDARY)
        legend.append(f" (0–{scale:.0f}%)", style="dim")
        legend.truncate(nw + 4 + bar_w)
        legend.pad_right(nw + 4 + bar_w - legend.cell_len)
        legend.append(self._labels(all_deltas), style="bold")
        yield legend
        avg = (ev.get("avg") or {}).get("robust", 0.0)
        for which in ("avg", "worst"):
            values = [float((ev.get(which) or {}).get(k, 0.0)) for k in KINDS]
            ds = [state.summary_delta(which, k) for k in KINDS]
            line = Text("  " + fit(which, nw) + " ", style="bold")
            if which == "avg":
                line.append_text(self._bar(values[0], values[1], scale, bar_w, avg))
            else:
                line.append("█" * int(round(values[2] / scale * bar_w)), style="red")
                line.append(" " * (bar_w - int(round(values[2] / scale * bar_w))) + " ")
            line.append_text(self._numbers(values, ds, all_deltas))
            yield line
        yield Text("─" * min(width, nw + 4 + bar_w + numbers), style="dim")
        deltas = {kind: state.eval_delta(kind) for kind in KINDS}
        worst = state.worst_class("robust")
        for c in class_order(state, self.view.sort):
            mark = Text("▸" if c == self.view.selected else " ", style="bold cyan")
            mark.append("▲" if c == worst else " ", style="bold red")
            name_style = "bold reverse" if c == self.view.selected else ("bold red" if c == worst else "")
            line = mark + Text(fit(state.class_name(c), nw) + " ", style=name_style)
            line.append_text(self._bar(ev["standard"][c], ev["boundary"][c], scale, bar_w, avg))
            line.append_text(self._numbers([ev[k][c] for k in KINDS], [deltas[k][c] for k in KINDS], all_deltas))
            yield Row(c, line)

    @staticmethod
    def _labels(all_deltas: bool) -> str:
        if all_deltas:
            return "".join(f"{kind:>6} {'Δ':>6}" for kind in ("std", "bnd", "rob"))
        return f"{'std':>6}{'bnd':>6}{'rob':>6} {'Δrob':>6}"

    @staticmethod
    def _bar(standard: float, boundary: float, scale: float, width: int, avg: float) -> Text:
        s_cells = int(round(min(standard, scale) / scale * width))
        r_cells = min(width, int(round(min(standard + boundary, scale) / scale * width)))
        avg_cell = min(width - 1, int(avg / scale * width))
        runs = [(0, s_cells, STANDARD, "█"), (s_cells, r_cells, BOUNDARY, boundary_glyph()), (r_cells, width, "", " ")]
        bar = Text()
        for start, end, style, glyph in runs:  # one span per run, the avg tick splitting the run it falls in
            if start <= avg_cell < end:
                bar.append(glyph * (avg_cell - start), style=style)
                bar.append("┆", style=f"bold white on {style}" if style else "white")
                bar.append(glyph * (end - avg_cell - 1), style=style)
            elif end > start:
                bar.append(glyph * (end - start), style=style)
        bar.append(" ")
        return bar

    @staticmethod
    def _numbers(values: list[float], deltas: list[float | None], all_deltas: bool) -> Text:
        out = Text()
        for i, value in enumerate(values):
            out.append(f"{value:6.1f}", style=error_style(value) if i == 2 else "")
            if all_deltas:
                out.append(" ")
                out.append_text(delta_text(deltas[i]))
        if not all_deltas:
            out.append(" ")
            out.append_text(delta_text(deltas[2]))
        return out
