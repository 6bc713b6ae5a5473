"""What a figure is drawn from: run folders, event streams, checkpoints and report JSON.

    loaded = load_sources(["runs/a", "runs/b", "cmp.json"], evaluate=evaluate_checkpoint)
    loaded.results   # per-class evaluations (one per source run or checkpoint)
    loaded.curves    # avg / worst-class robust error per epoch (run folders and events.jsonl only)
    groups = group(loaded.results)   # [(label, [seed results])]: seeds of one method together

A SOURCE is
- a run folder (or its `events.jsonl`): the final test evaluation from the stream
  (the last `eval` of split test; the last validation one while the run is unfinished)
  and the per-epoch validation curve;
- a checkpoint file (`.pt`): evaluated on its test split through `evaluate(path)`;
- a JSON written by `battui eval -f json`, `battui compare -f json` or `battui table -f json`.

Sources with the same method label (the paper's names: `BAT`, `TRADES(1/λ=6)`) are seeds
of one method and are drawn as mean and spread. Two sources of one label with the same
seed are different experiments, not seeds: they keep their own entries, named after the run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from battui.engine.rundir import RunDir
from battui.errors import UserError


@dataclass
class Result:
    """One per-class evaluation."""

    label: str
    seed: int
    name: str  # run name or checkpoint, for messages and to tell same-seed entries apart
    dataset: str
    classes: list[str]
    split: str
    n: int
    attack: dict
    standard: list[float]
    boundary: list[float]
    robust: list[float]
    step_hist: list[list[int]]
    confusion: list[list[int]]


@dataclass
class Curve:
    """Avg and worst-class robust error (%) after each epoch of one run."""

    label: str
    seed: int
    name: str
    dataset: str
    classes: list[str]
    split: str
    epochs: list[int] = field(default_factory=list)  # epochs completed (1-based)
    avg: list[float] = field(default_factory=list)
    worst: list[float] = field(default_factory=list)


@dataclass
class Loaded:
    results: list[Result] = field(default_factory=list)
    curves: list[Curve] = field(default_factory=list)


def method_name(method: str, params: dict | None) -> str:
    """The paper's row name of a method; the plain name for one battui does not know."""
    from battui.methods import paper_label

    try:
        return paper_label(method, dict(params or {}))
    except (UserError, KeyError, ValueError, TypeError):
        return method


def _result_from_eval(event: dict, *, label: str, seed: int, name: str, dataset: str, classes: list[str]) -> Result:
    return Result(label=label, seed=seed, name=name, dataset=dataset, classes=classes, split=event.get("split", "test"),
                  n=int(event["n"]), attack=dict(event.get("attack") or {}), standard=list(event["standard"]),
                  boundary=list(event["boundary"]), robust=list(event["robust"]), step_hist=event["step_hist"],
                  confusion=event["adv_confusion"])


def from_events(events: list[dict], name: str) -> tuple[Result | None, Curve | None]:
    """The final evaluation and the per-epoch robust-error curve of one run's event stream."""
    starts = [e for e in events if e.get("type") == "run_started"]
    if not starts:
        raise UserError(f"{name}: the event stream has no run_started event; is it a battui run?")
    start = starts[-1]
    params = ((start.get("config") or {}).get("method") or {}).get("params")
    info = {"label": method_name(start["method"], params), "seed": int(start.get("seed", 0)), "name": name,
            "dataset": start.get("dataset", ""), "classes": [str(c) for c in start["classes"]]}
    evals = [e for e in events if e.get("type") == "eval"]
    tests = [e for e in evals if e.get("split") == "test"]
    final = tests[-1] if tests else (evals[-1] if evals else None)
    result = _result_from_eval(final, **info) if final else None
    per_epoch = [e for e in evals if e.get("split") == "val"] or tests
    by_epoch = {int(e["epoch"]): e for e in per_epoch}  # a resumed run may repeat an epoch: keep the last
    curve = None
    if by_epoch:
        epochs = sorted(by_epoch)
        curve = Curve(label=info["label"], seed=info["seed"], name=name, dataset=info["dataset"],
                      classes=info["classes"], split=by_epoch[epochs[0]].get("split", "val"),
                      epochs=[e + 1 for e in epochs], avg=[float(by_epoch[e]["avg"]["robust"]) for e in epochs],
                      worst=[float(by_epoch[e]["worst"]["robust"]) for e in epochs])
    return result, curve


