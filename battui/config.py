"""Typed configuration: YAML presets plus `--set section.key=value` overrides.

A config is plain data: one dataclass per section, read from `presets/<name>.yaml`,
then overridden from the command line, then saved with the run as `config.yaml`.

    cfg = load_config("digits-cnn", ["method.name=bat", "train.epochs=5"])
    cfg.method.name, cfg.attack.eps          # -> "bat", 0.2
    save_config(cfg, "runs/x/config.yaml")   # the resolved config a run saves

Every mistake (unknown preset or key, wrong type, malformed YAML) raises
`UserError` with one line that says what to do.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from battui.errors import UserError
from battui.validate import RETIRED, normalize_classes, validate_config

PRESETS_DIR = Path(__file__).resolve().parent / "presets"


@dataclass
class DataConfig:
    name: str = "digits"  # digits | synthetic | cifar10 | cifar100 | imagenette | fashion-mnist | svhn | stl10
    #                       | tiny-imagenet | folder (battui.data.DATASETS)
    root: str = "data"  # where the dataset's files live on disk (folder: the tree with train/ and val/ or test/)
    download: bool = False  # fetch through torchvision when missing (cifar, imagenette, fashion-mnist, svhn, stl10)
    classes: list | None = None  # keep only these classes (indices or names), Table 4
    val_per_class: int = 20  # held out of the training set, stratified
    train_per_class: int = 0  # train on a stratified subset of this many images per class (0 = all)
    test_fraction: float = 0.25  # digits/synthetic only: they have no official test split
    image_size: int = 0  # resize (imagenette, tiny-imagenet, folder decode at it) / synthetic side; 0 = own size
    channels: int = 3  # synthetic only
    per_class: int = 60  # synthetic only: images per class before the splits
    augment: bool = False  # random crop (pad 4) + horizontal flip on the training split


@dataclass
class ModelConfig:
    name: str = "cnn"  # cnn | resnet18 | preact-resnet18 | wrn-28-10 | wrn-34-10
    depth: int = 0  # cnn only: 2 or 3 convolutions; 0 = the model's default (3)
    width: int = 0  # cnn: middle convolution's channels (default 32); resnets: first stage's (default 64); 0 = default
    normalize: str = ""  # "MEAN/STD" per-channel comma lists: (x - mean) / std inside the network; "" = none


@dataclass
class AttackConfig:
    """The training attack every method uses (eps-ball, step, number of steps)."""

    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 10


@dataclass
class MethodConfig:
    name: str = "pgd-at"  # a built-in or entry-point method, or module:Class (`battui methods` lists them)
    params: dict = field(default_factory=dict)  # method-specific (beta, alpha, tau, ...)


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 128  # the global batch: split over the ranks under torchrun
    optimizer: str = "sgd"  # sgd | adam
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 2e-4
    schedule: str = "multistep"  # multistep | cosine | constant
    milestones: list = field(default_factory=lambda: [0.5, 0.75])  # fractions of epochs
    gamma: float = 0.1
    seed: int = 0
    deterministic: bool = False
    init_from: str = ""  # start from this checkpoint's weights (FRL fine-tunes a robust model)
    amp: str = "auto"  # bf16 autocast: auto (on for CUDA) | true | false
    channels_last: str = "auto"  # auto (on for CUDA) | true | false
    compile: bool = False  # torch.compile the model
    log_every: int = 10  # a progress line / batch event every N batches
    attack_stats_every: int = 50  # a partial train_attack event every N batches


@dataclass(frozen=True)
class EvalAttack:
    """The evaluation attack, what `engine.evaluate.evaluate` takes as `spec` (its defaults are the
    `eval` section's)."""

    attack: str = "pgd"  # pgd | autoattack
    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 20
    restarts: int = 1
    seed: int = 0  # the random start's, forked (`evaluate`)
    precision: str = "fp32"  # or "bf16" (autocast)


@dataclass
class EvalConfig:
    """The `eval` section: when and on what training evaluates (`every`, `val_subset`, `batch_size`)
    and the attack (`EvalAttack`, made from this section by `engine.evaluate.eval_attack`)."""

    attack: str = "pgd"  # pgd | autoattack (standard, the authors' pyautoattack)
    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 20
    restarts: int = 1
    val_subset: int = 0  # evaluate per epoch on at most this many val images (0 = all)
    batch_size: int = 256
    every: int = 1  # evaluate on the validation split every N epochs
    seed: int = 0  # the attack's random start, the same in training's evaluations and `battui eval`
    # every evaluation runs fp32 whatever train.amp; true = bf16 autocast. A bool, not train.amp's
    # auto|true|false: a reported number must not depend on the machine it was computed on
    amp: bool = False

    @property
    def precision(self) -> str:
        """The evaluation precision, "fp32" or "bf16" (`eval.amp`)."""
        return "bf16" if self.amp else "fp32"


@dataclass
class RunConfig:
    root: str = "runs"  # runs/<preset>-<method>-<YYYYmmdd-HHMMSS>/
    name: str = ""  # empty = generated
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    tensorboard: bool = False  # also write RUN/tensorboard/ live (needs battui[tensorboard])
    on_hangup: str = "continue"  # terminal lost: continue (headless, RUN/train.log) | stop (save last.pt, exit)


@dataclass
class Config:
    preset: str = "digits-cnn"
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config) if f.name not in ("preset", "description")}
_SECTION_TYPES = {
    "data": DataConfig,
    "model": ModelConfig,
    "attack": AttackConfig,
    "method": MethodConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "run": RunConfig,
}


