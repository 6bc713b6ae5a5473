"""The CUDA paths checked on the CPU (issue 23): bounded batch shapes of the early-stopping
attacks, torch.compile without recompiles, amp=auto's precision, method validation in fp32,
--detach before the GPU is touched."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from battui.attacks import pgd
from battui.config import load_config
from battui.engine.trainer import Trainer
from battui.methods import bat as bat_module


def tiny(tmp_path: Path, *overrides: str):
    return load_config("synthetic-tiny", [f"run.root={tmp_path / 'runs'}", *overrides])


def epoch_batch_sizes(tmp_path: Path, method: str) -> tuple[set[int], int]:
    """The distinct batch sizes the model sees in one training epoch of batch 128, and the images trained."""
    trainer = Trainer(tiny(tmp_path, f"method.name={method}", "data.per_class=50", "train.batch_size=128",
                           f"run.name={method}-{len(list(tmp_path.glob('runs/*')))}")).prepare()
    sizes: set[int] = set()
    hook = trainer.parts.model.register_forward_pre_hook(lambda _m, inputs: sizes.add(inputs[0].shape[0]))
    try:
        assert trainer.train_epoch(0) is None
    finally:
        hook.remove()
        trainer.files.lock.release()
    return sizes, trainer.parts.train_size


@pytest.mark.parametrize("method", ["bat", "fat"])
def test_early_stopping_attacks_show_a_bounded_set_of_batch_sizes(tmp_path, monkeypatch, method):
    sizes, n = epoch_batch_sizes(tmp_path, method)
    last = n % 128
    assert last and last % 16  # the epoch ends with a shorter batch, not a multiple of the bucket
    # the buckets of 128 (multiples of 16) and the last batch itself: at most 9 sizes
    assert sizes <= set(range(16, 129, 16)) | {last}, sorted(sizes)
    assert len(sizes) <= 9
    if method == "bat":  # exact compaction, as before the buckets: many more sizes on the same epoch
        monkeypatch.setattr(bat_module, "pgd", functools.partial(pgd, bucket=1))
        exact, _ = epoch_batch_sizes(tmp_path, method)
        assert len(exact) > len(sizes), (sorted(exact), sorted(sizes))
        assert not exact <= set(range(16, 129, 16)) | {last}
