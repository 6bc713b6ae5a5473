"""`battui train` in a real terminal (tmux): the dashboard draws per-class bars and `q` quits cleanly.

Skipped when tmux is absent (`apt-get install -y tmux`; the CI script installs it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed (apt-get install -y tmux)")


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


def wait_for(predicate, timeout: float, step: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def test_train_shows_class_bars_and_q_saves_a_checkpoint(tmp_path: Path):
    done = tmp_path / "exit-code"
    command = (f"cd {tmp_path} && {sys.executable} -m battui train --preset synthetic-tiny "
               f"--set train.epochs=50 --device cpu; echo $? > {done}; sleep 30")
    term = Tmux(f"battui-test-{os.getpid()}", 100, 30, command)
    try:
        shown = wait_for(lambda: "standard + boundary" in (s := term.screen()) and "class3" in s, timeout=60)
        screen = term.screen()
        assert shown, f"no per-class bars on screen:\n{screen}"
        term.keys("q")
        assert wait_for(done.exists, timeout=60), f"train did not exit after q:\n{term.screen()}"
        assert done.read_text().strip() == "0"
        assert list(tmp_path.glob("runs/*/checkpoints/last.pt")), "q must leave checkpoints/last.pt"
    finally:
        term.close()
