"""Files written by older code still load and resume: tests/fixtures/old-run-cfa/ is a CFA run
directory (config.yaml, env.json, events.jsonl, best.pt, a mid-epoch last.pt) that the code of the
commit adding it wrote, with what that code did with it in old-run-cfa.expected.json
(tests/fixtures/make_old_run.py). Today's `battui eval` must give the same numbers for its best.pt,
and `battui train --resume` must continue it exactly as the old code did."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.cli import run_many

FIXTURE = ROOT / "tests" / "fixtures" / "old-run-cfa"
EXPECTED = json.loads((ROOT / "tests" / "fixtures" / "old-run-cfa.expected.json").read_text())


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_old_run_directory_evaluates_and_resumes_as_the_old_code_did(tmp_path):
    before = _digests(FIXTURE)
    for name in ("eval", "resume"):
        shutil.copytree(FIXTURE, tmp_path / name)
    old_events = len((tmp_path / "resume" / "events.jsonl").read_text().splitlines())
    evaluated, resumed = run_many([
        ["eval", "eval/checkpoints/best.pt", "-f", "json", "--no-cache"],
        ["train", "--resume", "resume", "--epochs", "4", "--headless"],
    ], cwd=tmp_path, tmp=tmp_path)
    assert _digests(FIXTURE) == before  # the fixture itself is never written

    assert evaluated.code == 0, evaluated.err
    report = json.loads(evaluated.out)
    want = EXPECTED["eval_best"]
    assert (report["weights_hash"], report["epoch"]) == (want["weights_hash"], want["epoch"])
    assert report["result"] == want["result"]

    assert resumed.code == 0, resumed.err
    lines = (tmp_path / "resume" / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines[old_events:]]
    want = EXPECTED["resume"]
    assert events[0]["type"] == "run_started" and (events[0]["start_epoch"], events[0]["start_batch"]) == (1, 3)
    batches = [[e["epoch"], e["batch"], e["step"], e["loss"]] for e in events if e["type"] == "batch"]
    assert [b[:3] for b in batches] == [b[:3] for b in want["batches"]]  # resumed at epoch 2, batch 4
    assert [b[3] for b in batches] == pytest.approx([b[3] for b in want["batches"]], rel=1e-5)
    assert [[e["kind"], e["epoch"]] for e in events if e["type"] == "checkpoint"] == want["checkpoints"]
    test_eval = next(e for e in events if e["type"] == "eval" and e["split"] == "test")
    assert {k: test_eval[k] for k in want["test_eval"]} == want["test_eval"]
    assert next([e["status"], e["epoch"]] for e in events if e["type"] == "run_finished") == want["finished"]
    env = json.loads((tmp_path / "resume" / "env.json").read_text())
    assert len(env["resumes"]) == 1  # the old record kept, the resume appended
