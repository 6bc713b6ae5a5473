"""Statistics of the reports (battui/report/stats.py): interval coverage on simulated outcomes, McNemar,
Holm and the seeds-needed power rule against hand computations, a checkpoint compared with itself,
the significance marks in every format, the per-image outcomes in the cache (an older cache is
re-evaluated), `battui eval/compare/table` with their default options, and the refusals.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/test_report_stats.py -q
"""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
import torch

from battui.engine.metrics import ClassCounter
from battui.report import stats
from battui.report.evaluation import evaluate_checkpoint
from battui.report.formats import Estimate, Section, to_csv, to_json, to_markdown
from battui.report.latex import to_latex
from battui.report.layouts import _p_text
from tests.support.checkpoints import make_checkpoint, tiny_config
from tests.support.cli import assert_one_line_error, run_cli


def record_of(label: np.ndarray, clean: np.ndarray, adv: np.ndarray, k: int, images: str = "same") -> dict:
    """An evaluation record of per-image outcomes, counted by the engine's ClassCounter."""
    y = torch.as_tensor(label)
    wrong = (y + 1) % k
    counter = ClassCounter(k, attack_steps=5)
    counter.update(y, torch.where(torch.as_tensor(adv) == 1, y, wrong), torch.zeros_like(y),
                   clean_pred=torch.where(torch.as_tensor(clean) == 1, y, wrong))
    result = counter.errors()
    result["outcomes"] = {"label": label.tolist(), "clean_correct": clean.tolist(), "adv_correct": adv.tolist(),
                          "steps": [0] * len(label)}
    return {"checkpoint": "sim.pt", "result": result, "images": images, "attack": {"name": "pgd"},
            "dataset": {"split_seed": 0}}


def simulate(rng, p_clean: list[float], p_adv: list[float], per_class: int) -> dict:
    k = len(p_clean)
    label = np.repeat(np.arange(k), per_class)
    clean = (rng.random(len(label)) < np.repeat(p_clean, per_class)).astype(int)
    adv = clean * (rng.random(len(label)) < np.repeat(p_adv, per_class)).astype(int)
    return record_of(label, clean, adv, k)


@pytest.fixture(autouse=True)
def _one_thread(one_thread) -> None:
    """Tiny convolutions on one thread (conftest.one_thread): two threads of a busy machine crawl."""


DRAWS = 300
TOLERANCE = 0.04  # |coverage - 0.95|: 3.3 binomial standard errors of 300 draws (0.0126) plus the methods' own
BOOT_DRAWS, BOOT_TOLERANCE = 200, 0.05  # each draw is 3 bootstraps of 2000 resamples: 3.2 SE of 200 draws (0.0154)


def test_wilson_interval_covers_a_class_error_about_95_percent() -> None:
    rng = np.random.default_rng(1)
    n, p = 45, 0.3  # one digits class of 45 test images
    hits = 0
    for _ in range(DRAWS):
        low, high = stats.wilson(int(rng.binomial(n, p)), n)
        hits += low <= 100 * p <= high
    assert abs(hits / DRAWS - 0.95) <= TOLERANCE, hits / DRAWS


def test_bootstrap_intervals_of_avg_and_worst_cover_about_95_percent() -> None:
    rng = np.random.default_rng(2)
    p_clean, p_adv = [0.9, 0.8, 0.85], [0.7, 0.3, 0.6]  # class 1 clearly the worst
    robust_err = [100 * (1 - c * a) for c, a in zip(p_clean, p_adv)]
    avg_hits = worst_hits = 0
    for _ in range(BOOT_DRAWS):
        iv = stats.eval_intervals(simulate(rng, p_clean, p_adv, per_class=60))
        avg_hits += iv["avg"]["robust"][0] <= sum(robust_err) / 3 <= iv["avg"]["robust"][1]
        worst_hits += iv["worst"]["robust"][0] <= max(robust_err) <= iv["worst"]["robust"][1]
    assert abs(avg_hits / BOOT_DRAWS - 0.95) <= BOOT_TOLERANCE, avg_hits / BOOT_DRAWS
    assert abs(worst_hits / BOOT_DRAWS - 0.95) <= BOOT_TOLERANCE, worst_hits / BOOT_DRAWS


