"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009) from the python-pickle release on local disk.

Looks for `<data.root>/cifar-10-batches-py/` (data_batch_1..5, test_batch,
batches.meta) or `<data.root>/cifar-100-python/` (train, test, meta), or for
those files directly in `data.root`. The files are read here rather than by
`torchvision.datasets.CIFAR10`, which refuses files whose md5 differs (test
fixtures); torchvision is used to fetch them when `data.download=true`.
The official test set is the test split; val is held out of the 50k train.

    train, test = load_cifar_pools("data", "cifar10", download=False)
    train.images.shape    # [50000, 3, 32, 32] uint8
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from battui.data.fetch import find_or_fetch, first_folder
from battui.data.splits import Pool
from battui.errors import UserError

LAYOUT = {
    # name: (folder, train files, test file, meta file, label key, names key, pretty name, torchvision class)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch",
                "batches.meta", "labels", "label_names", "CIFAR-10", "CIFAR10"),
    "cifar100": ("cifar-100-python", ["train"], "test", "meta", "fine_labels", "fine_label_names",
                 "CIFAR-100", "CIFAR100"),
}


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    # The official files were pickled by Python 2 (keys load as bytes); tolerate str keys too.
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}


def _find(root: Path, name: str) -> Path | None:
    folder, train_files, test_file = LAYOUT[name][:3]
    return first_folder(root, (folder, ""), lambda where: all((where / f).is_file() for f in [*train_files, test_file]))


def _read(files: list[Path], label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for path in files:
        batch = _unpickle(path)
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def load_cifar_pools(root: str | Path, name: str, download: bool = False) -> tuple[Pool, Pool]:
    """(train pool, official test pool) for "cifar10" or "cifar100"; UserError when missing."""
    root = Path(root).expanduser()
    folder, train_files, test_file, meta_file, label_key, names_key, pretty, _ = LAYOUT[name]
    where = find_or_fetch(root, lambda r: _find(r, name), download, pretty, LAYOUT[name][7], {"train": True})
    if where is None:
        raise UserError(
            f"{pretty} not found: looked for {root / folder}/ ({', '.join([train_files[0], test_file])}, ...); "
            f"point --set data.root=DIR at the folder holding {folder}/ or fetch it with --set data.download=true"
        )
    meta_path = where / meta_file
    if meta_path.is_file():
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in _unpickle(meta_path)[names_key]]
    else:
        classes = [str(i) for i in range(10 if name == "cifar10" else 100)]
    try:
        train = _read([where / f for f in train_files], label_key)
        test = _read([where / test_file], label_key)
    except (OSError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as exc:
        raise UserError(f"{pretty} files in {where} are unreadable ({type(exc).__name__}: {exc}); "
                        "download them again with --set data.download=true") from None
    return Pool(*train, classes), Pool(*test, classes)
