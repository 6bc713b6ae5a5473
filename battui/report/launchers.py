"""Where the runs of a `battui table` sweep train: local processes, submitit's local executor, or Slurm.

    launcher = make_launcher(LaunchSettings("local", jobs=4, devices=["0", "1", "2", "3"]), Path("runs"))
    job = launcher.submit(run_dir, worker_command(run_dir, device="auto", limit=0, attack={}))
    job.finished(), job.describe()           # "pid 4711", "Slurm job 123456"

Every job runs one worker (`python -m battui.report.worker RUN_DIR ...`, see worker.py) for
one run directory; its output goes to RUN_DIR/train.log. `job.json` in the run directory
records how it was started, so a later `battui table` finds it again (`live_job`).

- `local`: a child process per run, at most `jobs` at once; with `devices` each one sees
  one GPU (CUDA_VISIBLE_DEVICES). The CPU thread count is the engine's choice, the same for
  any `jobs` (engine/numerics.py): it changes a CPU run's numbers, so it never follows the
  sweep's parallelism (more runs than cores then share them).
- `submitit-local` / `slurm`: submitit's AutoExecutor (`pip install battui[slurm]`). The
  submitted callable, `TableJob`, runs the worker as a child; on the signal Slurm sends
  before it kills a job (submitit: USR2, `signal_delay_s` ahead) its `checkpoint` stops
  the worker (which saves last.pt after its batch) and submitit requeues the job, whose
  worker resumes the run exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from battui.engine.rundir import RunDir
from battui.engine.runlock import process_exists
from battui.errors import UserError
from battui.report.launch_settings import LAUNCHERS, LaunchSettings

SLURM_LIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING", "READY",
              "PREEMPTED", "REQUEUE_HOLD", "REQUEUE_FED"}


def import_submitit():
    try:
        import submitit
    except ImportError:
        raise UserError("the submitit-local and slurm launchers need submitit: pip install 'battui[slurm]'") from None
    return submitit


def worker_command(run_dir: Path, *, device: str, limit: int, attack: dict[str, Any]) -> list[str]:
    return [sys.executable, "-m", "battui.report.worker", str(Path(run_dir).resolve()), "--device", device,
            "--limit", str(limit), "--attack", json.dumps(attack)]


def write_job_record(run_dir: Path, record: dict[str, Any]) -> None:
    record = {"host": socket.gethostname(), "submitted": time.time(), **record}
    final = RunDir(run_dir).job
    tmp = final.with_name(f".{final.name}.tmp")
    tmp.write_text(json.dumps(record) + "\n")
    os.replace(tmp, final)


def _pid_runs(pid: int, marker: str) -> bool:
    """Is `pid` alive and (where /proc tells) a process whose command line contains `marker`?"""
    if not process_exists(pid):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():
        return True
    try:
        text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        zombie = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[-1][:1] == "Z"
    except OSError:
        return False
    return marker in text and not zombie


def live_job(run_dir: Path) -> str | None:
    """'pid 4711' / 'Slurm job 123 RUNNING' when the job recorded in RUN_DIR/job.json still runs, else None."""
    try:
        record = json.loads(RunDir(run_dir).job.read_text())
    except (OSError, ValueError):
        return None
    launcher = record.get("launcher")
    if launcher == "slurm":
        submitit = import_submitit()
        try:
            state = submitit.SlurmJob(record["folder"], str(record["job_id"])).get_info(mode="force").get("State")
        except Exception:  # sacct missing or failing: the state is unknown
            state = None
        state = (state or "UNKNOWN").split()[0].upper()
        recent = time.time() - float(record.get("submitted", 0)) < 300  # sacct may not know a new job yet
        return f"Slurm job {record['job_id']} {state}" if state in SLURM_LIVE or (state == "UNKNOWN" and recent) \
            else None
    if record.get("host") != socket.gethostname():
        return None
    if launcher == "local" and _pid_runs(int(record["pid"]), str(Path(run_dir).resolve())):
        return f"pid {record['pid']}"
    if launcher == "submitit-local" and _pid_runs(int(record["job_id"]), "submitit"):
        return f"submitit job {record['job_id']}"
    return None


class LocalJob:
    def __init__(self, proc: subprocess.Popen, slot: int) -> None:
        self.proc, self.slot = proc, slot

    def finished(self) -> bool:
        return self.proc.poll() is not None

    def describe(self) -> str:
        return f"pid {self.proc.pid}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)


class LocalLauncher:
    """At most `jobs` worker processes at once, each with its own GPU slot."""

    name = "local"

    def __init__(self, settings: LaunchSettings) -> None:
        n = settings.slots()
        self.slot_devices = [settings.devices[i % len(settings.devices)] if settings.devices else None
                             for i in range(n)]
        self.running: dict[int, LocalJob] = {}

    def free_slots(self) -> int:
        self.running = {s: j for s, j in self.running.items() if not j.finished()}
        return len(self.slot_devices) - len(self.running)

    def submit(self, run_dir: Path, command: list[str]) -> LocalJob:
        slot = next(s for s in range(len(self.slot_devices)) if s not in self.running)
        env = dict(os.environ)
        if self.slot_devices[slot] is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.slot_devices[slot]
        with open(RunDir(run_dir).log, "ab") as log, open(os.devnull, "rb") as devnull:
            proc = subprocess.Popen(command, stdin=devnull, stdout=log, stderr=subprocess.STDOUT, env=env)
        write_job_record(run_dir, {"launcher": self.name, "pid": proc.pid, "device": self.slot_devices[slot]})
        self.running[slot] = job = LocalJob(proc, slot)
        return job

    def stop_all(self) -> None:
        for job in self.running.values():
            job.stop()
        for job in self.running.values():
            try:
                job.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                job.proc.kill()


def _reap(proc: subprocess.Popen, timeout: float) -> None:
    """Wait for a child from inside a signal handler (Popen.wait may hold a lock in the interrupted frame)."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
        except ChildProcessError:
            return
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return
        time.sleep(0.2)
    proc.kill()
    try:
        _, status = os.waitpid(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    except ChildProcessError:
        pass


class TableJob:
    """The callable submitit runs: the worker as a child process; `checkpoint` stops it for a requeue."""

    def __init__(self, command: list[str], run_dir: str, stop_wait_s: float = 60.0) -> None:
        self.command, self.run_dir, self.stop_wait_s = command, run_dir, stop_wait_s
        self._child: subprocess.Popen | None = None

    def __call__(self) -> int:
        with open(RunDir(self.run_dir).log, "ab") as log, open(os.devnull, "rb") as devnull:
            self._child = subprocess.Popen(self.command, stdin=devnull, stdout=log, stderr=subprocess.STDOUT)
        while self._child.poll() is None:
            time.sleep(0.5)
        code = self._child.returncode
        if code != 0:
            raise RuntimeError(f"the worker for {self.run_dir} exited with code {code}; "
                               f"see its {RunDir(self.run_dir).log.name}")
        return code

    def checkpoint(self):
        """submitit calls this on the preemption/timeout signal: stop the worker (it saves last.pt), requeue."""
        submitit = import_submitit()
        child = self._child
        if child is not None and child.returncode is None:
            try:
                child.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            _reap(child, self.stop_wait_s)
        return submitit.helpers.DelayedSubmission(TableJob(self.command, self.run_dir, self.stop_wait_s))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_child": None}


class SubmititJob:
    def __init__(self, job, cluster: str) -> None:
        self.job, self.cluster = job, cluster

    def finished(self) -> bool:
        if not self.job.done():
            return False
        # a job Slurm requeued after a preemption may have left a result file behind
        return self.cluster != "slurm" or self.job.state.split()[0].upper() not in SLURM_LIVE

    def describe(self) -> str:
        return f"{'Slurm' if self.cluster == 'slurm' else 'submitit'} job {self.job.job_id}"

    def stop(self) -> None:
        pass  # cluster jobs keep running; a later `battui table` finds them through job.json


class SubmititLauncher:
    def __init__(self, settings: LaunchSettings, folder: Path) -> None:
        submitit = import_submitit()
        self.cluster = "slurm" if settings.launcher == "slurm" else "local"
        self.name, self.folder, self.limit = settings.launcher, folder, settings.slots()
        s = settings.slurm
        check_launcher(settings)
        self.executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=self.cluster,
                                              slurm_max_num_timeout=s.max_requeues)
        params: dict[str, Any] = {"timeout_min": s.time, "name": "battui"}
        if self.cluster == "slurm":
            params["slurm_signal_delay_s"] = s.signal_delay_s
            for key, value in (("gpus_per_node", s.gpus), ("slurm_partition", s.partition),
                               ("slurm_account", s.account), ("cpus_per_task", s.cpus_per_task),
                               ("mem_gb", s.mem_gb), ("slurm_additional_parameters", s.sbatch),
                               ("slurm_setup", s.setup)):
                if value:
                    params[key] = value
        self.executor.update_parameters(**params)
        # the worker must be gone before the job is killed (submitit's local executor signals 30 s ahead)
        self.stop_wait_s = max(10.0, (s.signal_delay_s if self.cluster == "slurm" else 30) - 10.0)
        self.running: list[SubmititJob] = []

    def free_slots(self) -> int:
        self.running = [j for j in self.running if not j.finished()]
        return self.limit - len(self.running)

    def submit(self, run_dir: Path, command: list[str]) -> SubmititJob:
        job = self.executor.submit(TableJob(command, str(Path(run_dir).resolve()), self.stop_wait_s))
        write_job_record(run_dir, {"launcher": self.name, "job_id": job.job_id, "folder": str(self.folder / "%j")})
        handle = SubmititJob(job, self.cluster)
        self.running.append(handle)
        return handle

    def stop_all(self) -> None:
        pass


def check_launcher(settings: LaunchSettings) -> None:
    """Can this launcher start jobs here? A one-line UserError if not (nothing is written)."""
    if settings.launcher not in LAUNCHERS:
        raise UserError(f"--launcher: unknown launcher '{settings.launcher}'; use {', '.join(LAUNCHERS)}")
    if settings.launcher != "local":
        import_submitit()
    if settings.launcher == "slurm" and shutil.which("srun") is None:
        raise UserError("--launcher slurm: no Slurm on this machine (srun not found); run battui table on "
                        "the cluster's login node, or use --launcher local / submitit-local")


def make_launcher(settings: LaunchSettings, root: Path):
    check_launcher(settings)
    if settings.launcher == "local":
        return LocalLauncher(settings)
    return SubmititLauncher(settings, root / ".submitit")
