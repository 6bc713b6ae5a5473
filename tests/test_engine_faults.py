"""Faults of the machine end a run in one line (issue 22, point 7), `battui train` as a user runs it:
the disk filling up mid-run (the kernel's file-size limit, RLIMIT_FSIZE, set on the live trainer
process, fails its writes as a full disk does) and the run folder removed mid-run (by a listener,
between two saves). Exit code 1, no traceback, no half-written file, and the run resumes once the
writes work again.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/test_engine_faults.py -q
"""

from __future__ import annotations

import io
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from battui.config import load_config
from battui.engine.checkpoint import load_checkpoint
from battui.engine.faults import CHECKPOINTS_KEPT, free_bytes, low_space_warning
from battui.engine.headless import HeadlessLog
from battui.engine.runs import resume_config
from battui.engine.trainer import Trainer
from tests.support import ROOT
from tests.support.cli import child_env
from tests.support.processes import kill, of_type, wait_for

LONG = "500"  # epochs: far more than a run trains before the fault the test causes stops it


def start_training(root: Path, name: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "battui", "train", "--headless", "--preset", "synthetic-tiny", "--epochs", LONG,
         "--set", f"run.root={root}", "--set", f"run.name={name}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(), cwd=ROOT)


def first_checkpoint(run: Path) -> bool:
    return any(e["kind"] == "last" for e in of_type(run, "checkpoint"))


def finish(proc: subprocess.Popen) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=120)
    finally:
        kill(proc.pid)


def test_disk_full_mid_run_is_one_line_naming_the_intact_epoch_and_the_run_resumes(tmp_path):
    run = tmp_path / "full"
    proc = start_training(tmp_path, "full")
    assert wait_for(lambda: first_checkpoint(run) or proc.poll() is not None, timeout=120)
    size = (run / "checkpoints" / "last.pt").stat().st_size
    # from now on no file of the trainer may grow past half a checkpoint: the next save fails
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (size // 2, size // 2))
    out, err = finish(proc)

    assert proc.returncode == 1, (out, err)
    assert "Traceback" not in out + err
    epoch = load_checkpoint(run / "checkpoints" / "last.pt")["epoch"]  # the last good one, readable
    failed = [line for line in out.splitlines() if line.startswith("run failed:")]
    assert len(failed) == 1, out
    line = failed[0]
    assert f"cannot write {run / 'checkpoints'}" in line and "File too large" in line and " free there" in line
    assert f"checkpoints/last.pt of epoch {epoch} is intact" in line
    assert f"continue with `battui train --resume {run}`" in line
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]  # no partial file
    assert of_type(run, "run_finished")[-1]["reason"] == line.removeprefix("run failed: ")

    resumed = Trainer(resume_config(run, [f"train.epochs={epoch + 1}"]), resume=run).prepare()  # space is back
    assert (resumed.start_epoch, resumed.run()) == (epoch, "completed")
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == epoch + 1


def test_a_run_folder_removed_mid_run_ends_in_one_line_and_is_not_recreated(tmp_path, one_thread):
    run, lines = tmp_path / "gone", io.StringIO()

    def remove_after_first_checkpoint(event: dict) -> None:  # in the trainer's thread: no race with its saves
        if event["type"] == "checkpoint" and event["epoch"] == 1:
            shutil.rmtree(run)

    cfg = load_config("synthetic-tiny", ["train.epochs=3", f"run.root={tmp_path}", "run.name=gone"])
    trainer = Trainer(cfg, listeners=[remove_after_first_checkpoint, HeadlessLog(lines)]).prepare()
    assert trainer.run() == "failed"
    failed = [line for line in lines.getvalue().splitlines() if line.startswith("run failed:")]
    assert len(failed) == 1, lines.getvalue()
    assert f"cannot write {run / 'checkpoints'}" in failed[0]
    assert f"the run folder {run} was removed while the run trained" in failed[0]
    assert not run.exists()


def test_low_space_warning_counts_the_checkpoints_a_run_keeps(tmp_path, one_thread):
    trainer = Trainer(load_config("synthetic-tiny", [f"run.root={tmp_path}"])).prepare()
    for p in trainer.model.parameters():
        p.grad = torch.zeros_like(p)
    trainer.optimizer.step()  # after its first step a run's checkpoints hold the momentum too
    assert trainer.save_last(0)
    estimate = trainer._checkpoint_bytes()
    actual = trainer.checkpoint_dir.joinpath("last.pt").stat().st_size
    assert 0.8 * actual <= estimate <= 1.2 * actual  # the model's state and the SGD momentum, as saved
    trainer.lock.release()
    free = free_bytes(tmp_path)
    assert low_space_warning(tmp_path, free // (CHECKPOINTS_KEPT - 1)) is not None
    assert low_space_warning(tmp_path, free // (4 * CHECKPOINTS_KEPT)) is None


def test_a_full_disk_at_the_start_is_one_line_exit_2_and_leaves_no_partial_file(tmp_path):
    script = ("import resource, sys\nresource.setrlimit(resource.RLIMIT_FSIZE, (200, resource.RLIM_INFINITY))\n"
              "from battui.cli import main\nmain(sys.argv[1:])\n")  # no file of it may grow past 200 bytes
    res = subprocess.run([sys.executable, "-c", script, "train", "--headless", "--preset", "synthetic-tiny",
                          "--set", f"run.root={tmp_path}", "--set", "run.name=start"],
                         capture_output=True, text=True, env=child_env(), cwd=ROOT, timeout=120)
    run = tmp_path / "start"
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert f"cannot write {run}" in lines[0] and "File too large" in lines[0] and "no last.pt was saved yet" in lines[0]
    assert sorted(p.name for p in run.iterdir()) == ["train.lock"]  # config.yaml was never renamed into place


def test_a_run_folder_made_unwritable_mid_run_is_one_line_and_last_pt_stays(tmp_path, one_thread, monkeypatch):
    """EACCES at the checkpoint write, raised where the OS would raise it (root ignores chmod, so the
    test cannot make the folder read-only): one line, last.pt of epoch 1 intact, no partial file."""
    import errno
    import tempfile

    from battui.engine import checkpoint

    run, lines, locked = tmp_path / "ro", io.StringIO(), []
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        if locked:
            raise PermissionError(errno.EACCES, "Permission denied", kwargs.get("dir"))
        return real_mkstemp(*args, **kwargs)

    def lock_after_first_checkpoint(event: dict) -> None:
        if event["type"] == "checkpoint" and event["kind"] == "last" and event["epoch"] == 1:
            locked.append(True)

    monkeypatch.setattr(checkpoint.tempfile, "mkstemp", mkstemp)
    cfg = load_config("synthetic-tiny", ["train.epochs=3", f"run.root={tmp_path}", "run.name=ro"])
    trainer = Trainer(cfg, listeners=[lock_after_first_checkpoint, HeadlessLog(lines)]).prepare()
    assert trainer.run() == "failed"
    failed = [line for line in lines.getvalue().splitlines() if line.startswith("run failed:")]
    assert len(failed) == 1 and "Traceback" not in lines.getvalue(), lines.getvalue()
    line = failed[0]
    assert f"cannot write {run / 'checkpoints'}" in line and "Permission denied" in line
    assert "checkpoints/last.pt of epoch 1 is intact" in line and f"make {run} writable" in line
    assert f"continue with `battui train --resume {run}`" in line
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]  # no partial file
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 1