def _suggest(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def _read_yaml(path: Path) -> dict:
    if path.exists() and not path.is_dir() and (not path.is_file() or path.stat().st_size > 10_000_000):
        raise UserError(f"{path} is not a YAML config file (not a regular file, or over 10 MB)")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        text = "\x00"
    if "\x00" in text:
        raise UserError(f"{path} is not a text YAML file (it holds binary data); give a preset name or a .yaml file")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise UserError(f"malformed YAML in {path}{where}: {problem}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of sections (data:, model:, ...) at the top")
    return data


def preset_path(name: str) -> Path:
    """A preset name (from presets/) or a path to a YAML file."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        path = Path(name)
        if not path.exists():
            raise UserError(f"preset file {path} does not exist")
        return path
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.exists():
        raise UserError(f"unknown preset '{name}'{_suggest(name, list_presets())}; `battui presets` lists them")
    return path


def _coerce(value: Any, default: Any, key: str) -> Any:
    """Check `value` against the type of `default`; ints are accepted for floats."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "1e30" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
        if isinstance(value, bool):  # auto|true|false switches: --set train.amp=true
            return "true" if value else "false"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    elif isinstance(default, (list, tuple)):
        if isinstance(value, (list, tuple)):
            return type(default)(value)
    elif isinstance(default, dict):
        if isinstance(value, dict):
            return value
    else:
        return value
    want = "a list" if isinstance(default, (list, tuple)) else type(default).__name__
    raise UserError(f"{key} must be {want}, got {value!r}")


def check_method_name(name: str, where: str = "") -> None:
    """A built-in or entry-point method name, or `module:Class`; else a one-line UserError with a suggestion."""
    from battui.methods import MethodError, available_methods

    names = available_methods()
    if ":" not in name and name not in names:
        raise MethodError(f"{where}unknown method '{name}'{_suggest(name, names)}; methods: {', '.join(names)}, "
                        "or module:Class (`battui methods` lists them)")


def _method_defaults(name: str) -> dict:
    from battui.methods import method_params

    check_method_name(name)
    return method_params(name)  # a module:Class that does not import or is no Method: MethodError, one line


def _set_key(cfg: Config, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    section = parts[0]
    if section in ("preset", "description") and len(parts) == 1:
        setattr(cfg, section, str(value))
        return
    if section not in _SECTION_TYPES:
        raise UserError(f"unknown config section '{section}'{_suggest(section, _SECTION_TYPES)}")
    obj = getattr(cfg, section)
    if len(parts) == 1:
        raise UserError(f"'{dotted}' names a section; set one of its keys, e.g. {section}.<key>=VALUE")
    if section == "method" and parts[1] not in ("name", "params"):
        parts = ["method", "params", *parts[1:]]  # method.beta=6 is method.params.beta=6
    key = parts[1]
    names = {f.name for f in dataclasses.fields(obj)}
    if key not in names:
        raise UserError(f"unknown config key '{section}.{key}'{_suggest(key, names)}")
    if section == "method" and key == "params":
        if len(parts) == 2:
            if not isinstance(value, dict):
                raise UserError("method.params must be a mapping")
            for k, v in value.items():
                _set_key(cfg, f"method.params.{k}", v)
            return
        obj.params[".".join(parts[2:])] = value
        return
    if len(parts) > 2:
        raise UserError(f"unknown config key '{dotted}': '{section}.{key}' has no sub-keys")
    value = _coerce(value, getattr(obj, key), dotted)
    setattr(obj, key, normalize_classes(value) if dotted == "data.classes" else value)


def _validate_method_params(cfg: Config) -> None:
    defaults = _method_defaults(cfg.method.name)
    for k, v in list(cfg.method.params.items()):
        if k not in defaults:
            raise UserError(
                f"unknown parameter '{k}' for method {cfg.method.name}{_suggest(k, defaults)}; "
                f"its parameters: {', '.join(sorted(defaults))}"
            )
        cfg.method.params[k] = _coerce(v, defaults[k], f"method.{k}")


def from_dict(data: dict, where: str = "config") -> Config:
    cfg = Config()
    for section, value in data.items():
        if section in ("preset", "description"):
            setattr(cfg, section, str(value))
            continue
        if section not in _SECTION_TYPES:
            raise UserError(f"{where}: unknown section '{section}'{_suggest(section, _SECTION_TYPES)}")
        if not isinstance(value, dict):
            raise UserError(f"{where}: section '{section}' must be a mapping")
        for key, v in value.items():
            if f"{section}.{key}" not in RETIRED:
                _set_key(cfg, f"{section}.{key}", v)
    return cfg


def parse_override(text: str) -> tuple[str, Any]:
    """`section.key=value`; the value is read as YAML (numbers, true/false, lists)."""
    if "=" not in text:
        raise UserError(f"--set expects section.key=value, got '{text}'")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def load_config(preset: str = "digits-cnn", overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a preset and apply `section.key=value` overrides; validate everything."""
    path = preset_path(preset)
    cfg = from_dict(_read_yaml(path), where=str(path))
    if not cfg.preset or path.parent == PRESETS_DIR:
        cfg.preset = path.stem
    parsed = [parse_override(text) for text in overrides]
    method = next((str(v) for k, v in reversed(parsed) if k == "method.name"), cfg.method.name)
    for key, value in _train_defaults(method).items():  # the method's own schedule (FAAL); --set wins
        _set_key(cfg, f"train.{key}", value)
    for key, value in parsed:
        _set_key(cfg, key, value)
    _validate_method_params(cfg)
    validate_config(cfg)
    return cfg


def _train_defaults(method: str) -> dict:
    """A method's `train_defaults` (docs/DESIGN.md section 3.4); {} for an unknown name (refused later)."""
    from battui.methods import METHODS, method_class

    return dict(method_class(method).train_defaults) if method in METHODS else {}


def apply_overrides(cfg: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """Apply `section.key=value` overrides to an existing config (e.g. a checkpoint's)."""
    for text in overrides:
        _set_key(cfg, *parse_override(text))
    _validate_method_params(cfg)
    return cfg


def config_from_dict(data: dict) -> Config:
    """Rebuild a resolved config (from a run's config.yaml or a checkpoint)."""
    cfg = from_dict(data)
    _validate_method_params(cfg)
    validate_config(cfg)
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def read_config(path: str | Path) -> Config:
    """A run's saved config.yaml (an empty file is refused, not read as the defaults)."""
    data = _read_yaml(Path(path))
    if not data:
        raise UserError(f"{path} is empty; the run's settings are lost there (its checkpoints still hold them)")
    return config_from_dict(data)
