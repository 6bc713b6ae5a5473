"""Training methods: one file per method, built by name.

    from battui.methods import build_method, method_params
    method = build_method("bat", eps=8/255, step_size=2/255, steps=10)
    method_params("bat")   # {"eps": 0.0313..., ..., "target_on": ("clean", "adv")}
"""

from __future__ import annotations

from typing import Any

from battui.methods.base import AttackRecord, Method, MethodOutput
from battui.methods.bat import BAT
from battui.methods.cfa import CFA
from battui.methods.dafa import DAFA
from battui.methods.fat import FAT
from battui.methods.frl import FRL
from battui.methods.gairat import GAIRAT
from battui.methods.pgd_at import PGDAT
from battui.methods.trades import TRADES
from battui.methods.wat import WAT

_REGISTRY: dict[str, type[Method]] = {m.name: m for m in (PGDAT, TRADES, FRL, FAT, GAIRAT, BAT, CFA, DAFA, WAT)}
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


__all__ = ["METHODS", "AttackRecord", "Method", "MethodOutput", "build_method", "method_params"]
