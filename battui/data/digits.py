"""scikit-learn's bundled 8x8 handwritten digits (UCI optdigits test set): 1797 images, 10 classes.

Real data with no download. Pixels take 17 levels (0..16), scaled to [0, 1] and
kept as float32 so every level is exact. There is no official test split:
`data.test_fraction` of each class is held out as test (stratified, seeded).

    pool = load_digits_pool()        # Pool(images [1797,1,8,8] float, labels [1797], classes "0".."9")
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from battui.data.splits import Pool
from battui.errors import UserError


def digits_file() -> Path:
    """scikit-learn's `datasets/data/digits.csv.gz`, found without importing scikit-learn (1.5 s)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the digits data comes with scikit-learn, which is not installed: pip install scikit-learn")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"


def load_digits_pool() -> Pool:
    """The file `sklearn.datasets.load_digits` reads: one row per image, 64 pixels then the label."""
    path = digits_file()
    try:
        with gzip.open(path, "rt") as f:
            rows = np.loadtxt(f, delimiter=",", dtype=np.int64)
    except OSError as exc:
        raise UserError(f"cannot read the digits data scikit-learn ships ({path}: {exc.strerror or exc}); "
                        "reinstall scikit-learn") from None
    images = torch.from_numpy(rows[:, :64]).float().div_(16.0).view(-1, 1, 8, 8).contiguous()
    labels = torch.from_numpy(rows[:, 64]).long()
    return Pool(images, labels, [str(c) for c in range(10)])
