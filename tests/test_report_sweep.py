"""`battui table` as a sweep, end to end on synthetic-tiny (2 epochs, 2 methods, 1 seed, CPU, default
--device auto, the engine's own CPU thread count): `--jobs 2` == `--jobs 1` (which resubmits a failed
and a missing run), a table whose runs differ in a numerics setting says so, a re-run collects
without training, and submitit's local executor runs the table while one of its jobs is preempted: the
requeued job resumes and ends with the weights of the uninterrupted run.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/test_report_sweep.py -x -q
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import threading
from pathlib import Path

import pytest
import torch

from battui.cli import main
from battui.engine import numerics
from battui.engine.checkpoint import load_checkpoint
from battui.engine.events import read_events
from battui.report.runs import TablePlan, parse_methods
from battui.report.sweep import _materialize, plan_table
from tests.support import ROOT
from tests.support.cli import run_cli
from tests.support.processes import wait_for

EPOCHS = 2  # 14 batches a run: time to preempt one mid-run


def table_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["table", "--preset", "synthetic-tiny", "--methods", "pgd-at,trades", "--seeds", "1",
            "--set", f"train.epochs={EPOCHS}", "--set", f"run.root={root}", "--format", "json", "-o", str(out),
            *extra]


def planned(root: Path):
    plan = TablePlan("synthetic-tiny", parse_methods("pgd-at,trades"), seeds=1,
                     overrides=[f"train.epochs={EPOCHS}", f"run.root={root}"])
    return plan_table(plan)[0]


def assert_same_table(a: dict, b: dict) -> None:
    assert [r["label"] for r in a["rows"]] == [r["label"] for r in b["rows"]] == ["PGD-AT", "TRADES(1/λ=6)"]
    for ra, rb in zip(a["rows"], b["rows"]):
        assert ra["stats"] == rb["stats"]
        assert [e["weights_hash"] for e in ra["evaluations"]] == [e["weights_hash"] for e in rb["evaluations"]]
        assert [e["result"] for e in ra["evaluations"]] == [e["result"] for e in rb["evaluations"]]


@pytest.fixture(scope="module")
def jobs2(tmp_path_factory) -> tuple[dict, str]:
    """The table with `--jobs 2`: its workers import this checkout's battui."""
    tmp = tmp_path_factory.mktemp("jobs2")
    out, err = tmp / "table.json", io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(err):
        mp.setenv("PYTHONPATH", str(ROOT))
        mp.delenv("OMP_NUM_THREADS", raising=False)  # the engine's own thread rule, whatever --jobs
        try:
            main(table_args(tmp / "runs", out, "--jobs", "2"))
        except SystemExit as exc:
            assert not exc.code, err.getvalue()
    return json.loads(out.read_text()), err.getvalue()


