"""`battui table` as a sweep, end to end on synthetic-tiny (1 epoch, 2 methods, 1 seed, CPU):
`--jobs 2` == `--jobs 1` (resubmitting a failed and a missing run), a re-run collects without training,
submitit's local executor runs and collects the table, and a preempted job resumes exactly.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/test_sweep.py -x -q
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from battui.config import load_config
from battui.engine.checkpoint import load_checkpoint
from battui.engine.events import read_events
from battui.engine.trainer import Trainer
from battui.report.launchers import LaunchSettings, make_launcher, worker_command
from battui.report.runs import TablePlan, parse_methods
from battui.report.sweep import PlannedRun, _materialize, plan_table
from tests.test_report import run_cli

pytest.importorskip("submitit")
ROOT = Path(__file__).resolve().parents[1]
SETS = ["--set", "train.epochs=1"]


def table_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["table", "--preset", "synthetic-tiny", "--methods", "pgd-at,trades", "--seeds", "1", *SETS,
            "--set", f"run.root={root}", "--format", "json", "-o", str(out), *extra]


def assert_same_table(a: dict, b: dict) -> None:
    assert [r["label"] for r in a["rows"]] == [r["label"] for r in b["rows"]] == ["PGD-AT", "TRADES(1/λ=6)"]
    for ra, rb in zip(a["rows"], b["rows"]):
        assert ra["stats"] == rb["stats"]
        assert [e["weights_hash"] for e in ra["evaluations"]] == [e["weights_hash"] for e in rb["evaluations"]]
        assert [e["result"] for e in ra["evaluations"]] == [e["result"] for e in rb["evaluations"]]


@pytest.fixture(autouse=True)
def _workers_import_this_battui(monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))


@pytest.fixture(scope="module")
def jobs2(tmp_path_factory) -> tuple[dict, str]:
    """The table with `--jobs 2`, as a user runs it (a subprocess, default --device auto)."""
    tmp = tmp_path_factory.mktemp("jobs2")
    out = tmp / "table.json"
    proc = subprocess.run([sys.executable, "-m", "battui", *table_args(tmp / "runs", out, "--jobs", "2")],
                          capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text()), proc.stderr


def test_jobs_2_gives_the_same_table_as_jobs_1(jobs2, tmp_path, capsys) -> None:
    table2, err2 = jobs2
    assert "table: 2 runs: 0 done, 0 running, 0 failed, 2 missing" in err2
    assert err2.count("started (pid ") == 2 and "table: runs 2/2 done, 0 running" in err2
    hashes = [row["evaluations"][0]["weights_hash"] for row in table2["rows"]]
    assert hashes[0] != hashes[1]  # two different runs were collected
    for row in table2["rows"]:  # each run lives in its own fixed folder, evaluated by its job (cache)
        run_dir = Path(row["runs"][0])
        assert (run_dir / "job.json").exists() and (run_dir / "worker.json").exists()
        assert row["evaluations"][0]["cached"]

    # --jobs 1 in a fresh root where PGD-AT's folder holds a failed attempt and TRADES is missing
    root = tmp_path / "runs"
    plan = TablePlan("synthetic-tiny", parse_methods("pgd-at,trades"), seeds=1,
                     overrides=["train.epochs=1", f"run.root={root}"])
    runs, _ = plan_table(plan)
    _materialize(runs[0])
    (runs[0].run_dir / "events.jsonl").write_text(json.dumps({"type": "run_finished", "status": "failed"}) + "\n")
    code, _, err = run_cli(capsys, *table_args(root, tmp_path / "t1.json", "--jobs", "1"))
    assert code == 0, err
    assert "table: 2 runs: 0 done, 0 running, 1 failed, 1 missing" in err
    assert "PGD-AT, seed 0: failed (failed: resubmitting" in err and "TRADES(1/λ=6), seed 0: missing" in err
    table1 = json.loads((tmp_path / "t1.json").read_text())
    assert_same_table(table2, table1)

    # run again: everything is done, nothing trains, the same table comes back
    code, _, err = run_cli(capsys, *table_args(root, tmp_path / "again.json"))
    assert code == 0, err
    assert "table: 2 runs: 2 done, 0 running, 0 failed, 0 missing" in err and "started" not in err
    assert_same_table(table1, json.loads((tmp_path / "again.json").read_text()))


def test_submitit_local_runs_and_collects_a_two_run_table(jobs2, tmp_path, capsys) -> None:
    root = tmp_path / "runs"
    code, _, err = run_cli(capsys, *table_args(root, tmp_path / "t.json", "--launcher", "submitit-local",
                                               "--jobs", "2"))
    assert code == 0, err
    assert err.count("started (submitit job ") == 2
    table = json.loads((tmp_path / "t.json").read_text())
    assert_same_table(jobs2[0], table)
    for row in table["rows"]:
        record = json.loads((Path(row["runs"][0]) / "job.json").read_text())
        assert record["launcher"] == "submitit-local"
        assert (root / ".submitit" / str(record["job_id"])).is_dir()


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _wait_for(predicate, timeout: float = 300.0):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the job's processes through /proc")
def test_preempted_job_saves_requeues_and_finishes_with_the_uninterrupted_weights(tmp_path) -> None:
    sets = ["train.epochs=2", f"run.root={tmp_path}", "run.device=cpu"]
    reference = Trainer(load_config("synthetic-tiny", [*sets, "run.name=reference"])).prepare()
    assert reference.run() == "completed"

    cfg = load_config("synthetic-tiny", [*sets, "run.name=preempted"])
    run = PlannedRun("PGD-AT, seed 0", cfg, tmp_path / "preempted")
    _materialize(run)
    launcher = make_launcher(LaunchSettings("submitit-local"), tmp_path)
    job = launcher.submit(run.run_dir, worker_command(run.run_dir, device="cpu", limit=0, attack={}))
    events = run.run_dir / "events.jsonl"
    # mid-run (12 of 14 batches to go), send USR2 as Slurm does before a time limit: to every process of the job
    _wait_for(lambda: events.exists() and any(e["type"] == "batch" and e["batch"] == 2 for e in read_events(events)))
    worker = json.loads((run.run_dir / "worker.json").read_text())["pid"]
    for pid in (_parent(worker), worker):  # submitit's process (checkpoint + requeue), then the worker
        os.kill(pid, signal.SIGUSR2)
    assert job.job.result() == 0  # the requeued job finished

    finished = [e for e in read_events(events) if e["type"] == "run_finished"]
    assert [e["status"] for e in finished] == ["interrupted", "completed"]
    assert "SIGUSR2" in finished[0]["reason"] or "SIGTERM" in finished[0]["reason"]
    resumed = [e["text"] for e in read_events(events) if e["type"] == "message" and "resumed from" in e["text"]]
    assert len(resumed) == 1
    assert "Requeued job" in (job.job.stderr() or "") + (job.job.stdout() or "")
    got = load_checkpoint(run.run_dir / "checkpoints" / "last.pt")
    want = load_checkpoint(reference.run_dir / "checkpoints" / "last.pt")
    assert got["epoch"] == want["epoch"] == 2
    for name, tensor in want["model"].items():
        assert torch.equal(tensor, got["model"][name]), name
    assert list((run.run_dir / "checkpoints").glob("last.pt.eval-*.json"))  # the job also evaluated it
