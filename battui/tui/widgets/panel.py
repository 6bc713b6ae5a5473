"""`Panel`: a scrollable, bordered dashboard panel that renders one view of a `RunState`."""

from __future__ import annotations

from rich.console import RenderableType
from textual.containers import VerticalScroll
from textual.widgets import Static

from battui.tui.state import RunState
from battui.tui.widgets.common import ViewOptions


class Panel(VerticalScroll, can_focus=False):
    """Base for the four panels: subclasses say what to draw and where the selected class is."""

    DEFAULT_CSS = """
    Panel { border: round $panel-lighten-2; padding: 0 1; height: 1fr; scrollbar-size-vertical: 1; }
    Panel.-active { border: round $accent; }
    Panel > Static { width: 100%; }
    """
    label = "panel"

    def compose(self):
        yield Static(classes="body")

    def show(self, state: RunState, view: ViewOptions) -> None:
        """Redraw from `state` and keep the selected class's row in sight."""
        self.query_one(Static).update(self.draw(state, view))
        row = self.selected_row(state, view)
        if row is not None:
            self.call_after_refresh(self._reveal, row)

    def _reveal(self, row: int) -> None:
        height = self.scrollable_content_region.height
        if row < self.scroll_y or row >= self.scroll_y + height:
            self.scroll_to(y=max(0, row - height // 2), animate=False)

    def draw(self, state: RunState, view: ViewOptions) -> RenderableType:
        """The renderable for this panel (width-aware renderables adapt at paint time)."""
        raise NotImplementedError

    def selected_row(self, state: RunState, view: ViewOptions) -> int | None:
        """Line of the selected class in the drawn content, to scroll it into view."""
        return None
