"""`battui train`: train a preset with a live dashboard, a plain log, or in the background.

    battui train                                        # digits, CPU, about a minute
    battui train --preset cifar10-resnet18 --method bat --set method.beta=6
    battui train --headless --epochs 5 | tee log.txt    # plain progress log
    battui train --resume runs/digits-cnn-pgd-at-20250101-120000
    battui train --preset cifar10-resnet18 --detach     # survives the SSH session; watch it
    torchrun --nproc_per_node=4 -m battui train --headless --preset cifar10-resnet18
"""

from __future__ import annotations

import signal
import sys
import traceback
from pathlib import Path

import typer

from battui.cli.app import DEVICE_HELP, SET_HELP, app, console
from battui.config import load_config
from battui.engine import distributed
from battui.engine.control import RunControl
from battui.engine.headless import HeadlessLog
from battui.engine.resume import resume_config
from battui.engine.rundir import RunDir
from battui.engine.signals import exit_code, handle_signals
from battui.engine.terminal import TerminalGuard, dumb_terminal, spawn_detached
from battui.engine.trainer import Trainer
from battui.errors import UserError
from battui.methods import available_methods


def _overrides(set_: list[str], method: str | None, epochs: int | None, device: str | None,
               run_name: str | None) -> list[str]:
    out = list(set_)
    if method:
        out.append(f"method.name={method}")
    if epochs is not None:
        out.append(f"train.epochs={epochs}")
    if device:
        out.append(f"run.device={device}")
    if run_name:
        out.append(f"run.name={run_name}")
    return out


def _say(text: str) -> None:
    console.print(text, highlight=False, soft_wrap=True)


def _on_hangup(guard: TerminalGuard, control: RunControl, mode: str, redirect: bool):
    """SIGHUP: the terminal is gone. `stop` also ends the run (saving last.pt); output goes to
    RUN/train.log at once (`redirect`), or once the dashboard has closed (its launcher does it)."""
    def hung_up() -> None:
        guard.lost.set()
        if mode == "stop":
            control.request_stop("SIGHUP received", signal=signal.SIGHUP)
        if redirect:
            guard.to_log()

    return hung_up


def _headless(trainer: Trainer, control: RunControl) -> int:
    trainer.listeners.append(HeadlessLog())
    guard = TerminalGuard(trainer.run_dir)
    with handle_signals(control, on_hangup=_on_hangup(guard, control, trainer.cfg.run.on_hangup, redirect=True)):
        status = trainer.run()
    return exit_code(status, control)


def _live(trainer: Trainer, control: RunControl) -> int:
    from battui.tui import run_live

    guard, mode = TerminalGuard(trainer.run_dir), trainer.cfg.run.on_hangup
    with handle_signals(control, on_hangup=_on_hangup(guard, control, mode, redirect=False)):
        code = int(run_live(trainer, control, guard, on_hangup=mode))
    return 128 + control.signal if control.signal else code


def _detach(trainer: Trainer) -> int:
    """Run the prepared run in its own session (survives the terminal), then watch it."""
    run_dir = trainer.run_dir
    pid = spawn_detached(run_dir, trainer.files.lock)
    _say(f"training in the background (pid {pid}), log in {RunDir(run_dir).log}")
    if sys.stdout.isatty() and not dumb_terminal():
        from battui.tui import run_watch

        return int(run_watch(run_dir, detached_pid=pid))
    _say(f"watch it with: battui watch {run_dir}   (or: tail -f {RunDir(run_dir).log})")
    _say(f"stop it with: battui watch {run_dir} --send stop   (saves last.pt; continue with battui train "
         f"--resume {run_dir})")
    return 0


