"""`battui table`: the rows, the resolved config of each (row, seed) run, and finding finished runs.

    rows = parse_methods("pgd-at,trades:beta=1,trades:beta=6,frl,fat,gairat,bat")
    plan = TablePlan("digits-cnn", rows, seeds=3, overrides=["train.epochs=5"])
    results = run_sweep(plan, spec_overrides={}, device="cpu", log=print)   # battui.report.sweep

A finished run is reused when a run folder under `run.root` holds the same
resolved config (preset, data, model, attack, method and its parameters,
training and evaluation settings, seed) and its event stream ends with
`run_finished: completed`; otherwise the sweep trains it (battui.report.sweep).

A method with `fine_tunes_from` (FRL, docs/DESIGN.md section 3.2) fine-tunes a pre-trained
robust model: for each seed the table first trains (or reuses) that method's run of the
seed and starts from its final weights (`checkpoints/last.pt`), on the schedule the
method's `fine_tune_schedule` sets (FRL: 0.4 x train.epochs at lr / 100, weight decay
5e-4, constant; the reference fine-tunes 40 epochs at lr 1e-3 after ~100 at lr 0.1; FAAL:
its own 2 epochs at lr 0.01, from a PGD-AT run, or a TRADES one with `faal:loss=trades`).
A method with `teacher_from` (ABSLD) distils that method's run of the seed (its `last.pt`
as `method.teacher`) unless the row names a `teacher`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from battui.config import Config, load_config, read_config
from battui.engine.events import RunStatus, read_events
from battui.engine.rundir import RunDir
from battui.errors import UserError
from battui.methods import method_class, paper_label


def final_weights(run_dir: Path) -> Path:
    """The checkpoint a run ended with: the averaged weights (CFA's FAWA) if any, else last.pt.

    The table evaluates each run's final weights, as the paper reports final models (best.pt is
    picked on the validation split); a weight-averaging method's final weights are its average.
    """
    run = RunDir(run_dir)
    return run.averaged if run.averaged.exists() else run.last
# Resolved-config keys that change logging only, never the trained weights.
_COSMETIC = {"train": ("log_every", "attack_stats_every"),
             "run": ("root", "name", "device", "tensorboard", "on_hangup")}

TABLE2_TEXT = {
    1: ("L_source(x_clean, x_adv)", "NA"),
    2: ("L_source(x_clean, x_adv)", "L_target(x_clean)"),
    3: ("L_source(x_clean, x_adv)", "L_target(x_adv)"),
    4: ("L_source(x_clean, x_adv)", "L_target(x_adv fixed 10-step)"),
    5: ("L_source(x_clean, x_adv)", "L_target(x_clean, x_adv)"),
    6: ("L_source(x, x_adv fixed 10-step)", "L_target(x_clean, x_adv)"),
}


@dataclass
class MethodRow:
    """One table row: a method with its parameters and the label the paper gives it."""

    method: str
    params: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    cells: list[str] = field(default_factory=list)  # lead columns (label, or No./source/target)
    overrides: list[str] = field(default_factory=list)  # this row's own `--set`s (`battui table --sweep`)

    def __post_init__(self) -> None:
        self.label = self.label or paper_label(self.method, self.params)
        self.cells = self.cells or [self.label]


def _split_top(text: str, sep: str) -> list[str]:
    """Split on `sep` outside brackets, so `bat:target_on=[clean,adv]` stays whole."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[(" and 1 or 0
        depth -= ch in "])" and 1 or 0
        if ch == sep and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def parse_methods(text: str) -> list[MethodRow]:
    """`pgd-at,trades:beta=1,trades:beta=6,frl:tau=0.07` -> rows (params after `:`, `k=v`, YAML values);
    a method from outside battui is `my_pkg.losses:MyLoss:beta=2` or its entry-point name."""
    from battui.config import check_method_name
    from battui.methods import METHODS, method_params

    rows = []
    for item in _split_top(text, ","):
        name, *assignments = _split_top(item, ":")
        if assignments and "=" not in assignments[0]:  # my_pkg.losses:MyLoss[:k=v...]
            name = f"{name}:{assignments.pop(0)}"
        name = name.lower() if name.lower() in METHODS else name
        check_method_name(name, "--methods: ")
        try:
            method_params(name)
        except UserError as exc:
            raise UserError(f"--methods: {exc}") from None
        params: dict[str, Any] = {}
        for assignment in assignments:
            if "=" not in assignment:
                raise UserError(f"--methods: expected key=value after '{name}:', got '{assignment}'")
            key, raw = assignment.split("=", 1)
            key = key.strip()
            if key not in method_params(name):
                raise UserError(f"--methods: {name} has no parameter '{key}'; "
                                f"its parameters: {', '.join(sorted(method_params(name)))}")
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError:
                value = raw
            params[key] = coerce_param(name, key, value)
        rows.append(MethodRow(name, params))
    if not rows:
        raise UserError("--methods is empty; e.g. --methods pgd-at,trades:beta=1,trades:beta=6,frl,fat,gairat,bat")
    return rows


