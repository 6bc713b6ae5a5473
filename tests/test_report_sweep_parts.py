"""The sweep's parts without training: run states, progress and ETA, Slurm's sbatch file, option errors,
and the trainer finishing a stop that arrives after its last epoch (so a requeued job never gets stuck).

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/test_report_sweep_parts.py -x -q
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from battui.config import load_config
from battui.engine.control import RunControl
from battui.engine.trainer import Trainer
from battui.report import progress as progress_module
from battui.report.launch_settings import LaunchSettings, parse_minutes, slurm_settings
from battui.report.launchers import LocalLauncher, SubmititLauncher
from battui.report.progress import EventTail, TableProgress
from battui.report.runs import TablePlan, ablation_rows, parse_methods
from battui.report.sweep import Sweep, _materialize, classify, plan_table, run_name, sweep_rows
from tests.support.cli import assert_one_line_error, run_cli
from tests.support.processes import wait_for


def _plan(root: Path, methods: str = "pgd-at,trades", seeds: int = 1) -> TablePlan:
    return TablePlan("synthetic-tiny", parse_methods(methods), seeds=seeds,
                     overrides=["train.epochs=1", f"run.root={root}"])


def test_plan_gives_each_run_one_fixed_folder_and_frl_waits_for_its_pgd_at(tmp_path) -> None:
    runs, cells = plan_table(_plan(tmp_path, "pgd-at,frl,trades", seeds=2))
    assert len(runs) == 6 and len(cells) == 6  # FRL shares the PGD-AT run of its seed
    assert [r.label for r in runs[:3]] == ["PGD-AT, seed 0", "FRL(Reweight+Remargin, 0.05), seed 0",
                                          "TRADES(1/λ=6), seed 0"]
    assert runs[1].after is runs[0] and runs[1].cfg.train.init_from == str(runs[0].run_dir / "checkpoints/last.pt")
    again, _ = plan_table(_plan(tmp_path, "pgd-at,frl,trades", seeds=2))
    assert [r.run_dir for r in again] == [r.run_dir for r in runs]  # the same config, the same folder
    assert runs[0].run_dir.name == run_name(runs[0].cfg)
    assert runs[0].run_dir.name.startswith("synthetic-tiny-pgd-at-s0-")
    assert runs[3].run_dir != runs[0].run_dir  # seed 1
    ablation = TablePlan("synthetic-tiny", ablation_rows("bat"), seeds=1, overrides=[f"run.root={tmp_path}"])
    assert len({r.run_dir for r in plan_table(ablation)[0]}) == 6


def test_sweep_rows_repeat_every_row_per_setting(tmp_path, capsys) -> None:
    rows = sweep_rows(parse_methods("pgd-at,frl"), ["train.lr=0.05,0.1", "data.classes=[0,1,2],[3,4,5]"])
    assert [r.label for r in rows[:2]] == ["PGD-AT [train.lr=0.05, data.classes=[0,1,2]]",
                                           "FRL(Reweight+Remargin, 0.05) [train.lr=0.05, data.classes=[0,1,2]]"]
    assert len(rows) == 8 and rows[-1].overrides == ["train.lr=0.1", "data.classes=[3,4,5]"]
    runs, cells = plan_table(TablePlan("synthetic-tiny", rows, seeds=1, overrides=[f"run.root={tmp_path}"]))
    assert len(runs) == len(cells) == 8  # each FRL row fine-tunes the PGD-AT run of its own setting
    assert [r.after for r in runs[1::2]] == runs[0::2]
    assert runs[2].cfg.train.lr == 0.05 and runs[2].cfg.data.classes == [3, 4, 5] and runs[4].cfg.train.lr == 0.1
    table2 = sweep_rows(ablation_rows("bat"), ["train.epochs=1"])
    assert table2[0].cells == [*ablation_rows("bat")[0].cells[:2], "1 [train.epochs=1]"]
    assert sweep_rows(parse_methods("pgd-at"), []) == parse_methods("pgd-at")
    code, _, err = run_cli(capsys, "table", "--sweep", "train.lr")
    assert_one_line_error(code, err, "--sweep takes section.key=value1,value2")
    code, _, err = run_cli(capsys, "table", "--preset", "synthetic-tiny", "--sweep", "train.lrr=1,2",
                           "--set", f"run.root={tmp_path / 'none'}")
    assert_one_line_error(code, err, "lrr")
    assert not (tmp_path / "none").exists()


def shows_command_line(pid: int, run_dir: Path) -> None:
    """Wait until the new process `pid` shows its command line (naming `run_dir`), as `live_job` reads it."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    assert wait_for(lambda: not cmdline.exists() or str(run_dir.resolve()).encode() in cmdline.read_bytes())


