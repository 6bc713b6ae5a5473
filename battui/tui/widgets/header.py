"""Run header: identity, status, progress bar with ETA and images/s, and the selected class in one line."""

from __future__ import annotations

from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from battui.engine.events import RunStatus
from battui.tui.state import RunState
from battui.tui.widgets.common import ViewOptions, error_style, format_duration

STATUS_STYLE = {
    RunStatus.RUNNING: ("●", "bold green"),
    RunStatus.WAITING: ("○", "dim"),
    RunStatus.PAUSED: ("❚❚", "bold yellow"),
    RunStatus.SAVING: ("…", "bold yellow"),
    RunStatus.COMPLETED: ("✔", "bold green"),
    RunStatus.INTERRUPTED: ("■", "bold yellow"),
    RunStatus.FAILED: ("✖", "bold red"),
    RunStatus.STALE: ("?", "bold red"),
}


def class_detail(state: RunState, view: ViewOptions) -> Text:
    """One line about the selected class: its errors, its attack steps and its top targets."""
    c = view.selected
    if not state.num_classes:
        return Text("")
    line = Text("class ", style="dim")
    name = state.class_name(c)
    line.append(name if name == str(c) else f"{c} {name}", style="bold cyan")
    ev = state.latest_eval
    if ev and c < len(ev.get("robust", [])):
        line.append("  rob ")
        line.append(f"{ev['robust'][c]:.1f}", style=error_style(ev["robust"][c]))
        line.append(f" = std {ev['standard'][c]:.1f} + bnd {ev['boundary'][c]:.1f}")
    means = state.mean_steps()
    if c < len(means) and means[c] is not None:
        line.append(f"  steps {means[c]:.2f}, never {state.never_flipped()[c]:.0f}%")
    matrix, _ = state.confusion(view.target_source)
    if matrix and c < len(matrix):
        row = matrix[c]
        flips = sum(v for j, v in enumerate(row) if j != c)
        if flips:
            top = sorted((j for j in range(len(row)) if j != c and row[j]), key=lambda j: -row[j])[:2]
            line.append("  → " + ", ".join(f"{state.class_name(j)} {100 * row[j] / flips:.0f}%" for j in top))
    return line


class RunHeader(Static):
    """Three lines at the top of the dashboard."""

    DEFAULT_CSS = "RunHeader { height: 3; padding: 0 1; background: $boost; }"

    def show(self, state: RunState, view: ViewOptions, status: str, note: str = "") -> None:
        """Redraw; `status` may override the stream's (paused, saving, stale), `note` explains it."""
        top = Table.grid(expand=True, padding=(0, 1))
        top.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        top.add_column(justify="right", no_wrap=True)
        ident = Text("battui ", style="bold magenta")
        ident.append(state.run_name or "(waiting for run_started)", style="bold")
        if state.method:
            precision = f" · {state.precision}" if state.precision else ""
            ident.append(f"  {state.method} · {state.dataset} · {state.model} · {state.device}{precision}", style="dim")
        icon, style = STATUS_STYLE.get(status, ("●", "bold"))
        label = Text(f"{icon} {status}", style=style)
        if note:
            label.append(f" {note}", style="dim")
        top.add_row(ident, label)

        bar = Table.grid(expand=True, padding=(0, 1))
        bar.add_column(no_wrap=True)
        bar.add_column(ratio=1)
        bar.add_column(no_wrap=True)
        epochs = max(state.epochs, 1)
        where = Text(f"epoch {min(state.epoch + 1, epochs)}/{epochs} batch {state.batch}/{state.batches or 0}")
        stats = Text(f"{100 * state.progress:3.0f}%  ETA {format_duration(state.eta)}  "
                     f"{state.images_per_s:,.0f} img/s")
        if state.loss is not None:
            stats.append(f"  loss {state.loss:.3f}", style="bold")
        bar.add_row(where, ProgressBar(total=1.0, completed=state.progress, pulse=False, animation_time=0.0), stats)

        bottom = Table.grid(expand=True, padding=(0, 1))
        bottom.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        bottom.add_column(justify="right", no_wrap=True, max_width=30, overflow="ellipsis")
        level, text = state.messages[-1] if state.messages else ("info", "")
        bottom.add_row(class_detail(state, view),
                       Text(text, style={"warning": "yellow", "error": "red"}.get(level, "dim")))
        self.update(Group(top, bar, bottom))
