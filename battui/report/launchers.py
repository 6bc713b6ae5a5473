"""Where the runs of a `battui table` sweep train: local processes, submitit's local executor, or Slurm.

    launcher = make_launcher(LaunchSettings("local", jobs=4, devices=["0", "1", "2", "3"]), Path("runs"))
    job = launcher.submit(run_dir, worker_command(run_dir, device="auto", limit=0, attack={}))
    job.finished(), job.describe()           # "pid 4711", "Slurm job 123456"

Every job runs one worker (`python -m battui.report.worker RUN_DIR ...`, see worker.py) for
one run directory; its output goes to RUN_DIR/train.log. `job.json` in the run directory
records how it was started, so a later `battui table` finds it again (`live_job`).

- `local`: a child process per run, at most `jobs` at once; with `devices` each one sees
  one GPU (CUDA_VISIBLE_DEVICES), and CPU threads are split (OMP_NUM_THREADS = cores // jobs).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from battui.errors import UserError

LAUNCHERS = ("local", "submitit-local", "slurm")
JOB_FILE = "job.json"
LOG_FILE = "train.log"
SLURM_LIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING", "READY",
              "PREEMPTED", "REQUEUE_HOLD", "REQUEUE_FED"}


@dataclass
class SlurmSettings:
    """What every job asks Slurm for (flags of `battui table` or a YAML file with these keys)."""

    partition: str = ""
    account: str = ""
    time: int = 24 * 60  # minutes per job; a longer run is requeued with its last.pt (max_requeues)
    gpus: int = 1  # per job
    cpus_per_task: int = 0  # 0: the cluster's default
    mem_gb: float = 0.0  # 0: the cluster's default
    sbatch: dict[str, Any] = field(default_factory=dict)  # any other sbatch option, e.g. {qos: high}
    setup: list[str] = field(default_factory=list)  # shell lines before the job (module load, source venv)
    signal_delay_s: int = 120  # USR2 this long before the time limit: the worker saves and the job requeues
    max_requeues: int = 5  # submitit's max_num_timeout


@dataclass
class LaunchSettings:
    launcher: str = "local"
    jobs: int = 0  # runs at once; 0: 1 (local, submitit-local), every run (slurm), len(devices) with devices
    devices: list[str] = field(default_factory=list)
    slurm: SlurmSettings = field(default_factory=SlurmSettings)

    def slots(self) -> int:
        if self.jobs:
            return self.jobs
        if self.devices:
            return len(self.devices)
        return 1 << 30 if self.launcher == "slurm" else 1


def parse_devices(text: str | None) -> list[str]:
    if not text:
        return []
    devices = [d.strip() for d in text.split(",") if d.strip()]
    if not devices or not all(d.isdigit() for d in devices):
        raise UserError(f"--devices takes GPU numbers separated by commas (e.g. 0,1,2,3), got '{text}'")
    return devices


def parse_minutes(text: str | int) -> int:
    """`90`, `1:30:00`, `2-00:00:00` (Slurm's formats) -> minutes."""
    value = str(text).strip()
    try:
        days, _, clock = value.rpartition("-") if "-" in value else ("0", "", value)
        parts = [int(p) for p in clock.split(":")]
        if len(parts) == 1:
            minutes = parts[0]
        elif len(parts) == 2:
            minutes = parts[0] + (parts[1] > 0)
        elif len(parts) == 3:
            minutes = parts[0] * 60 + parts[1] + (parts[2] > 0)
        else:
            raise ValueError
        minutes += int(days or 0) * 24 * 60
    except ValueError:
        raise UserError(f"--time: expected minutes, H:MM:SS or D-HH:MM:SS, got '{value}'") from None
    if minutes < 1:
        raise UserError(f"--time must be at least one minute, got '{value}'")
    return minutes


def _parse_assignments(items: list[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise UserError(f"--sbatch takes key=value (e.g. qos=high or constraint=a100), got '{item}'")
        out[key.strip().lstrip("-")] = yaml.safe_load(raw) if raw else ""
    return out


def slurm_settings(config: str | None = None, *, partition: str | None = None, account: str | None = None,
                   time_limit: str | None = None, gpus: int | None = None, sbatch: list[str] = ()) -> SlurmSettings:
    """A YAML file's settings (if any), then the flags on top."""
    import yaml

    settings = SlurmSettings()
    if config:
        try:
            data = yaml.safe_load(Path(config).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise UserError(f"--slurm-config {config}: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise UserError(f"--slurm-config {config}: expected a mapping of settings")
        known = set(SlurmSettings.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"--slurm-config {config}: unknown key(s) {', '.join(unknown)}; "
                            f"keys: {', '.join(sorted(known))}")
        for key, value in data.items():
            if key == "time":
                value = parse_minutes(value)
            elif key in ("sbatch", "setup") and not isinstance(value, dict if key == "sbatch" else list):
                raise UserError(f"--slurm-config {config}: '{key}' must be a "
                                f"{'mapping of sbatch options' if key == 'sbatch' else 'list of shell lines'}")
            setattr(settings, key, value)
    for key, value in (("partition", partition), ("account", account), ("gpus", gpus)):
        if value is not None:
            setattr(settings, key, value)
    if time_limit is not None:
        settings.time = parse_minutes(time_limit)
    settings.sbatch = {**settings.sbatch, **_parse_assignments(list(sbatch))}
    if settings.gpus < 0:
        raise UserError(f"--gpus-per-run must be >= 0, got {settings.gpus}")
    return settings


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
    tmp = run_dir / f".{JOB_FILE}.tmp"
    tmp.write_text(json.dumps(record) + "\n")
    os.replace(tmp, run_dir / JOB_FILE)


def _pid_runs(pid: int, marker: str) -> bool:
    """Is `pid` alive and (where /proc tells) a process whose command line contains `marker`?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():
        return True
    try:
        text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return marker in text and Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"


def live_job(run_dir: Path) -> str | None:
    """'pid 4711' / 'Slurm job 123 RUNNING' when the job recorded in RUN_DIR/job.json still runs, else None."""
    try:
        record = json.loads((run_dir / JOB_FILE).read_text())
    except (OSError, ValueError):
        return None
    launcher = record.get("launcher")
    if launcher == "slurm":
        submitit = import_submitit()
        state = submitit.SlurmJob(record["folder"], str(record["job_id"])).get_info(mode="force").get("State")
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
    """At most `jobs` worker processes at once, each with its own GPU slot and a share of the CPU threads."""

    name = "local"

    def __init__(self, settings: LaunchSettings) -> None:
        n = settings.slots()
        self.slot_devices = [settings.devices[i % len(settings.devices)] if settings.devices else None
                             for i in range(n)]
        self.running: dict[int, LocalJob] = {}
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.threads = max(1, cores // n) if n > 1 else 0

    def free_slots(self) -> int:
        self.running = {s: j for s, j in self.running.items() if not j.finished()}
        return len(self.slot_devices) - len(self.running)

    def submit(self, run_dir: Path, command: list[str]) -> LocalJob:
        slot = next(s for s in range(len(self.slot_devices)) if s not in self.running)
        env = dict(os.environ)
        if self.threads and "OMP_NUM_THREADS" not in os.environ:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.threads)
        if self.slot_devices[slot] is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.slot_devices[slot]
        with open(run_dir / LOG_FILE, "ab") as log, open(os.devnull, "rb") as devnull:
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
        with open(Path(self.run_dir) / LOG_FILE, "ab") as log, open(os.devnull, "rb") as devnull:
            self._child = subprocess.Popen(self.command, stdin=devnull, stdout=log, stderr=subprocess.STDOUT)
        while self._child.poll() is None:
            time.sleep(0.5)
        code = self._child.returncode
        if code != 0:
            raise RuntimeError(f"the worker for {self.run_dir} exited with code {code}; see its {LOG_FILE}")
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
        if self.cluster == "slurm" and shutil.which("srun") is None:
            raise UserError("--launcher slurm: no Slurm on this machine (srun not found); run battui table on "
                            "the cluster's login node, or use --launcher local / submitit-local")
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


def make_launcher(settings: LaunchSettings, root: Path):
    if settings.launcher not in LAUNCHERS:
        raise UserError(f"--launcher: unknown launcher '{settings.launcher}'; use {', '.join(LAUNCHERS)}")
    if settings.launcher == "local":
        return LocalLauncher(settings)
    return SubmititLauncher(settings, root / ".submitit")
