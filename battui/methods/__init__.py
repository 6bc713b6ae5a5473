"""Training methods: one file per method, built by name.

    from battui.methods import build_method, method_params
    method = build_method("bat", eps=8/255, step_size=2/255, steps=10)
    method_params("bat")   # {"eps": 0.0313..., ..., "target_on": ("clean", "adv")}
    build_method("my_pkg.losses:MyLoss")   # a Method subclass from outside battui (methods/plugins.py)

The public API for a method author (docs/METHODS.md): `Method`, its records `MethodOutput`,
`AttackRecord`, `LossParts`/`float_parts`, the attack `pgd` -> `PGDResult`, `unwrap`, the KL
helpers `kl_logits`/`kl_uniform`, per-class sums `class_sums`/`sum_over_ranks`, and the
contract checks `check_method`/`assert_method_contract` (methods/contract.py).
"""

from __future__ import annotations

import json
import re
from importlib import import_module
from typing import Any

from battui.attacks import PGDResult, class_sums, kl_logits, kl_uniform, pgd, sum_over_ranks
from battui.errors import check_number
from battui.methods.base import AttackRecord, LossParts, Method, MethodOutput, float_parts, unwrap
from battui.methods.contract import ContractCheck, assert_method_contract, check_method
from battui.methods.plugins import MethodError, MethodSource, entry_points, resolve_external

# The registry: one line per method, "module:Class" in battui/methods/, in the order help and tables list them.
REGISTERED = (
    "pgd_at:PGDAT",
    "trades:TRADES",
    "frl:FRL",
    "fat:FAT",
    "gairat:GAIRAT",
    "bat:BAT",
    "cfa:CFA",
    "dafa:DAFA",
    "wat:WAT",
    "trix:TRIX",
    "faal:FAAL",
    "absld:ABSLD",
)


def _load(entry: str) -> type[Method]:
    module, cls = entry.split(":")
    return getattr(import_module(f"{__name__}.{module}"), cls)


_REGISTRY: dict[str, type[Method]] = {m.name: m for m in map(_load, REGISTERED)}
METHODS: tuple[str, ...] = tuple(_REGISTRY)  # the built-in methods; `available_methods()` adds entry points
_EXTERNAL: dict[str, tuple[type[Method], MethodSource]] = {}  # `module:Class` and entry points, once resolved


def available_methods() -> tuple[str, ...]:
    """Every method a name selects: the built-in ones, then the installed `battui.methods` entry points
    (an entry point named like a built-in method is shadowed by it); any `module:Class` works besides."""
    return METHODS + tuple(name for name in entry_points() if name not in _REGISTRY)


def _resolve(name: str) -> tuple[type[Method], MethodSource]:
    if name in _REGISTRY:
        cls = _REGISTRY[name]
        return cls, MethodSource(name, "built-in", f"{cls.__module__}:{cls.__qualname__}")
    if name not in _EXTERNAL:
        try:
            _EXTERNAL[name] = resolve_external(str(name))
        except MethodError as exc:
            if not str(exc).startswith("unknown method"):
                raise
            raise MethodError(f"unknown method {name!r}; valid methods: {', '.join(available_methods())}, "
                              "or module:Class (a battui.methods.Method subclass)") from None
    return _EXTERNAL[name]


def _method_class(name: str) -> type[Method]:
    return _resolve(name)[0]


def method_source(name: str) -> MethodSource:
    """Where `name`'s class comes from (built-in, a module, an entry point and its package); saved in checkpoints."""
    return _resolve(name)[1]


def method_slug(name: str) -> str:
    """`name` as part of a folder name: `my_pkg.losses:MyLoss` -> `my_pkg.losses.MyLoss`."""
    return re.sub(r"[^\w.-]+", "_", name.replace(":", "."))


def method_params(name: str) -> dict[str, Any]:
    """The parameters ``name`` accepts, with their defaults (typed as accepted)."""
    return _method_class(name).defaults()


def build_method(name: str, **params: Any) -> Method:
    """Build a method by name: the one check of its parameters. Unknown names or parameters raise
    ValueError; a number outside the class's `param_ranges` a one-line `UserError` (`method.KEY must
    be ...`); then the class's `__init__` checks the rest."""
    cls = _method_class(name)
    valid = cls.defaults()
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(
            f"method {name!r} has no parameter(s) {', '.join(unknown)}; valid: {', '.join(valid)}"
        )
    for key, value in params.items():
        rule = cls.param_ranges.get(key)
        if rule is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
            check_number(f"method.{key}", value, rule[0], rule[1], low_open=rule[2])
    return cls(**params)


def method_class(name: str) -> type[Method]:
    """The registered class of `name` (its label, flags and defaults); ValueError if unknown."""
    return _method_class(name)


def paper_label(name: str, params: dict[str, Any]) -> str:
    """The paper's row name: `TRADES(1/λ=6)`, `FRL(Reweight+Remargin, 0.05)`, `BAT [alpha=2.0]`.

    Parameters left at their defaults are not shown; the method's `label_head` names the rest."""
    cls = _method_class(name)
    plain = lambda v: json.loads(json.dumps(v, default=list))  # noqa: E731  (tuples compare as lists)
    defaults = plain(cls.defaults())
    head, shown = cls.label_head(params)
    head = head or name  # a method from outside battui may leave label and name empty
    rest = {k: v for k, v in params.items() if k not in shown and not (k in defaults and defaults[k] == plain(v))}
    if rest:
        head += " [" + ", ".join(f"{k}={v}" for k, v in sorted(rest.items())) + "]"
    return head


def method_from_config(cfg: Any, num_classes: int) -> Method:
    """`build_method` with the attack budget from `cfg.attack`, then `cfg.method.params`; UserError if refused."""
    from battui.errors import UserError

    accepted = method_params(cfg.method.name)
    params = {k: getattr(cfg.attack, k) for k in ("eps", "step_size", "steps") if k in accepted}
    params.update(cfg.method.params)
    if "num_classes" in accepted:
        params["num_classes"] = num_classes
    if "lr_milestones" in accepted and "lr_milestones" not in cfg.method.params:  # ABSLD decays with the lr
        params["lr_milestones"] = list(cfg.train.milestones) if cfg.train.schedule == "multistep" else []
    try:
        return build_method(cfg.method.name, **params)
    except (ValueError, TypeError) as exc:
        raise UserError(f"method {cfg.method.name}: {exc}") from None


__all__ = ["METHODS", "AttackRecord", "ContractCheck", "LossParts", "Method", "MethodError", "MethodOutput",
           "MethodSource", "PGDResult", "assert_method_contract", "available_methods", "build_method", "check_method",
           "class_sums", "float_parts", "kl_logits", "kl_uniform", "method_class", "method_from_config",
           "method_params", "method_slug", "method_source", "paper_label", "pgd", "sum_over_ranks", "unwrap"]