@pytest.fixture(autouse=True)
def _workers_import_this_battui(monkeypatch) -> None:
    """Workers import this checkout and choose their CPU threads by the engine's rule (no
    OMP_NUM_THREADS): `--jobs 1`, `--jobs 2` and submitit-local must give the same count, since
    CPU runs give bit-identical weights for the same thread count only."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def recorded_threads(table: dict) -> list[int]:
    return [numerics.of_run(Path(run))[-1]["threads"] for row in table["rows"] for run in row["runs"]]


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
    runs = planned(root)
    _materialize(runs[0])
    (runs[0].run_dir / "events.jsonl").write_text(json.dumps({"type": "run_finished", "status": "failed"}) + "\n")
    code, _, err = run_cli(capsys, *table_args(root, tmp_path / "t1.json", "--jobs", "1"))
    assert code == 0, err
    assert "table: 2 runs: 0 done, 0 running, 1 failed, 1 missing" in err
    assert "PGD-AT, seed 0: failed (failed: resubmitting" in err and "TRADES(1/λ=6), seed 0: missing" in err
    table1 = json.loads((tmp_path / "t1.json").read_text())
    assert_same_table(table2, table1)
    assert recorded_threads(table1) == recorded_threads(table2) == [recorded_threads(table2)[0]] * 2
    assert "not computed alike" not in err + err2

    # a run computed with another thread count (as a run trained with OMP_NUM_THREADS set would be):
    # the same table, and a note naming the setting and the runs
    env_path = runs[0].run_dir / "env.json"
    env = json.loads(env_path.read_text())
    env["numerics"]["threads"] += 1
    env_path.write_text(json.dumps(env))
    args = table_args(root, tmp_path / "noted.md")
    args[args.index("json")] = "markdown"
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    note = f"threads {env['numerics']['threads']} ({runs[0].run_dir.name}), {recorded_threads(table2)[1]} " \
           f"({runs[1].run_dir.name})"
    assert f"note: the runs were not computed alike (settings that change the numbers): {note}" in " ".join(err.split())
    assert note in (tmp_path / "noted.md").read_text()
    env["numerics"]["threads"] -= 1
    env_path.write_text(json.dumps(env))

    # run again: everything is done, nothing trains, the same table comes back
    code, _, err = run_cli(capsys, *table_args(root, tmp_path / "again.json"))
    assert code == 0, err
    assert "table: 2 runs: 2 done, 0 running, 0 failed, 0 missing" in err and "started" not in err
    assert_same_table(table1, json.loads((tmp_path / "again.json").read_text()))

    # a sweep over a --set value: the 2-epoch row is the PGD-AT run above, the 1-epoch row trains
    args = table_args(root, tmp_path / "sweep.json", "--sweep", "train.epochs=2,1")
    args[args.index("pgd-at,trades")] = "pgd-at"
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "table: 2 runs: 1 done, 0 running, 0 failed, 1 missing" in err
    swept = json.loads((tmp_path / "sweep.json").read_text())["rows"]
    assert [r["label"] for r in swept] == ["PGD-AT [train.epochs=2]", "PGD-AT [train.epochs=1]"]
    assert swept[0]["runs"] == table1["rows"][0]["runs"] and swept[1]["runs"] != swept[0]["runs"]
    assert swept[1]["evaluations"][0]["epoch"] == 1


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _preempt(run_dir: Path, box: dict) -> None:
    """Once the run trains (batch 2 of 14), send USR2 as Slurm does before a time limit: to every
    process of the job, submitit's (checkpoint + requeue) and the worker's (saves last.pt)."""
    try:
        events = run_dir / "events.jsonl"
        assert wait_for(lambda: events.exists() and any(e["type"] == "batch" and e["batch"] == 2
                                                        for e in read_events(events)), timeout=300.0)
        worker = json.loads((run_dir / "worker.json").read_text())["pid"]
        for pid in (_parent(worker), worker):
            os.kill(pid, signal.SIGUSR2)
        box["sent"] = True
    except BaseException as exc:  # reported by the test
        box["error"] = exc


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the job's processes through /proc")
def test_submitit_local_table_with_a_preempted_job_resumes_exactly(jobs2, tmp_path, capsys) -> None:
    root = tmp_path / "runs"
    pgd_at = planned(root)[0].run_dir
    box: dict = {}
    thread = threading.Thread(target=_preempt, args=(pgd_at, box), daemon=True)
    thread.start()
    code, _, err = run_cli(capsys, *table_args(root, tmp_path / "t.json", "--launcher", "submitit-local",
                                               "--jobs", "2"))
    thread.join(timeout=10)
    assert code == 0, err
    assert box.get("sent"), box
    assert err.count("started (submitit job ") == 2
    table = json.loads((tmp_path / "t.json").read_text())
    assert_same_table(jobs2[0], table)  # the preempted run ended with the uninterrupted run's weights

    finished = [e for e in read_events(pgd_at / "events.jsonl") if e["type"] == "run_finished"]
    assert [e["status"] for e in finished] == ["interrupted", "completed"]
    assert "SIGUSR2" in finished[0]["reason"] or "SIGTERM" in finished[0]["reason"]
    record = json.loads((pgd_at / "job.json").read_text())
    assert record["launcher"] == "submitit-local"
    logs = "".join(p.read_text() for p in (root / ".submitit" / str(record["job_id"])).glob("*_log.*"))
    assert "Requeued job" in logs
    got = load_checkpoint(pgd_at / "checkpoints" / "last.pt")
    want = load_checkpoint(Path(jobs2[0]["rows"][0]["runs"][0]) / "checkpoints" / "last.pt")
    assert got["epoch"] == want["epoch"] == EPOCHS
    for name, tensor in want["model"].items():
        assert torch.equal(tensor, got["model"][name]), name
