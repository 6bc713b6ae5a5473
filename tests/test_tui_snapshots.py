"""Screen snapshots of the dashboard from a fixed generated event stream (pytest-textual-snapshot).

Made with textual==8.2.8 (pinned in the test extra): other versions draw differently.
Nothing on screen depends on the clock: ETA and rates come from the events.
Update after an intended change with `pytest tests/test_tui_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

from battui.tui.app import DashboardApp
from battui.tui.feeds import ReplayFeed
from tests.support.events import cifar100_classes, generate_events


def running_app(**kwargs) -> DashboardApp:
    return DashboardApp(ReplayFeed(generate_events(epochs=3, total_epochs=5, finished=None, **kwargs)))


def test_main_screen_80x24(snap_compare):
    assert snap_compare(running_app(), terminal_size=(80, 24))


def test_main_screen_160x48(snap_compare):
    assert snap_compare(running_app(), terminal_size=(160, 48))


def test_hundred_classes_160x48(snap_compare):
    app = running_app(classes=cifar100_classes(), dataset="cifar100", preset="cifar100-resnet18")
    assert snap_compare(app, terminal_size=(160, 48))


def test_targets_panel_80x24(snap_compare):
    assert snap_compare(running_app(), terminal_size=(80, 24), press=["3", "j"])


def test_titles_after_a_layout_switching_resize_80x24_to_160x48(snap_compare):
    """One panel with a tab strip at 80 columns; after widening, four panels, each with its own title."""

    async def widen(pilot):
        await pilot.resize_terminal(160, 48)
        await pilot.pause(0.3)

    assert snap_compare(running_app(), terminal_size=(80, 24), run_before=widen)
