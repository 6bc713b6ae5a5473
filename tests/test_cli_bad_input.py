"""Bad input never crashes and never destroys (issue 13): settings, run names, table options, resume.

Every refused command line runs as its own process (tests/support/cli.py, `run_many`): exit code 2,
exactly one line on stderr, no traceback, no new run directory, and the md5 of every file
that existed before unchanged. `battui table` also runs end to end with its default options.
"""

from __future__ import annotations

import csv
import hashlib
import io
import shutil
from pathlib import Path

import pytest
import yaml

from battui.config import load_config, save_config
from battui.engine.events import read_events
from battui.engine.trainer import Trainer
from battui.methods import METHODS
from battui.validate import MAX_ATTACK_STEPS, MAX_BATCH_SIZE, MAX_RESTARTS
from tests.support.cli import battui, run_many


def md5s(root: Path) -> dict[str, str]:
    """md5 of every file under `root` (its whole tree: also shows files added or removed)."""
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


TINY = ["--preset", "synthetic-tiny"]
# (a train command line after `train --headless --preset synthetic-tiny`, words its error must contain)
TRAIN_CASES = [
    (["--set", "attack.eps=-1"], "attack.eps must be > 0"),
    (["--set", "attack.step_size=0"], "attack.step_size must be > 0"),
    (["--set", "attack.step_size=-0.1"], "attack.step_size"),
    (["--set", "attack.steps=0"], "attack.steps must be between 1 and"),
    (["--set", f"attack.steps={MAX_ATTACK_STEPS + 1}"], f"between 1 and {MAX_ATTACK_STEPS}"),
    (["--method", "trades", "--set", "method.beta=-1"], "method.beta must be >= 0"),
    (["--method", "bat", "--set", "method.alpha=-2"], "method.alpha must be >= 0"),
    (["--method", "frl", "--set", "method.val_steps=1000000000"], "method.val_steps"),
    (["--set", "eval.eps=-1"], "eval.eps must be between 0 and 1"),
    (["--set", "eval.steps=0"], "eval.steps must be between 1 and"),
    (["--set", "eval.steps=1000000000"], f"between 1 and {MAX_ATTACK_STEPS}"),
    (["--set", "eval.restarts=0"], "eval.restarts"),
    (["--set", f"eval.restarts={MAX_RESTARTS + 1}"], f"between 1 and {MAX_RESTARTS}"),
    (["--set", "eval.val_subset=-1"], "eval.val_subset must be >= 0"),
    (["--set", "eval.batch_size=0"], "eval.batch_size must be between 1 and"),
    (["--set", f"train.batch_size={MAX_BATCH_SIZE + 1}"], "train.batch_size"),
    (["--set", "train.weight_decay=-1"], "train.weight_decay must be >= 0"),
    (["--set", "train.lr=.nan"], "train.lr must be a finite number"),
    (["--set", "data.classes=[]"], "data.classes is empty"),
    (["--set", "data.classes=5"], "data.classes must be a list"),
    (["--set", "data.classes=[0,1,99]"], "index 99 is out of range"),
    (["--set", "run.device=gpu"], "unknown device 'gpu'"),
    (["--set", "model.normalize=0.5"], "model.normalize expects MEAN/STD"),
    (["--set", "model.normalize=0.5,0.5/0.2,0.2"], "normalisation gives 2 values per statistic; the data has 3"),
    (["--set", "model.width=7"], "model.width=7: the cnn's width must be even"),
    (["--set", "model.name=wrn-28-10", "--set", "model.depth=0", "--set", "model.width=8"],
     "only cnn, resnet18, preact-resnet18 take a width"),
    (["--run-name", "../x"], "plain folder name"),
    (["--run-name", "a/b"], "plain folder name"),
    (["--run-name", "/tmp/elsewhere"], "plain folder name"),
    (["--set", "run.name=.."], "plain folder name"),
    (["--epochs", "0"], "train.epochs must be between 1 and"),
    (["--allow-changes"], "only applies to --resume"),
]


