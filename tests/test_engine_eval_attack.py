"""The evaluation attack's record and cache key are pinned: existing eval caches
(`<checkpoint>.eval-<key>.json`) must keep matching, and eval JSON keep its `attack` record."""

from __future__ import annotations

import json

import torch
from torch import nn

from battui.config import Config, load_config
from battui.engine.evaluate import attack_record, evaluate
from battui.report.evaluation import _cache_key, attack_spec

DATA = {"name": "digits", "classes": [str(c) for c in range(10)], "num_classes": 10, "split_seed": 0}


def _record(spec) -> list:
    """The `attack` record `evaluate` returns for `spec`, as (key, value) pairs in order."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 10))
    batches = [(torch.rand(3, 4), torch.tensor([0, 1, 2]))]
    return list(evaluate(model, batches, num_classes=10, spec=spec)["attack"].items())


def test_attack_record_of_the_default_eval_section_is_pinned() -> None:
    spec = attack_spec(Config())
    assert _record(spec) == [("name", "pgd"), ("eps", 8 / 255), ("step_size", 2 / 255), ("steps", 20),
                             ("restarts", 1), ("seed", 0), ("precision", "fp32")]


def test_attack_record_with_overrides_is_pinned() -> None:
    cfg = load_config("digits-cnn", ["eval.amp=true", "eval.seed=4", "eval.eps=0"])
    spec = attack_spec(cfg, attack="PGD", steps=3, restarts=2, step_size=1)
    record = _record(spec)
    assert record == [("name", "pgd"), ("eps", 0.0), ("step_size", 1.0), ("steps", 3), ("restarts", 2),
                      ("seed", 4), ("precision", "bf16")]
    assert json.dumps(dict(record)) == ('{"name": "pgd", "eps": 0.0, "step_size": 1.0, "steps": 3, "restarts": 2, '
                                        '"seed": 4, "precision": "bf16"}')
    assert attack_spec(cfg, precision="fp32").precision == "fp32"


def test_cache_key_of_a_fixed_attack_is_pinned() -> None:
    cfg = Config()
    assert _cache_key(attack_spec(cfg), 0, DATA, cfg, "0123456789abcdef") == "b720f0f95297"
    spec = attack_spec(cfg, attack="pgd", eps=0.1, step_size=0.03, steps=7, restarts=2, seed=5, precision="bf16")
    assert _cache_key(spec, 50, DATA, cfg, "fedcba9876543210", {"model": "cnn"}) == "397501004175"


def test_autoattack_record_and_cache_key_are_pinned(monkeypatch) -> None:
    import battui.attacks.autoattack as aa

    monkeypatch.setattr(aa, "implementation", lambda: "pyautoattack 0.2.0")
    cfg = Config()
    spec = attack_spec(cfg, attack="autoattack", eps=0.03)
    assert list(attack_record(spec).items()) == [
        ("name", "autoattack"), ("eps", 0.03), ("step_size", 2 / 255), ("steps", 20), ("restarts", 1), ("seed", 0),
        ("precision", "fp32"), ("implementation", "pyautoattack 0.2.0")]
    assert _cache_key(spec, 0, DATA, cfg, "0123456789abcdef") == "93d16c3fe132"
