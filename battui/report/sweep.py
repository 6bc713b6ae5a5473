"""`battui table` as a sweep: every (row, seed) run is a job; jobs run at once; a re-run picks up.

    runs, cells = plan_table(plan)                          # one PlannedRun per distinct run
    results = run_sweep(plan, spec_overrides={}, device="auto", launch=LaunchSettings(jobs=4), log=print)

Each run the table needs gets a fixed run directory, `<run.root>/<preset>-<method>-s<seed>-<hash>`
(the hash is of the resolved config, as `find_completed_run` compares it), unless a finished
run with the same config already exists anywhere under `run.root` (it is reused). Before any
job starts the table says what each run is:

    done      finished (`run_finished: completed`), collected as is
    running   its job is alive (pid on this host, submitit/Slurm job id from RUN_DIR/job.json), or another
              process holds its lock (a second table on the same folder): waited for, its result reused
    failed    the directory exists but the run did not finish: submitted again, resuming its last.pt
    missing   not started: submitted

FRL and FAAL runs wait for the PGD-AT (or TRADES) run they fine-tune, ABSLD runs for their
TRADES teacher. A job writes the run's resolved
`config.yaml` first and runs `python -m battui.report.worker RUN_DIR` (train, then the table's
evaluation, cached). While jobs run, `progress(snapshot)` gets the table's progress and ETA.
A run that fails is reported at the end (not retried in the same call); running the same
command again resubmits it. Finally every cell is evaluated (from the jobs' caches).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from battui.config import Config
from battui.engine.events import RunStatus
from battui.engine.rundir import RunDir
from battui.engine.runlock import live_pid
from battui.errors import UserError
from battui.methods import method_class, method_slug, paper_label
from battui.report.launch_settings import LaunchSettings
from battui.report.launchers import check_launcher, live_job, make_launcher, worker_command
from battui.report.progress import JobState, Snapshot, TableProgress
from battui.report.runs import (
    MethodRow,
    TablePlan,
    _normalized,
    final_weights,
    find_completed_run,
    run_config,
    run_status,
)

SLURM_POLL_S = 30.0


@dataclass
class PlannedRun:
    label: str  # "TRADES(1/λ=6), seed 0"
    cfg: Config
    run_dir: Path
    after: PlannedRun | None = None  # FRL: the PGD-AT run it starts from
    state: JobState = JobState.MISSING
    detail: str = ""
    job: Any = None  # the job this call started, or None


def run_name(cfg: Config) -> str:
    """`<preset>-<method>-s<seed>-<8 hex of the resolved config>`: the same run always gets the same folder."""
    digest = hashlib.sha256(json.dumps(_normalized(cfg), sort_keys=True).encode()).hexdigest()[:8]
    preset = re.sub(r"[^\w.-]+", "_", Path(cfg.preset).stem if cfg.preset.endswith((".yaml", ".yml")) else cfg.preset)
    return f"{preset}-{method_slug(cfg.method.name)}-s{cfg.train.seed}-{digest}"


def plan_table(plan: TablePlan) -> tuple[list[PlannedRun], list[tuple[int, PlannedRun]]]:
    """The distinct runs (dependencies first) and the table's cells as (row index, run), seeds outer."""
    if plan.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {plan.seeds}")
    runs: dict[str, PlannedRun] = {}
    stamp = time.strftime("%Y%m%d-%H%M%S")

    def add(cfg: Config, label: str, after: PlannedRun | None = None) -> PlannedRun:
        found = None if plan.retrain else find_completed_run(cfg)
        name = run_name(cfg) + (f"-{stamp}" if plan.retrain else "")
        run_dir = found or Path(cfg.run.root) / name
        if str(run_dir) not in runs:
            state = JobState.DONE if found else JobState.MISSING
            runs[str(run_dir)] = PlannedRun(label, cfg, run_dir, after, state=state)
        return runs[str(run_dir)]

    cells = []
    for seed in range(plan.seeds):
        pretrained: dict[tuple[str, tuple[str, ...]], PlannedRun] = {}  # per source method and --sweep setting
        for index, row in enumerate(plan.rows):
            after, setting, weights = None, tuple(row.overrides), {}
            for role, source in _dependencies(row).items():  # FRL/FAAL: a start; ABSLD: a teacher
                if (source, setting) not in pretrained:
                    base = run_config(plan, MethodRow(source, overrides=row.overrides), seed)
                    word = "teacher" if role == "teacher" else "pre-trained"
                    pretrained[source, setting] = add(base, f"{word} {paper_label(source, {})}{_suffix(row)}, "
                                                            f"seed {seed}")
                after = pretrained[source, setting]
                weights[role] = str(RunDir(after.run_dir).last)
            run = add(run_config(plan, row, seed, **weights), f"{row.label}, seed {seed}", after)
            if not row.params and (row.method, setting) not in pretrained:
                pretrained[row.method, setting] = run
            cells.append((index, run))
    return list(runs.values()), cells


