"""Target-class fairness panel: where adversarial examples land.

A heat map of the adversarial confusion matrix (rows = true class, columns =
predicted class, cells = % of the row, diagonal = still correct) and, on the
right of each row, the share of *all* flipped samples that land in that class
as a target (`battui.engine.metrics.target_distribution`), with its KL to
uniform in the title line. With many classes only the classes most involved in
flips (plus the selected one) are drawn, so cells stay readable.
"""

from __future__ import annotations

from collections.abc import Iterator

from rich.text import Text

from battui.tui.widgets.common import Row, View, fit, hbar, heat_style, name_width

SHARE = "rgb(200,120,230)"


def shown_classes(matrix: list[list[int]], limit: int, selected: int) -> list[int]:
    """Up to `limit` classes, most involved in flips first (as source or target), in index order."""
    k = len(matrix)
    if k <= limit:
        return list(range(k))
    involvement = [
        sum(matrix[c][j] for j in range(k) if j != c) + sum(matrix[r][c] for r in range(k) if r != c) for c in range(k)
    ]
    ranked = sorted(range(k), key=lambda c: (-involvement[c], c))[:limit]
    if 0 <= selected < k and selected not in ranked:
        ranked[-1] = selected
    return sorted(ranked)


class TargetsView(View):
    """Adversarial confusion heat map and target distribution (eval, or the training attack)."""

    def layout(self, width: int) -> tuple[list[list[int]] | None, list[int], int, int]:
        """(matrix, classes shown, name width, cell width) for a given width."""
        matrix, _ = self.state.confusion(self.view.target_source)
        if not matrix:
            return None, [], 0, 0
        k = len(matrix)
        nw = name_width(self.state, 10) + len(str(k - 1)) + 1
        cell = 4 if width - nw - 3 - 16 >= 4 * min(k, 12) else 3
        limit = max(2, min(k, (width - nw - 3 - 16) // cell))
        return matrix, shown_classes(matrix, limit, self.view.selected), nw, cell

    def lines(self, width: int) -> Iterator[Text | Row]:
        state = self.state
        matrix, shown, nw, cell = self.layout(width)
        dist, kl, source = state.targets(self.view.target_source)
        if not matrix:
            yield Text("waiting for adversarial predictions (training attack or eval)…", style="dim")
            return
        k = len(matrix)
        flipped = sum(matrix[r][c] for r in range(k) for c in range(k) if r != c)
        total = sum(map(sum, matrix))
        epoch = (state.latest_eval or {}).get("epoch", 0) if source == "eval" else (state.train_epoch or 0)
        head = Text(f"adversarial targets ({source}, epoch {int(epoch) + 1})", style="bold")
        head.append(f" · KL(q‖U) = {kl:.3f}" if kl is not None else " · KL(q‖U) = —", style="bold magenta")
        head.append(f" · flipped {flipped:,}/{total:,}", style="dim")
        yield head
        note = "rows true, columns predicted, cells % of row"
        if len(shown) < k:
            note = f"rows true, cols predicted, % of row; {len(shown)}/{k} classes most involved"
        yield Text(note, style="dim")
        cols = Text(" " * (nw + 2))
        for j in shown:
            cols.append(str(j).rjust(cell), style="bold")
        cols.append("   target share q", style="bold")
        yield cols
        top_share = max(dist) if dist and max(dist) > 0 else 1.0
        for r in shown:
            row_total = sum(matrix[r]) or 1
            sel = r == self.view.selected
            line = Text("▸ " if sel else "  ", style="bold cyan")
            line.append(fit(f"{r} {state.class_name(r)}", nw), style="bold reverse" if sel else "")
            for j in shown:
                pct = 100.0 * matrix[r][j] / row_total
                if j == r:
                    line.append("·".rjust(cell), style="dim")
                elif matrix[r][j] == 0:
                    line.append(" " * cell)
                else:
                    line.append(f"{pct:.0f}".rjust(cell), style=heat_style(min(1.0, pct / 40.0)))
            share = dist[r] if r < len(dist) else 0.0
            line.append(f" {100 * share:5.1f}% ", style=SHARE)
            line.append(hbar(share, top_share, 8), style=SHARE)
            yield Row(r, line)
