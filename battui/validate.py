"""One place that checks every config value, before anything is read, trained or written.

    validate_config(cfg)                  # UserError naming the first bad value and its range
    check_attack_options(steps=10**9)     # the eval/compare/table attack options
    config_changes(old, new)              # ["train.epochs 30 -> 40", ...] for --resume

`load_config`, `config_from_dict` (a run's config.yaml, a checkpoint's config) and
the Trainer call `validate_config`; the maxima protect the machine (a step
histogram has steps + 2 bins per class, a batch is held in memory at once).
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from battui.errors import (  # noqa: F401  (the limits are re-exported: battui.validate is where a reader looks)
    MAX_ATTACK_STEPS,
    MAX_BATCH_SIZE,
    MAX_EPOCHS,
    MAX_IMAGE_SIZE,
    MAX_RESTARTS,
    UserError,
    check_number,
    fmt_value,
)

SWITCHES = ("auto", "true", "false", "1", "0", "yes", "no", "on", "off")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
# Settings that make a resumed run another experiment (data split, network, loss, training attack).
PROTECTED = ("data.", "model.", "method.", "attack.", "train.seed")
# Keys older configs hold that nothing reads any more: a config file or checkpoint with one still
# loads (the key is dropped), a resume does not count it as a change, `--set` refuses it as unknown.
RETIRED = ("data.on_device",)
WIDTH_MODELS = ("cnn", "resnet18", "preact-resnet18")  # the models that take model.width

def _choice(key: str, value: Any, options: tuple[str, ...] | list[str]) -> None:
    if str(value).strip().lower() not in options:
        raise UserError(f"{key} must be one of {', '.join(options)}, got {value!r}")


def normalize_classes(value: Any) -> list | None:
    """`data.classes`: None (all classes) or a non-empty list of indices / names; "0,1,2" is a list."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",")]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise UserError(f"data.classes must be a list of class indices or names, e.g. [0,1,2], got {value!r}")
    if not isinstance(value, (list, tuple)):
        raise UserError(f"data.classes must be a list of class indices or names, got {value!r}")
    if not value:
        raise UserError("data.classes is empty; leave it out (or null) to keep every class, or list at least two")
    out: list = []
    for item in value:
        if isinstance(item, str) and item.strip().isdigit():
            item = int(item.strip())
        if isinstance(item, bool) or not isinstance(item, (int, str)) or item == "":
            raise UserError(f"data.classes: {item!r} is not a class index or name")
        if isinstance(item, int) and item < 0:
            raise UserError(f"data.classes: class index {item} is negative")
        out.append(item)
    return out


def check_run_name(name: str) -> None:
    """`run.name` / `--run-name`: one folder name inside run.root."""
    if not name:
        return
    bad = (name in (".", "..") or "/" in name or "\\" in name or "\x00" in name
           or PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute())
    if bad or ".." in PurePosixPath(name).parts:
        raise UserError(f"run name {name!r} must be a plain folder name (no '/', '..' or absolute path); "
                        "use --set run.root=DIR to put runs elsewhere")


def _check_method(cfg) -> None:
    from battui.methods import method_from_config

    # the registry checks each parameter once (`build_method`: names, `Method.param_ranges`, the class)
    method_from_config(cfg, num_classes=int(cfg.method.params.get("num_classes", 10)))


