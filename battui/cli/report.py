"""`battui eval`, `battui compare` and `battui table`: per-class reports in the paper's format.

    battui eval runs/digits-cnn-bat-.../                  # PGD-20 per-class report of best.pt, 95% intervals
    battui eval ckpt.pt --attack autoattack --limit 500   # standard AutoAttack (pyautoattack), 500 images
    battui eval model_test.pt --model resnet18 --dataset cifar10 --set data.root=DIR   # weights from other code
    battui compare a.pt b.pt --format markdown -o cmp.md  # side by side, paired B - A with tests, bars
    battui table --preset digits-cnn --seeds 3            # Table 1 mean ± std, intervals, vs. the first row
    battui table --preset digits-cnn --baseline BAT       # differences to the BAT row instead
    battui table --preset digits-cnn --ablation bat       # Table 2: BAT's six loss variants
    battui table --preset digits-cnn --jobs 2             # two runs at once (--devices, --launcher slurm: cli/sweep.py)
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, get_type_hints

import typer

from battui.cli import sweep as sweep_options
from battui.cli.app import DEVICE_HELP, SET_HELP, app, console, err_console
from battui.methods import available_methods
from battui.report.formats import emit, resolve_format
from battui.report.output import check_output

ATTACK_HELP = ("pgd (PGD-N, CE, uniform start; the checkpoint's eval settings) or autoattack (the standard "
               "AutoAttack of the authors' pyautoattack: APGD-CE, APGD-T, FAB-T, Square; what papers report).")
FORMAT_HELP = ("rich (terminal tables), markdown, csv, json (every per-class number) or latex (booktabs). "
               "Default: from --output's suffix.")
OUTPUT_HELP = "Write the report to this file instead of the terminal."


def _spec_overrides(attack, eps, step_size, steps, restarts, seed) -> dict[str, Any]:
    return {"attack": attack, "eps": eps, "step_size": step_size, "steps": steps, "restarts": restarts,
            "seed": seed}


def _evaluate(path: str, overrides: dict, device: str, limit: int, use_cache: bool, foreign=None) -> dict:
    from battui.engine.device import resolve_device
    from battui.report.eval_progress import EvalProgress
    from battui.report.evaluation import evaluate_checkpoint

    dev, _ = resolve_device(device)
    with EvalProgress(err_console, path) as shown:
        return evaluate_checkpoint(path, device=dev, limit=limit, use_cache=use_cache, progress=shown.stage,
                                   on_clean=shown.clean, spec_overrides=overrides, foreign=foreign)


def _foreign(model, dataset, normalize, sets):
    from battui.report.foreign import Foreign

    opts = Foreign(model=model, dataset=dataset, sets=tuple(sets or ()), normalize=normalize)
    opts.check()
    return opts


# Shared options (Typer reads them from the defaults).
_ATTACK = typer.Option(None, "--attack", help=ATTACK_HELP)
_EPS = typer.Option(None, "--eps", help="Linf budget (default: the checkpoint's eval.eps).")
_STEP = typer.Option(None, "--step-size", help="PGD step (default: the checkpoint's eval.step_size).")
_STEPS = typer.Option(None, "--steps", help="PGD steps (default: the checkpoint's eval.steps, 20).")
_RESTARTS = typer.Option(None, "--restarts", help="PGD random restarts (default 1).")
_SEED = typer.Option(None, "--seed", help="Seed of the attack's random start (default: eval.seed, 0; the same for "
                     "every checkpoint, and the one training's evaluations use).")
_DEVICE = typer.Option("auto", "--device", help=DEVICE_HELP)
_LIMIT = typer.Option(0, "--limit", help="Evaluate at most N test images (0 = all).")
_FORMAT = typer.Option(None, "--format", "-f", help=FORMAT_HELP)
_OUTPUT = typer.Option(None, "--output", "-o", help=OUTPUT_HELP)
_NO_CACHE = typer.Option(False, "--no-cache", help="Re-evaluate even when a cached result exists.")
_FORCE = typer.Option(False, "--force", help="Let -o overwrite an existing file that is not a battui report.")


def _checked(fmt, output, force, inputs, attack, eps, step_size, steps, restarts, limit, seed):
    """Every report option, checked before any work: (format, -o target)."""
    from battui.validate import check_attack_options

    kind = resolve_format(fmt, output)
    check_attack_options(attack=attack, eps=eps, step_size=step_size, steps=steps, restarts=restarts, limit=limit,
                         seed=seed)
    return kind, check_output(output, kind, force=force, inputs=inputs)


def _emit(sections, data, kind: str, target) -> None:
    emit(sections, data, fmt=kind, output=target, console=console)
    if target is not None:
        err_console.print(f"wrote the {kind} report to {target}", highlight=False, soft_wrap=True)


_MODEL = typer.Option(None, "--model", help="For weights saved by other code: the architecture (resnet18, wrn-34-10, "
                      "...). battui's own checkpoints carry theirs.")
_DATASET = typer.Option(None, "--dataset", help="For weights saved by other code: the dataset (cifar10, cifar100, "
                        "...); its preset gives the data and eval settings.")
_NORMALIZE = typer.Option(None, "--normalize", help="MEAN/STD (comma lists) for weights trained on normalised inputs, "
                          "e.g. 0.4914,0.4822,0.4465/0.2471,0.2435,0.2616.")
_SETS = typer.Option([], "--set", help="Override a config value of the evaluation, e.g. --set data.root=DIR, "
                     "--set eval.amp=true (bf16; fp32 by default).")


@dataclass
class ReportOptions:
    """The options `battui eval` and `battui compare` share; `_OPTIONS` holds each one's typer option."""

    attack: str | None
    eps: float | None
    step_size: float | None
    steps: int | None
    restarts: int | None
    seed: int | None
    device: str
    limit: int
    fmt: str | None
    output: str | None
    no_cache: bool
    force: bool
    model: str | None
    dataset: str | None
    normalize: str | None
    sets: list[str]

    def spec_overrides(self) -> dict[str, Any]:
        return _spec_overrides(self.attack, self.eps, self.step_size, self.steps, self.restarts, self.seed)

    def checked(self, inputs: list[str]):
        """(format, -o target), every option checked before any work."""
        return _checked(self.fmt, self.output, self.force, inputs, self.attack, self.eps, self.step_size,
                        self.steps, self.restarts, self.limit, self.seed)

    def foreign(self):
        return _foreign(self.model, self.dataset, self.normalize, self.sets)


