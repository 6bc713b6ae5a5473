"""Methods from outside battui (docs/DESIGN.md section 3.7): a package written under tmp_path registers one
method through the `battui.methods` entry-point group (a *.dist-info on PYTHONPATH, no pip) and names another
as `module:Class`; both train, resume, land in a `battui table`, and every bad name is one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from battui.engine.checkpoint import load_checkpoint
from battui.errors import UserError
from battui.methods import (
    METHODS,
    MethodError,
    assert_method_contract,
    available_methods,
    check_method,
    method_class,
    method_source,
    paper_label,
)
from tests.support import ROOT
from tests.support.cli import run_cli, run_many

LOSSES = '''
"""Two losses written only against battui's public method API."""
import torch.nn.functional as F

from battui.methods import AttackRecord, Method, MethodOutput, float_parts, kl_logits, pgd


class PlainCE(Method):
    """CE on a PGD example (PGD-AT written by a user)."""

    label = "Plain-CE"

    def loss(self, model, x, y):
        res = pgd(model, x, y, eps=self.eps, step_size=self.step_size, steps=self.steps)
        model.train()
        ce = F.cross_entropy(model(res.x_last), y)
        return MethodOutput(ce, float_parts(ce=ce), AttackRecord(res.steps_to_flip, res.pred_last))


class KLLoss(Method):
    """CE on x plus beta * KL(p(x) || p(x')) (TRADES-like), no label: tables show its name."""

    def __init__(self, eps=8 / 255, step_size=2 / 255, steps=10, beta=1.0):
        super().__init__(eps, step_size, steps)
        self.beta = float(beta)

    def loss(self, model, x, y):
        res = pgd(model, x, y, eps=self.eps, step_size=self.step_size, steps=self.steps,
                  objective="kl", start="gaussian")
        model.train()
        logits, logits_adv = model(x), model(res.x_last)
        ce, kl = F.cross_entropy(logits, y), self.beta * kl_logits(logits, logits_adv)
        return MethodOutput(ce + kl, float_parts(ce=ce, kl=kl), AttackRecord(res.steps_to_flip, res.pred_last))


class NeedsArgument(PlainCE):
    def __init__(self, gamma, eps=8 / 255, step_size=2 / 255, steps=10):
        super().__init__(eps, step_size, steps)


class NotAMethod:
    pass
