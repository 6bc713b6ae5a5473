"""The one batch iterator battui uses everywhere: training, evaluation, DDP.

The whole split is moved to `device` once (on CUDA the dataset lives on the
GPU) and every batch is an index gather there; augmentation (zero-pad 4 +
random crop + horizontal flip) is one vectorised gather on the batch. No torch
DataLoader, no worker processes, no per-sample Python loops.

Randomness never touches global RNG state: the shuffle is drawn from a
generator seeded by (seed, epoch) and the crop/flip of batch i from one seeded
by (seed, epoch, rank, i), so a resumed run sees exactly the same batches.

    train = Batches(splits.train, 128, shuffle=True, augment=True, device="cuda", seed=0)
    for epoch in range(epochs):
        train.set_epoch(epoch)
        for x, y in train:           # x float32 [B,C,H,W] in [0,1], y long [B], both on device
            ...

Sharding (world_size > 1): `pad_shards=True` (training) gives every rank
ceil(N / world_size) samples, wrapping around like DistributedSampler;
`pad_shards=False` (evaluation) gives rank r exactly indices[r::world_size], so
the ranks together cover the split exactly once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from battui.data.splits import ArraySplit, as_float

PAD = 4
_MASK = (1 << 63) - 1


def mix_seed(*parts: int) -> int:
    """Mix integers into one 63-bit seed (splitmix64 steps), so nearby inputs give unrelated streams."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h = (h ^ (h >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
    return h & _MASK


def crop_flip_offsets(b: int, gen: torch.Generator, pad: int = PAD) -> torch.Tensor:
    """The random numbers of one batch's crop + flip, drawn on the CPU: long [3, b] = (dy, dx, flip)."""
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    flip = (torch.rand(b, generator=gen) < 0.5).long()
    return torch.stack([dy, dx, flip])


def crop_flip(x: torch.Tensor, gen: torch.Generator | torch.Tensor, pad: int = PAD) -> torch.Tensor:
    """Random crop of the zero-padded batch (shift -pad..pad per sample) plus horizontal flip, one gather.

    `gen` is a CPU generator (the few random numbers per sample are drawn on CPU
    and moved to x's device, so results do not depend on the device), or the
    offsets `crop_flip_offsets` drew, already on x's device.
    """
    b, c, h, w = x.shape
    offsets = gen if isinstance(gen, torch.Tensor) else crop_flip_offsets(b, gen, pad)
    dy, dx, flip = offsets.to(x.device).unbind(0)
    flip = flip.bool()
    padded = F.pad(x, (pad, pad, pad, pad))
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    rows = dy[:, None] + ar_h  # [B, H]
    cols = dx[:, None] + torch.where(flip[:, None], w - 1 - ar_w, ar_w)  # [B, W]; flip reads columns backwards
    # Gather rows then columns: [B,C,H+2p,W+2p] -> [B,C,H,W+2p] -> [B,C,H,W].
    out = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * pad))
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))


class Batches:
    """Batches of one `ArraySplit`: iterate to get (x float32 in [0,1], y long), both on `device`."""

    def __init__(
        self,
        split: ArraySplit,
        batch_size: int,
        *,
        shuffle: bool = False,
        augment: bool = False,
        device: str | torch.device = "cpu",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        pad_shards: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.device = torch.device(device)
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        self.batch_size = int(batch_size)
        self.shuffle, self.augment = shuffle, augment
        self.seed, self.rank, self.world_size = int(seed), rank, world_size
        self.drop_last, self.pad_shards = drop_last, pad_shards
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Reseed shuffle and augmentation for `epoch` (call before iterating, like DistributedSampler)."""
        self.epoch = int(epoch)

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch."""
        n = len(self.labels)
        if self.world_size == 1:
            return n
        if self.pad_shards:
            return math.ceil(n / self.world_size) if n else 0
        return len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def indices(self) -> torch.Tensor:
        """This rank's sample indices for the current epoch (CPU, long)."""
        n = len(self.labels)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(mix_seed(self.seed, self.epoch)))
        else:
            order = torch.arange(n)
        if self.world_size > 1:
            if self.pad_shards and n:
                total = math.ceil(n / self.world_size) * self.world_size
                order = order.repeat(math.ceil(total / n))[:total]
            order = order[self.rank :: self.world_size]
        return order

    def epoch_plan(self) -> torch.Tensor:
        """This epoch's sample order and, with `augment`, every batch's crop/flip offsets,
        drawn on the CPU with the per-batch seeds: long [N] or [4, N] (order, dy, dx, flip)."""
        order = self.indices()
        if not self.augment:
            return order
        offsets = [crop_flip_offsets(len(order[i * self.batch_size : (i + 1) * self.batch_size]),
                                     torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, self.rank, i, 1)))
                   for i in range(len(self))]
        offsets = torch.cat(offsets, dim=1) if offsets else torch.zeros(3, 0, dtype=torch.long)
        return torch.cat([order[None, : offsets.shape[1]], offsets])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # The whole epoch's plan goes to the device in one copy, from pinned memory and
        # non-blocking on CUDA; per batch everything is slicing and gathers on the device.
        plan = self.epoch_plan()
        if self.device.type == "cuda":
            plan = plan.pin_memory().to(self.device, non_blocking=True)
        else:
            plan = plan.to(self.device)
        order = plan[0] if self.augment else plan
        for i in range(len(self)):
            cut = slice(i * self.batch_size, (i + 1) * self.batch_size)
            idx = order[cut]
            x = as_float(self.images[idx])
            if self.augment:
                x = crop_flip(x, plan[1:, cut])
            yield x, self.labels[idx]
