"""`Panel`: a scrollable, bordered dashboard panel that draws one `View` of a `RunState`.

What a panel is (its id, key, title and the `View` that draws it) is data, a
`PanelSpec`; the dashboard's list of them is `battui.tui.panels.PANELS`.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.containers import VerticalScroll
from textual.widgets import Static

from battui.tui.state import RunState
from battui.tui.widgets.common import View, ViewOptions


@dataclass(frozen=True)
class PanelSpec:
    """One dashboard panel: widget id, the key that shows it, its title, and the `View` class that draws it."""

    id: str
    key: str
    title: str
    view: type[View]


class Panel(VerticalScroll, can_focus=False):
    """Draws `spec.view` from the run state and keeps the selected class's row in sight."""

    DEFAULT_CSS = """
    Panel { border: round $panel-lighten-2; padding: 0 1; height: 1fr; scrollbar-size-vertical: 1; }
    Panel.-active { border: round $accent; }
    Panel > Static { width: 100%; }
    """

    def __init__(self, spec: PanelSpec, *, classes: str | None = None):
        super().__init__(id=spec.id, classes=classes)
        self.spec = spec

    def compose(self):
        yield Static(classes="body")

    def show(self, state: RunState, view: ViewOptions) -> None:
        """Redraw from `state` and keep the selected class's row in sight."""
        content = self.spec.view(state, view)
        self.query_one(Static).update(content)
        row = content.line_of(view.selected, self.scrollable_content_region.width or 76)
        if row is not None:
            self.call_after_refresh(self._reveal, row)

    def _reveal(self, row: int) -> None:
        height = self.scrollable_content_region.height
        if row < self.scroll_y or row >= self.scroll_y + height:
            self.scroll_to(y=max(0, row - height // 2), animate=False)
