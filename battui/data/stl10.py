"""STL-10 (Coates et al. 2011): 96x96 colour images of 10 classes, torchvision's binary format.

Looks for `stl10_binary/` (torchvision's `STL10(root, download=True)` unpacks it there)
in `data.root`, or for its files in `data.root` itself: `train_X.bin`, `train_y.bin`,
`test_X.bin`, `test_y.bin` and `class_names.txt`. `*_X.bin` is uint8, 3 x 96 x 96 per image,
each channel stored column-major (read here transposed, as torchvision does); `*_y.bin`
one uint8 label 1..10 per image. The official 5,000 / 8,000 labelled split (the 100k
unlabelled images are not used); `data.image_size` resizes (the stl10-resnet18 preset: 64,
as DAFA's code does). `data.download=true` fetches them with torchvision (2.6 GB).

    train, test = load_stl10_pools("data")
    train.images.shape    # [5000, 3, 96, 96] uint8
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from battui.data.fetch import find_or_fetch, first_folder
from battui.data.splits import Pool
from battui.errors import UserError

CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
FILES = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")
FOLDERS = ("stl10_binary", "")
SIDE = 96
URL = "https://cs.stanford.edu/~acoates/stl10/"


def _find(root: Path) -> Path | None:
    return first_folder(root, FOLDERS, lambda where: all((where / f).is_file() for f in FILES))


def _read(where: Path, split: str, classes: list[str]) -> Pool:
    raw = np.fromfile(where / f"{split}_X.bin", dtype=np.uint8)
    labels = np.fromfile(where / f"{split}_y.bin", dtype=np.uint8).astype(np.int64) - 1
    per_image = 3 * SIDE * SIDE
    if raw.size != len(labels) * per_image:
        raise ValueError(f"{split}_X.bin holds {raw.size} bytes, expected {len(labels)} images x {per_image}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise ValueError(f"{split}_y.bin has labels outside 1..{len(classes)}")
    images = np.ascontiguousarray(raw.reshape(-1, 3, SIDE, SIDE).transpose(0, 1, 3, 2))  # column-major -> N,C,H,W
    return Pool(torch.from_numpy(images), torch.from_numpy(labels), classes)


def load_stl10_pools(root: str | Path, download: bool = False) -> tuple[Pool, Pool]:
    """(5k train pool, 8k official test pool) at 96x96; UserError when missing or unreadable."""
    root = Path(root).expanduser()
    where = find_or_fetch(root, _find, download, "STL-10", "STL10", {"split": "train"})  # unpacks train and test
    if where is None:
        raise UserError(f"STL-10 not found: looked for {', '.join(FILES)} in {root / FOLDERS[0]} and {root}; "
                        f"unpack stl10_binary.tar.gz from {URL} there (or fetch it with --set data.download=true) "
                        "and point --set data.root=DIR at it")
    names = where / "class_names.txt"
    classes = [n.strip() for n in names.read_text().splitlines() if n.strip()] if names.is_file() else list(CLASSES)
    try:
        return _read(where, "train", classes), _read(where, "test", classes)
    except (OSError, ValueError) as exc:
        raise UserError(f"STL-10 files in {where} are unreadable ({exc}); "
                        "fetch them again with --set data.download=true") from None