_OPTIONS = {"attack": _ATTACK, "eps": _EPS, "step_size": _STEP, "steps": _STEPS, "restarts": _RESTARTS, "seed": _SEED,
            "device": _DEVICE, "limit": _LIMIT, "fmt": _FORMAT, "output": _OUTPUT, "no_cache": _NO_CACHE,
            "force": _FORCE, "model": _MODEL, "dataset": _DATASET, "normalize": _NORMALIZE, "sets": _SETS}


def _report_command(name: str):
    """Register `fn(<its own arguments>, opts: ReportOptions)` as `battui NAME` with the shared options
    after its own arguments (typer reads the command's signature, so the shared part is written once)."""

    def register(fn: Callable[..., None]) -> Callable[..., None]:
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name != "opts"]
        hints = get_type_hints(ReportOptions)
        shared = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=_OPTIONS[f.name],
                                    annotation=hints[f.name]) for f in fields(ReportOptions)]

        def command(**values: Any) -> None:
            opts = ReportOptions(**{f.name: values.pop(f.name) for f in fields(ReportOptions)})
            fn(**values, opts=opts)

        command.__signature__ = inspect.Signature(own + shared)  # type: ignore[attr-defined]
        command.__doc__ = fn.__doc__
        app.command(name)(command)
        return fn

    return register


@_report_command("eval")
def eval_command(
    checkpoint: str = typer.Argument(..., help="A checkpoint file or a run folder (-> checkpoints/best.pt)."),
    *,
    opts: ReportOptions,
) -> None:
    """Per-class standard / boundary / robust error, steps to flip and target classes of one checkpoint."""
    from battui.report.layouts import eval_sections
    from battui.report.stats import eval_intervals

    kind, target = opts.checked([checkpoint])
    record = _evaluate(checkpoint, opts.spec_overrides(), opts.device, opts.limit, not opts.no_cache, opts.foreign())
    intervals = eval_intervals(record)
    _emit(eval_sections(record, intervals), {**record, "intervals": intervals}, kind, target)


