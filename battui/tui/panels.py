"""The dashboard's panels, as data: compose, the panel keys and titles, and the keys screen all read `PANELS`.

Adding a panel is one module with a `View` subclass (its `lines(width)`, each
class's line yielded as a `Row`) and one `PanelSpec` here. The order is the
key order, the tab order and the wide layout's grid order (two columns, row by row).
"""

from __future__ import annotations

from battui.tui.widgets.class_errors import ClassErrorsView
from battui.tui.widgets.curves import CurvesView
from battui.tui.widgets.panel import PanelSpec
from battui.tui.widgets.source_steps import SourceStepsView
from battui.tui.widgets.targets import TargetsView

PANELS = (
    PanelSpec("errors", "1", "class errors", ClassErrorsView),
    PanelSpec("steps", "2", "attack steps", SourceStepsView),
    PanelSpec("targets", "3", "targets", TargetsView),
    PanelSpec("curves", "4", "curves", CurvesView),
)