def _dependencies(row: MethodRow) -> dict[str, str]:
    """{"init_from" | "teacher": the method whose run of the same seed the row's run needs}."""
    cls = method_class(row.method)
    out = {"init_from": cls.start_method(row.params)} if cls.fine_tunes_from else {}
    if cls.teacher_from and "teacher" not in row.params:
        out["teacher"] = cls.teacher_from
    return out


def _suffix(row: MethodRow) -> str:
    return f" [{', '.join(row.overrides)}]" if row.overrides else ""


def sweep_rows(rows: list[MethodRow], sweeps: list[str]) -> list[MethodRow]:
    """`--sweep train.lr=0.05,0.1` (repeatable: every combination): each row once per setting."""
    import itertools

    from battui.report.runs import _split_top

    axes = []
    for text in sweeps:
        key, eq, values = text.partition("=")
        items = _split_top(values, ",")
        if not eq or "." not in key or not items:
            raise UserError(f"--sweep takes section.key=value1,value2 (e.g. train.lr=0.05,0.1), got '{text}'")
        axes.append([f"{key.strip()}={v}" for v in items])
    out = []
    for setting in itertools.product(*axes):
        suffix = f" [{', '.join(setting)}]" if setting else ""
        for row in rows:
            cells = [*row.cells[:-1], row.cells[-1] + suffix]
            out.append(MethodRow(row.method, row.params, label=row.label + suffix, cells=cells,
                                 overrides=list(setting)))
    return out


def classify(run: PlannedRun) -> None:
    """Set `state`/`detail` of a run this call did not start, from its directory and job record."""
    if run.state == JobState.DONE:
        run.detail = "finished"
        return
    if run_status(run.run_dir) == RunStatus.COMPLETED and RunDir(run.run_dir).last.exists():
        run.state, run.detail = JobState.DONE, "finished"
        return
    job = holder(run.run_dir)
    if job:
        run.state, run.detail = JobState.RUNNING, job
    elif RunDir(run.run_dir).config.exists():
        status = run_status(run.run_dir)
        run.state, run.detail = JobState.FAILED, f"{status or 'stopped'}: resubmitting (resumes its last.pt)"
    else:
        run.state, run.detail = JobState.MISSING, "submitting"


def holder(run_dir: Path) -> str | None:
    """Who trains the run now: its job (RUN_DIR/job.json: 'pid 4711', 'Slurm job 123 RUNNING'), or
    the process holding its lock (another table's worker, a `battui train --resume`); None when nobody."""
    if not run_dir.is_dir():
        return None
    job = live_job(run_dir)
    if job:
        return job
    pid = live_pid(run_dir)
    return None if pid is None else f"held by {f'pid {pid}' if pid > 0 else 'another process'}: waiting for it"


def _materialize(run: PlannedRun) -> None:
    """Create the run directory with its resolved config.yaml (kept if a failed attempt wrote it)."""
    from battui.engine.runfiles import write_run_config

    run.run_dir.mkdir(parents=True, exist_ok=True)
    if not RunDir(run.run_dir).config.exists():
        write_run_config(run.run_dir, run.cfg)


def _finished_state(run: PlannedRun) -> tuple[JobState, str]:
    status = run_status(run.run_dir)
    if status == RunStatus.COMPLETED:
        return JobState.DONE, "finished"
    return JobState.FAILED, f"{status or 'no run_finished event'}; see {RunDir(run.run_dir).log}"