def from_record(record: dict, label: str | None = None) -> Result:
    """A `battui eval` record (also one checkpoint of compare, one evaluation of table)."""
    from battui.report.layouts import short_path

    method = record.get("method") or {}
    res = record["result"]
    data = record.get("dataset") or {}
    classes = [str(c) for c in data.get("classes") or []] or [str(i) for i in range(len(res["counts"]))]
    label = label or (method_name(method["name"], method.get("params")) if method.get("name") else record["label"])
    return _result_from_eval({**res, "split": record.get("split", "test"), "attack": record.get("attack")},
                             label=label, seed=int(data.get("split_seed", 0)),
                             name=short_path(str(record.get("checkpoint", ""))), dataset=str(data.get("name", "")),
                             classes=classes)


def _records_from_json(data: Any, path: Path) -> list[Result]:
    if isinstance(data, dict) and "result" in data:
        return [from_record(data)]
    if isinstance(data, dict) and isinstance(data.get("checkpoints"), list):
        return [from_record(r) for r in data["checkpoints"]]
    if isinstance(data, dict) and isinstance(data.get("rows"), list):
        return [from_record(r, label=row.get("label")) for row in data["rows"] for r in row.get("evaluations", [])]
    raise UserError(f"{path} is not a JSON of `battui eval`, `compare` or `table` (-f json)")


def _read_events(path: Path) -> list[dict]:
    from battui.engine.events import read_events

    try:
        return read_events(path)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None


def load_source(path: str | Path, evaluate: Callable[[str], dict]) -> Loaded:
    """One SOURCE (see the module docstring)."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p} does not exist (expected a run folder, checkpoint or eval/compare/table JSON)")
    if p.is_dir():
        if not RunDir(p).events.exists():
            raise UserError(f"{p} is not a run folder: it has no events.jsonl")
        p = RunDir(p).events
    if p.suffix == ".jsonl":
        name = p.parent.name
        result, curve = from_events(_read_events(p), name)
        if result is None:
            raise UserError(f"{name}: the run has no evaluation yet (no eval event in {p})")
        return Loaded([result], [curve] if curve else [])
    if p.suffix == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read {p} as JSON: {exc}") from None
        try:
            return Loaded(_records_from_json(data, p))
        except (KeyError, TypeError, IndexError) as exc:
            raise UserError(f"{p}: not a battui report JSON (missing {exc})") from None
    return Loaded([from_record(evaluate(str(p)))])


def load_sources(paths: list[str], evaluate: Callable[[str], dict]) -> Loaded:
    """Every SOURCE, checked to share one class list."""
    if not paths:
        raise UserError("give at least one SOURCE: a run folder, checkpoint or eval/compare/table JSON")
    out = Loaded()
    for path in paths:
        one = load_source(path, evaluate)
        out.results += one.results
        out.curves += one.curves
    items = [*out.results, *out.curves]
    first = items[0]
    for other in items[1:]:
        if other.classes != first.classes:
            raise UserError(f"cannot draw {first.name} ({first.dataset}, {len(first.classes)} classes) with "
                            f"{other.name} ({other.dataset}, {len(other.classes)} classes): different class lists")
    return out


def group(items: list) -> list[tuple[str, list]]:
    """Items (Results or Curves) by label, in first-seen order; seeds of one method together.

    A label under which a seed repeats holds different experiments: each item then gets
    its own entry, `label [name]`.
    """
    by_label: dict[str, list] = {}
    for item in items:
        by_label.setdefault(item.label, []).append(item)
    out: list[tuple[str, list]] = []
    for label, members in by_label.items():
        seeds = [m.seed for m in members]
        if len(set(seeds)) == len(seeds):
            out.append((label, members))
        else:
            out.extend((f"{label} [{m.name}]", [m]) for m in members)
    return out