def test_run_states_done_running_failed_missing(tmp_path) -> None:
    run = plan_table(_plan(tmp_path, "pgd-at"))[0][0]
    classify(run)
    assert (run.state, run.detail) == ("missing", "submitting")
    _materialize(run)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", str(run.run_dir.resolve())])
    try:
        shows_command_line(sleeper.pid, run.run_dir)
        (run.run_dir / "job.json").write_text(json.dumps({"launcher": "local", "pid": sleeper.pid,
                                                          "host": socket.gethostname()}))
        classify(run)
        assert (run.state, run.detail) == ("running", f"pid {sleeper.pid}")
    finally:
        sleeper.kill()
        sleeper.wait()
    classify(run)
    assert run.state == "failed" and run.detail.startswith("stopped: resubmitting")
    (run.run_dir / "events.jsonl").write_text(json.dumps({"type": "run_finished", "status": "completed"}) + "\n")
    classify(run)
    assert run.state == "failed"  # completed, but its final weights are gone
    (run.run_dir / "checkpoints").mkdir()
    (run.run_dir / "checkpoints" / "last.pt").write_bytes(b"")
    classify(run)
    assert (run.state, run.detail) == ("done", "finished")


def test_sweep_waits_for_a_run_another_table_started(tmp_path) -> None:
    run = plan_table(_plan(tmp_path, "pgd-at"))[0][0]
    _materialize(run)
    go = run.run_dir / "go"  # the other table's run finishes once the test has seen it running
    finish = (f"import time, pathlib; d = pathlib.Path({str(run.run_dir.resolve())!r})\n"
              "while not (d / 'go').exists(): time.sleep(0.05)\n"
              "(d / 'checkpoints').mkdir(); (d / 'checkpoints' / 'last.pt').write_bytes(b''); "
              "(d / 'events.jsonl').write_text('{\"type\": \"run_finished\", \"status\": \"completed\"}\\n')")
    other = subprocess.Popen([sys.executable, "-c", finish, str(run.run_dir.resolve())])
    try:
        (run.run_dir / "job.json").write_text(json.dumps({"launcher": "local", "pid": other.pid,
                                                          "host": socket.gethostname()}))
        shows_command_line(other.pid, run.run_dir)
        classify(run)
        assert run.state == "running"
        go.touch()
        lines: list[str] = []
        Sweep([run], LocalLauncher(LaunchSettings()), lambda r: [], lines.append, poll_s=0.1).run()
    finally:
        other.wait()  # reaped by us, as the table that started it would
    assert (run.state, run.detail) == ("done", "finished")
    assert lines == ["  PGD-AT, seed 0: done (finished)"]


