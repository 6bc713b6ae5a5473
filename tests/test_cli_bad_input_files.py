"""Bad files never crash and never get destroyed (issue 13): checkpoints, report outputs, report contents.

    .venv/bin/pytest tests/test_cli_bad_input_files.py -q
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import zipfile
from pathlib import Path

import pytest
import torch

from battui.engine.checkpoint import load_checkpoint
from battui.engine.metrics import ClassCounter
from battui.errors import UserError
from battui.report.evaluation import summarize
from battui.report.formats import to_csv, to_markdown
from battui.report.layouts import compare_sections, eval_sections
from tests.support.checkpoints import make_checkpoint, tiny_config
from tests.support.cli import run_many


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """An untrained battui checkpoint of synthetic-tiny's cnn, inside a run-like folder."""
    root = tmp_path_factory.mktemp("ckpt")
    return make_checkpoint(root / "run" / "checkpoints" / "best.pt", tiny_config(), seed=0)


def _legacy_bytes(ckpt: Path) -> bytes:
    buf = io.BytesIO()
    torch.save(torch.load(ckpt, weights_only=True), buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def _zip_of(names: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in names.items():
            archive.writestr(name, data)
    return buf.getvalue()


def crafted_files(ckpt: Path) -> dict[str, bytes | object]:
    """Named files that are not usable battui checkpoints (bytes, or an object to torch.save)."""
    weights = torch.load(ckpt, weights_only=True)
    return {
        "empty.pt": b"",
        "hello.pt": b"hello world\n",
        "paren.pt": b"(not a pickle, just text)\n",
        "h.pt": b"h",
        "json.pt": json.dumps({"format": "battui", "model": {}}).encode(),
        "yaml.pt": b"data:\n  name: digits\nmodel:\n  name: cnn\n",
        "ansi.pt": b"\x1b[31mred\x1b[0m text\n",
        "zip-header.pt": b"PK\x03\x04" + bytes(60),
        "zip-other.pt": _zip_of({"readme.txt": b"not a checkpoint"}),
        "png.pt": b"\x89PNG\r\n\x1a\n" + bytes(40),
        "pickle-header.pt": b"\x80\x02" + bytes(range(200)),
        "tensor.pt": torch.ones(3),
        "list.pt": [1, 2, 3],
        "state-dict.pt": dict(weights["model"]),
        "foreign-trades.pt": {"state_dict": dict(weights["model"]), "epoch": 76},
        "no-config.pt": {"format": "battui", "model": dict(weights["model"])},
        "bad-config.pt": {**weights, "config": {"data": "oops"}},
        "nonsense-config.pt": {**weights, "config": {**weights["config"], "attack": {"eps": -1}}},
        "no-weights.pt": {**weights, "model": {"conv": "not a tensor"}},
        "bad-info.pt": {**weights, "data_info": {"num_classes": "ten"}},
        "bad-epoch.pt": {**weights, "epoch": "last"},
        "truncated-zip.pt": ckpt.read_bytes()[: ckpt.stat().st_size // 2],
        "truncated-legacy.pt": _legacy_bytes(ckpt)[:3000],
    }


def _write(path: Path, content) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    return path


def test_crafted_files_refused_in_one_accurate_line(ckpt, tmp_path):
    files = {name: _write(tmp_path / name, content) for name, content in crafted_files(ckpt).items()}
    needles = {
        "empty.pt": "empty (0 bytes)", "hello.pt": "is a text file", "paren.pt": "is a text file", "h.pt": "text file",
        "json.pt": "is a JSON file", "yaml.pt": "YAML", "ansi.pt": "text file", "zip-header.pt": "damaged or truncated",
        "zip-other.pt": "zip archive of 1 file(s), not a PyTorch checkpoint", "png.pt": "PNG image",
        "pickle-header.pt": "damaged legacy-format", "tensor.pt": "holds a Tensor", "list.pt": "holds a list",
        "state-dict.pt": "plain state dict", "foreign-trades.pt": "weights under 'state_dict'",
        "no-config.pt": "no usable config", "bad-config.pt": "config is unusable",
        "nonsense-config.pt": "attack.eps must be > 0", "no-weights.pt": "no model weights",
        "bad-info.pt": "data_info.num_classes", "bad-epoch.pt": "its epoch is 'last'",
        "truncated-zip.pt": "damaged or truncated zip", "truncated-legacy.pt": "truncated",
    }
    assert set(needles) == set(files)
    for name in ("state-dict.pt", "foreign-trades.pt"):
        needles[name] += "|--model NAME --dataset NAME"
    odd_name = tmp_path / "evil\x1b[31m\nname.pt"  # shown escaped: no raw escape or newline reaches the terminal
    odd_name.write_bytes(b"hello")
    results = run_many([*(["eval", path] for path in files.values()), ["eval", odd_name]], cwd=tmp_path, tmp=tmp_path)
    for (name, path), res in zip(files.items(), results):
        line = res.one_line_error()
        for needle in needles[name].split("|"):
            assert needle in line, (name, line)
        assert str(path) in line and line.rstrip().endswith((")", "NAME", "last.pt)", "state_dict(), path)")), line
    assert "evil\\x1b[31m\\nname.pt is a text file" in results[-1].one_line_error()


def _fuzz_corpus(ckpt: Path, n_random: int = 120, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    good, legacy = ckpt.read_bytes(), _legacy_bytes(ckpt)
    corpus = [good[:cut] for cut in sorted(rng.sample(range(1, len(good)), 100))]
    corpus += [legacy[:cut] for cut in sorted(rng.sample(range(1, len(legacy)), 60))]
    for _ in range(40):  # a few bytes flipped: damaged archives (or, in tensor data, readable wrong weights)
        data = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        corpus.append(bytes(data))
    heads = [b"", b"PK\x03\x04", b"\x80\x02", b"\x80\x04", b"{", b"(", b"h", b"\x1b["]
    for i in range(n_random):
        corpus.append(heads[i % len(heads)] + rng.randbytes(rng.randint(0, 3000)))
    texts = ["hello", "()", "h" * 500, "- a\n- b\n", '{"config": {}}', "ümlaut ✓ text", "\x00\x01\x02"]
    corpus += [t.encode() for t in texts]
    return corpus


def test_fuzz_checkpoint_loading_never_raises_anything_but_one_line_user_errors(ckpt, tmp_path):
    corpus = _fuzz_corpus(ckpt)
    assert len(corpus) >= 300
    outcomes = {"loaded": 0, "refused": 0}
    for i, data in enumerate(corpus):
        path = tmp_path / f"f{i}.pt"
        path.write_bytes(data)
        try:
            load_checkpoint(path)
            outcomes["loaded"] += 1  # only byte flips inside tensor data may still load
        except UserError as exc:
            text = str(exc)
            assert "\n" not in text and str(path) in text, text
            assert len(text) < 400 and not text.endswith(("…", "...")), text
            outcomes["refused"] += 1
        path.unlink()
    assert outcomes["refused"] >= len(corpus) - 40, outcomes
    # a sample of the same files through the command line: no traceback, one line, exit code 2
    sample = [tmp_path / f"cli{i}.pt" for i in range(0, len(corpus), 15)]
    for path, data in zip(sample, corpus[::15]):
        path.write_bytes(data)
    for res in run_many([["eval", path] for path in sample], cwd=tmp_path, tmp=tmp_path):
        if res.code != 0:
            res.one_line_error()


def test_report_outputs_never_destroy_files(ckpt, tmp_path):
    run = ckpt.parent.parent
    last = ckpt.parent / "last.pt"
    last.write_bytes(ckpt.read_bytes())
    notes = tmp_path / "notes.md"
    notes.write_text("# my notes\nnot a battui report\n")
    (tmp_path / "reports").mkdir()
    protected = [ckpt, last, notes]
    before = [md5(p) for p in protected]
    quick = ["--steps", "1", "--limit", "8"]
    cases = [
        (["eval", run, *quick, "-o", ckpt], "is a checkpoint being read"),
        (["eval", ckpt, *quick, "-o", ckpt, "--force"], "is a checkpoint being read"),
        (["compare", ckpt, last, *quick, "-o", last], "is a checkpoint being read"),
        (["eval", ckpt, *quick, "-f", "markdown", "-o", notes], "not a report battui wrote (it is a text file"),
        (["eval", run, *quick, "-o", ckpt.parent / "x.md", "-f", "csv"], "-f csv does not match"),
        (["eval", ckpt, *quick, "-f", "rich", "-o", tmp_path / "missing" / "r.txt"], "does not exist"),
        (["eval", ckpt, *quick, "-f", "rich", "-o", tmp_path / "reports"], "is a folder"),
        (["compare", ckpt, last, *quick, "-o", tmp_path / "reports"], "is a folder"),
        (["eval", ckpt, "--steps", "1000000000"], "--steps must be between 1 and 1000"),
        (["eval", ckpt, "--restarts", "1000000"], "--restarts must be between 1 and 100"),
        (["eval", ckpt, "--seed", "-1"], "--seed must be between 0 and"),
    ]
    results = run_many([argv for argv, _ in cases], cwd=tmp_path, tmp=tmp_path)
    for (argv, needle), res in zip(cases, results):
        assert needle in res.one_line_error(), (argv, res.err)
    assert [md5(p) for p in protected] == before
    assert not list((tmp_path / "reports").iterdir())

    # Written: a new file, the same file again (battui's own report), and notes.md only with --force.
    out, text = tmp_path / "reports" / "e.json", tmp_path / "reports" / "e.txt"
    ok = run_many([["eval", ckpt, *quick, "-o", out], ["eval", ckpt, *quick, "-o", out],
                   ["eval", ckpt, *quick, "-f", "markdown", "-o", notes, "--force"],
                   ["compare", ckpt, last, *quick, "-o", text], ["compare", ckpt, last, *quick, "-o", text]],
                  cwd=tmp_path, tmp=tmp_path)
    assert [r.code for r in ok] == [0] * 5, [r.err for r in ok]
    assert "wrote the rich report to" in ok[4].err and "Table 1 — side by side" in text.read_text()
    assert f"wrote the json report to {out}" in ok[0].err
    assert json.loads(out.read_text())["written_by"] == "battui"
    assert notes.read_text().startswith("### Table 1")
    assert [md5(p) for p in protected[:2]] == before[:2]


def fake_record(attack: str = "pgd", limit: int = 3) -> dict:
    """An evaluation record of 4 classes where class 2 and 3 got no images (as with --limit)."""
    counter = ClassCounter(4, attack_steps=5)
    y = torch.tensor([0, 0, 1])
    counter.update(y, adv_pred=torch.tensor([1, 0, 0]), steps_to_flip=torch.tensor([2, -1, 0]),
                   clean_pred=torch.tensor([0, 0, 1]))
    result = counter.errors()
    return {"label": "pgd-at", "checkpoint": "runs/x/checkpoints/best.pt", "epoch": 1, "limit": limit,
            "dataset": {"name": "synthetic", "classes": ["a", "b", "c", "d"], "split_seed": 0},
            "attack": {"name": attack, "eps": 0.1, "step_size": 0.025, "steps": 5, "restarts": 1, "seed": 0},
            "result": result, **summarize(result), "cached": False, "seconds": 0.1}


def test_classes_without_images_show_a_dash_and_avg_is_over_classes_with_images():
    record = fake_record()
    rows = list(csv.reader(io.StringIO(to_csv(eval_sections(record)))))
    per_class = rows[rows.index([]) + 2:]
    by_name = {row[0]: row for row in per_class}
    assert by_name["a"][1:5] == ["2", "0.0000", "50.0000", "50.0000"]  # one of two flipped by the attack
    assert by_name["b"][1:5] == ["1", "0.0000", "100.0000", "100.0000"]
    for name in ("c", "d"):  # no images: empty cells, never 0.00
        assert by_name[name][1] == "0" and by_name[name][2:7] == ["", "", "", "", ""], by_name[name]
    assert float(by_name["Avg."][4]) == pytest.approx((50.0 + 100.0) / 2) and by_name["Avg."][1] == ""
    markdown = to_markdown(eval_sections(record))
    assert "| c | 0 | – | – | – | – | – |" in markdown
    assert "over the 2 classes with evaluated images (3 images); 2 class(es) had none" in markdown


def test_autoattack_rows_show_no_steps_to_flip():
    pgd, aa = fake_record("pgd"), fake_record("autoattack")
    steps_col = lambda record: [row[5] for row in eval_sections(record)[1].rows[:4]]  # noqa: E731
    assert steps_col(pgd)[:2] == [2.0, 0.0] and steps_col(aa) == [None] * 4
    assert "AutoAttack reports no per-step record" in to_markdown(eval_sections(aa))
    fair = compare_sections([pgd, aa])[-1]
    assert [row[2] for row in fair.rows[:4]] == [None] * 4 and fair.rows[0][1] == 2.0
    bars = compare_sections([pgd, aa])[1]
    assert bars.rows[2][1:] == [None, None]  # class c: no images in either
