"""No run is trained by two processes (issue 22, point 5): a second `battui table` on the same runs
folder, and a second table worker for the same run, find the run held by the first table's trainer,
say so, wait for it and reuse its result; the run is trained once and both tables are the same.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/test_report_sweep_shared.py -q
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from battui.engine.runlock import live_pid
from battui.report.runs import TablePlan, parse_methods
from battui.report.sweep import plan_table
from tests.support import ROOT
from tests.support.cli import child_env
from tests.support.processes import kill, of_type, running, training, wait_for

SETS = ["train.epochs=3"]  # 21 batches: the first table's trainer is stopped (SIGSTOP) well inside them


def table(root: Path, out: Path) -> subprocess.Popen:
    args = ["table", "--preset", "synthetic-tiny", "--methods", "pgd-at", "--seeds", "1", "--device", "cpu",
            *(x for s in SETS for x in ("--set", s)), "--set", f"run.root={root}", "--format", "json", "-o", out]
    return subprocess.Popen([sys.executable, "-m", "battui", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=child_env(), cwd=ROOT)


def read_until(stream, needle: str) -> str:
    """Lines of `stream` up to the first that holds `needle` (the process's own event, no clock)."""
    seen = ""
    for line in stream:
        seen += line
        if needle in line:
            return seen
    raise AssertionError(f"{needle!r} never came:\n{seen}")


def test_a_second_table_and_worker_wait_for_the_run_the_first_trains_and_reuse_it(tmp_path):
    root = tmp_path / "runs"
    [run] = [r.run_dir for r in plan_table(TablePlan("synthetic-tiny", parse_methods("pgd-at"), seeds=1,
                                                     overrides=[*SETS, f"run.root={root}"]))[0]]
    first = table(root, tmp_path / "first.json")
    procs, trainer = [first], None
    try:
        assert wait_for(lambda: training(run) or first.poll() is not None, timeout=120), first.stderr
        trainer = live_pid(run)
        os.kill(trainer, signal.SIGSTOP)  # the first table's trainer holds the run, mid-epoch
        worker = subprocess.Popen([sys.executable, "-m", "battui.report.worker", str(run), "--device", "cpu"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env(),
                                  cwd=ROOT)
        second = table(root, tmp_path / "second.json")
        procs += [worker, second]
        assert f"is being trained by pid {trainer}" in read_until(worker.stdout, "waiting for it")
        shown = read_until(second.stderr, "PGD-AT, seed 0:")
        assert "running" in shown.splitlines()[-1] and str(run) in shown.splitlines()[-1], shown
        os.kill(trainer, signal.SIGCONT)

        worker_out = worker.communicate(timeout=300)[0]
        errs = [p.communicate(timeout=300)[1] for p in (first, second)]
        assert [p.returncode for p in procs] == [0, 0, 0], (errs, worker_out)
    finally:
        if running(trainer):  # the test failed with the trainer stopped
            os.kill(trainer, signal.SIGCONT)
            kill(trainer)
        for p in procs:
            p.kill()

    assert "table evaluation (cached)" in worker_out  # the first table's evaluation, reused
    assert len(of_type(run, "run_started")) == 1  # trained once, never resumed by the others
    assert [e["status"] for e in of_type(run, "run_finished")] == ["completed"]
    a, b = (json.loads((tmp_path / name).read_text()) for name in ("first.json", "second.json"))
    assert a["rows"][0]["stats"] == b["rows"][0]["stats"]
    assert [e["result"] for e in a["rows"][0]["evaluations"]] == [e["result"] for e in b["rows"][0]["evaluations"]]
