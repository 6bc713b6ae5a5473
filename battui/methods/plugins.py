"""Methods from outside the package: `module:Class` and the `battui.methods` entry-point group.

    resolve("bat")                       # (BAT, MethodSource(kind="built-in", ...))
    resolve("my_pkg.losses:MyLoss")      # imports my_pkg.losses, checks MyLoss is a usable Method
    resolve("my-loss")                   # an entry point `my-loss = my_pkg.losses:MyLoss` of an installed package

A user's package registers a method in its packaging metadata:

    [project.entry-points."battui.methods"]
    my-loss = "my_pkg.losses:MyLoss"

The name a method is given by (`--method`, `method.name` in config.yaml) is what a
run, a checkpoint and a table row keep; the checkpoint also records where the class came
from (`MethodSource.record()`), so a checkpoint whose method is gone says which package
it needs. Every problem is a `MethodError` (a `UserError`, also a `ValueError`): one line
naming the method, raised before anything is trained or written.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass
from importlib import import_module, metadata
from typing import Any

from battui.errors import UserError
from battui.methods.base import Method

GROUP = "battui.methods"
_HINT = "install the package that provides it, or put its folder on PYTHONPATH"


class MethodError(UserError, ValueError):
    """A method that cannot be used: unknown, not importable, not a Method, or not buildable from defaults."""


@dataclass(frozen=True)
class MethodSource:
    """Where a method's class comes from: `kind` built-in | entry point | module, `target` "module:Class"."""

    name: str
    kind: str
    target: str
    distribution: str = ""  # entry points: the installed package that declares it
    version: str = ""

    def record(self) -> dict[str, str]:
        """Plain data for a checkpoint's `method_source`."""
        return asdict(self)

    def describe(self) -> str:
        """`built-in`, `module my_pkg.losses:MyLoss`, `entry point of my-pkg 0.1 (my_pkg.losses:MyLoss)`."""
        if self.kind == "entry point":
            return f"entry point of {self.distribution or 'an installed package'} {self.version}".rstrip() + \
                   f" ({self.target})"
        return "built-in" if self.kind == "built-in" else f"module {self.target}"


def describe_record(record: Any) -> str:
    """A checkpoint's `method_source` (or nothing) in words; "" when absent or built-in."""
    if not isinstance(record, dict) or record.get("kind") in (None, "built-in"):
        return ""
    fields = {k: str(record.get(k, "")) for k in ("name", "kind", "target", "distribution", "version")}
    return MethodSource(**fields).describe()


def entry_points() -> dict[str, metadata.EntryPoint]:
    """The installed `battui.methods` entry points by name (the first of a repeated name)."""
    out: dict[str, metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=GROUP):
        out.setdefault(ep.name, ep)
    return out


def _import_target(target: str, what: str) -> Any:
    """The object `target` ("module:Class") names; `what` names the method in errors ("method 'x'")."""
    module, _, attr = target.partition(":")
    if not module or not attr or ":" in attr:
        raise MethodError(f"{what}: expected module:Class (e.g. my_pkg.losses:MyLoss), got '{target}'")
    try:
        mod = import_module(module)
    except Exception as exc:  # an import runs the user's code: any error is "cannot be imported"
        raise MethodError(f"{what} cannot be imported ({type(exc).__name__}: {exc}); {_HINT}") from None
    try:
        obj = mod
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise MethodError(f"{what}: module {module} has no attribute '{attr}'") from None
    return obj


def check_class(obj: Any, what: str) -> type[Method]:
    """`obj` is a concrete `Method` subclass every parameter of which has a default; else MethodError."""
    if not (inspect.isclass(obj) and issubclass(obj, Method)):
        kind = "class" if inspect.isclass(obj) else type(obj).__name__
        raise MethodError(f"{what} is a {kind}, not a subclass of battui.methods.Method")
    if inspect.isabstract(obj):
        missing = ", ".join(sorted(getattr(obj, "__abstractmethods__", ())))
        raise MethodError(f"{what} ({obj.__name__}) does not implement {missing}")
    for klass in obj.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        for p in list(inspect.signature(init).parameters.values())[1:]:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            if p.default is inspect.Parameter.empty:
                raise MethodError(f"{what} ({obj.__name__}): __init__ parameter '{p.name}' has no default "
                                  "(every parameter needs one; a run sets it with --set method.NAME=VALUE)")
    return obj


def resolve_external(name: str) -> tuple[type[Method], MethodSource]:
    """A `module:Class` name or an entry point's name; MethodError when neither works."""
    if ":" in name:
        what = f"method '{name}'"
        return check_class(_import_target(name, what), what), MethodSource(name, "module", name)
    ep = entry_points().get(name)
    if ep is None:
        raise MethodError(f"unknown method '{name}'")
    dist = getattr(ep, "dist", None)
    source = MethodSource(name, "entry point", ep.value, dist.name if dist else "", dist.version if dist else "")
    what = f"method '{name}' ({source.describe()})"
    return check_class(_import_target(ep.value, what), what), source


__all__ = ["GROUP", "MethodError", "MethodSource", "check_class", "describe_record", "entry_points",
           "resolve_external"]
