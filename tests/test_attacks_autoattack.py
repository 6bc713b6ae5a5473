"""`--attack autoattack` is the standard AutoAttack of the authors' package (pyautoattack), with its
per-attack breakdown, progress per attack, and a refusal for datasets it cannot attack."""

from __future__ import annotations

import io
import json
import logging
import re

import pyautoattack
import pytest
from pyautoattack import AutoAttack
from rich.console import Console

from battui.attacks.autoattack import ATTACKS, LABELS, ReducedBudget
from battui.config import EvalAttack
from battui.data import Batches, build_datasets
from battui.engine.checkpoint import model_from_checkpoint
from battui.engine.evaluate import evaluate
from battui.report.eval_progress import EvalProgress
from tests.support.checkpoints import make_checkpoint, tiny_config
from tests.support.cli import assert_one_line_error, run_cli


def wrong_count(result: dict, kind: str) -> int:
    return round(sum(e * n / 100.0 for e, n in zip(result[kind], result["counts"])))


def assert_breakdown_consistent(result: dict) -> list[int]:
    """Present, in the authors' order, never rising, and agreeing with the per-class counts."""
    aa, n = result["autoattack"], result["n"]
    assert aa["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"] and aa["n"] == n
    chain = [aa["clean"], *(aa["robust_after"][a] for a in aa["attacks"])]
    assert all(later <= earlier for earlier, later in zip(chain, chain[1:])), chain
    assert aa["clean"] == n - wrong_count(result, "standard")
    assert chain[-1] == n - wrong_count(result, "robust")
    return chain


def test_autoattack_is_pyautoattack_standard_and_at_least_as_strong_as_pgd20(small_model, tmp_path, capsys,
                                                                             monkeypatch) -> None:
    seen = []
    run = AutoAttack.run_standard_evaluation

    def spy(self, x, y, **kw):
        seen.append({"version": self.version, "attacks": list(self.attacks_to_run), "eps": self.epsilon,
                     "norm": self.norm, "apgd": (self.apgd.n_iter, self.apgd.n_restarts),
                     "apgd_t": (self.apgd_targeted.n_iter, self.apgd_targeted.n_target_classes),
                     "fab_targets": self.fab.n_target_classes, "square": self.square.n_queries, "n": len(x)})
        return run(self, x, y, **kw)

    monkeypatch.setattr(AutoAttack, "run_standard_evaluation", spy)
    # At eps 0.12 APGD-CE breaks every image of these 32, so the package skips the other three attacks and
    # the test stays cheap (the breakdown test below makes all four run, on a reduced budget).
    eps, records = 0.12, {}
    for attack in ("pgd", "autoattack"):
        out = tmp_path / f"{attack}.json"
        code, _, err = run_cli(capsys, "eval", str(small_model), "--attack", attack, "--eps", str(eps),
                               "--step-size", str(eps / 4), "--steps", "20", "--limit", "32", "-f", "json",
                               "-o", str(out))
        assert code == 0, err
        records[attack] = json.loads(out.read_text())
        assert re.search(r"clean accuracy [\d.]+% \(\d+/32 test images\)", err), err
    assert "APGD-CE on " in err and "APGD-CE done (" in err  # plain log lines (stderr is not a terminal)
    assert seen == [{"version": "standard", "attacks": ["apgd-ce", "apgd-t", "fab-t", "square"], "eps": eps,
                     "norm": "Linf", "apgd": (100, 1), "apgd_t": (100, 9), "fab_targets": 9, "square": 5000,
                     "n": 32}]
    aa, pgd = records["autoattack"], records["pgd"]
    assert aa["attack"]["implementation"] == f"pyautoattack {pyautoattack.__version__}"
    assert aa["result"]["autoattack"]["version"] == "standard"
    assert wrong_count(aa["result"], "robust") >= wrong_count(pgd["result"], "robust") > 16
    assert aa["result"]["standard"] == pgd["result"]["standard"]  # the same images, the same clean pass
    chain = assert_breakdown_consistent(aa["result"])
    assert chain[-1] == 0, chain
    # an attack is skipped exactly when the ones before it left nothing robust
    assert aa["result"]["autoattack"]["skipped"] == [a for a, before in zip(ATTACKS, chain) if before == 0]

    code, md, err = run_cli(capsys, "eval", str(small_model), "--attack", "autoattack", "--eps", str(eps),
                            "--step-size", str(eps / 4), "--steps", "20", "--limit", "32", "-f", "markdown")
    assert code == 0 and len(seen) == 1, err  # served from the cache
    assert "AutoAttack per attack — robust accuracy (%)" in md and "after Square" in md
    assert f"pyautoattack {pyautoattack.__version__}, version=\"standard\"" in md and "fp32" in md


def test_breakdown_matches_the_packages_own_report_with_every_attack_running(small_model, one_thread) -> None:
    """A reduced budget (the tests-only path) so all four attacks run on survivors in seconds."""
    model, cfg, _ = model_from_checkpoint(small_model)
    test = build_datasets(cfg.data, seed=cfg.train.seed).test
    reported: dict[str, float] = {}

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            m = re.match(r"robust accuracy after (\S+): ([\d.]+)%", record.getMessage())
            if m:
                reported[m.group(1)] = float(m.group(2))

    handler = Collect()
    logging.getLogger("auto-attack").addHandler(handler)
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    try:
        with EvalProgress(console, "m.pt") as shown:
            result = evaluate(model, Batches(test, 16), num_classes=10, limit=32,
                              spec=EvalAttack(attack="autoattack", eps=0.1), progress=shown.stage,
                              on_clean=shown.clean,
                              reduced_for_tests=ReducedBudget(apgd_iter=10, fab_iter=3, square_queries=50))
            bars = {t.description.strip(): (t.completed, t.total) for t in shown.bars.tasks}
    finally:
        logging.getLogger("auto-attack").removeHandler(handler)
    chain = assert_breakdown_consistent(result)
    aa = result["autoattack"]
    assert aa["version"] == "reduced budget (tests only)" and aa["skipped"] == []
    assert chain[-1] > 0 and chain[1] < chain[0], chain  # survivors reach Square
    assert set(reported) == {LABELS[a].upper() for a in ATTACKS}
    for attack, left in aa["robust_after"].items():
        assert reported[LABELS[attack].upper()] == pytest.approx(100.0 * left / 32, abs=0.006)
    # one bar per attack, each over the images still robust when it started, run to its end
    starts = dict(zip(ATTACKS, chain[:-1]))
    assert bars == {LABELS[a]: (starts[a], starts[a]) for a in ATTACKS}


def test_standard_autoattack_needs_ten_classes(tmp_path, capsys) -> None:
    three = make_checkpoint(tmp_path / "three.pt", tiny_config(("data.classes=[0,1,2]",)))
    code, _, err = run_cli(capsys, "eval", str(three), "--attack", "autoattack")
    assert_one_line_error(code, err, "needs at least 10 classes", "this dataset has 3", "--attack pgd")
    runs = tmp_path / "runs"
    code, _, err = run_cli(capsys, "train", "--preset", "synthetic-tiny", "--headless", "--set", f"run.root={runs}",
                           "--set", "data.classes=[0,1,2]", "--set", "eval.attack=autoattack")
    assert_one_line_error(code, err, "needs at least 10 classes")
    assert not runs.exists() or not any(runs.iterdir())
