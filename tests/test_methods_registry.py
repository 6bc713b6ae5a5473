"""Each method is the single source of its facts: label, fine-tuning, parameters (docs/DESIGN.md section 3.4)."""

from types import SimpleNamespace

import pytest

from battui.config import load_config
from battui.methods import METHODS, method_class, method_from_config, paper_label
from battui.report.runs import MethodRow, TablePlan, run_config


@pytest.mark.parametrize("name", METHODS)
def test_every_method_names_itself(name):
    cls = method_class(name)
    assert cls.name == name and cls.label
    assert cls.fine_tunes_from in ("", *METHODS) and cls.fine_tunes_from != name
    assert paper_label(name, {}) == cls.label_head({})[0]  # defaults are never listed


def test_paper_labels():
    assert paper_label("trades", {"beta": 6}) == "TRADES(1/λ=6)"
    assert paper_label("trades", {"beta": 1.0}) == "TRADES(1/λ=1)"
    assert paper_label("frl", {}) == "FRL(Reweight+Remargin, 0.05)"
    assert paper_label("frl", {"tau": 0.07}) == "FRL(Reweight+Remargin, 0.07)"
    assert paper_label("bat", {"alpha": 2.0}) == "BAT [alpha=2.0]"
    assert paper_label("bat", {"alpha": 1.0, "target_on": ["clean", "adv"]}) == "BAT"  # defaults, tuple as list
    assert paper_label("pgd-at", {}) == "PGD-AT" and paper_label("wat", {}) == "WAT"


def test_fine_tuning_comes_from_the_method():
    plan = TablePlan("synthetic-tiny", [MethodRow("frl")], seeds=1, overrides=["train.epochs=30"])
    cfg = run_config(plan, plan.rows[0], seed=0, init_from="pre.pt")
    base = load_config("synthetic-tiny", ["train.epochs=30"])
    assert method_class("frl").fine_tunes_from == "pgd-at"
    assert cfg.train.init_from == "pre.pt" and cfg.train.epochs == 12  # 0.4 x 30
    assert cfg.train.lr == pytest.approx(base.train.lr / 100) and cfg.train.weight_decay == 5e-4
    assert cfg.train.schedule == "constant"
    plain = run_config(plan, MethodRow("bat"), seed=0)
    assert plain.train.epochs == 30 and plain.train.init_from == ""


def test_method_from_config_takes_the_attack_budget():
    cfg = SimpleNamespace(attack=SimpleNamespace(eps=0.1, step_size=0.02, steps=7),
                          method=SimpleNamespace(name="frl", params={"tau": 0.07}))
    method = method_from_config(cfg, num_classes=4)
    assert (method.eps, method.step_size, method.steps, method.tau, method.num_classes) == (0.1, 0.02, 7, 0.07, 4)