@_report_command("compare")
def compare_command(
    checkpoints: list[str] = typer.Argument(
        ..., help="Two or more checkpoints or run folders; deltas are against the first."
    ),
    unpaired: bool = typer.Option(False, "--unpaired", help="Side by side only, without paired differences and "
                                  "tests: for checkpoints evaluated on different test images (other train.seed)."),
    *,
    opts: ReportOptions,
) -> None:
    """Evaluate checkpoints with the same attack and seed on the same images; print Table 1 side by side,
    each one's paired difference to the first (95% bootstrap interval, McNemar p, Holm) and per-class bars."""
    from battui.errors import UserError
    from battui.report.evaluation import attack_spec, check_same_dataset, checkpoint_identity
    from battui.report.foreign import open_config
    from battui.report.layouts import compare_sections, paired_sections
    from battui.report.stats import check_paired

    if len(checkpoints) < 2:
        raise UserError("compare needs at least two checkpoints; for one, use `battui eval`")
    kind, target = opts.checked(checkpoints)
    foreign = opts.foreign()
    identities = [checkpoint_identity(path, foreign) for path in checkpoints]
    check_same_dataset(identities)
    seeds = [i["dataset"]["split_seed"] for i in identities]
    if not unpaired and len(set(seeds)) > 1:
        other = next(i for i in identities if i["dataset"]["split_seed"] != seeds[0])
        raise UserError(f"cannot pair {identities[0]['checkpoint']} with {other['checkpoint']}: they hold out "
                        f"different test images (test splits of train.seed {seeds[0]} and "
                        f"{other['dataset']['split_seed']}), so their per-image outcomes do not pair up; use "
                        "--unpaired for a side-by-side report")
    # One attack for all: unset values come from the first checkpoint's eval settings.
    first_cfg, _ = open_config(checkpoints[0], foreign)
    spec = attack_spec(first_cfg, **opts.spec_overrides())
    fixed = {"attack": spec.attack, "eps": spec.eps, "step_size": spec.step_size, "steps": spec.steps,
             "restarts": spec.restarts, "seed": spec.seed, "precision": spec.precision}
    records = [_evaluate(path, fixed, opts.device, opts.limit, not opts.no_cache, foreign) for path in checkpoints]
    check_same_dataset(records)
    if unpaired:
        _emit(compare_sections(records), {"checkpoints": records}, kind, target)
        return
    check_paired(records)
    section, tests = paired_sections(records)
    _emit(compare_sections(records, section), {"checkpoints": records, "paired": tests}, kind, target)


def _log(message: str) -> None:
    err_console.print(message, highlight=False, soft_wrap=True)