def test_t_interval_over_seeds_covers_about_95_percent() -> None:
    rng = np.random.default_rng(3)
    hits = sum(lo <= 50.0 <= hi for lo, hi in (stats.seed_interval(list(rng.normal(50.0, 5.0, 3)))
                                                for _ in range(DRAWS)))
    assert abs(hits / DRAWS - 0.95) <= TOLERANCE


def test_mcnemar_holm_and_seeds_needed_against_hand_computations() -> None:
    # 2 images only A gets wrong, 8 only B: two-sided exact binomial, 2 * P(X <= 2 | 10, 1/2) = 2 * 56 / 1024
    a = np.array([1, 1] + [0] * 8 + [1] * 5 + [0] * 7)
    b = np.array([0, 0] + [1] * 8 + [1] * 5 + [0] * 7)
    assert stats.mcnemar(a, b) == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert stats.mcnemar(a, a) == 1.0
    # a bootstrap p counts (k + 1) / (B + 1): 3 of 9 resamples at or below 0 -> 2 * 4 / 10; none -> the floor
    assert stats.bootstrap_p(np.array([-1.0, 0.0, -2.0, 1, 2, 3, 4, 5, 6])) == pytest.approx(0.8)
    assert stats.bootstrap_p(np.arange(1.0, 2000.0)) == pytest.approx(2 / 2000)
    assert stats.bootstrap_p(np.zeros(7)) == 1.0
    # an exact p that underflowed to 0.0 is printed as a bound, never as "0"
    assert [_p_text(p) for p in (0.0, 3e-12, 0.0123)] == ["<1e-300", "3e-12", "0.012"]
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])  # 3p, max(2p, .03), max(1p, .06)
    # a paired t-test with effect size 0.5 (0.8) needs 34 (15) pairs for 80% power at 0.05 (Cohen; G*Power);
    # the difference of two methods varies by std * sqrt(2)
    assert stats.seeds_needed(std=2 / math.sqrt(2), delta=1.0) == 34
    assert stats.seeds_needed(std=1 / math.sqrt(2), delta=0.8) == 15


def test_paired_difference_against_direct_counts_and_with_itself() -> None:
    rng = np.random.default_rng(4)
    a = simulate(rng, [0.9, 0.8], [0.6, 0.5], per_class=40)
    b = simulate(rng, [0.9, 0.8], [0.4, 0.5], per_class=40)
    diff = stats.paired_difference(a, b)
    for c in range(2):
        expected = b["result"]["robust"][c] - a["result"]["robust"][c]
        assert diff["robust"]["classes"][c]["diff"] == pytest.approx(expected)
        assert diff["robust"]["classes"][c]["low"] <= expected <= diff["robust"]["classes"][c]["high"]
    worst = b["result"]["worst"]["robust"] - a["result"]["worst"]["robust"]
    assert diff["robust"]["worst"]["diff"] == pytest.approx(worst)
    same = stats.paired_difference(a, a)
    for kind in stats.KINDS:
        for t in [*same[kind]["classes"], same[kind]["avg"], same[kind]["worst"]]:
            assert (t["diff"], t["low"], t["high"], t["p"]) == (0.0, 0.0, 0.0, 1.0)
    # a row against itself over seeds: 0, [0, 0], p = 1
    for t in stats.seed_difference([a, b], [a, b]):
        assert (t["diff"], t["low"], t["high"], t["p"]) == (0.0, 0.0, 0.0, 1.0)


