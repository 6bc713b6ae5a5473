"""`battui train` as a user runs it, in subprocesses: signals, SIGKILL + resume, bad input, --detach.

    .venv/bin/pytest tests/test_cli_train.py -q
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from battui.config import load_config
from battui.engine.checkpoint import load_checkpoint
from battui.engine.events import read_events
from battui.engine.runlock import live_pid
from battui.engine.trainer import Trainer
from tests.support import ROOT
from tests.support.cli import battui, child_env
from tests.support.processes import wait_for


def run_dir_from(stdout: str) -> Path:
    for line in stdout.splitlines():
        if "run directory " in line:
            return Path(line.split("run directory ", 1)[1].strip())
    raise AssertionError(f"no run directory in output:\n{stdout}")


def test_sigint_after_first_batch_saves_and_exits_130(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "battui", "train", "--headless", "--preset", "synthetic-tiny", "--epochs", "50",
         "--set", f"run.root={tmp_path}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(), cwd=ROOT,
    )
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("epoch 1/50 batch 1/"):
                proc.send_signal(signal.SIGINT)
                break
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    lines.append(out)
    assert proc.returncode == 130, err
    run = run_dir_from("".join(lines))
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["epoch"] == 0 and last["batch"] >= 1  # stopped inside the first epoch
    final = read_events(run / "events.jsonl")[-1]
    assert final["type"] == "run_finished" and final["status"] == "interrupted" and "SIGINT" in final["reason"]
    assert "run interrupted" in out


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys, torch
    torch.set_num_threads(1)
    from battui.config import load_config
    from battui.engine.trainer import Trainer

    def kill_mid_epoch(event):
        if event["type"] == "batch" and (event["epoch"], event["batch"]) == (1, 2):
            os.kill(os.getpid(), signal.SIGKILL)

    cfg = load_config("synthetic-tiny", sys.argv[1:])
    Trainer(cfg, listeners=[kill_mid_epoch]).run()
""")


