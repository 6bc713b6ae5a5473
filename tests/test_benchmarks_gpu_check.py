"""benchmarks/gpu_check.py, the GPU acceptance script, run `--device cpu --quick` so that it cannot rot:
every part runs and its reports say what it found."""

from __future__ import annotations

import importlib.util
import json

import torch

from battui.engine import setup
from battui.methods import METHODS
from tests.support import ROOT


def test_gpu_check_runs_on_cpu_quick_and_reports_every_part(tmp_path, monkeypatch, one_thread):
    monkeypatch.setattr(setup, "COMPILE_BACKEND", setup.COMPILE_BACKEND)  # the script sets it; put it back after
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    try:
        code = gpu_check.main(["--device", "cpu", "--quick", "--out", str(tmp_path / "out")])
    finally:
        torch._dynamo.reset()
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    text = (tmp_path / "out" / "gpu_check.md").read_text()
    assert code == 0 and report["failures"] == [], report["failures"]
    assert report["environment"]["device"] == "cpu" and report["environment"]["compile_backend"] == "eager"
    assert report["environment"]["precision"] == "fp32 (train.amp=auto, not a CUDA device)"

    assert list(report["methods"]) == list(METHODS)
    assert all(m["ok"] and m["steps"] == 1 for m in report["methods"].values()), report["methods"]
    assert list(report["loops"]) == ["pgd-at", "trades", "bat", "pgd-at compile", "trades compile", "bat compile"]
    for key, run in report["loops"].items():
        assert set(run["ms_per_step"]) == {"tight", "bare", "battui"} and run["finite"], key
        assert run["frames_compiled_after_warmup"] == (0 if key.endswith("compile") else None), key
        assert run["syncs_per_step"]["tight"] == 0 and run["syncs_per_step"]["battui"] >= 1, key
    cudnn = report["cudnn"]
    assert cudnn["first_epoch_s"] > 0 and cudnn["batch_sizes_seen"] and not cudnn["cudnn_benchmark"]  # CPU
    assert report["eval"]["equal"] and report["eval"]["status"] == "completed" and report["eval"]["n"] == 20

    assert "Result: PASS" in text and "| bat compile |" in text and "| absld | yes |" in text
    assert "final test evaluation equal to battui eval: True" in text