def test_significance_marks_in_markdown_latex_csv_and_json() -> None:
    section = Section("Difference to PGD-AT", ["Row", "Worst Rob."],
                      [["BAT", Estimate(-6.0, -9.5, -2.25, p=0.004, significant=True, signed=True)],
                       ["FRL", Estimate(1.0, -2.0, 4.0, p=0.6, significant=False, signed=True)]],
                      notes=["* significant at 0.05 after Holm correction"])
    md = to_markdown([section])
    assert "| BAT | -6.00 [-9.50, -2.25]\\* |" in md and "| FRL | +1.00 [-2.00, +4.00] |" in md
    tex = to_latex([section])
    assert "BAT & -6.00 [-9.50, -2.25]$^{*}$ \\\\" in tex and "FRL & +1.00 [-2.00, +4.00] \\\\" in tex
    assert "$^{*}$ significant at 0.05 after Holm correction" in tex  # the footnote
    rows = list(csv.reader(io.StringIO(to_csv([section]))))
    assert rows[0] == ["Difference to PGD-AT: Row", "Worst Rob.", "Worst Rob. low", "Worst Rob. high",
                       "Worst Rob. p", "Worst Rob. significant"]
    assert rows[1][1:] == ["-6.0000", "-9.5000", "-2.2500", "0.0040", "1"] and rows[2][-1] == "0"
    data = json.loads(to_json({"cell": section.rows[0][1]}))
    assert data["cell"] == {"value": -6.0, "low": -9.5, "high": -2.25, "p": 0.004, "significant": True}


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("pair")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # built before the function-scoped one_thread applies
    try:
        return {"a": make_checkpoint(root / "a.pt", tiny_config(), seed=0, train_steps=15),
                "b": make_checkpoint(root / "b.pt", tiny_config(("method.name=bat",)), seed=1),
                "seed1": make_checkpoint(root / "s1.pt", tiny_config(("train.seed=1",)), seed=0)}
    finally:
        torch.set_num_threads(threads)


def test_outcomes_in_the_cache_and_an_older_cache_is_reevaluated(pair, capsys) -> None:
    record = evaluate_checkpoint(pair["a"], limit=40)
    out = record["result"]["outcomes"]
    assert len(out["label"]) == record["result"]["n"] == 40
    counts = np.bincount(out["label"], minlength=10)
    assert counts.tolist() == record["result"]["counts"]
    clean, adv = np.asarray(out["clean_correct"]), np.asarray(out["adv_correct"])
    for c in range(10):
        mask = np.asarray(out["label"]) == c
        if mask.any():
            assert record["result"]["robust"][c] == pytest.approx(100 * (1 - clean[mask] * adv[mask]).mean())
    assert all(s == -1 for s, ok in zip(out["steps"], clean * adv) if ok)  # never flipped
    # a version-2 cache (no outcomes) is found, re-evaluated, and the report says so
    cache = next(pair["a"].parent.glob("a.pt.eval-*.json"))
    old = json.loads(cache.read_text())
    del old["result"]["outcomes"]
    cache.write_text(json.dumps({**old, "cache_version": 2}))
    code, text, err = run_cli(capsys, "eval", str(pair["a"]), "--limit", "40", "-f", "markdown")
    assert code == 0, err
    assert "re-evaluated: its cached evaluation (cache version 2) kept no per-image outcomes" in text
    assert json.loads(cache.read_text())["cache_version"] == 3
    code, text, _ = run_cli(capsys, "eval", str(pair["a"]), "--limit", "40", "-f", "markdown")
    assert "cached evaluation" in text and "re-evaluated" not in text


def test_eval_and_compare_with_their_default_options(pair, tmp_path, capsys) -> None:
    code, text, err = run_cli(capsys, "eval", str(pair["a"]))  # as README: the rich report
    assert code == 0, err
    assert "Wilson" in text and "stratified by class" in text and "2000 resamples, seed 0" in text
    code, text, err = run_cli(capsys, "compare", str(pair["a"]), str(pair["b"]))
    assert code == 0, err
    assert "Paired differences against A" in text and "McNemar" in text and "B − A [95%]" in text
    # a checkpoint compared with itself: every difference exactly 0, p = 1
    out = tmp_path / "self.json"
    code, _, err = run_cli(capsys, "compare", str(pair["a"]), str(pair["a"]), "-f", "json", "-o", str(out))
    assert code == 0, err
    tests = json.loads(out.read_text())["paired"][0]["tests"]
    assert len(tests) == 16  # 10 classes + the six Table 1 numbers
    for t in tests.values():
        assert (t["diff"], t["low"], t["high"], t["p"], t["p_holm"], t["significant"]) == (0, 0, 0, 1, 1, False)