'''


def write_package(site: Path) -> Path:
    """`extpkg` with its losses, and an installed-package record declaring `ext-ce = extpkg.losses:PlainCE`."""
    (site / "extpkg").mkdir(parents=True)
    (site / "extpkg" / "__init__.py").write_text("")
    (site / "extpkg" / "losses.py").write_text(LOSSES)
    info = site / "extpkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: extpkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[battui.methods]\next-ce = extpkg.losses:PlainCE\n")
    return site


@pytest.fixture
def site(tmp_path, monkeypatch) -> Path:
    """The package on this process's sys.path (importlib.metadata reads it from there too)."""
    path = write_package(tmp_path / "site")
    monkeypatch.syspath_prepend(str(path))
    yield path
    import sys

    for name in [m for m in sys.modules if m == "extpkg" or m.startswith("extpkg.")]:
        del sys.modules[name]
    from battui import methods

    methods._EXTERNAL.clear()  # resolved from this test's tmp_path only


def test_entry_points_and_module_names_resolve(site):
    assert available_methods() == (*METHODS, "ext-ce")
    assert method_class("ext-ce").__name__ == "PlainCE"
    assert method_source("ext-ce").record() == {"name": "ext-ce", "kind": "entry point",
                                                "target": "extpkg.losses:PlainCE", "distribution": "extpkg",
                                                "version": "0.1"}
    assert method_source("extpkg.losses:KLLoss").kind == "module"
    assert method_source("bat").describe() == "built-in"
    assert paper_label("ext-ce", {}) == "Plain-CE"
    assert paper_label("extpkg.losses:KLLoss", {"beta": 2}) == "extpkg.losses:KLLoss [beta=2]"
    for name in ("extpkg.losses:NotAMethod", "extpkg.losses:NeedsArgument", "extpkg.nope:X", "extpkg.losses:Nope",
                 "battui.methods.base:Method"):
        with pytest.raises(MethodError):
            method_class(name)


def test_contract_checks_pass_a_good_method_and_name_what_a_broken_one_breaks(site, one_thread):
    assert all(c.ok for c in check_method("extpkg.losses:KLLoss", beta=2.0))
    assert all(c.ok for c in check_method("ext-ce"))
    from extpkg.losses import PlainCE

    class Broken(PlainCE):  # leaves the model in eval mode and reports a part that is not the loss
        def loss(self, model, x, y):
            out = super().loss(model, x, y)
            model.eval()
            return type(out)(out.loss, {"ce": out.parts["ce"] + 1.0}, out.attack)

    failed = {c.name for c in check_method(Broken) if not c.ok}
    assert failed == {"the model is in train mode after loss", "parts are floats that add up to the loss"}
    with pytest.raises(AssertionError, match="train mode after loss.*add up to the loss"):
        assert_method_contract(Broken)
    with pytest.raises(MethodError, match="not a subclass"):
        check_method(dict)


def test_every_built_in_method_passes_the_contract_checks(one_thread):
    for name in METHODS:
        assert [c.name for c in check_method(name) if not c.ok] == [], name


def test_methods_command_lists_and_checks(site, capsys, monkeypatch, one_thread):
    from battui.cli.app import console

    monkeypatch.setattr(console, "width", 250)  # table cells on one line each
    broken = site / "broken-0.2.dist-info"  # an installed package whose entry point no longer imports
    broken.mkdir()
    (broken / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.2\n")
    (broken / "entry_points.txt").write_text("[battui.methods]\nbroken-loss = gone.module:Loss\n")
    code, out, _ = run_cli(capsys, "methods")
    flat = " ".join(out.split())
    assert code == 0 and "ext-ce" in out and "extpkg 0.1" in flat and "pgd-at" in out
    assert "broken-loss" in out and "No module named 'gone'" in flat  # listed, with why, not hiding the rest
    code, out, _ = run_cli(capsys, "methods", "extpkg.losses:KLLoss")
    assert code == 0 and "beta=1" in out and "module" in out
    code, out, _ = run_cli(capsys, "methods", "ext-ce", "--check")
    assert code == 0 and "ext-ce: 11/11 contract checks passed" in " ".join(out.split()) and "FAIL" not in out
    code, _, err = run_cli(capsys, "methods", "extpkg.losses:NotAMethod")
    assert code == 2 and "not a subclass of battui.methods.Method" in err


def test_external_methods_train_resume_and_fill_a_table(tmp_path, one_thread):
    site = write_package(tmp_path / "site")
    runs = tmp_path / "runs"
    common = ["--preset", "synthetic-tiny", "--headless", "--set", f"run.root={runs}"]
    results = run_many([
        ["train", *common, "--method", "ext-ce", "--epochs", "1", "--run-name", "ep"],
        ["train", *common, "--method", "extpkg.losses:KLLoss", "--epochs", "1", "--run-name", "mod"],
        ["train", *common, "--resume", runs / "ep", "--epochs", "2"],
        ["train", *common, "--resume", runs / "mod", "--epochs", "2"],
        ["table", "--preset", "synthetic-tiny", "--seeds", "1", "--methods",
         "ext-ce,extpkg.losses:KLLoss,extpkg.losses:KLLoss:beta=2", "--set", "train.epochs=2",
         "--set", f"run.root={runs}", "--limit", "40", "-f", "csv"],
    ], cwd=tmp_path, tmp=tmp_path, PYTHONPATH=f"{site}:{ROOT}")
    for r in results:
        assert r.code == 0, (r.argv, r.err[-2000:])
    for run, kind in (("ep", "entry point"), ("mod", "module")):
        ckpt = torch.load(runs / run / "checkpoints" / "last.pt", weights_only=True)
        assert ckpt["epoch"] == 2 and ckpt["method_source"]["kind"] == kind
    table = results[-1].out
    assert "Plain-CE" in table and "extpkg.losses:KLLoss [beta=2]" in table
    assert table.count("extpkg.losses:KLLoss") == 2
    trained = sorted(p.name for p in runs.iterdir() if p.name not in ("ep", "mod"))
    assert len(trained) == 1 and trained[0].startswith("synthetic-tiny-extpkg.losses.KLLoss-s0-")  # two reused

    # Without the package the checkpoint names the method and the package it came from, in one line.
    with pytest.raises(UserError, match=r"not available here \(entry point of extpkg 0\.1 \(extpkg\.losses:PlainCE"):
        load_checkpoint(runs / "ep" / "checkpoints" / "last.pt")


def test_bad_method_names_are_one_line_before_anything_is_written(tmp_path, one_thread):
    site = write_package(tmp_path / "site")
    runs = tmp_path / "runs"
    common = ["--preset", "synthetic-tiny", "--headless", "--set", f"run.root={runs}"]
    cases = {
        "extpkg.nope:X": "cannot be imported (ModuleNotFoundError",
        "extpkg.losses:NotAMethod": "not a subclass of battui.methods.Method",
        "extpkg.losses:NeedsArgument": "parameter 'gamma' has no default",
        "extpkg.losses:Missing": "has no attribute 'Missing'",
        "ext_ce": "did you mean 'ext-ce'",
    }
    argvs = [["train", *common, "--method", name] for name in cases]
    argvs.append(["train", *common, "--method", "extpkg.losses:KLLoss", "--set", "method.gamma=1"])
    argvs.append(["table", "--preset", "synthetic-tiny", "--methods", "pgd-at,extpkg.nope:X", "--set",
                  f"run.root={runs}"])
    argvs.append(["table", "--preset", "synthetic-tiny", "--methods", "extpkg.losses:KLLoss:gamma=1", "--set",
                  f"run.root={runs}"])
    results = run_many(argvs, cwd=tmp_path, tmp=tmp_path, PYTHONPATH=f"{site}:{ROOT}")
    needles = [*cases.values(), "unknown parameter 'gamma' for method extpkg.losses:KLLoss",
               "--methods: method 'extpkg.nope:X' cannot be imported", "has no parameter 'gamma'"]
    for r, needle in zip(results, needles, strict=True):
        assert needle in r.one_line_error(), (r.argv, r.err)
    assert not runs.exists()