def validate_config(cfg) -> None:
    """Check every value of a `Config` (and change none); the first problem raises a one-line
    UserError. The one place the values are checked: the code that reads them trusts them."""
    from battui.data import DATASETS
    from battui.models import MODELS

    d, t, e, r = cfg.data, cfg.train, cfg.eval, cfg.run
    _choice("data.name", d.name, DATASETS)
    if not str(d.root).strip():
        raise UserError("data.root must name a folder, e.g. data")
    if normalize_classes(d.classes) != d.classes:  # `config` normalises it when it is set
        raise UserError(f"data.classes must be a list of class indices or names, e.g. [0,1,2], got {d.classes!r}")
    check_number("data.val_per_class", d.val_per_class, 0, 1_000_000)
    check_number("data.test_fraction", d.test_fraction, 0.0, 0.99, low_open=True)
    if d.image_size:
        check_number("data.image_size", d.image_size, 8, MAX_IMAGE_SIZE, hint=" (0 = the dataset's own size)")
    check_number("data.channels", d.channels, 1, 16)
    check_number("data.per_class", d.per_class, 2, 1_000_000)
    _choice("model.name", cfg.model.name, MODELS)
    if cfg.model.depth not in ((0, 2, 3) if cfg.model.name == "cnn" else (0,)):
        raise UserError(f"model.depth={cfg.model.depth}: only the cnn takes a depth (2 or 3; 0 = its default)")
    if cfg.model.width and cfg.model.name not in WIDTH_MODELS:
        raise UserError(f"model.width={cfg.model.width}: only {', '.join(WIDTH_MODELS)} take a width "
                        "(0 = the model's default; the WRNs' width is in their name)")
    check_number("model.width", cfg.model.width, 0, 1024,
                 hint=" (cnn: middle channels, default 32; resnets: first stage's channels, default 64)")
    if cfg.model.normalize:
        from battui.models import parse_normalize

        try:
            parse_normalize(cfg.model.normalize, "model.normalize")
        except ValueError as exc:
            raise UserError(str(exc)) from None
    if cfg.model.name == "cnn" and cfg.model.width % 2:
        raise UserError(f"model.width={cfg.model.width}: the cnn's width must be even (its first convolution has w/2)")

    a = cfg.attack
    check_number("attack.eps", a.eps, 0.0, 1.0, low_open=True, hint=" (images are in [0, 1])")
    check_number("attack.step_size", a.step_size, 0.0, 1.0, low_open=True)
    check_number("attack.steps", a.steps, 1, MAX_ATTACK_STEPS)

    check_number("train.epochs", t.epochs, 1, MAX_EPOCHS)
    check_number("train.batch_size", t.batch_size, 1, MAX_BATCH_SIZE)
    _choice("train.optimizer", t.optimizer, ("sgd", "adam"))
    check_number("train.lr", t.lr, 0.0, None, low_open=True)
    check_number("train.momentum", t.momentum, 0.0, 0.999999)
    check_number("train.weight_decay", t.weight_decay, 0.0, None)
    _choice("train.schedule", t.schedule, ("multistep", "cosine", "constant"))
    for m in t.milestones:
        check_number("train.milestones", m, 0.0, None, low_open=True, hint=" (fractions of the epochs or epochs)")
    bad = [m for m in t.milestones if m > t.epochs]
    if t.schedule == "multistep" and bad:
        raise UserError(f"train.milestones must be fractions of the epochs (0..1] or epoch numbers, got {bad}")
    check_number("train.gamma", t.gamma, 0.0, None, low_open=True)
    check_number("train.seed", t.seed, 0, 2**63 - 1)
    _choice("train.amp", t.amp, SWITCHES)
    _choice("train.channels_last", t.channels_last, SWITCHES)
    check_number("train.log_every", t.log_every, 1, None)
    check_number("train.attack_stats_every", t.attack_stats_every, 1, None)

    _choice("eval.attack", e.attack, ("pgd", "autoattack"))
    check_attack_options(eps=e.eps, step_size=e.step_size, steps=e.steps, restarts=e.restarts, prefix="eval.")
    check_number("eval.val_subset", e.val_subset, 0, None, hint=" (0 = every validation image)")
    check_number("eval.batch_size", e.batch_size, 1, MAX_BATCH_SIZE)
    check_number("eval.every", e.every, 1, None)

    if not str(r.root).strip():
        raise UserError("run.root must name a folder, e.g. runs")
    check_run_name(r.name)
    if not DEVICE_PATTERN.match(str(r.device).strip().lower()):
        raise UserError(f"unknown device {r.device!r}; use auto, cpu, cuda or cuda:N")
    _check_method(cfg)


def check_attack_options(*, attack: str | None = None, eps: float | None = None, step_size: float | None = None,
                         steps: int | None = None, restarts: int | None = None, limit: int | None = None,
                         seed: int | None = None, prefix: str = "--") -> None:
    """The evaluation attack settings (`--eps`, ... or `eval.eps`, ...); None = not given."""
    name = (lambda key: f"{prefix}{key.replace('_', '-')}") if prefix == "--" else (lambda key: f"{prefix}{key}")
    if attack is not None and str(attack).strip().lower() not in ("pgd", "autoattack"):
        raise UserError(f"unknown attack '{attack}' ({name('attack')}); use pgd or autoattack")
    if eps is not None:
        check_number(name("eps"), eps, 0.0, 1.0, hint=" (images are in [0, 1])")
    if step_size is not None:
        check_number(name("step_size"), step_size, 0.0, 1.0, low_open=True)
    if steps is not None:
        check_number(name("steps"), steps, 1, MAX_ATTACK_STEPS)
    if restarts is not None:
        check_number(name("restarts"), restarts, 1, MAX_RESTARTS)
    if limit is not None:
        check_number(name("limit"), limit, 0, None, hint=" (0 = every test image)")
    if seed is not None:
        check_number(name("seed"), seed, 0, 2**63 - 1)


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def config_changes(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """(key, old, new) for every setting that differs; `run.*` (where and on what it runs) is left out."""
    import json

    plain = lambda d: json.loads(json.dumps(d, default=list))  # noqa: E731  (tuples compare as lists)
    a, b = _flat(plain(old)), _flat(plain(new))
    out = []
    for key in sorted(set(a) | set(b)):
        if key.startswith("run.") or key == "description" or key in RETIRED:
            continue
        if a.get(key) != b.get(key):
            out.append((key, a.get(key), b.get(key)))
    return out


def describe_changes(changes: list[tuple[str, Any, Any]]) -> str:
    show = lambda v: str(v) if isinstance(v, str) else fmt_value(v)  # noqa: E731
    return ", ".join(f"{key} {show(old)} -> {show(new)}" for key, old, new in changes)


def protected(changes: list[tuple[str, Any, Any]]) -> list[tuple[str, Any, Any]]:
    return [c for c in changes if c[0].startswith(PROTECTED)]