def test_table_statistics_with_the_default_options(pair, monkeypatch, tmp_path, capsys) -> None:
    """`battui table` as README shows it (3 seeds, the first row the baseline); the runs are tiny
    checkpoints evaluated for real, handed to the table in place of training them."""
    import battui.report.sweep as sweep

    ckpts = {(m, s): make_checkpoint(tmp_path / f"{m}{s}.pt", tiny_config((f"train.seed={s}", f"method.name={m}")),
                                     seed=s, train_steps=10 if m == "pgd-at" else 0)
             for m in ("pgd-at", "bat") for s in range(3)}

    def fake_sweep(plan, **kw):
        return [{"row": row, "runs": [], "records": [evaluate_checkpoint(ckpts[row.method, s], limit=40)
                                                     for s in range(plan.seeds)]} for row in plan.rows]

    monkeypatch.setattr(sweep, "run_sweep", fake_sweep)
    out = tmp_path / "t.json"
    code, md, err = run_cli(capsys, "table", "--preset", "synthetic-tiny", "--methods", "pgd-at,bat", "-f", "markdown")
    assert code == 0, err
    assert "### 95% interval of the mean over 3 seeds (t)" in md and "### Difference to PGD-AT, paired by seed" in md
    assert "seeds needed to detect a worst-class robust error difference with 80% power" in md
    code, _, err = run_cli(capsys, "table", "--preset", "synthetic-tiny", "--methods", "pgd-at,bat", "--baseline",
                           "bat", "-f", "json", "-o", str(out))
    assert code == 0, err
    st = json.loads(out.read_text())["statistics"]
    assert st["baseline"] == "BAT" and [r["row"] for r in st["vs_baseline"]] == ["PGD-AT"]
    worst = st["vs_baseline"][0]["worst_robust"]
    per_seed = [[evaluate_checkpoint(ckpts[m, s], limit=40)["result"]["worst"]["robust"] for s in range(3)]
                for m in ("pgd-at", "bat")]
    assert worst["diff"] == pytest.approx(np.mean(per_seed[0]) - np.mean(per_seed[1]))
    assert worst["p"] == pytest.approx(stats.paired_t(per_seed[0], per_seed[1]))
    assert worst["significant"] == (worst["p_holm"] < 0.05)
    assert set(st["seeds_needed"]) == {"worst_robust_std", "df", "2", "5"} and st["seeds_needed"]["df"] == 4


def test_refusals_are_one_line_and_write_nothing(pair, tmp_path, capsys) -> None:
    out = tmp_path / "r.md"
    code, _, err = run_cli(capsys, "table", "--preset", "synthetic-tiny", "--methods", "pgd-at,bat", "--baseline",
                           "trades", "-o", str(out))
    assert_one_line_error(code, err, "--baseline 'trades' names no row", "PGD-AT, BAT")
    code, _, err = run_cli(capsys, "table", "--preset", "synthetic-tiny", "--seeds", "1", "--baseline", "PGD-AT",
                           "-o", str(out))
    assert_one_line_error(code, err, "--baseline needs --seeds 2 or more", "got --seeds 1")
    code, _, err = run_cli(capsys, "compare", str(pair["a"]), str(pair["seed1"]), "-o", str(out))
    assert_one_line_error(code, err, "cannot pair", "different test images", "--unpaired")
    assert not out.exists() and not list(pair["seed1"].parent.glob("s1.pt.eval-*"))
    code, text, err = run_cli(capsys, "compare", str(pair["a"]), str(pair["seed1"]), "--unpaired", "--limit", "20")
    assert code == 0, err
    assert "Paired differences" not in text and "different seeds" in text


def test_table_rows_of_other_test_images_are_not_paired_and_say_why() -> None:
    from battui.report.layouts import seed_sections

    rng = np.random.default_rng(5)
    base = [simulate(rng, [0.9, 0.8], [0.6, 0.5], per_class=20) for _ in range(2)]
    other = [{**simulate(rng, [0.9, 0.8], [0.6, 0.5], per_class=20), "images": "elsewhere"} for _ in range(2)]
    same = [simulate(rng, [0.9, 0.8], [0.3, 0.5], per_class=20) for _ in range(2)]
    sections, data = seed_sections([{"records": base}, {"records": other}, {"records": same}], ["A", "B", "C"], 0)
    assert [r["row"] for r in data["vs_baseline"]] == ["C"]
    assert any(n.startswith("B: not compared (cannot pair") and "different test images" in n
               for n in sections[-1].notes)
