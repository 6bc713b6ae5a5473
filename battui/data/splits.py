"""In-memory splits and the shared split mechanics every dataset goes through.

A dataset loader returns a `Pool` (all its images and labels, plus an official
test pool when the dataset has one); `assemble` then cuts the stratified test
split (datasets without an official test split) and the stratified validation
hold-out, takes the stratified training subset (`data.train_per_class`), keeps
the class subset, resizes if asked, and returns `DataSplits`.

    pool = Pool(images, labels, classes=["0", "1", ...])
    splits = assemble(pool, None, cfg, seed=0)
    splits.train.images.shape     # [N, C, H, W], uint8 or float in [0, 1]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from battui.errors import UserError


@dataclass
class ArraySplit:
    """One split held in memory: `images` uint8 [N,C,H,W] (0..255) or float in [0,1]; `labels` long [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: torch.Tensor) -> ArraySplit:
        return ArraySplit(self.images[index], self.labels[index])

    def to(self, device: str | torch.device) -> ArraySplit:
        """The same split on `device` (no copy when it is already there)."""
        return ArraySplit(self.images.to(device), self.labels.to(device))

    def float_images(self) -> torch.Tensor:
        """Images as float32 in [0, 1]."""
        return as_float(self.images)

    def class_counts(self, num_classes: int) -> torch.Tensor:
        return torch.bincount(self.labels.cpu(), minlength=num_classes)


@dataclass
class DataSplits:
    """train / val / test splits plus what a model needs to know about them."""

    train: ArraySplit
    val: ArraySplit
    test: ArraySplit
    classes: list[str] = field(default_factory=list)
    num_classes: int = 0
    in_channels: int = 0
    image_size: int = 0

    def summary(self) -> str:
        return (
            f"{self.num_classes} classes, {self.in_channels}x{self.image_size}x{self.image_size}, "
            f"train {len(self.train)} / val {len(self.val)} / test {len(self.test)}"
        )


@dataclass
class Pool:
    """All images of one source split before the battui splits are cut."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]


def as_float(images: torch.Tensor) -> torch.Tensor:
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def empty_like(split: ArraySplit) -> ArraySplit:
    return ArraySplit(split.images[:0].clone(), split.labels[:0].clone())


def stratified_split(
    labels: torch.Tensor, num_classes: int, *, per_class: int = 0, fraction: float = 0.0, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (rest, held_out): per class, `per_class` images or `fraction` of them are held out.

    Deterministic given `seed`; both index lists come back sorted.
    """
    gen = torch.Generator().manual_seed(int(seed))
    held, rest = [], []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c, as_tuple=False).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        k = per_class if per_class else int(round(fraction * len(idx)))
        k = min(k, max(len(idx) - 1, 0))  # always keep at least one training image per class
        held.append(idx[:k])
        rest.append(idx[k:])
    cat = lambda parts: torch.sort(torch.cat(parts))[0] if parts else torch.zeros(0, dtype=torch.long)  # noqa: E731
    return cat(rest), cat(held)


def stratified_subset(labels: torch.Tensor, num_classes: int, per_class: int, seed: int = 0) -> torch.Tensor:
    """Sorted indices of `per_class` images of each class, drawn at random (seeded); all of a smaller class."""
    gen = torch.Generator().manual_seed(int(seed))
    keep = []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c, as_tuple=False).flatten()
        keep.append(idx[torch.randperm(len(idx), generator=gen)[:per_class]])
    return torch.sort(torch.cat(keep))[0] if keep else torch.zeros(0, dtype=torch.long)


def resolve_classes(wanted: list | None, classes: list[str]) -> list[int]:
    """`data.classes` (indices or names, in the order given) -> source class indices."""
    if not wanted:
        return list(range(len(classes)))
    lower = {name.lower(): i for i, name in enumerate(classes)}
    out: list[int] = []
    for item in wanted:
        if isinstance(item, str) and item.lower() in lower:
            i = lower[item.lower()]
        elif isinstance(item, int) and not isinstance(item, bool) or (isinstance(item, str) and item.isdigit()):
            i = int(item)
            if not 0 <= i < len(classes):
                raise UserError(
                    f"data.classes: index {i} is out of range; this dataset has classes 0..{len(classes) - 1}"
                )
        else:
            shown = ", ".join(classes[:12]) + (", ..." if len(classes) > 12 else "")
            raise UserError(f"data.classes: unknown class {item!r}; use indices or names ({shown})")
        if i not in out:
            out.append(i)
    if len(out) < 2:
        raise UserError("data.classes: keep at least two classes")
    return out


def select_classes(split: ArraySplit, keep: list[int], num_source: int) -> ArraySplit:
    """Keep only classes `keep` (source indices) and relabel them 0..k-1 in that order."""
    if keep == list(range(num_source)):
        return split
    remap = torch.full((num_source,), -1, dtype=torch.long)
    remap[torch.tensor(keep)] = torch.arange(len(keep))
    new = remap[split.labels]
    mask = new >= 0
    return ArraySplit(split.images[mask], new[mask])


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Square resize with antialiasing; keeps the dtype (uint8 stays uint8)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = F.interpolate(as_float(images), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    out = out.clamp_(0, 1)
    return out.mul_(255).round_().to(torch.uint8) if images.dtype == torch.uint8 else out


def assemble(train: Pool, test: Pool | None, cfg, seed: int = 0) -> DataSplits:
    """Test split (when `test` is None) -> val hold-out -> training subset -> class subset -> resize.

    The splits are cut over all classes before the subset is taken, so a class
    subset sees exactly the images the full dataset puts in each split.
    """
    keep = resolve_classes(cfg.classes, train.classes)
    num_source = len(train.classes)
    if test is None:
        if not 0.0 < cfg.test_fraction < 1.0:
            raise UserError(f"data.test_fraction must be between 0 and 1, got {cfg.test_fraction}")
        rest, held = stratified_split(train.labels, num_source, fraction=cfg.test_fraction, seed=seed)
        test = Pool(train.images[held], train.labels[held], train.classes)
        train = Pool(train.images[rest], train.labels[rest], train.classes)
    if cfg.val_per_class < 0:
        raise UserError(f"data.val_per_class must be >= 0, got {cfg.val_per_class}")
    full = ArraySplit(train.images, train.labels)
    if cfg.val_per_class:
        rest, held = stratified_split(train.labels, num_source, per_class=cfg.val_per_class, seed=seed + 1)
        train_split, val_split = full.subset(rest), full.subset(held)
    else:
        train_split, val_split = full, empty_like(full)
    if cfg.train_per_class < 0:
        raise UserError(f"data.train_per_class must be >= 0 (0 = all), got {cfg.train_per_class}")
    if cfg.train_per_class:
        train_split = train_split.subset(
            stratified_subset(train_split.labels, num_source, cfg.train_per_class, seed=seed + 2))
    test_split = ArraySplit(test.images, test.labels)
    splits = [select_classes(s, keep, num_source) for s in (train_split, val_split, test_split)]
    if cfg.image_size:
        if cfg.image_size < 8:
            raise UserError(f"data.image_size must be 0 (native) or at least 8, got {cfg.image_size}")
        splits = [ArraySplit(resize(s.images, cfg.image_size), s.labels) for s in splits]
    train_split, val_split, test_split = splits
    images = train_split.images
    return DataSplits(
        train=train_split,
        val=val_split,
        test=test_split,
        classes=[train.classes[i] for i in keep],
        num_classes=len(keep),
        in_channels=int(images.shape[1]),
        image_size=int(images.shape[-1]),
    )