def test_sigkill_mid_epoch_then_a_longer_resume_matches_the_straight_longer_run(tmp_path, one_thread):
    """N -> M exact: killed mid-epoch 2 of a 2-epoch run, resumed with --epochs 3, the weights, optimizer
    state and final test evaluation are bit-identical to a straight 3-epoch run (a constant schedule)."""
    common = [f"run.root={tmp_path}"]
    reference = Trainer(load_config("synthetic-tiny", [*common, "train.epochs=3", "run.name=ref"])).prepare()
    assert reference.run() == "completed"  # as the children: 1 thread

    killed = subprocess.run([sys.executable, "-c", KILL_SCRIPT, *common, "train.epochs=2", "run.name=cut"],
                            capture_output=True, text=True, env=child_env(), cwd=ROOT, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    cut = tmp_path / "cut"
    assert load_checkpoint(cut / "checkpoints" / "last.pt")["epoch"] == 1  # from the end of epoch 1 (of 2)
    assert read_events(cut / "events.jsonl")[-1]["type"] == "batch"  # no run_finished: it was killed

    res = battui("train", "--headless", "--resume", str(cut), "--epochs", "3")
    assert res.returncode == 0, res.stderr
    assert "resumed from" in res.stdout and "at epoch 2" in res.stdout
    want = torch.load(tmp_path / "ref" / "checkpoints" / "last.pt", weights_only=True)
    got = torch.load(cut / "checkpoints" / "last.pt", weights_only=True)
    assert want["model"].keys() == got["model"].keys()
    for name in want["model"]:
        assert torch.equal(want["model"][name], got["model"][name]), name
    for a, b in zip(want["optimizer"]["state"].values(), got["optimizer"]["state"].values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    assert want["optimizer"]["param_groups"] == got["optimizer"]["param_groups"]
    assert (want["epoch"], want["step"], want["best_metric"]) == (got["epoch"], got["step"], got["best_metric"])
    test_eval = [[e for e in read_events(run / "events.jsonl") if e["type"] == "eval" and e["split"] == "test"][-1]
                 for run in (tmp_path / "ref", cut)]
    assert test_eval[0]["counts"] == test_eval[1]["counts"]


def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path):
    out = battui("train", "--headless", "--preset", "synthetic-tiny", "--set", f"run.root={tmp_path / 'runs'}",
                 "--set", "train.init_from=missing.pt")
    assert out.returncode == 2
    assert "missing.pt does not exist" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_detach_without_terminal_runs_in_background_and_survives_sigterm(tmp_path):
    out = battui("train", "--detach", "--preset", "synthetic-tiny", "--epochs", "200",
                 "--set", f"run.root={tmp_path}", "--set", "train.log_every=5")
    assert out.returncode == 0, out.stderr
    run = run_dir_from(out.stdout)
    assert f"battui watch {run}" in out.stdout
    pid = live_pid(run)  # the background process holds the run's lock (no train.pid)
    assert pid and pid != os.getpid() and not (run / "train.pid").exists()
    # The printed watch command works at once: it waits for the run to start instead of failing.
    watcher = subprocess.Popen([sys.executable, "-m", "battui", "watch", str(run)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=child_env(), cwd=ROOT)
    try:
        first = [watcher.stdout.readline()]
        while " batch 5/" not in first[-1] and len(first) < 20 and first[-1]:
            first.append(watcher.stdout.readline())
        assert first[0].startswith(f"run {run}:") and " batch 5/" in first[-1], first
    finally:
        watcher.kill()
        watcher.wait()
    if not wait_for(lambda: (run / "checkpoints" / "last.pt").exists(), timeout=60, step=0.2):
        pytest.fail(f"the detached run wrote no checkpoint:\n{(run / 'train.log').read_text()}")
    assert os.getsid(pid) == pid  # its own session: closing the terminal does not reach it
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: (e := read_events(run / "events.jsonl")) and e[-1]["type"] == "run_finished", timeout=60, step=0.2)
    events = read_events(run / "events.jsonl")
    assert events[-1]["status"] == "interrupted" and "SIGTERM" in events[-1]["reason"]
    assert "run interrupted" in (run / "train.log").read_text()
    assert types_count(events, "run_started") == 1
    load_checkpoint(run / "checkpoints" / "last.pt")
    assert wait_gone(pid) and live_pid(run) is None and (run / "train.lock").read_text() == ""  # nothing stale


def wait_gone(pid: int, timeout: float = 30) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except (OSError, IndexError):
            return True
        time.sleep(0.1)
    return False


def types_count(events: list[dict], kind: str) -> int:
    return sum(1 for e in events if e["type"] == kind)


def test_train_headless_and_watch_headless_print_the_same_lines(tmp_path):
    """One event formatter (engine/headless.py: EventLines): the live log and a later `watch --headless` agree."""
    out = battui("train", "--headless", "--preset", "synthetic-tiny", "--epochs", "1", "--set", f"run.root={tmp_path}")
    assert out.returncode == 0, out.stderr
    run = run_dir_from(out.stdout)
    watched = battui("watch", str(run), "--headless", "--idle-exit", "1")
    assert watched.returncode == 0, watched.stderr
    live = [line for line in out.stdout.splitlines() if "run directory " not in line]
    assert len(live) > 5 and watched.stdout.splitlines() == live


@pytest.mark.parametrize("extra, code", [((), 0), (("--set", "run.on_hangup=bogus"), 2)])
def test_the_trainer_is_freed_before_the_process_group_is_left(tmp_path, monkeypatch, one_thread, extra, code):
    """Under DDP the network's wrapper holds the process group: when `distributed.shutdown` leaves the
    group no trainer may be alive, on a completed run and on an error, or gloo's worker threads are torn
    down in interpreter finalization, where they can abort the rank (seen once in CI)."""
    import gc
    import weakref

    from battui.cli import main
    from battui.cli import train as train_cli

    made, alive = [], []
    real_init = Trainer.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        made.append(weakref.ref(self))

    def shutdown():
        gc.collect()
        alive.append([ref() is not None for ref in made])

    monkeypatch.setattr(Trainer, "__init__", init)
    monkeypatch.setattr(train_cli.distributed, "shutdown", shutdown)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--headless", "--preset", "synthetic-tiny", "--epochs", "1", "--set", f"run.root={tmp_path}",
              *extra])
    assert exit_info.value.code == code
    assert alive == [[False]]
