"""The Textual dashboard: `run_live` for a training run in this process, `run_watch` for a run directory.

Only this package (and `battui/cli/watch.py`) imports textual; the engine never does.
"""

from battui.tui.launch import run_live, run_watch

__all__ = ["run_live", "run_watch"]