def coerce_param(method: str, key: str, value: Any) -> Any:
    """A `--methods` value, checked against the type of its default (`trades:beta=abc` is refused)."""
    from battui.config import _coerce
    from battui.methods import method_params

    try:
        _coerce(value, method_params(method)[key], f"{method}:{key}")
    except UserError as exc:
        raise UserError(f"--methods: {exc}") from None
    return value


def ablation_rows(name: str) -> list[MethodRow]:
    """Table 2: BAT's six source/target-loss variants (No.1-6, `battui.methods.bat.TABLE2`)."""
    if name.lower() != "bat":
        raise UserError(f"--ablation: only 'bat' has an ablation table (paper Table 2), got '{name}'")
    from battui.methods.bat import TABLE2

    rows = []
    for no, params in TABLE2.items():
        source, target = TABLE2_TEXT[no]
        clean = {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}
        rows.append(MethodRow("bat", clean, label=f"No.{no}", cells=[source, target, str(no)]))
    return rows


@dataclass
class TablePlan:
    """What `battui table` trains: rows x seeds on one preset, with `--set` overrides for every run."""

    preset: str
    rows: list[MethodRow]
    seeds: int = 3
    overrides: list[str] = field(default_factory=list)
    retrain: bool = False


def run_config(plan: TablePlan, row: MethodRow, seed: int, init_from: str = "", teacher: str = "") -> Config:
    """The resolved config of one (row, seed) run; `init_from` / `teacher`: the weights it starts from
    (FRL, FAAL) or distils (ABSLD, unless the row names its own `teacher`)."""
    sets = [*plan.overrides, *row.overrides, f"method.name={row.method}", f"train.seed={seed}"]
    sets += [f"method.params.{k}={json.dumps(v)}" for k, v in row.params.items()]
    cfg = load_config(plan.preset, sets)
    method = method_class(row.method)
    if method.fine_tunes_from:
        if not init_from:
            raise UserError(f"{method.label} fine-tunes a pre-trained {method.start_method(row.params)} model "
                            "(train.init_from)")
        cfg.train.init_from = init_from
        method.fine_tune_schedule(cfg.train)
    if method.teacher_from and "teacher" not in row.params:
        if not teacher:
            raise UserError(f"{method.label} distils a {method.teacher_from} teacher (method.teacher)")
        cfg.method.params["teacher"] = teacher
    return cfg


def check_plan(plan: TablePlan, spec_overrides: dict[str, Any]) -> Config:
    """Every row's config, the evaluation attack and the run folder, checked before anything trains.

    Returns the table's base config (preset and `--set` overrides; its title reads from it).
    """
    from battui.engine.runfiles import check_run_root
    from battui.report.evaluation import attack_spec

    if plan.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {plan.seeds}")
    configs = [run_config(plan, row, 0, init_from="pre-trained.pt", teacher="teacher.pt") for row in plan.rows]
    for cfg in configs:
        attack_spec(cfg, **spec_overrides)
    check_run_root(configs[0].run.root)
    return load_config(plan.preset, plan.overrides)


def _normalized(cfg: Config) -> dict:
    from battui.methods import method_params

    data = json.loads(json.dumps(cfg.to_dict(), default=list))
    data.pop("description", None)
    for section, keys in _COSMETIC.items():
        for key in keys:
            data.get(section, {}).pop(key, None)
    defaults = json.loads(json.dumps(method_params(cfg.method.name), default=list))
    data["method"]["params"] = {**defaults, **data["method"]["params"]}
    data["method"]["params"].pop("num_classes", None)  # filled in from the data by the trainer
    return data


def run_status(run_dir: Path) -> str | None:
    """The last `run_finished` status of a run (`completed`, ...), or None while unfinished."""
    status = None
    path = RunDir(run_dir).events
    if path.exists():
        for event in read_events(path):
            if event.get("type") == "run_finished":
                status = event.get("status")
    return status


def find_completed_run(cfg: Config) -> Path | None:
    """The newest completed run under `cfg.run.root` whose resolved config matches `cfg`."""
    root = Path(cfg.run.root)
    if not root.is_dir():
        return None
    want = _normalized(cfg)
    for config_path in sorted(root.glob(f"*/{RunDir(root).config.name}"), reverse=True):
        run_dir = config_path.parent
        if not RunDir(run_dir).last.exists():
            continue
        try:
            have = _normalized(read_config(config_path))
        except UserError:
            continue
        if have == want and run_status(run_dir) == RunStatus.COMPLETED:
            return run_dir
    return None
