"""The options of `battui table` that say where its runs train, and the table's progress display.

    battui table --jobs 2                                  # two runs at once on this machine
    battui table --devices 0,1,2,3,4,5,6,7                 # one run per GPU at a time
    battui table --launcher slurm --partition gpu --time 12:00:00 --account proj --sbatch qos=high
    battui table --launcher slurm --slurm-config slurm.yaml --no-wait   # submit, collect on a later call
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

from battui.cli.app import err_console
from battui.errors import UserError
from battui.report.launch_settings import LAUNCHERS, LaunchSettings, parse_devices, slurm_settings
from battui.report.progress import Snapshot, clock

LINE_EVERY_S = 60.0  # plain logs: a progress line at least this often (and whenever a run changes state)

JOBS = typer.Option(None, "--jobs", "-j", help="Runs at once: local processes (CPU threads split between them) "
                    "or submitit jobs in flight. Default 1; with --devices one per GPU; slurm: all.")
DEVICES = typer.Option(None, "--devices", help="GPUs for local runs, e.g. 0,1,2,3: each run sees one "
                       "(CUDA_VISIBLE_DEVICES), one run per GPU at a time.")
LAUNCHER = typer.Option("local", "--launcher", help=f"Where runs train: {', '.join(LAUNCHERS)} "
                        "(submitit's executors; pip install 'battui\\[slurm]').")
SLURM_CONFIG = typer.Option(None, "--slurm-config", help="YAML with partition, account, time, gpus, "
                            "cpus_per_task, mem_gb, sbatch (mapping), setup (shell lines), signal_delay_s, "
                            "max_requeues; flags win.")
PARTITION = typer.Option(None, "--partition", help="Slurm partition.")
ACCOUNT = typer.Option(None, "--account", help="Slurm account.")
TIME = typer.Option(None, "--time", help="Slurm time limit per job (minutes, H:MM:SS or D-HH:MM:SS; default 24 h); "
                    "a run that needs longer is requeued and resumes its last.pt.")
GPUS = typer.Option(None, "--gpus-per-run", help="GPUs per Slurm job (default 1).")
SBATCH = typer.Option([], "--sbatch", help="Any other sbatch option, key=value (repeatable), e.g. qos=high.")
NO_WAIT = typer.Option(False, "--no-wait", help="Slurm: submit and exit; the same command later shows the "
                       "runs' states, submits what is left and collects the table.")


def launch_settings(*, launcher: str, jobs: int | None, devices: str | None, slurm_config: str | None,
                    partition: str | None, account: str | None, time_limit: str | None, gpus: int | None,
                    sbatch: list[str], no_wait: bool, device: str) -> LaunchSettings:
    """Check the sweep options together (one-line errors) and build the launcher settings."""
    launcher = launcher.lower()
    if launcher not in LAUNCHERS:
        raise UserError(f"--launcher: unknown launcher '{launcher}'; use {', '.join(LAUNCHERS)}")
    if jobs is not None and jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {jobs}")
    gpu_list = parse_devices(devices)
    if gpu_list and launcher != "local":
        raise UserError("--devices is for --launcher local; Slurm jobs get their GPUs from --gpus-per-run")
    if gpu_list and device.lower() not in ("auto", "cuda"):
        raise UserError(f"--devices gives each run one GPU: use --device auto or cuda, not '{device}'")
    slurm_flags = {"--slurm-config": slurm_config, "--partition": partition, "--account": account,
                   "--time": time_limit, "--gpus-per-run": gpus, "--sbatch": sbatch or None,
                   "--no-wait": no_wait or None}
    given = [name for name, value in slurm_flags.items() if value is not None]
    if given and launcher != "slurm":
        raise UserError(f"{', '.join(given)}: only used with --launcher slurm")
    settings = slurm_settings(slurm_config, partition=partition, account=account, time_limit=time_limit,
                              gpus=gpus, sbatch=sbatch)
    return LaunchSettings(launcher=launcher, jobs=jobs or 0, devices=gpu_list, slurm=settings)


@contextmanager
def table_progress() -> Iterator[Callable[[Snapshot], None]]:
    """A Rich bar on a terminal; otherwise a progress line per change of the runs' states or per minute."""
    if err_console.is_terminal:
        columns = (TextColumn("table"), BarColumn(), TaskProgressColumn(), TextColumn("{task.fields[info]}"))
        with Progress(*columns, console=err_console, transient=True) as bar:
            task = bar.add_task("table", total=None, info="")

            def update(snap: Snapshot) -> None:
                eta = clock(snap.eta) if snap.eta is not None else "?"
                failed = f", {snap.failed} failed" if snap.failed else ""
                info = (f"runs {snap.done}/{snap.runs} done, {snap.running} running{failed} | epochs "
                        f"{snap.epochs_done:.1f}/{snap.epochs_total:g} | {clock(snap.elapsed)} | ETA {eta}")
                bar.update(task, completed=snap.epochs_done, total=snap.epochs_total or 1, info=info)

            yield update
        return
    last: dict = {"key": None, "time": 0.0}

    def line(snap: Snapshot) -> None:
        key = (snap.done, snap.running, snap.failed)
        if key != last["key"] or time.time() - last["time"] >= LINE_EVERY_S:
            err_console.print(snap.line(), highlight=False, soft_wrap=True)
            last.update(key=key, time=time.time())

    yield line
