"""Fixtures shared by the test modules (helpers to import live in tests/support/)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tests.support.checkpoints import make_checkpoint, tiny_config
from tests.support.tiny_problem import tiny_batch, tiny_mlp


@pytest.fixture
def problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The tiny float64 MLP and a batch it mostly classifies right (tests/support/tiny_problem.py)."""
    model = tiny_mlp()
    x, y = tiny_batch(model)
    return model, x, y


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    """A cnn trained 40 clean steps on synthetic data (600 images, 150 in the test split)."""
    cfg = tiny_config(("data.per_class=60",))
    return make_checkpoint(tmp_path_factory.mktemp("small_model") / "m.pt", cfg, seed=0, train_steps=40)


@pytest.fixture
def one_thread(monkeypatch):
    """One torch thread, and OMP_NUM_THREADS=1 so that battui's engine keeps it: tiny convolutions
    crawl on two threads of a busy machine, and child processes (tests.support.cli) compute with one."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
