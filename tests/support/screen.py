"""Helpers for the dashboard tests: run an async test, fold events into a state, read the screen as text.

    from tests.support.screen import folded, screen_text, sync
"""

from __future__ import annotations

import asyncio
import functools

from textual.app import App
from textual.errors import NoWidget
from textual.geometry import Region
from textual.widget import Widget

from battui.tui.state import RunState


def sync(test):
    """Run an async test with asyncio.run (no pytest async plugin needed)."""

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return wrapper


def folded(events: list[dict]) -> RunState:
    """The `RunState` after `events`."""
    state = RunState()
    for event in events:
        state.apply(event)
    return state


def screen_text(app: App) -> str:
    """The screen's lines: each cell from the topmost widget there (`Screen.get_widget_at`), as it renders it."""
    screen, (width, height) = app.screen, app.size

    def top(x: int, y: int) -> tuple[Widget | None, Region]:
        try:
            return screen.get_widget_at(x, y)
        except NoWidget:
            return None, Region()

    lines = []
    for y in range(height):
        line, x = "", 0
        while x < width:
            widget, region = top(x, y)
            end = x + 1  # the run of cells this widget is topmost in
            while end < width and top(end, y)[0] is widget:
                end += 1
            if widget is None:
                line += " " * (end - x)
            else:
                (strip,) = widget.render_lines(Region(x - region.x, y - region.y, end - x, 1))
                line += strip.text
            x = end
        lines.append(line)
    return "\n".join(lines)