def test_progress_reads_new_event_lines_and_estimates_the_time_left(tmp_path, monkeypatch) -> None:
    path = tmp_path / "events.jsonl"
    tail = EventTail(path, epochs=4)
    assert tail.update() == 0.0  # no file yet
    lines = [{"type": "run_started", "epochs": 4, "start_epoch": 0},
             {"type": "batch", "epoch": 1, "batch": 5, "batches": 10}]
    path.write_text("".join(json.dumps(e) + "\n" for e in lines) + '{"type": "checkpoint", "ki')
    assert tail.update() == 1.5  # the half-written line waits
    with open(path, "a") as fh:
        fh.write('nd": "last", "epoch": 2}\n')
    assert tail.update() == 2.0
    with open(path, "a") as fh:
        fh.write(json.dumps({"type": "run_started", "epochs": 4, "start_epoch": 1}) + "\n")  # resumed earlier
    assert tail.update() == 1.0
    with open(path, "a") as fh:
        fh.write(json.dumps({"type": "run_finished", "status": "completed"}) + "\n")
    assert tail.update() == 4.0 and tail.status == "completed"

    clock = iter([100.0, 110.0, 130.0])
    monkeypatch.setattr(progress_module.time, "time", lambda: next(clock))
    table = TableProgress()  # started at 100
    table.add(tmp_path / "a", epochs=4)  # no events yet
    table.add(tmp_path, epochs=4)  # the finished run above
    first = table.snapshot({"a": "running", "b": "done", "c": "missing"})  # t = 110
    assert (first.epochs_done, first.epochs_total, first.eta) == (4.0, 8, None)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "events.jsonl").write_text(json.dumps({"type": "batch", "epoch": 0, "batch": 1,
                                                             "batches": 1}) + "\n")
    snap = table.snapshot({"a": "running", "b": "done", "c": "failed"})  # t = 130: 1 epoch in 30 s
    assert snap.epochs_done == 5.0 and snap.eta == pytest.approx(3 * 30.0)
    assert snap.line() == ("table: runs 1/3 done, 1 running, 1 failed | epochs 5.0/8 (62%) | elapsed 0:00:30 | "
                           "ETA 0:01:30")


