"""SVHN (Netzer et al. 2011): 32x32 colour house-number digits, torchvision's on-disk format (MATLAB .mat).

Looks for `train_32x32.mat` and `test_32x32.mat` (where torchvision's `SVHN(root,
download=True)` puts them) in `data.root` and `data.root/svhn/`. Each holds `X`, uint8
[32, 32, 3, N], and `y`, [N, 1] with the digit 0 stored as label 10 (read here as 0,
as torchvision does); scipy.io reads them. The official 73,257 / 26,032 split: test is
the test split, battui's val is held out of train (`extra_32x32.mat` is not used).
`data.download=true` fetches them with torchvision.

    train, test = load_svhn_pools("data")
    train.images.shape    # [73257, 3, 32, 32] uint8
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from battui.data.fetch import find_or_fetch, first_folder
from battui.data.splits import Pool
from battui.errors import UserError

CLASSES = [str(d) for d in range(10)]
FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
FOLDERS = ("", "svhn", "SVHN")
URL = "http://ufldl.stanford.edu/housenumbers/"


def _find(root: Path) -> Path | None:
    return first_folder(root, FOLDERS, lambda where: all((where / f).is_file() for f in FILES.values()))


def read_svhn_mat(path: Path) -> Pool:
    """One split's .mat file as a pool; ValueError when its arrays are not SVHN's."""
    import scipy.io

    mat = scipy.io.loadmat(str(path))
    if "X" not in mat or "y" not in mat:
        raise ValueError(f"no X and y arrays (it has {', '.join(k for k in mat if not k.startswith('__'))})")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1).astype(np.int64)
    if x.ndim != 4 or x.shape[2] != 3 or x.shape[3] != len(y):
        raise ValueError(f"X has shape {x.shape}, expected [32, 32, 3, {len(y)}]")
    if len(y) and (y.min() < 0 or y.max() > 10):
        raise ValueError(f"labels go from {y.min()} to {y.max()}; SVHN's are 1..10 (10 = digit 0)")
    y[y == 10] = 0
    images = torch.from_numpy(np.ascontiguousarray(np.transpose(x, (3, 2, 0, 1))).astype(np.uint8))  # N, C, H, W
    return Pool(images, torch.from_numpy(y), list(CLASSES))


def load_svhn_pools(root: str | Path, download: bool = False) -> tuple[Pool, Pool]:
    """(train pool, official test pool); UserError when the files are missing or unreadable."""
    root = Path(root).expanduser()
    where = find_or_fetch(root, _find, download, "SVHN", "SVHN", *({"split": split} for split in FILES))
    if where is None:
        looked = ", ".join(str(root / f) if f else str(root) for f in FOLDERS[:2])
        raise UserError(f"SVHN not found: looked for {FILES['train']} and {FILES['test']} in {looked}; "
                        f"get them from {URL} (or fetch them with --set data.download=true) "
                        "and point --set data.root=DIR at them")
    try:
        return read_svhn_mat(where / FILES["train"]), read_svhn_mat(where / FILES["test"])
    except (OSError, ValueError, NotImplementedError) as exc:
        raise UserError(f"SVHN files in {where} are unreadable ({exc}); "
                        "fetch them again with --set data.download=true") from None
