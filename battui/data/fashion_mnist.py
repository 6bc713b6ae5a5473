"""Fashion-MNIST (Xiao et al. 2017): 70k 28x28 grey images of 10 clothing classes, read from IDX files.

Looks for the four standard files, gzipped or not,

    train-images-idx3-ubyte  train-labels-idx1-ubyte  t10k-images-idx3-ubyte  t10k-labels-idx1-ubyte

in `data.root`, `data.root/fashion-mnist/` and `data.root/FashionMNIST/raw/`
(where torchvision's download puts them), and when none of those has them in
`/usr/share/datasets/fashion-mnist/` (Debian's `dataset-fashion-mnist` package).
`data.download=true` fetches them with torchvision when no copy is found.
The official 60k/10k split: t10k is the test split, battui's val is held out of
the 60k (`data.val_per_class`); `data.train_per_class` keeps a stratified subset
of the training split.

    train, test = load_fashion_mnist_pools("data")
    train.images.shape    # [60000, 1, 28, 28] uint8
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from battui.data.fetch import find_or_fetch
from battui.data.splits import Pool
from battui.errors import UserError

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FOLDERS = ("", "fashion-mnist", "FashionMNIST/raw")
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian: apt install dataset-fashion-mnist
IDX_UBYTE = 0x08  # the only element type the Fashion-MNIST files use


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (gzipped when it starts with the gzip magic) as a uint8 array of its stated shape.

    Header: two zero bytes, the element type (0x08 = unsigned byte), the number of
    dimensions, then each dimension as a big-endian uint32. ValueError when malformed.
    """
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError("not an IDX file (bad magic number)")
    if raw[2] != IDX_UBYTE:
        raise ValueError(f"element type 0x{raw[2]:02x}; expected unsigned bytes (0x08)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError("truncated header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    size = int(np.prod(shape)) if shape else 0
    if len(raw) - header != size:
        raise ValueError(f"header says {shape} ({size} bytes) but {len(raw) - header} bytes follow")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _file(where: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (where / name).is_file():
            return where / name
    return None


def _complete(where: Path) -> bool:
    return all(_file(where, stem) is not None for pair in FILES.values() for stem in pair)


def find_fashion_mnist(root: str | Path) -> Path | None:
    """The folder holding all four IDX files: under `root` first, then Debian's; None when missing."""
    root = Path(root).expanduser()
    for where in [root / f if f else root for f in FOLDERS] + [SYSTEM_DIR]:
        if where.is_dir() and _complete(where):
            return where
    return None


def _read_pair(where: Path, split: str) -> Pool:
    images_stem, labels_stem = FILES[split]
    images, labels = read_idx(_file(where, images_stem)), read_idx(_file(where, labels_stem))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{split} images {images.shape} do not match labels {labels.shape}")
    if len(labels) and int(labels.max()) >= len(CLASSES):
        raise ValueError(f"{split} labels go up to {int(labels.max())}; Fashion-MNIST has 10 classes")
    x = torch.from_numpy(images.copy()).unsqueeze(1)  # [N, 1, 28, 28] uint8
    return Pool(x, torch.from_numpy(labels.astype(np.int64)), list(CLASSES))


def load_fashion_mnist_pools(root: str | Path, download: bool = False) -> tuple[Pool, Pool]:
    """(60k train pool, 10k official test pool); UserError when the files are missing or unreadable."""
    root = Path(root).expanduser()
    where = find_or_fetch(root, find_fashion_mnist, download, "Fashion-MNIST", "FashionMNIST", {"train": True})
    if where is None:
        looked = ", ".join(str(root / f) if f else str(root) for f in FOLDERS)
        raise UserError(
            f"Fashion-MNIST not found: looked for {FILES['train'][0]}[.gz] and the other three IDX files in "
            f"{looked} and {SYSTEM_DIR}; install them with `apt install dataset-fashion-mnist` "
            f"or fetch them with --set data.download=true (or point --set data.root=DIR at them)"
        )
    try:
        return _read_pair(where, "train"), _read_pair(where, "test")
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        raise UserError(f"Fashion-MNIST files in {where} are unreadable ({exc}); "
                        "fetch them again with --set data.download=true") from None
