"""scikit-learn's bundled 8x8 handwritten digits (UCI optdigits test set): 1797 images, 10 classes.

Real data with no download. Pixels take 17 levels (0..16), scaled to [0, 1] and
kept as float32 so every level is exact. There is no official test split:
`data.test_fraction` of each class is held out as test (stratified, seeded).

    pool = load_digits_pool()        # Pool(images [1797,1,8,8] float, labels [1797], classes "0".."9")
"""

from __future__ import annotations

import torch

from battui.data.splits import Pool


def load_digits_pool() -> Pool:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float().div_(16.0).unsqueeze(1).contiguous()
    labels = torch.from_numpy(bunch.target).long()
    return Pool(images, labels, [str(int(t)) for t in bunch.target_names])