@app.command("table")
def table_command(
    preset: str = typer.Option("digits-cnn", "--preset", "-p", help="The preset every run starts from."),
    methods: str = typer.Option(
        "pgd-at,trades:beta=1,trades:beta=6,frl,fat,gairat,bat", "--methods",
        help=f"Comma-separated rows of {', '.join(available_methods())} or module:Class; "
             "parameters after ':' (trades:beta=1,trades:beta=6,frl:tau=0.07,my_pkg.losses:MyLoss:beta=2).",
    ),
    seeds: int = typer.Option(3, "--seeds", help="Seeds 0..N-1 per row; the table shows mean ± std and, from 2 "
                              "seeds, a 95% interval and each row's paired difference to --baseline."),
    baseline: str = typer.Option(None, "--baseline", help="The row the others are compared with, paired by seed "
                                 "(its label, e.g. PGD-AT, or its --methods entry); default the first row. "
                                 "Needs --seeds >= 2."),
    ablation: str = typer.Option(None, "--ablation", help="'bat': paper Table 2, BAT's six loss variants."),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    sweeps: list[str] = typer.Option([], "--sweep", help="section.key=v1,v2: every row once per value "
                                     "(repeatable: every combination), e.g. --sweep train.epochs=10,30."),
    retrain: bool = typer.Option(False, "--retrain", help="Train every run even when a finished one matches."),
    attack: str = _ATTACK,
    eps: float = _EPS,
    step_size: float = _STEP,
    steps: int = _STEPS,
    restarts: int = _RESTARTS,
    seed: int = _SEED,
    device: str = _DEVICE,
    limit: int = _LIMIT,
    fmt: str = _FORMAT,
    output: str = _OUTPUT,
    jobs: int = sweep_options.JOBS,
    devices: str = sweep_options.DEVICES,
    launcher: str = sweep_options.LAUNCHER,
    slurm_config: str = sweep_options.SLURM_CONFIG,
    partition: str = sweep_options.PARTITION,
    account: str = sweep_options.ACCOUNT,
    time_limit: str = sweep_options.TIME,
    gpus_per_run: int = sweep_options.GPUS,
    sbatch: list[str] = sweep_options.SBATCH,
    no_wait: bool = sweep_options.NO_WAIT,
    force: bool = _FORCE,
) -> None:
    """Train (or reuse finished runs of) each method for each seed, evaluate on test, print Table 1 or 2.

    Runs train as separate jobs (--jobs, --devices, --launcher); running it again shows which runs
    are done, running, failed or missing, resubmits the failed and missing ones and collects the table.
    """
    from battui.engine import numerics
    from battui.engine.device import resolve_device
    from battui.report.layouts import aggregate, describe_attack, seed_sections, table_sections
    from battui.report.runs import TablePlan, ablation_rows, check_plan, parse_methods
    from battui.report.sweep import run_sweep, sweep_rows

    # Every option is checked before the first run trains (a real preset trains for hours).
    kind, target = _checked(fmt, output, force, [], attack, eps, step_size, steps, restarts, limit, seed)
    resolve_device(device)
    launch = sweep_options.launch_settings(
        launcher=launcher, jobs=jobs, devices=devices, slurm_config=slurm_config, partition=partition,
        account=account, time_limit=time_limit, gpus=gpus_per_run, sbatch=sbatch, no_wait=no_wait, device=device)
    rows = sweep_rows(ablation_rows(ablation) if ablation else parse_methods(methods), sweeps)
    base_row = _baseline_row(rows, baseline, seeds, methods if not ablation else "")
    sets = [*overrides, f"run.device={device}"]
    plan = TablePlan(preset=preset, rows=rows, seeds=seeds, overrides=sets, retrain=retrain)
    spec = _spec_overrides(attack, eps, step_size, steps, restarts, seed)
    base = check_plan(plan, spec)
    start = time.perf_counter()
    with sweep_options.table_progress() as progress:
        results = run_sweep(plan, spec_overrides=spec,
                            device=device, limit=limit, launch=launch, wait=not no_wait, log=_log,
                            progress=progress)
    if results is None:
        return
    seconds = time.perf_counter() - start
    first = results[0]["records"][0]
    table_rows = [{"cells": r["row"].cells, "stats": aggregate(r["records"])} for r in results]
    what = "Table 2 — BAT ablation" if ablation else "Table 1"
    title = (f"{what}: {base.preset}, {base.data.name} test split, mean ± std over {seeds} seed(s), "
             f"{base.train.epochs} epochs")
    notes = [f"{describe_attack(first['attack'], first['limit'])}; errors in %; bold = lowest mean",
             f"wall time {seconds / 60:.1f} min (training + evaluation, finished runs reused)"]
    differ = numerics.differences(run for r in results for run in r["runs"])
    if differ:  # e.g. a reused run trained with another thread count (engine/numerics.py)
        notes.append(f"the runs were not computed alike (settings that change the numbers): {differ}")
        _log(f"note: {notes[-1]}")
    lead = ["Source-class loss", "Target-class loss", "No."] if ablation else ["Method"]
    sections = table_sections(table_rows, title=title, lead_columns=lead, notes=notes)
    data = _table_json(plan, results, table_rows, seconds)
    if seeds >= 2:
        extra, data["statistics"] = seed_sections(results, [r["row"].label for r in results], base_row)
        sections += extra
    else:
        sections[0].notes.append("one seed: no interval over seeds and no paired test (--seeds 2 or more)")
    _emit(sections, data, kind, target)


def _baseline_row(rows: list, baseline: str | None, seeds: int, methods: str) -> int:
    """The index of the `--baseline` row (its label or its --methods entry, any case); default the first."""
    from battui.errors import UserError
    from battui.report.runs import _split_top

    if baseline is None:
        return 0
    if seeds < 2:
        raise UserError(f"--baseline needs --seeds 2 or more: a paired test and an interval over seeds need at "
                        f"least two seeds of each row, got --seeds {seeds}")
    entries = [e.strip() for e in _split_top(methods, ",")] if methods else []
    wanted = baseline.strip().lower()
    for i, row in enumerate(rows):
        if row.label.lower() == wanted or (len(entries) == len(rows) and entries[i].lower() == wanted):
            return i
    raise UserError(f"--baseline '{baseline}' names no row; the rows are: {', '.join(r.label for r in rows)}")


def _table_json(plan, results: list[dict], table_rows: list[dict], seconds: float) -> dict[str, Any]:
    as_dict: Callable[[Any], dict | None] = lambda m: m and {"mean": m.mean, "std": m.std, "n": m.n}  # noqa: E731
    rows = []
    for result, row in zip(results, table_rows):
        stats = {k: [as_dict(m) for m in v] if isinstance(v, list) else as_dict(v) for k, v in row["stats"].items()}
        rows.append({"label": result["row"].label, "method": result["row"].method, "params": result["row"].params,
                     "sweep": result["row"].overrides, "runs": result["runs"], "stats": stats,
                     "evaluations": result["records"]})
    return {"preset": plan.preset, "seeds": plan.seeds, "overrides": plan.overrides, "seconds": round(seconds, 1),
            "rows": rows}
