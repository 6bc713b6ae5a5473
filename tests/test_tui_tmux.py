"""`battui train` in a real terminal (tmux): the dashboard draws per-class bars, `q` asks and quits cleanly,
Ctrl-C saves and exits 130 (as `battui train --help` says).

Skipped when tmux is absent (`apt-get install -y tmux`; the CI script installs it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.support.processes import wait_for
from tests.support.terminal import Tmux, needs_tmux

pytestmark = needs_tmux


def train_in_tmux(tmp_path: Path, session: str) -> tuple[Tmux, Path]:
    """`battui train` (synthetic-tiny, 50 epochs, CPU) in a 100x30 tmux session; its exit code lands in the path."""
    done = tmp_path / "exit-code"
    command = (f"cd {tmp_path} && {sys.executable} -m battui train --preset synthetic-tiny "
               f"--set train.epochs=50 --device cpu; echo $? > {done}; sleep 30")
    return Tmux(f"{session}-{os.getpid()}", 100, 30, command), done


def test_train_shows_class_bars_and_q_saves_a_checkpoint(tmp_path: Path):
    term, done = train_in_tmux(tmp_path, "battui-test")
    try:
        shown = wait_for(lambda: "standard + boundary" in (s := term.screen()) and "class3" in s, timeout=60)
        screen = term.screen()
        assert shown, f"no per-class bars on screen:\n{screen}"
        term.keys("q")
        assert wait_for(lambda: "Stop training?" in term.screen(), timeout=10), term.screen()  # q asks first
        term.keys("y")
        assert wait_for(done.exists, timeout=60), f"train did not exit after q:\n{term.screen()}"
        assert done.read_text().strip() == "0"
        assert list(tmp_path.glob("runs/*/checkpoints/last.pt")), "q must leave checkpoints/last.pt"
    finally:
        term.close()


def test_ctrl_c_in_the_dashboard_saves_and_exits_130(tmp_path: Path):
    term, done = train_in_tmux(tmp_path, "battui-ctrlc")
    try:
        assert wait_for(lambda: "class errors" in term.screen() and "epoch 1/50 batch" in term.screen(), 60)
        term.keys("C-c")
        assert wait_for(done.exists, timeout=60), f"train did not exit after Ctrl-C:\n{term.screen()}"
        assert done.read_text().strip() == "130"
        (run,) = tmp_path.glob("runs/*")
        assert (run / "checkpoints" / "last.pt").is_file()
        finished = [line for line in (run / "events.jsonl").read_text().splitlines() if "run_finished" in line]
        assert '"status":"interrupted"' in finished[-1] and "SIGINT" in finished[-1]
    finally:
        term.close()
