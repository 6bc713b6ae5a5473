"""Reports: metric definitions, compare on synthetic-tiny, caching, refusals of bad checkpoints."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from battui.engine.metrics import ClassCounter, kl_to_uniform, mean_steps, target_distribution
from battui.methods import paper_label
from battui.report.formats import Bar, Section, lowest_bold, to_csv, to_markdown
from battui.report.layouts import mean_std, table1_values
from battui.report.runs import ablation_rows, parse_methods
from tests.support.checkpoints import make_checkpoint, tiny_config
from tests.support.cli import assert_one_line_error, run_cli


def test_metric_definitions_on_hand_made_predictions() -> None:
    # 3 classes; per sample: label, clean prediction, adversarial prediction, steps to flip
    y = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    clean = torch.tensor([0, 0, 1, 0, 1, 2, 2, 2, 2, 0])
    adv = torch.tensor([0, 2, 1, 1, 1, 2, 0, 2, 0, 0])
    steps = torch.tensor([-1, 3, 0, 1, -1, 0, 2, -1, 4, 0])
    counter = ClassCounter(3, attack_steps=5)
    counter.update(y[:5], adv[:5], steps[:5], clean_pred=clean[:5])  # two batches
    counter.update(y[5:], adv[5:], steps[5:], clean_pred=clean[5:])
    res = counter.errors()
    # class 0: 4 samples, clean wrong 1 (idx 2), clean right & adv wrong 2 (idx 1, 3)
    # class 1: 2 samples, clean wrong 1 (idx 5), boundary 0
    # class 2: 4 samples, clean wrong 1 (idx 9), boundary 2 (idx 6, 8)
    assert res["standard"] == pytest.approx([25.0, 50.0, 25.0])
    assert res["boundary"] == pytest.approx([50.0, 0.0, 50.0])
    assert res["robust"] == pytest.approx([75.0, 50.0, 75.0])
    for s, b, r in zip(res["standard"], res["boundary"], res["robust"]):
        assert r == pytest.approx(s + b)
    assert res["avg"]["robust"] == pytest.approx(200.0 / 3)
    assert res["worst"] == pytest.approx({"standard": 50.0, "boundary": 50.0, "robust": 75.0})
    assert table1_values(res) == pytest.approx([100 / 3, 50.0, 100 / 3, 50.0, 200 / 3, 75.0])
    # source-class: mean steps over flipped samples; class 0 flipped at 3, 0, 1
    assert mean_steps(res["step_hist"])[0] == pytest.approx(4 / 3)
    # target-class: off-diagonal adversarial predictions 2, 1, 1 | 2 | 0, 0, 0 -> columns [3, 2, 2] of 7
    assert target_distribution(res["adv_confusion"]) == pytest.approx([3 / 7, 2 / 7, 2 / 7])
    assert kl_to_uniform([1 / 3] * 3) == pytest.approx(0.0)


def test_layout_helpers() -> None:
    rows = [["a", 3.0, Bar(40.0)], ["b", 1.0, Bar(10.0, delta=-30.0)], ["c", 1.0, None]]
    assert lowest_bold(rows, [1, 2]) == {(1, 1), (2, 1), (1, 2)}
    section = Section("T", ["Method", "x", "bar"], rows, bold={(1, 1)})
    md = to_markdown([section])
    assert "| b | **1.00** |" in md and "10.0 (-30.0)" in md
    parsed = list(csv.reader(io.StringIO(to_csv([section]))))
    assert parsed[0] == ["T: Method", "x", "bar", "bar delta"] and parsed[2][1] == "1.0000"
    assert parsed[1][2:] == ["40.0000", ""] and parsed[2][2:] == ["10.0000", "-30.0000"] and parsed[3][2:] == ["", ""]
    ms = mean_std([1.0, 2.0, 3.0])
    assert (ms.mean, ms.std, str(ms)) == (2.0, 1.0, "2.00 ± 1.00")


def test_method_rows_and_paper_labels() -> None:
    rows = parse_methods("pgd-at,trades:beta=1,trades:beta=6,frl:tau=0.07,bat:target_on=[clean,adv]")
    assert [r.label for r in rows] == ["PGD-AT", "TRADES(1/λ=1)", "TRADES(1/λ=6)", "FRL(Reweight+Remargin, 0.07)",
                                       "BAT"]
    assert rows[1].params == {"beta": 1} and rows[4].params == {"target_on": ["clean", "adv"]}
    assert paper_label("bat", {"alpha": 2.0}) == "BAT [alpha=2.0]"
    table2 = ablation_rows("bat")
    assert [r.label for r in table2] == [f"No.{i}" for i in range(1, 7)]
    assert table2[0].params["target_on"] == [] and table2[5].params["source"] == "fixed"


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpts")
    cfg = tiny_config()
    out = {
        "a": make_checkpoint(root / "a" / "checkpoints" / "best.pt", cfg, seed=0, train_steps=30),
        "b": make_checkpoint(root / "b.pt", tiny_config(("method.name=bat",)), seed=1, train_steps=8),
        "subset": make_checkpoint(root / "subset.pt", tiny_config(("data.classes=[0,1,2]",)), seed=0),
    }
    return out


def test_compare_two_checkpoints(ckpts, tmp_path, capsys) -> None:
    run_a = ckpts["a"].parent.parent  # a run folder -> its checkpoints/best.pt
    out = tmp_path / "cmp.json"
    code, _, err = run_cli(capsys, "compare", str(run_a), str(ckpts["b"]), "--format", "json", "-o", str(out))
    assert code == 0, err
    data = json.loads(out.read_text())
    a, b = data["checkpoints"]
    assert a["checkpoint"].endswith("best.pt") and a["label"] == "pgd-at" and b["label"] == "bat"
    assert a["attack"] == b["attack"] and a["attack"]["name"] == "pgd" and a["attack"]["steps"] == 5
    for rec in (a, b):
        res = rec["result"]
        assert len(res["robust"]) == 10 and sum(res["counts"]) == res["n"] == 100
        for s, bd, r in zip(res["standard"], res["boundary"], res["robust"]):
            assert r == pytest.approx(s + bd)
        assert len(rec["mean_steps"]) == 10 and "kl_to_uniform" in rec["target"]
        assert rec["cached"] is False
    assert a["result"]["avg"]["standard"] < b["result"]["avg"]["standard"]  # a trained longer
    assert len(list(ckpts["a"].parent.glob("best.pt.eval-*.json"))) == 1

    # Re-comparing is served from the cache; Markdown has Table 1 with the best in bold, and the bars.
    code, md, err = run_cli(capsys, "compare", str(ckpts["a"]), str(ckpts["b"]), "--format", "markdown")
    assert code == 0, err
    assert "Table 1 — side by side" in md and "Avg. Rob." in md and "**" in md
    assert "Per-class robust error (%), delta against A" in md and "█" in md
    code, _, _ = run_cli(capsys, "compare", str(ckpts["a"]), str(ckpts["b"]), "-f", "json", "-o", str(out))
    assert [r["cached"] for r in json.loads(out.read_text())["checkpoints"]] == [True, True]

    # Another attack setting is another cache entry.
    code, csv_text, err = run_cli(capsys, "eval", str(ckpts["a"]), "--steps", "3", "--limit", "40", "-f", "csv")
    assert code == 0, err
    rows = list(csv.reader(io.StringIO(csv_text)))
    assert rows[0][0] == "Table 1: Method" and rows[1][0] == "pgd-at"
    assert len(list(ckpts["a"].parent.glob("best.pt.eval-*.json"))) == 2


def test_eval_rich_report(ckpts, capsys) -> None:
    code, out, err = run_cli(capsys, "eval", str(ckpts["a"]), "--limit", "40")
    assert code == 0, err
    assert "Worst Rob." in out and "Per class" in out and "KL to uniform" in out and "class9" in out


def test_mismatched_checkpoints_refused(ckpts, tmp_path, capsys) -> None:
    code, _, err = run_cli(capsys, "compare", str(ckpts["a"]), str(ckpts["subset"]))
    assert_one_line_error(code, err, "different datasets or class lists")
    digits = make_checkpoint(tmp_path / "digits.pt", tiny_config(("data.name=digits", "data.channels=1")))
    code, _, err = run_cli(capsys, "compare", str(ckpts["b"]), str(digits))
    assert_one_line_error(code, err, "cannot compare", "digits")
    code, _, err = run_cli(capsys, "compare", str(ckpts["a"]))
    assert_one_line_error(code, err, "at least two")


def test_plain_torch_save_of_other_architecture_refused(ckpts, tmp_path, capsys) -> None:
    other = nn.Sequential(nn.Flatten(), nn.Linear(192, 10))
    state_path = tmp_path / "state.pt"
    torch.save(other.state_dict(), state_path)
    code, _, err = run_cli(capsys, "eval", str(state_path))
    assert_one_line_error(code, err, "not a battui checkpoint")
    module_path = tmp_path / "module.pt"
    torch.save(other, module_path)  # a pickled module object: needs code execution to load
    code, _, err = run_cli(capsys, "eval", str(module_path))
    assert_one_line_error(code, err, "refused to unpickle")
    # a battui checkpoint whose weights belong to another architecture
    wrong = tmp_path / "wrong.pt"
    ckpt = torch.load(ckpts["b"], weights_only=True)
    ckpt["model"] = other.state_dict()
    torch.save(ckpt, wrong)
    code, _, err = run_cli(capsys, "compare", str(ckpts["b"]), str(wrong))
    assert_one_line_error(code, err, "does not fit the configured model")
    code, _, err = run_cli(capsys, "eval", str(tmp_path / "missing.pt"))
    assert_one_line_error(code, err, "does not exist")


class _Payload:
    """Unpickling this opens (creates) a file: what a malicious checkpoint would do."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_malicious_pickle_refused_without_running_it(tmp_path, capsys) -> None:
    target = tmp_path / "pwned.txt"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "battui", "model": {}, "config": {}, "x": _Payload(str(target))}, evil)
    assert not target.exists()
    code, _, err = run_cli(capsys, "eval", str(evil))
    assert_one_line_error(code, err, "refused to unpickle")
    code, _, err = run_cli(capsys, "compare", str(evil), str(evil))
    assert_one_line_error(code, err, "refused to unpickle")
    assert not target.exists()


def test_bad_options(ckpts, capsys) -> None:
    code, _, err = run_cli(capsys, "eval", str(ckpts["a"]), "--attack", "fgsm")
    assert_one_line_error(code, err, "unknown attack")
    code, _, err = run_cli(capsys, "eval", str(ckpts["a"]), "--format", "xml")
    assert_one_line_error(code, err, "unknown format")
    code, _, err = run_cli(capsys, "table", "--methods", "pgd-at,nope")
    assert_one_line_error(code, err, "unknown method 'nope'")
    code, _, err = run_cli(capsys, "table", "--methods", "trades:gamma=2")
    assert_one_line_error(code, err, "has no parameter 'gamma'")
