"""One job of a `battui table` sweep: train a run directory to the end, then evaluate it for the table.

    python -m battui.report.worker runs/digits-cnn-bat-s0-1a2b3c4d --device auto --limit 0 \\
        --attack '{"attack": null, "steps": 20, "seed": 0}'

The run directory already holds the run's resolved `config.yaml` (written by the sweep);
the worker takes the run's lock first (waiting while another process, e.g. a second table
on the same folder, trains it; then it only evaluates that process's result) and trains it
with `--resume` semantics, so the first start and every restart (a
requeued Slurm job, a resubmitted failed run) are the same command: no `last.pt` yet means
epoch 1, a `last.pt` means continue exactly where it stopped. SIGINT / SIGTERM / SIGHUP /
SIGUSR1 / SIGUSR2 stop the trainer after its batch with `last.pt` saved (exit 128 + signal).
A completed run is then evaluated with the table's attack, which fills the evaluation cache
next to its final weights, so the table collects it without evaluating again.
`worker.json` in the run directory records where the worker runs (host, pid, job id).
Exit codes: 0 done, 1 training failed, 2 bad input, 128 + signal when stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

from battui.engine.events import RunStatus
from battui.engine.rundir import RunDir
from battui.engine.runlock import RunLock


def _job_id() -> str:
    for name in ("SLURM_JOB_ID", "SUBMITIT_LOCAL_JOB_ID"):
        if os.environ.get(name):
            return os.environ[name]
    return ""


def write_worker_record(run_dir: Path) -> None:
    record = {"host": socket.gethostname(), "pid": os.getpid(), "job_id": _job_id(), "started": time.time()}
    final = RunDir(run_dir).worker
    tmp = final.with_name(f".{final.name}.tmp")
    tmp.write_text(json.dumps(record) + "\n")
    os.replace(tmp, final)


def threads_from_slurm() -> None:
    """Inside a Slurm job use the CPUs it was given (torch would otherwise take every core of the node)."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus and "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(max(1, int(cpus)))


def run(run_dir: Path, device: str, limit: int, attack: dict) -> int:
    from battui.engine.control import RunControl
    from battui.engine.device import resolve_device
    from battui.engine.headless import HeadlessLog
    from battui.engine.resume import resume_config
    from battui.engine.signals import exit_code, handle_signals
    from battui.engine.trainer import Trainer
    from battui.report.evaluation import evaluate_checkpoint
    from battui.report.runs import final_weights, run_status

    write_worker_record(run_dir)
    threads_from_slurm()

    def waiting(pid: int | None) -> None:
        who = f"pid {pid}" if pid else "another process"
        print(f"{run_dir} is being trained by {who} (another table, or a `battui train --resume`): "
              "waiting for it, then using its result", flush=True)

    # The run's lock first, held through the evaluation: what is read below is never a state another
    # process is still writing, and a run another process trained meanwhile is only evaluated (cached).
    lock = RunLock.acquire(run_dir, wait=None, on_wait=waiting)
    try:
        if run_status(run_dir) != RunStatus.COMPLETED:
            control = RunControl()
            cfg = resume_config(run_dir, [f"run.device={device}"], restart=True)
            trainer = Trainer(cfg, resume=run_dir, control=control, listeners=[HeadlessLog()])
            trainer.files.lock, trainer.files.keep_lock = lock, True
            trainer.prepare()
            with handle_signals(control):
                status = trainer.run()
            if status != RunStatus.COMPLETED:
                return exit_code(status, control)
        dev, _ = resolve_device(device)
        record = evaluate_checkpoint(final_weights(run_dir), device=dev, limit=limit, spec_overrides=attack)
    finally:
        lock.release()
    res = record["result"]
    print(f"table evaluation{' (cached)' if record['cached'] else ''}: avg robust error {res['avg']['robust']:.2f}%, "
          f"worst {res['worst']['robust']:.2f}%", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    from battui.errors import UserError

    parser = argparse.ArgumentParser(prog="python -m battui.report.worker", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--attack", default="{}", help="the table's attack overrides, as JSON")
    args = parser.parse_args(argv)
    try:
        return run(args.run_dir, args.device, args.limit, json.loads(args.attack))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
