"""The dashboard's panels as data: `PANELS` drives the panels, their keys, titles and the keys screen,
and each panel's `View` knows the line of every class it draws."""

from __future__ import annotations

from battui.tui.app import DashboardApp
from battui.tui.feeds import ReplayFeed
from battui.tui.panels import PANELS
from battui.tui.widgets.common import ViewOptions
from tests.support.events import generate_events
from tests.support.screen import folded, screen_text, sync


def test_each_view_knows_the_line_of_every_class_it_draws():
    state = folded(generate_events(epochs=2, finished=None))
    for spec in PANELS:
        for selected in (0, 7):
            content = spec.view(state, ViewOptions(selected=selected))
            lines = content.laid_out(76)[0].plain.split("\n")
            row = content.line_of(selected, 76)
            if spec.id == "curves":
                assert row is None  # no class rows: nothing to scroll to
            else:
                assert lines[row].startswith("▸") and lines.count(lines[row]) == 1, (spec.id, row, lines)
                assert not any(line.startswith("▸") for i, line in enumerate(lines) if i != row)


@sync
async def test_panels_keys_titles_and_help_come_from_panels():
    app = DashboardApp(ReplayFeed(generate_events(epochs=2, finished=None)))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.2)
        assert [panel.spec for panel in app.panels] == list(PANELS)
        for i, spec in enumerate(PANELS):
            await pilot.press(spec.key)
            assert app.active == i
            shown = [panel.spec for panel in app.panels if panel.region.area]
            assert shown == [spec]  # narrow: only this panel takes room on screen
            assert f"{spec.key} {spec.title}" in screen_text(app)
        await pilot.press("tab")
        assert app.active == 0  # tab wraps around after the last panel
        await pilot.press("question_mark")
        text = screen_text(app)
        assert " ".join(spec.key for spec in PANELS) in text and " · ".join(s.title for s in PANELS) in text