@dataclass
class Sweep:
    """The scheduling loop: start runs whose dependencies are done, while the launcher has free slots."""

    runs: list[PlannedRun]
    launcher: Any
    command: Callable[[PlannedRun], list[str]]
    log: Callable[[str], None]
    progress: Callable[[Snapshot], None] | None = None
    poll_s: float = 1.0
    tracker: TableProgress = field(default_factory=TableProgress)

    def __post_init__(self) -> None:
        for run in self.runs:
            if run.state != JobState.DONE:
                self.tracker.add(run.run_dir, run.cfg.train.epochs)
        self.todo = [r for r in self.runs if r.state in (JobState.FAILED, JobState.MISSING)]

    def _update_running(self) -> None:
        for run in self.runs:
            if run.state != JobState.RUNNING:
                continue
            if run.job is not None and run.job.finished():
                run.state, run.detail = _finished_state(run)
            elif run.job is None and not holder(run.run_dir):
                run.state, run.detail = _finished_state(run)
            else:
                continue
            self.log(f"  {run.label}: {run.state} ({run.detail})")

    def _start_ready(self) -> None:
        for run in list(self.todo):
            if run.after is not None and run.after.state in (JobState.FAILED, JobState.BLOCKED):
                run.state, run.detail = JobState.BLOCKED, f"needs {run.after.label}, which did not finish"
                self.todo.remove(run)
                continue
            if run.after is not None and run.after.state != JobState.DONE:
                continue
            held = holder(run.run_dir)
            if held:  # another process took it up since the table looked: wait for it, reuse its result
                run.state, run.detail = JobState.RUNNING, held
                self.todo.remove(run)
                self.log(f"  {run.label}: {held} in {run.run_dir}")
                continue
            if self.launcher.free_slots() <= 0:
                return
            _materialize(run)
            run.job = self.launcher.submit(run.run_dir, self.command(run))
            run.state, run.detail = JobState.RUNNING, run.job.describe()
            self.todo.remove(run)
            self.log(f"  {run.label}: started ({run.detail}) in {run.run_dir}")

    def states(self) -> dict[str, str]:
        return {str(r.run_dir): r.state for r in self.runs}

    def run(self, wait: bool = True) -> None:
        try:
            while True:
                self._update_running()
                self._start_ready()
                if self.progress is not None:
                    self.progress(self.tracker.snapshot(self.states()))
                if not wait or not (self.todo or any(r.state == JobState.RUNNING for r in self.runs)):
                    return
                time.sleep(self.poll_s)
        except KeyboardInterrupt:
            self.launcher.stop_all()  # local workers save last.pt; a re-run resumes them
            kept = "" if self.launcher.name == "local" else f"; its {self.launcher.name} jobs keep running"
            self.log(f"table interrupted{kept}: run the same command again to continue")
            raise


def run_sweep(
    plan: TablePlan,
    *,
    spec_overrides: dict[str, Any],
    device: str,
    limit: int = 0,
    launch: LaunchSettings | None = None,
    wait: bool = True,
    log: Callable[[str], None] = print,
    progress: Callable[[Snapshot], None] | None = None,
    poll_s: float = 1.0,
) -> list[dict[str, Any]] | None:
    """Train what is missing and evaluate every (row, seed); per row `{row, runs, records}`.

    With `wait=False` it submits and returns None (a later call collects).
    """
    from battui.engine.device import resolve_device
    from battui.report.evaluation import evaluate_checkpoint

    launch = launch or LaunchSettings()
    runs, cells = plan_table(plan)
    if any(r.state != JobState.DONE for r in runs):
        check_launcher(launch)
    for run in runs:
        classify(run)
    shown = (JobState.DONE, JobState.RUNNING, JobState.FAILED, JobState.MISSING)
    counts = {s: sum(r.state == s for r in runs) for s in shown}
    log(f"table: {len(runs)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    for run in runs:
        log(f"  {run.label}: {run.state} ({run.detail}) {run.run_dir}")
    dev = str(resolve_device(device)[0])
    if any(r.state in (JobState.RUNNING, JobState.FAILED, JobState.MISSING) for r in runs):
        launcher = make_launcher(launch, Path(runs[0].cfg.run.root))
        command = lambda r: worker_command(r.run_dir, device=device, limit=limit, attack=spec_overrides)  # noqa: E731
        poll = max(poll_s, SLURM_POLL_S) if launch.launcher == "slurm" else poll_s  # sacct is not for polling
        Sweep(runs, launcher, command, log, progress, poll).run(wait)
    if not wait:
        waiting = [r.label for r in runs if r.state in (JobState.MISSING, JobState.FAILED)]
        if waiting:
            log(f"  not submitted yet (waiting for a pre-trained run or a free --jobs slot): {'; '.join(waiting)}")
        log("run the same command again to see the runs' states, submit what is left and collect the table")
        return None
    bad = [r for r in runs if r.state in (JobState.FAILED, JobState.BLOCKED)]
    if bad:
        raise UserError(f"{len(bad)} run(s) did not finish: " + "; ".join(f"{r.label} ({r.detail})" for r in bad)
                        + "; run the same command again to resume them")
    out: list[dict[str, Any]] = [{"row": row, "runs": [], "records": []} for row in plan.rows]
    for index, run in cells:
        record = evaluate_checkpoint(final_weights(run.run_dir), device=dev, limit=limit,
                                     spec_overrides=spec_overrides)
        res = record["result"]
        log(f"  {run.label}: avg rob {res['avg']['robust']:.2f}%, worst rob {res['worst']['robust']:.2f}%"
            f"{' (cached)' if record['cached'] else ''}")
        out[index]["runs"].append(str(run.run_dir))
        out[index]["records"].append(record)
    return out
