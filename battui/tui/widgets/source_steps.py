"""Source-class fairness panel: how many training-attack steps each class needs to flip.

One row per class: the histogram of `steps_to_flip` over 0..K and "never" (∞),
each bin's height relative to the row's largest bin, then the mean steps over
flipped samples (`battui.engine.metrics.mean_steps`) and the share never flipped.
Classes that flip in few steps are the attack's easy victims.
"""

from __future__ import annotations

from collections.abc import Iterator

from rich.text import Text

from battui.tui.widgets.common import SPARK, Row, View, class_order, fit, heat_color, name_width

NEVER = "rgb(90,160,240)"


def steps_style(mean: float | None, k: int) -> str:
    """Red when a class flips within a few steps, green when it holds out."""
    if mean is None or k <= 0:
        return "dim"
    t = mean / k
    return "red" if t < 0.25 else ("yellow" if t < 0.5 else "green")


class SourceStepsView(View):
    """Attack-step histogram and mean steps per class from the latest `train_attack` event."""

    def lines(self, width: int) -> Iterator[Text | Row]:
        state, hist = self.state, self.state.train_step_hist
        if not hist:
            yield Text("waiting for training-attack statistics…", style="dim")
            return
        k = len(hist[0]) - 2
        bins = k + 2
        nw = name_width(state)
        cell = max(1, min(4, (width - nw - 3 - 16) // bins))
        where = f"epoch {(state.train_epoch or 0) + 1}"
        head = Text(f"training attack, {where}", style="bold")
        if state.train_partial:
            head.append(" (so far)", style="dim")
        head.append(f" · steps to flip, 0..{k}, ∞ never", style="dim")
        yield head
        labels = Text(" " * (nw + 3))
        for s in range(k + 1):
            text = str(s) if cell >= len(str(s)) else (str(s)[-1] if s % 5 == 0 else "·")
            labels.append(text.center(cell) if cell > 1 else text[-1], style="dim")
        labels.append("│", style="dim")
        labels.append("∞".center(cell), style=NEVER)
        labels.append("   mean  never", style="bold")
        yield labels
        means, never = state.mean_steps(), state.never_flipped()
        for c in class_order(state, self.view.sort):
            if c >= len(hist):
                continue
            row = hist[c]
            top = max(row[:-1] + [1])
            sel = c == self.view.selected
            line = Text("▸ " if sel else "  ", style="bold cyan")
            line.append(fit(state.class_name(c), nw) + " ", style="bold reverse" if sel else "")
            for count in row[:-1]:
                share = count / top
                char = SPARK[min(7, int(share * 7.999))] if count else " "
                line.append(char * cell, style=heat_color(0.25 + 0.75 * share))
            line.append("│", style="dim")
            total = sum(row) or 1
            never_char = SPARK[min(7, int(row[-1] / total * 7.999))] if row[-1] else " "
            line.append(never_char * cell, style=NEVER)
            mean = means[c] if c < len(means) else None
            line.append(f"  {mean:5.2f}" if mean is not None else "      —", style=steps_style(mean, k))
            line.append(f" {never[c]:5.1f}%", style=NEVER)
            yield Row(c, line)
        known = [m for m in means if m is not None]
        if known:
            foot = Text("  " + fit("all", nw) + " " + " " * (cell * (k + 1) + 1 + cell), style="bold")
            foot.append(f"  {sum(known) / len(known):5.2f}", style="bold")
            foot.append(f" {sum(never) / len(never):5.1f}%", style="bold")
            yield foot
