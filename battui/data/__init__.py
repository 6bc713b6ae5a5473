"""Datasets held in memory as tensors, and the batch iterator.

    from battui.data import build_datasets, Batches
    splits = build_datasets(cfg.data, seed=0)           # DataSplits(train, val, test, classes, ...)
    for x, y in Batches(splits.train, 128, shuffle=True, augment=cfg.data.augment, device="cuda"):
        ...                                             # x float32 [B,C,H,W] in [0,1], y long [B]

Datasets (`data.name`): digits (scikit-learn's bundled 8x8 digits, the default),
synthetic (generated, classes of unequal difficulty), cifar10, cifar100
(python-pickle release under `data.root`), imagenette (fastai folder layout),
fashion-mnist (IDX files under `data.root` or Debian's /usr/share/datasets), svhn
(torchvision's .mat files), stl10 (its binary release), tiny-imagenet (the release's
folders and val annotations) and folder (any train/ + val/ or test/ class-folder tree).
`data.classes` keeps a subset of classes (indices or names; labels become
0..k-1 in the order given). `val_per_class` images per class are held out of
the training set (0 = no val split; the engine then validates on test);
`train_per_class` keeps a stratified subset of the rest for training (0 = all).
A missing dataset raises `UserError` saying where it looked and how to get it.
"""

from __future__ import annotations

from battui.data.batches import Batches, crop_flip
from battui.data.splits import ArraySplit, DataSplits, Pool, assemble
from battui.errors import UserError

DATASETS = ("digits", "synthetic", "cifar10", "cifar100", "imagenette", "fashion-mnist", "svhn", "stl10",
            "tiny-imagenet", "folder")

__all__ = ["DATASETS", "ArraySplit", "Batches", "DataSplits", "build_datasets", "crop_flip"]


def _pools(cfg, seed: int) -> tuple[Pool, Pool | None]:
    if cfg.name == "digits":
        from battui.data.digits import load_digits_pool

        return load_digits_pool(), None
    if cfg.name == "synthetic":
        from battui.data.synthetic import make_synthetic_pool

        if cfg.per_class < 2 or cfg.channels < 1:
            raise UserError("synthetic data needs data.per_class >= 2 and data.channels >= 1")
        size = cfg.image_size or 8
        # The images are the same for every run seed (like a real dataset); only the splits follow `seed`.
        return make_synthetic_pool(10, cfg.per_class, size, cfg.channels, seed=0), None
    if cfg.name in ("cifar10", "cifar100"):
        from battui.data.cifar import load_cifar_pools

        return load_cifar_pools(cfg.root, cfg.name, download=cfg.download)
    if cfg.name == "imagenette":
        from battui.data.imagenette import load_imagenette_pools

        return load_imagenette_pools(cfg.root, cfg.image_size, download=cfg.download)
    if cfg.name == "fashion-mnist":
        from battui.data.fashion_mnist import load_fashion_mnist_pools

        return load_fashion_mnist_pools(cfg.root, download=cfg.download)
    if cfg.name == "svhn":
        from battui.data.svhn import load_svhn_pools

        return load_svhn_pools(cfg.root, download=cfg.download)
    if cfg.name == "stl10":
        from battui.data.stl10 import load_stl10_pools

        return load_stl10_pools(cfg.root, download=cfg.download)
    if cfg.name == "tiny-imagenet":
        from battui.data.tiny_imagenet import load_tiny_imagenet_pools

        return load_tiny_imagenet_pools(cfg.root, cfg.image_size)
    if cfg.name == "folder":
        from battui.data.folder import load_folder_pools

        return load_folder_pools(cfg.root, cfg.image_size)
    raise UserError(f"unknown dataset '{cfg.name}'; datasets: {', '.join(DATASETS)}")


def build_datasets(cfg, seed: int = 0) -> DataSplits:
    """Load `cfg.data` (a `DataConfig`) into train/val/test `DataSplits`; splits are seeded by `seed`."""
    train, test = _pools(cfg, seed)
    return assemble(train, test, cfg, seed=seed)
