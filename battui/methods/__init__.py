"""Training methods: one file per method, built by name.

    from battui.methods import build_method, method_params
    method = build_method("bat", eps=8/255, step_size=2/255, steps=10)
    method_params("bat")   # {"eps": 0.0313..., ..., "target_on": ("clean", "adv")}
"""

from __future__ import annotations

import json
from importlib import import_module
from typing import Any

from battui.methods.base import AttackRecord, Method, MethodOutput

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
METHODS: tuple[str, ...] = tuple(_REGISTRY)


def _method_class(name: str) -> type[Method]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}")
    return _REGISTRY[name]


def method_params(name: str) -> dict[str, Any]:
    """The parameters ``name`` accepts, with their defaults (typed as accepted)."""
    return _method_class(name).defaults()


def build_method(name: str, **params: Any) -> Method:
    """Build a method by name; unknown names or parameters raise ValueError."""
    cls = _method_class(name)
    valid = cls.defaults()
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(
            f"method {name!r} has no parameter(s) {', '.join(unknown)}; valid: {', '.join(valid)}"
        )
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


__all__ = ["METHODS", "AttackRecord", "Method", "MethodOutput", "build_method", "method_class", "method_from_config",
           "method_params", "paper_label"]