def _train(preset: str, set_: list[str], method: str | None, epochs: int | None, device: str | None,
           resume: Path | None, run_name: str | None, detach: bool, headless: bool, tensorboard: bool,
           allow_changes: bool) -> int:
    """Build and run the trainer; returns the exit code. Under DDP its network (and the process group
    its DDP wrapper holds) is freed when this returns, before `distributed.shutdown` leaves the group."""
    overrides = _overrides(set_, method, epochs, device, None if resume else run_name)
    if tensorboard:
        overrides.append("run.tensorboard=true")
    control = RunControl()
    if allow_changes and resume is None:
        raise UserError("--allow-changes only applies to --resume RUN_DIR")
    if resume is not None:
        if run_name:
            raise UserError("--run-name cannot be combined with --resume (the run keeps its directory)")
        cfg = resume_config(resume, overrides, allow_changes=allow_changes, note=_say)
        trainer = Trainer(cfg, resume=resume, control=control)
    else:
        trainer = Trainer(load_config(preset, overrides), control=control)
    if trainer.cfg.run.on_hangup not in ("continue", "stop"):
        raise UserError(f"run.on_hangup must be continue or stop, got '{trainer.cfg.run.on_hangup}'")
    trainer.prepare(on_device=not detach)  # --detach: the background process is the first to touch the GPU
    if trainer.parts.dist.is_main:
        ranks = f" (rank 0 of {trainer.parts.dist.world_size})" if trainer.parts.dist.enabled else ""
        _say(f"{trainer.parts.device_note}{ranks}; run directory {trainer.run_dir}")
    if detach:
        code = _detach(trainer)
    elif headless or not sys.stdout.isatty() or dumb_terminal() or trainer.parts.dist.enabled:
        code = _headless(trainer, control)
    else:
        code = _live(trainer, control)
    return code


@app.command("train")
def train_command(
    preset: str = typer.Option("digits-cnn", "--preset", "-p",
                               help="Preset name (see `battui presets`) or a path to a YAML config."),
    set_: list[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    method: str = typer.Option(None, "--method", "-m",
                               help=f"Training method: {', '.join(available_methods())}, or module:Class (a "
                                    "battui.methods.Method subclass of your own); `battui methods` lists their "
                                    "parameters (= --set method.name=M).",
                               show_default="the preset's"),
    epochs: int = typer.Option(None, "--epochs", "-e", help="Number of epochs (= --set train.epochs=N).",
                               show_default="the preset's"),
    device: str = typer.Option(None, "--device", "-d", help=DEVICE_HELP, show_default="the preset's run.device, auto"),
    headless: bool = typer.Option(False, "--headless",
                                  help="Plain progress log instead of the dashboard (automatic without a terminal)."),
    resume: Path = typer.Option(None, "--resume", "-r", metavar="RUN_DIR",
                                help="Continue a run where its checkpoints/last.pt left off (same run directory; "
                                     "--set/--epochs/--device still apply, e.g. --epochs 40 trains longer)."),
    detach: bool = typer.Option(False, "--detach",
                                help="Train in a background process that survives closing the terminal "
                                     "(log in RUN_DIR/train.log) and watch it; `d` in the dashboard does the same "
                                     "for a running run."),
    run_name: str = typer.Option(None, "--run-name",
                                 help="Run directory name under run.root (default <preset>-<method>-<time>)."),
    tensorboard: bool = typer.Option(False, "--tensorboard",
                                     help="Also log to RUN_DIR/tensorboard/ live (= --set run.tensorboard=true; "
                                          r"needs pip install 'battui\[tensorboard]')."),
    allow_changes: bool = typer.Option(False, "--allow-changes",
                                       help="With --resume: allow --set (or config.yaml edits) to change the data, "
                                            "model, method, training attack or seed of the run."),
) -> None:
    """Train a model adversarially and log per-class robustness as it goes.

    Writes runs/<preset>-<method>-<YYYYmmdd-HHMMSS>/ with config.yaml, env.json,
    events.jsonl and checkpoints/last.pt (every epoch) and best.pt (lowest
    worst-class robust error on the validation split). Ctrl-C or SIGTERM finish
    the current batch, save last.pt and exit non-zero; `--resume` continues.
    A lost terminal (SIGHUP) closes the dashboard and training goes on headless,
    logging to RUN_DIR/train.log (`--set run.on_hangup=stop`: save and exit).
    One trainer per run directory: a second one on a live run exits with code 2.
    Dashboard keys: d detaches (training goes on in the background), q asks
    before stopping, ? lists every key; `battui watch` re-attaches.
    """
    try:
        code = _train(preset, set_, method, epochs, device, resume, run_name, detach, headless, tensorboard,
                      allow_changes)
    except BaseException as exc:
        traceback.clear_frames(exc.__traceback__)  # the finished frames let go of the trainer and its network
        raise
    finally:
        distributed.shutdown()
    raise SystemExit(code)
