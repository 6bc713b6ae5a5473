"""`battui eval` against an independent library: PGD-20 agrees with torchattacks.PGD (AutoAttack: see
test_attacks_autoattack.py)."""

from __future__ import annotations

import json

import pytest
import torch
import torchattacks

from battui.data import build_datasets
from battui.engine.checkpoint import model_from_checkpoint
from tests.support.cli import run_cli

EPS = 0.07  # robust error about 60% for this model: far from 0 and 100


def overall(record: dict, kind: str = "robust") -> float:
    """Per-class errors back to the error over all images (what torchattacks measures)."""
    res = record["result"]
    return sum(e * n for e, n in zip(res[kind], res["counts"])) / res["n"]


def test_pgd20_agrees_with_torchattacks(small_model, tmp_path, capsys) -> None:
    out = tmp_path / "pgd.json"
    code, _, err = run_cli(capsys, "eval", str(small_model), "--eps", str(EPS), "--step-size", str(EPS / 4),
                           "--steps", "20", "--no-cache", "-f", "json", "-o", str(out))
    assert code == 0, err
    record = json.loads(out.read_text())
    ours = overall(record)

    model, cfg, _ = model_from_checkpoint(small_model)
    test = build_datasets(cfg.data, seed=cfg.train.seed).test
    x, y = test.float_images(), test.labels
    torch.manual_seed(0)
    x_adv = torchattacks.PGD(model, eps=EPS, alpha=EPS / 4, steps=20, random_start=True)(x, y)
    with torch.no_grad():
        theirs = 100.0 * ((model(x).argmax(1) != y) | (model(x_adv).argmax(1) != y)).float().mean().item()
        clean = 100.0 * (model(x).argmax(1) != y).float().mean().item()
    assert record["result"]["n"] == len(y) == 150
    assert overall(record, "standard") == pytest.approx(clean)
    assert 20.0 < ours < 95.0  # a meaningful operating point
    assert abs(ours - theirs) <= 1.0, (ours, theirs)
