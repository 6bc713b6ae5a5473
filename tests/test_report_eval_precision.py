"""One evaluation precision and seed: a run's final test evaluation equals `battui eval` of its last.pt,
whatever the training precision; fp32 unless `eval.amp=true`; every report says which."""

from __future__ import annotations

import json

import torch
from torch import nn

from battui.config import EvalAttack, load_config
from battui.engine.evaluate import evaluate
from battui.engine.events import read_events
from battui.engine.trainer import Trainer
from tests.support.cli import run_cli

PER_CLASS = ("n", "counts", "standard", "boundary", "robust", "adv_confusion", "step_hist")


def test_final_test_eval_equals_battui_eval_of_last_pt(tmp_path, capsys) -> None:
    # bf16 training on CPU, a non-zero training seed: the evaluation is fp32 and seeded by eval.seed either way
    cfg = load_config("synthetic-tiny", [f"run.root={tmp_path / 'runs'}", "train.epochs=1", "train.seed=3",
                                         "train.amp=true"])
    trainer = Trainer(cfg).prepare()
    assert trainer.parts.speed.amp and trainer.run() == "completed"
    final = [e for e in read_events(trainer.events_path) if e["type"] == "eval" and e["split"] == "test"][-1]
    assert final["attack"]["precision"] == "fp32" and final["attack"]["seed"] == 0
    out = tmp_path / "eval.json"
    code, _, err = run_cli(capsys, "eval", str(trainer.checkpoint_dir / "last.pt"), "--no-cache", "-f", "json",
                           "-o", str(out))
    assert code == 0, err
    record = json.loads(out.read_text())
    assert record["attack"] == final["attack"]
    for key in PER_CLASS:
        assert record["result"][key] == final[key], key
    assert 0 < final["avg"]["boundary"] and final["n"] == 100  # an attack that did something, on the test split


class AutocastProbe(nn.Module):
    """Records, at every forward, whether autocast is on and the dtype of the logits."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(12, 10)
        self.seen: list[tuple[bool, torch.dtype]] = []

    def forward(self, x):
        out = self.linear(x.flatten(1))
        self.seen.append((torch.is_autocast_enabled("cpu"), out.dtype))
        return out


def test_fp32_by_default_even_inside_training_autocast_and_bf16_when_asked() -> None:
    torch.manual_seed(0)
    x, y = torch.rand(8, 3, 2, 2), torch.arange(8) % 10
    for precision, outer in (("fp32", True), ("bf16", False)):
        model = AutocastProbe()
        spec = EvalAttack(eps=0.1, step_size=0.05, steps=2, precision=precision)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=outer):  # training's bf16 around the call
            result = evaluate(model, [(x, y)], num_classes=10, spec=spec)
        want = (False, torch.float32) if precision == "fp32" else (True, torch.bfloat16)
        assert model.seen and set(model.seen) == {want}, precision
        assert result["attack"]["precision"] == precision


def test_reports_state_the_precision_and_eval_amp_opts_into_bf16(tmp_path, capsys) -> None:
    from tests.support.checkpoints import make_checkpoint, tiny_config

    ckpt = make_checkpoint(tmp_path / "m.pt", tiny_config(), train_steps=5)
    code, out, err = run_cli(capsys, "eval", str(ckpt), "--steps", "1", "--limit", "20")
    assert code == 0, err
    assert "CE (eps 0.1, step 0.025, 1 restart, seed 0), fp32" in " ".join(out.split())
    code, out, err = run_cli(capsys, "eval", str(ckpt), "--steps", "1", "--limit", "20", "--set", "eval.amp=true",
                             "-f", "json")
    assert code == 0, err
    assert json.loads(out)["attack"]["precision"] == "bf16"