def test_bad_settings_refused_before_anything_is_written(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    a_file = work / "not-a-folder"
    a_file.write_text("a file where a folder should be\n")
    binary = work / "weights.yaml"
    binary.write_bytes(bytes(range(256)) * 8)
    cases = [(["train", "--headless", *TINY, "--set", "run.root=runs", *argv], needle) for argv, needle in TRAIN_CASES]
    cases += [
        (["train", "--headless", *TINY, "--set", f"run.root={a_file}"], "is a file, not a folder"),
        (["train", "--headless", *TINY, "--set", f"run.root={a_file}/sub"], "is a file, not a folder"),
        (["train", "--headless", "--preset", str(binary)], "not a text YAML file"),
        (["train", "--headless", "--preset", str(work)], "cannot read"),
    ]
    before = md5s(work)
    results = run_many([argv for argv, _ in cases], cwd=work, tmp=tmp_path)
    for (argv, needle), res in zip(cases, results):
        line = res.one_line_error()
        assert needle in line, (argv, line)
    assert not (work / "runs").exists(), "a refused command made a run directory"
    assert md5s(work) == before


def test_every_preset_and_method_default_is_valid_and_class_lists_read_as_lists():
    for preset in ("digits-cnn", "synthetic-tiny", "cifar10-resnet18", "cifar100-resnet18", "imagenette-resnet18",
                   "cifar10-wrn28-10"):
        for method in METHODS:
            load_config(preset, [f"method.name={method}"])
    assert load_config("synthetic-tiny", ["data.classes=0,1,2"]).data.classes == [0, 1, 2]
    assert load_config("synthetic-tiny", ["data.classes=[class0, 3]"]).data.classes == ["class0", 3]


def test_table_checks_every_option_before_the_first_run_trains(tmp_path):
    work = tmp_path / "work"
    (work / "out").mkdir(parents=True)
    a_file = work / "a-file"
    a_file.write_text("x\n")
    table = ["table", *TINY, "--set", "train.epochs=1", "--seeds", "1"]
    cases = [
        (["--methods", "trades:beta=abc"], "trades:beta must be float"),
        (["--methods", "pgd-at,trades:beta=-1"], "method.beta must be >= 0"),  # a later row: still before training
        (["--methods", "pgd-at,bat:source=nowhere"], "source must be"),
        (["--methods", "pgd-at,frl:val_steps=0"], "method.val_steps"),
        (["--methods", "pgd-at", "--attack", "fgsm"], "unknown attack 'fgsm'"),
        (["--methods", "pgd-at", "--limit", "-1"], "--limit must be >= 0"),
        (["--methods", "pgd-at", "--steps", "0"], "--steps must be between 1 and"),
        (["--methods", "pgd-at", "--steps", "1000000000"], "--steps must be between 1 and"),
        (["--methods", "pgd-at", "--restarts", "0"], "--restarts"),
        (["--methods", "pgd-at", "--eps", "-1"], "--eps must be between 0 and 1"),
        (["--methods", "pgd-at", "--seeds", "0"], "--seeds must be >= 1"),
        (["--methods", "pgd-at", "--seed", "99999999999999999999999"], "--seed must be between 0 and"),
        (["--methods", "pgd-at", "--set", "eval.batch_size=0"], "eval.batch_size"),
        (["--methods", "pgd-at", "--set", "eval.steps=0"], "eval.steps"),
        (["--methods", "pgd-at", "--device", "gpu"], "unknown device"),
        (["--methods", "pgd-at", "-f", "rich", "-o", "missing/t.txt"], "does not exist"),
        (["--methods", "pgd-at", "-f", "rich", "-o", "out"], "is a folder"),
        (["--methods", "pgd-at", "-f", "json", "-o", "out/t.md"], "does not match"),
        (["--methods", "pgd-at", "-o", str(a_file)], "not a report battui wrote"),
        (["--methods", "pgd-at", "--set", f"run.root={a_file}"], "is a file, not a folder"),
        (["--ablation", "trades"], "only 'bat'"),
    ]
    before = md5s(work)
    results = run_many([[*table, *argv] for argv, _ in cases], cwd=work, tmp=tmp_path)
    for (argv, needle), res in zip(cases, results):
        line = res.one_line_error()
        assert needle in line, (argv, line)
        assert "training" not in res.out + res.err
    assert not (work / "runs").exists()
    assert md5s(work) == before


def test_table_end_to_end_with_default_options(tmp_path):
    """README's `battui table` on synthetic-tiny: default --device auto, default attack, default format."""
    res = battui("table", *TINY, "--set", "train.epochs=1", "--methods", "pgd-at", "--seeds", "1", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "Table 1: synthetic-tiny" in res.stdout and "PGD-AT" in res.stdout and "Worst Rob." in res.stdout
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and read_events(runs[0] / "events.jsonl")[-1]["status"] == "completed"

    # Again, into a CSV file (twice: battui may replace its own report): the run is reused, every cell
    # after the label is a number, and it says where the report went.
    table = ["table", *TINY, "--set", "train.epochs=1", "--methods", "pgd-at", "--seeds", "1", "-o", "t.csv"]
    for res in run_many([table, table], cwd=tmp_path, tmp=tmp_path):
        assert res.code == 0, res.err
        assert "1 done" in res.err and "wrote the csv report to t.csv" in res.err
    rows = list(csv.reader(io.StringIO((tmp_path / "t.csv").read_text())))
    assert rows[0][1:3] == ["Avg. Std. mean", "Avg. Std. std"] and len(rows[0]) == 13 and rows[1][0] == "PGD-AT"
    values = [float(cell) for cell in rows[1][1:]]
    assert all(0.0 <= v <= 100.0 for v in values) and values[1] == 0.0  # std over one seed
    assert len(list((tmp_path / "runs").iterdir())) == 1


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A completed 1-epoch synthetic-tiny run (config.yaml, env.json, events, last.pt, best.pt)."""
    root = tmp_path_factory.mktemp("runs")
    trainer = Trainer(load_config("synthetic-tiny", [f"run.root={root}", "run.name=done", "train.epochs=1"]))
    assert trainer.run() == "completed"
    return trainer.run_dir


def _copy(run: Path, where: Path, name: str) -> Path:
    return Path(shutil.copytree(run, where / name))


def test_resume_refusals_leave_the_run_untouched(finished_run, tmp_path):
    work = tmp_path / "runs"
    work.mkdir()
    done = _copy(finished_run, work, "done")
    no_last = _copy(finished_run, work, "no-last")
    (no_last / "checkpoints" / "last.pt").unlink()
    edited = _copy(finished_run, work, "edited")
    cfg = yaml.safe_load((edited / "config.yaml").read_text())
    cfg["method"]["name"] = "trades"
    (edited / "config.yaml").write_text(yaml.safe_dump(cfg))
    nonsense = _copy(finished_run, work, "nonsense")
    cfg = yaml.safe_load((nonsense / "config.yaml").read_text())
    cfg["attack"]["eps"] = -1
    (nonsense / "config.yaml").write_text(yaml.safe_dump(cfg))
    empty = _copy(finished_run, work, "empty")
    (empty / "config.yaml").write_text("")
    resume = ["train", "--headless", "--resume"]
    cases = [
        ([*resume, no_last], "has no checkpoints/last.pt"),
        ([*resume, done], "already trained all 1 epochs"),
        ([*resume, done, "--epochs", "2", "--set", "data.classes=[0,1,2]"], "data.classes"),
        ([*resume, done, "--epochs", "2", "--method", "bat"], "method.name pgd-at -> bat"),
        ([*resume, done, "--epochs", "2", "--set", "train.seed=3"], "train.seed 0 -> 3"),
        ([*resume, edited, "--epochs", "2"], "method.name pgd-at -> trades"),
        ([*resume, nonsense, "--epochs", "2"], "attack.eps must be > 0"),
        ([*resume, empty], "is empty"),
        ([*resume, done, "--run-name", "x"], "cannot be combined"),
        ([*resume, tmp_path / "nowhere"], "not a run directory"),
    ]
    before = md5s(work)
    results = run_many([argv for argv, _ in cases], cwd=tmp_path, tmp=tmp_path)
    for (argv, needle), res in zip(cases, results):
        line = res.one_line_error()
        assert needle in line, (argv, line)
    assert md5s(work) == before  # config.yaml, env.json, best.pt, events.jsonl: byte for byte
    assert [e["type"] for e in read_events(no_last / "events.jsonl")].count("run_started") == 1


def test_resume_names_the_changes_it_keeps_and_starts_a_prepared_run(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path, "run")
    # what `train --detach` hands to its background process: config.yaml only, nothing trained yet
    cfg = load_config("synthetic-tiny", [f"run.root={tmp_path}", "run.name=fresh", "train.epochs=1"])
    (tmp_path / "fresh").mkdir()
    save_config(cfg, tmp_path / "fresh" / "config.yaml")
    resume = ["train", "--headless", "--resume"]
    results = run_many([
        [*resume, run, "--epochs", "2", "--set", "eval.steps=3"],
        [*resume, run, "--epochs", "3", "--set", "method.name=trades", "--allow-changes"],
        [*resume, tmp_path / "fresh"],
    ], cwd=tmp_path, tmp=tmp_path)
    assert [r.code for r in results] == [0, 0, 0], [r.err for r in results]
    assert "resuming with changed settings: eval.steps 5 -> 3, train.epochs 1 -> 2" in results[0].out
    assert "method.name pgd-at -> trades" in results[1].out
    statuses = [e["status"] for e in read_events(run / "events.jsonl") if e["type"] == "run_finished"]
    assert statuses == ["completed"] * 3
    assert read_events(tmp_path / "fresh" / "events.jsonl")[-1]["status"] == "completed"


def test_help_and_version(tmp_path):
    results = run_many([["-h"], ["--version"], ["train", "-h"], ["table", "--help"]], cwd=tmp_path, tmp=tmp_path)
    assert [r.code for r in results] == [0, 0, 0, 0], [r.err for r in results]
    assert "Usage: battui" in results[0].out and results[1].out.startswith("battui ")
    train_help = " ".join(results[2].out.split())
    assert "[default: digits-cnn]" in train_help and "--allow-changes" in train_help
    for method in METHODS:
        assert method in train_help, method
    assert "[default: 3]" in " ".join(results[3].out.split())  # --seeds
