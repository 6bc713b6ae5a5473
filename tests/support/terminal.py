"""Real terminals for the dashboard tests: detached tmux sessions, each on a private server socket.

Tests that need one are marked `needs_tmux` (skipped without tmux: `apt-get install -y tmux`;
the CI script installs it).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

TMUX = shutil.which("tmux")
needs_tmux = pytest.mark.skipif(TMUX is None, reason="tmux is not installed (apt-get install -y tmux)")


class Tmux:
    """One detached tmux session on a private server socket."""

    def __init__(self, name: str, width: int, height: int, command: str):
        self.base = [TMUX, "-L", name]
        self.name = name
        subprocess.run([*self.base, "new-session", "-d", "-s", name, "-x", str(width), "-y", str(height), command],
                       check=True)

    def screen(self) -> str:
        out = subprocess.run([*self.base, "capture-pane", "-p", "-t", self.name], capture_output=True, text=True)
        return out.stdout

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.base, "send-keys", "-t", self.name, *keys], check=True)

    def close(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True)
