"""Host-device sync points in the hot path, counted on CPU at the aten level.

The census (battui.engine.syncs) sees the same aten operations a CUDA run
issues, so these limits guard the GPU hot path without a GPU: per training
step (steps that write an event excluded) at most 3 sync points for PGD-AT,
TRADES, GAIRAT, FRL, CFA, DAFA and WAT, attack steps + 3 for BAT and FAT, 2 per
PGD evaluation batch, and none for per-class counting.

    .venv/bin/pytest tests/test_engine_syncs.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from battui.config import EvalAttack, load_config
from battui.data.batches import Batches
from battui.engine.evaluate import evaluate
from battui.engine.metrics import ClassCounter
from battui.engine.syncs import SyncCensus, census_per_batch
from battui.engine.trainer import Trainer
from battui.methods import METHODS, build_method
from battui.methods.base import float_parts
from tests.support.checkpoints import needed_weights

STEPS = 5  # synthetic-tiny's attack steps
LIMIT = {"bat": STEPS + 3, "fat": STEPS + 3}


def test_census_counts_each_kind_of_sync_and_nothing_else():
    t = torch.randn(6)
    syncing = [
        lambda: t.sum().item(), lambda: float(t.sum()), lambda: bool((t > 0).any()), lambda: int(t.argmax()),
        lambda: t.tolist(), lambda: t.numpy(), lambda: t.cpu(), lambda: t[t > 0], lambda: t.nonzero(),
        lambda: torch.masked_select(t, t > 0), lambda: torch.bincount(t.argsort()), lambda: torch.unique(t),
        lambda: torch.equal(t, t), lambda: t.clone().__setitem__(t > 0, 0.0),
    ]
    for i, op in enumerate(syncing):
        with SyncCensus() as census:
            op()
        assert census.total >= 1, f"sync op #{i} not counted"
    with SyncCensus() as census:
        y = torch.randint(0, 3, (6,))
        torch.where(t > 0, t, 0.0).index_select(0, y).sum()
        t[y], torch.arange(3)[None] == y[:, None], torch.full((2,), 3.0), t.argmax(), t.clamp(min=0)
        torch.zeros(3).index_copy_(0, torch.arange(3), t[:3])
    assert census.total == 0, census.segments
    assert torch.Tensor.tolist is not None and census._saved == {}  # patches removed on exit
    assert t.tolist() == t.tolist()


def _step_counts(tmp_path: Path, method: str, *overrides: str) -> list[int]:
    cfg = load_config("synthetic-tiny", [f"run.root={tmp_path}", f"method.name={method}", "train.epochs=1",
                                         "train.log_every=1000", "train.attack_stats_every=1000", *overrides])
    trainer = Trainer(cfg).prepare()
    n = len(trainer.parts.train_batches)
    assert n >= 4
    with census_per_batch() as census:
        assert trainer.train_epoch(0) is None
    counts = census.per_segment()
    assert len(counts) == n + 1  # setup, then one segment per step
    return counts[1:-1]  # the last step writes the epoch's batch event


@pytest.mark.parametrize("method", METHODS)
def test_training_step_sync_points_within_limits(tmp_path, method):
    counts = _step_counts(tmp_path, method, *needed_weights(tmp_path, method))
    assert max(counts) <= LIMIT.get(method, 3), counts
    assert min(counts) >= 1  # the non-finite loss check reads the loss once per step


def test_bf16_channels_last_step_adds_no_sync(tmp_path):
    counts = _step_counts(tmp_path, "trades", "train.amp=true", "train.channels_last=true")
    assert max(counts) <= 3, counts


def test_pgd_evaluation_batch_sync_points():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    x, y = torch.rand(96, 3, 8, 8), torch.randint(0, 10, (96,))
    from battui.data.splits import ArraySplit

    batches = Batches(ArraySplit((x * 255).to(torch.uint8), y), 16)
    with census_per_batch() as census:
        result = evaluate(model, batches, num_classes=10, spec=EvalAttack(eps=0.1, step_size=0.03, steps=20))
    per_batch = census.per_segment()[1:-1]  # the last segment also sums and reads the counts
    assert len(per_batch) == 5 and max(per_batch) <= 2, census.segments
    assert result["n"] == 96


def test_class_counter_update_is_sync_free_and_matches_bincount():
    g = torch.Generator().manual_seed(0)
    k, steps, n = 5, 4, 200
    y, adv, clean = (torch.randint(0, k, (n,), generator=g) for _ in range(3))
    stf = torch.randint(-1, steps + 1, (n,), generator=g)
    counter = ClassCounter(k, steps)
    with SyncCensus() as census:
        counter.update(y, adv, stf, clean_pred=clean)
        counter.update(y[:50], adv[:50], stf[:50])
    assert census.total == 0, census.segments
    both = torch.cat([y, y[:50]])
    assert counter.counts.tolist() == torch.bincount(both, minlength=k).tolist()
    conf = torch.bincount(both * k + torch.cat([adv, adv[:50]]), minlength=k * k).view(k, k)
    assert torch.equal(counter.adv_confusion, conf)
    s = torch.cat([stf, stf[:50]])
    bins = torch.where(s < 0, steps + 1, s)
    hist = torch.bincount(both * (steps + 2) + bins, minlength=k * (steps + 2)).view(k, -1)
    assert torch.equal(counter.step_hist, hist)
    assert counter.clean_wrong.tolist() == torch.bincount(y[clean != y], minlength=k).tolist()
    assert counter.boundary_wrong.tolist() == torch.bincount(y[(clean == y) & (adv != y)], minlength=k).tolist()


def test_loss_parts_wait_for_the_device_only_when_read():
    a, b = torch.tensor(1.5), torch.tensor(2.25)
    with SyncCensus() as census:
        parts = float_parts(ce=a, kl=b)
        census.mark()
        assert dict(parts) == {"ce": 1.5, "kl": 2.25}
        assert parts["ce"] == 1.5  # fetched once
    assert census.per_segment() == [0, 1]
    assert all(isinstance(v, float) for v in parts.values())


def test_method_state_is_moved_to_the_device_once_per_change():
    frl = build_method("frl", num_classes=4)
    x = torch.rand(2, 3)
    first = frl.on_device("eps", (frl.lambda2,), x, lambda: frl.eps_per_class)
    assert frl.on_device("eps", (frl.lambda2,), x, lambda: frl.eps_per_class) is first  # cached
    frl.lambda2 += 0.3  # in place: a new version
    second = frl.on_device("eps", (frl.lambda2,), x, lambda: frl.eps_per_class)
    assert second is not first and torch.allclose(second, frl.eps_per_class.float())
    frl.load_state_dict({**frl.state_dict(), "lambda2": torch.zeros(4, dtype=torch.float64)})  # replaced
    third = frl.on_device("eps", (frl.lambda2,), x, lambda: frl.eps_per_class)
    assert torch.allclose(third, torch.full((4,), frl.eps))


def test_batches_draw_each_batch_from_its_own_seed_and_never_wait():
    from battui.data import build_datasets, crop_flip
    from battui.data.batches import mix_seed
    from battui.data.splits import as_float

    cfg = load_config("synthetic-tiny")
    train = build_datasets(cfg.data, seed=0).train
    batches = Batches(train, 7, shuffle=True, augment=True, seed=3, rank=1, world_size=2, pad_shards=True)
    batches.set_epoch(2)
    with SyncCensus() as census:
        got = list(batches)
    assert census.total == 0, census.segments
    order = batches.indices()
    assert len(got) == len(batches) == -(-len(order) // 7)
    for i, (x, y) in enumerate(got):
        idx = order[i * 7:(i + 1) * 7]
        gen = torch.Generator().manual_seed(mix_seed(3, 2, 1, i, 1))  # the per-batch seed, as before
        assert torch.equal(x, crop_flip(as_float(train.images[idx]), gen))
        assert torch.equal(y, train.labels[idx])