def test_slurm_settings_from_yaml_and_flags_make_the_sbatch_file(tmp_path, monkeypatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    config = tmp_path / "slurm.yaml"
    config.write_text("partition: cpu\naccount: proj\ntime: '12:00:00'\ngpus: 2\ncpus_per_task: 8\n"
                      "sbatch: {constraint: a100}\nsetup: ['module load cuda']\n")
    settings = slurm_settings(str(config), partition="gpu", sbatch=["qos=high"])
    assert (settings.partition, settings.account, settings.time, settings.gpus) == ("gpu", "proj", 720, 2)
    launcher = SubmititLauncher(LaunchSettings("slurm", slurm=settings), tmp_path / ".submitit")
    text = launcher.executor._executor._make_submission_file_text("python -m battui.report.worker x", "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=proj", "#SBATCH --time=720",
                 "#SBATCH --gpus-per-node=2", "#SBATCH --cpus-per-task=8", "#SBATCH --constraint=a100",
                 "#SBATCH --qos=high", "#SBATCH --signal=USR2@120", "module load cuda"):
        assert line in text.splitlines(), (line, text)
    times = ("90", "1:30", "1:30:00", "2-00:00:00", "1-12", "0:00:30")
    assert [parse_minutes(t) for t in times] == [90, 2, 90, 2880, 2160, 1]


def test_bad_sweep_options_are_one_line_errors(tmp_path, capsys, monkeypatch) -> None:
    root = tmp_path / "runs"
    base = ["table", "--preset", "synthetic-tiny", "--set", f"run.root={root}"]
    for extra, needle in [
        (["--jobs", "0"], "--jobs must be >= 1"),
        (["--devices", "a,b"], "--devices takes GPU numbers"),
        (["--devices", "0,1", "--device", "cpu"], "use --device auto or cuda"),
        (["--devices", "0", "--launcher", "slurm"], "--devices is for --launcher local"),
        (["--partition", "gpu"], "--partition: only used with --launcher slurm"),
        (["--no-wait", "--jobs", "2"], "--no-wait: only used with --launcher slurm"),
        (["--launcher", "pbs"], "unknown launcher 'pbs'"),
        (["--launcher", "slurm", "--time", "soon"], "--time: expected minutes"),
        (["--launcher", "slurm", "--sbatch", "qos"], "--sbatch takes key=value"),
        (["--launcher", "slurm", "--slurm-config", str(tmp_path / "none.yaml")], "--slurm-config"),
    ]:
        code, _, err = run_cli(capsys, *base, *extra)
        assert_one_line_error(code, err, needle)
    (tmp_path / "bad.yaml").write_text("partition: gpu\nqueue: fast\n")
    code, _, err = run_cli(capsys, *base, "--launcher", "slurm", "--slurm-config", str(tmp_path / "bad.yaml"))
    assert_one_line_error(code, err, "unknown key(s) queue")
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun
    code, _, err = run_cli(capsys, *base, "--launcher", "slurm", "--methods", "pgd-at", "--seeds", "1")
    assert_one_line_error(code, err, "srun not found")
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if it were not installed
    code, _, err = run_cli(capsys, *base, "--launcher", "submitit-local", "--methods", "pgd-at", "--seeds", "1")
    assert_one_line_error(code, err, "pip install 'battui[slurm]'")
    assert not root.exists()  # nothing was written


def test_a_stop_after_the_last_epoch_still_completes_the_run(tmp_path) -> None:
    control = RunControl()

    def stop_at_last_validation(event: dict) -> None:
        if event["type"] == "eval" and event["split"] == "val" and event["epoch"] == 0:
            control.request_stop("SIGUSR2 received")

    cfg = load_config("synthetic-tiny", ["train.epochs=1", f"run.root={tmp_path}", "run.device=cpu"])
    trainer = Trainer(cfg, control=control, listeners=[stop_at_last_validation]).prepare()
    assert trainer.run() == "completed"  # nothing left to resume: the test evaluation ran instead


def test_table_progress_is_a_bar_on_a_terminal_and_lines_in_a_log(monkeypatch) -> None:
    from rich.console import Console

    from battui.cli import sweep as cli_sweep
    from battui.report.progress import Snapshot

    def snap(done: int, epochs: float, eta: float | None) -> Snapshot:
        return Snapshot(runs=3, done=done, running=3 - done, failed=0, epochs_done=epochs, epochs_total=30,
                        elapsed=65.0, eta=eta)

    log = io.StringIO()
    monkeypatch.setattr(cli_sweep, "err_console", Console(file=log, force_terminal=False, width=200))
    with cli_sweep.table_progress() as update:
        update(snap(0, 0.0, None))
        update(snap(0, 5.0, 325.0))  # same states, within a minute: no new line
        update(snap(1, 10.0, 130.0))
    lines = log.getvalue().splitlines()
    assert lines == ["table: runs 0/3 done, 3 running | epochs 0.0/30 (0%) | elapsed 0:01:05 | ETA unknown",
                     "table: runs 1/3 done, 2 running | epochs 10.0/30 (33%) | elapsed 0:01:05 | ETA 0:02:10"]

    screen = io.StringIO()
    monkeypatch.setattr(cli_sweep, "err_console", Console(file=screen, force_terminal=True, width=160))
    with cli_sweep.table_progress() as update:
        update(snap(1, 10.0, 130.0))
        assert wait_for(lambda: "33%" in screen.getvalue())  # the bar refreshes
    text = screen.getvalue()
    assert "━" in text and "33%" in text and "runs 1/3 done, 2 running | epochs 10.0/30" in text
    assert "ETA 0:02:10" in text


def test_local_launcher_gives_each_job_one_gpu_and_leaves_the_cpu_threads_to_the_engine(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    launcher = LocalLauncher(LaunchSettings(devices=["2", "5"]))  # one run per GPU: two slots
    show = [sys.executable, "-c",
            "import os; print(os.environ['CUDA_VISIBLE_DEVICES'], os.environ.get('OMP_NUM_THREADS', 'unset'))"]
    dirs = [tmp_path / "a", tmp_path / "b"]
    jobs = []
    for run_dir in dirs:
        run_dir.mkdir()
        jobs.append(launcher.submit(run_dir, show))
    assert sorted(j.slot for j in jobs) == [0, 1]
    for job in jobs:
        job.proc.wait()
    # the thread count is the engine's choice whatever the number of slots: the launcher sets none
    assert [(d / "train.log").read_text().split() for d in dirs] == [["2", "unset"], ["5", "unset"]]
    assert [json.loads((d / "job.json").read_text())["device"] for d in dirs] == ["2", "5"]
    assert launcher.free_slots() == 2
