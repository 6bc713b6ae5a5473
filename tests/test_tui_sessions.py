"""Runs that outlive their terminal, in real terminals (tmux): hang-up, detach, control from watch.

Each test starts a tiny run (synthetic-tiny, CPU) in a tmux session on a private
server socket, and kills whatever it started. Skipped without tmux.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from battui.engine.channel import send_command
from battui.engine.checkpoint import load_checkpoint
from battui.engine.runlock import live_pid
from tests.support.processes import (
    batches_after,
    kill,
    log_has,
    of_type,
    run_events,
    running,
    training,
    wait_for,
)
from tests.support.terminal import Tmux, needs_tmux

pytestmark = needs_tmux
ENV = "OMP_NUM_THREADS=1 MKL_NUM_THREADS=1"


def train_command(tmp_path: Path, name: str, *args: str, term: str = "xterm-256color") -> str:
    return (f"cd {tmp_path} && env TERM={term} {ENV} {sys.executable} -m battui train --preset synthetic-tiny "
            f"--device cpu --run-name {name} {' '.join(args)}; echo $? > {tmp_path / (name + '.exit')}; sleep 60")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


EPOCHS = 8  # 56 batches: the terminal closes two batches in, well inside the run on any machine


def test_killing_the_terminal_under_the_dashboard_leaves_the_run_to_complete(tmp_path):
    run = tmp_path / "runs" / "hup"
    term = Tmux(f"battui-hup-{os.getpid()}", 100, 30, train_command(tmp_path, "hup", "--epochs", str(EPOCHS)))
    pid = None
    try:
        assert wait_for(lambda: training(run) and "epoch" in term.screen(), timeout=120), term.screen()
        assert "class errors" in term.screen()  # the dashboard, not the plain log
        pid = live_pid(run)
        term.close()  # the terminal goes away under the dashboard (SIGHUP, dead pty)
        closed = time.time()
        assert wait_for(lambda: log_has(run, f"terminal lost: training continues headless in pid {pid}"),
                        timeout=120), "the trainer did not notice the hang-up"
        assert wait_for(lambda: of_type(run, "run_finished"), timeout=180)
        assert of_type(run, "run_finished")[-1]["status"] == "completed"
        after = batches_after(run, closed)  # it lived on: batches after the terminal went, to the last epoch
        assert after and after[-1]["epoch"] == EPOCHS - 1
        assert wait_for(lambda: not running(pid), timeout=30), "the trainer outlived its run"
        log = (run / "train.log").read_text()
        assert "run completed" in log and f"epoch {EPOCHS}/{EPOCHS} batch" in log
        assert live_pid(run) is None and (run / "train.lock").read_text() == ""
    finally:
        term.close()
        kill(pid)


@pytest.mark.parametrize("term_name", ["xterm-256color", "dumb"])
def test_after_a_hangup_a_paused_run_idles_and_sigterm_ends_it(tmp_path, term_name):
    run = tmp_path / "runs" / "idle"
    term = Tmux(f"battui-idle-{os.getpid()}", 100, 30,
                train_command(tmp_path, "idle", "--epochs", "300", term=term_name))
    pid = None
    try:
        assert wait_for(lambda: training(run) and "epoch" in term.screen(), timeout=120), term.screen()
        screen = term.screen()
        if term_name == "dumb":  # the plain log, not the full-screen dashboard
            assert "class errors" not in screen and "epoch 1/300 batch 1/7 loss" in screen, screen
        pid = live_pid(run)
        term.close()
        # its output goes to RUN/train.log once it noticed the hang-up (dashboard and plain log alike)
        assert wait_for(lambda: (run / "train.log").exists(), timeout=120), "the trainer did not notice the hang-up"
        send_command(run, "pause")
        assert wait_for(lambda: of_type(run, "paused"), timeout=30)
        time.sleep(0.5)
        before = cpu_seconds(pid)
        time.sleep(3.0)
        assert cpu_seconds(pid) - before < 0.6, "a paused, terminal-less trainer must not spin"
        os.kill(pid, signal.SIGTERM)
        assert wait_for(lambda: not running(pid), timeout=60), "SIGTERM must end it"
        finished = of_type(run, "run_finished")[-1]
        assert finished["status"] == "interrupted" and "SIGTERM" in finished["reason"]
        load_checkpoint(run / "checkpoints" / "last.pt")
    finally:
        term.close()
        kill(pid)


def test_second_trainer_refused_and_a_watcher_pauses_saves_and_stops_a_detached_run(tmp_path):
    root = tmp_path / "runs"
    out = subprocess.run([sys.executable, "-m", "battui", "train", "--detach", "--preset", "synthetic-tiny",
                          "--device", "cpu", "--epochs", "300", "--run-name", "det", "--set", f"run.root={root}"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    run = root / "det"
    assert f"battui watch {run} --send stop" in out.stdout
    pid = live_pid(run)  # the lock went straight to the background process
    term = None
    try:
        assert pid and pid != os.getpid() and not (run / "train.pid").exists()
        assert wait_for(lambda: training(run), timeout=120)
        config = (run / "config.yaml").read_bytes()
        second = subprocess.run([sys.executable, "-m", "battui", "train", "--headless", "--resume", str(run)],
                                capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert second.returncode == 2 and f"being trained by pid {pid}" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1 and "Traceback" not in second.stderr
        assert len(of_type(run, "run_started")) == 1 and (run / "config.yaml").read_bytes() == config

        term = Tmux(f"battui-watch-{os.getpid()}", 120, 36,
                    f"cd {tmp_path} && {sys.executable} -m battui watch {run}; sleep 60")
        assert wait_for(lambda: "running" in term.screen() and "class errors" in term.screen(), timeout=60)
        term.keys("?")
        assert wait_for(lambda: "pause / resume the run's training" in term.screen(), timeout=10), term.screen()
        keys = term.screen()
        for key in ("tab / shift+tab", "pgup pgdn home end", "stop the run (asks first", "detach: leave the run"):
            assert key in keys, keys
        term.keys("?")  # closes it (an Escape followed at once by p would read as alt+p)
        assert wait_for(lambda: "battui keys" not in term.screen(), timeout=10), term.screen()
        term.keys("p")
        assert wait_for(lambda: of_type(run, "paused") and "paused" in term.screen(), timeout=30), term.screen()
        term.keys("s")
        assert wait_for(lambda: [e for e in of_type(run, "checkpoint") if e["kind"] == "manual"], timeout=30)
        term.keys("x")
        assert wait_for(lambda: "Stop the run?" in term.screen(), timeout=10)
        term.keys("y")
        assert wait_for(lambda: of_type(run, "run_finished"), timeout=60), term.screen()
        finished = of_type(run, "run_finished")[-1]
        assert finished["status"] == "interrupted" and "stopped from battui watch" in finished["reason"]
        assert wait_for(lambda: not running(pid), timeout=30)
        assert wait_for(lambda: "continue: battui train" in term.screen(), timeout=10), term.screen()
        load_checkpoint(run / "checkpoints" / "last.pt")
    finally:
        if term is not None:
            term.close()
        kill(pid)


def test_d_detaches_the_foreground_dashboard_and_the_run_goes_on(tmp_path):
    run = tmp_path / "runs" / "fg"
    term = Tmux(f"battui-fg-{os.getpid()}", 100, 30, train_command(tmp_path, "fg", "--epochs", "300"))
    first = second = None
    try:
        assert wait_for(lambda: training(run) and "epoch" in term.screen(), timeout=120), term.screen()
        first = live_pid(run)
        term.keys("d")
        exit_file = tmp_path / "fg.exit"
        assert wait_for(exit_file.exists, timeout=60), term.screen()
        assert exit_file.read_text().strip() == "0"  # the prompt is back
        screen = term.screen()
        assert f"re-attach with: battui watch {Path('runs') / 'fg'}" in screen, screen
        assert wait_for(lambda: len(of_type(run, "run_started")) == 2 and len(of_type(run, "batch")) > 0, 120)
        second = live_pid(run)
        assert second and second != first and not running(first)
        handed = of_type(run, "run_finished")[0]
        assert handed["status"] == "interrupted" and "detached" in handed["reason"]
        saved = [e for e in run_events(run) if e["type"] == "checkpoint"][-1]
        restart = of_type(run, "run_started")[1]
        assert (restart["start_epoch"], restart["start_batch"]) == (saved["epoch"], _batch_of(run, saved["epoch"]))
        send_command(run, "stop")
        assert wait_for(lambda: not running(second), timeout=60)
        assert of_type(run, "run_finished")[-1]["status"] == "interrupted"
    finally:
        term.close()
        kill(first)
        kill(second)


def _batch_of(run: Path, epoch: int) -> int:
    """Batches done in `epoch` when the hand-over saved (the last batch event before the second start).

    A save after an epoch's last batch resumes that epoch at batch == batches (its end-of-epoch work,
    validation and scheduler, is still to do); a save before any batch of `epoch` resumes at 0."""
    seen, last = 0, (-1, 0)
    for event in run_events(run):
        if event["type"] == "run_started":
            seen += 1
            if seen == 2:
                break
        elif event["type"] == "batch":
            last = (event["epoch"], event["batch"])
    return last[1] if last[0] == epoch else 0
