"""One trainer per run directory (the OS lock), the control FIFO, progress over resumes, `battui runs`.

    .venv/bin/pytest tests/test_engine_run_ownership.py -q
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from battui.engine.channel import ControlChannel, send_command
from battui.engine.control import RunControl
from battui.engine.progress import run_progress
from battui.engine.rundir import RunDir
from battui.engine.runlock import RunLock, live_pid
from battui.errors import UserError
from battui.report.listing import format_runs, list_runs, newest_run
from tests.support.cli import child_env, run_cli
from tests.support.processes import wait_for

HOLD = """
import sys, time
from battui.engine.runlock import RunLock
lock = RunLock.acquire(sys.argv[1])
print("locked", flush=True)
time.sleep(60)
"""


def holder(run_dir: Path, **kw) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True,
                            env=child_env(), **kw)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_trainer_is_refused_naming_the_pid_and_sigkill_leaves_no_stale_lock(tmp_path):
    proc = holder(tmp_path)
    try:
        assert live_pid(tmp_path) == proc.pid
        with pytest.raises(UserError, match=f"being trained by pid {proc.pid}") as exc:
            RunLock.acquire(tmp_path, wait=0.2)
        assert "\n" not in str(exc.value) and "--send stop" in str(exc.value)
    finally:
        proc.kill()
        proc.wait()
    assert RunDir(tmp_path).lock.read_text().strip() == str(proc.pid)  # SIGKILL: the pid stays behind ...
    assert live_pid(tmp_path) is None  # ... but the lock does not
    lock = RunLock.acquire(tmp_path, wait=0.0)
    assert live_pid(tmp_path) == os.getpid() and RunDir(tmp_path).lock.read_text() == f"{os.getpid()}\n"
    lock.release()
    assert live_pid(tmp_path) is None and RunDir(tmp_path).lock.read_text() == ""  # no stale pid


def test_a_lock_handed_to_a_child_is_never_free_in_between(tmp_path):
    lock = RunLock.acquire(tmp_path)
    child = ("import os, sys, time\nfrom battui.engine.runlock import RunLock\n"
             "RunLock.acquire(sys.argv[1], wait=0.0)\nprint('took', flush=True)\ntime.sleep(60)\n")
    env = child_env(**lock.handover_env())
    proc = subprocess.Popen([sys.executable, "-c", child, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            env=env, pass_fds=(lock.fd,))
    try:
        lock.close_handed_over()
        assert live_pid(tmp_path) is not None  # held throughout: by us, then by the child
        assert proc.stdout.readline().strip() == "took"
        assert live_pid(tmp_path) == proc.pid
    finally:
        proc.kill()
        proc.wait()
    assert live_pid(tmp_path) is None


def test_control_fifo_sets_the_flags_and_is_owner_only(tmp_path):
    control = RunControl()
    channel = ControlChannel(tmp_path, control).open()
    try:
        mode = (tmp_path / "control").stat().st_mode
        assert stat.S_ISFIFO(mode) and stat.S_IMODE(mode) == 0o600
        send_command(tmp_path, "pause")
        assert wait_for(control.pause.is_set)
        send_command(tmp_path, "save")
        assert wait_for(control.save_now.is_set)
        send_command(tmp_path, "resume")
        assert wait_for(lambda: not control.pause.is_set())
        send_command(tmp_path, "stop")
        assert wait_for(control.stop.is_set)
        assert control.stop_reason == f"stopped from battui watch (pid {os.getpid()})"
        with pytest.raises(UserError, match="unknown command 'halt'"):
            send_command(tmp_path, "halt")
    finally:
        channel.close()
    assert not (tmp_path / "control").exists()
    with pytest.raises(UserError, match="no trainer is running"):
        send_command(tmp_path, "stop")
    os.mkfifo(tmp_path / "control", 0o600)  # left by a killed trainer: nobody reads it
    with pytest.raises(UserError, match="no trainer is running"):
        send_command(tmp_path, "pause")


def test_progress_and_eta_count_the_whole_run_after_a_resume():
    # 10 epochs x 50 batches; resumed at epoch 4 (0-based) batch 10, now at epoch 6 batch 20 after 300 s.
    fraction, eta = run_progress(6, 20, 50, 10, start_epoch=4, start_batch=10, elapsed=300.0)
    done, since, total = 6 * 50 + 20, 6 * 50 + 20 - (4 * 50 + 10), 500
    assert fraction == pytest.approx(done / total)
    assert eta == pytest.approx(300.0 / since * (total - done))
    assert run_progress(4, 10, 50, 10, 4, 10, 5.0) == (pytest.approx(210 / 500), None)  # no rate yet
    assert run_progress(0, 0, 0, 10) == (0.0, None)


def _events(path: Path, events: list[dict]) -> None:
    path.mkdir(parents=True)
    with open(path / "events.jsonl", "w") as fh:
        for event in events:
            fh.write(json.dumps(event, separators=(",", ":")) + "\n")


def test_runs_lists_status_epochs_best_and_live_pid(tmp_path, capsys):
    start = {"type": "run_started", "method": "bat", "epochs": 5}
    best = {"type": "checkpoint", "epoch": 2, "kind": "best", "metric": 41.5}
    _events(tmp_path / "a-done", [start, best, {"type": "checkpoint", "epoch": 3, "kind": "best", "metric": 37.0},
                                  {"type": "checkpoint", "epoch": 5, "kind": "last"},
                                  {"type": "run_finished", "status": "completed"}])
    _events(tmp_path / "b-dead", [start, best, {"type": "batch", "epoch": 2, "batch": 3}])
    _events(tmp_path / "c-live", [start, {"type": "paused", "epoch": 0, "batch": 2}])
    os.utime(tmp_path / "a-done" / "events.jsonl", (1, 1))
    os.utime(tmp_path / "b-dead" / "events.jsonl", (2, 2))
    lock = RunLock.acquire(tmp_path / "c-live")
    try:
        runs = {r.name: r for r in list_runs(tmp_path)}
        assert (runs["a-done"].status, runs["a-done"].epoch, runs["a-done"].best) == ("completed", 5, 37.0)
        assert (runs["b-dead"].status, runs["b-dead"].epoch, runs["b-dead"].pid) == ("stale", 2, None)
        assert (runs["c-live"].status, runs["c-live"].pid, runs["c-live"].method) == ("paused", os.getpid(), "bat")
        lines = format_runs(list(runs.values()))
        assert lines[0].split()[:3] == ["run", "method", "status"]
        assert "a-done" in lines[1] and "5/5" in lines[1] and "37.0%" in lines[1]
        assert newest_run(tmp_path) == tmp_path / "c-live"
        code, out, _ = run_cli(capsys, "runs", "--root", str(tmp_path))
        assert code == 0
        row = next(line for line in out.splitlines() if line.startswith("c-live"))
        assert row.split() == ["c-live", "bat", "paused", "0/5", "-", str(os.getpid())]
    finally:
        lock.release()
    with pytest.raises(UserError, match="no runs under"):
        newest_run(tmp_path / "none")


def test_watch_without_argument_follows_the_newest_run_and_send_needs_a_trainer(tmp_path, monkeypatch, capsys):
    _events(tmp_path / "runs" / "old", [{"type": "run_started", "method": "x", "epochs": 1},
                                        {"type": "message", "text": "old run"},
                                        {"type": "run_finished", "status": "completed"}])
    _events(tmp_path / "runs" / "new", [{"type": "message", "text": "the newest " + "x" * 150},
                                        {"type": "run_finished", "status": "interrupted", "reason": "SIGTERM"}])
    os.utime(tmp_path / "runs" / "old" / "events.jsonl", (1, 1))
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli(capsys, "watch")
    assert code == 0
    assert "the newest " + "x" * 150 in out  # whole lines, no wrapping at 80 columns
    assert "old run" not in out and "continue with: battui train --resume runs/new" in out
    code, _, err = run_cli(capsys, "watch", "runs/new", "--send", "pause")
    assert code == 2 and "no trainer is running on runs/new" in err and len(err.strip().splitlines()) == 1


def test_sighup_under_nohup_stays_ignored(tmp_path):
    from battui.engine.signals import handle_signals

    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        control, called = RunControl(), []
        with handle_signals(control, on_hangup=lambda: called.append(1)):
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN  # still ignored: nothing can hear it
            os.kill(os.getpid(), signal.SIGHUP)
        assert not called and not control.stop.is_set()
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        with handle_signals(control, on_hangup=lambda: called.append(1)):
            os.kill(os.getpid(), signal.SIGHUP)
            assert wait_for(lambda: called == [1], timeout=10)  # the handler runs in this thread, soon
        assert called == [1] and not control.stop.is_set()  # continue: the run goes on
    finally:
        signal.signal(signal.SIGHUP, previous)
