"""ImageNette (fast.ai): 10 easy ImageNet classes in the fastai folder layout.

Looks in `data.root` and in `data.root/imagenette2{,-160,-320}` for `train/` and
`val/`, each with one folder per class (WordNet ids such as `n01440764`, shown
by their readable names: tench, English springer, ...). `val/` is the official
test split; battui's val is held out of `train/`. Images are decoded once,
resized (shorter side) and centre-cropped to `data.image_size` (64 when 0),
and kept as uint8. The decoded tensors are cached next to the data in
`battui-cache-<size>px.pt`, so the second run starts in a second; the cache is
rebuilt whenever the file list changes.

    train, test = load_imagenette_pools("data", size=64)
    train.images.shape    # [9469, 3, 64, 64] uint8 for the full imagenette2
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from battui.data.splits import Pool
from battui.errors import UserError

WNID_NAMES = {
    "n01440764": "tench",
    "n02102040": "English springer",
    "n02979186": "cassette player",
    "n03000684": "chain saw",
    "n03028079": "church",
    "n03394916": "French horn",
    "n03417042": "garbage truck",
    "n03425413": "gas pump",
    "n03445777": "golf ball",
    "n03888605": "parachute",
}
FOLDERS = ("", "imagenette2", "imagenette2-160", "imagenette2-320", "imagenette")
EXTENSIONS = (".jpg", ".jpeg", ".png")
DEFAULT_SIZE = 64
URL = "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz"


def _class_dirs(split_dir: Path) -> list[Path]:
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _find(root: Path) -> Path | None:
    for folder in FOLDERS:
        where = root / folder
        if (where / "train").is_dir() and (where / "val").is_dir() and _class_dirs(where / "train"):
            return where
    return None


def _files(split_dir: Path, wnids: list[str]) -> tuple[list[Path], list[int]]:
    paths, labels = [], []
    for label, wnid in enumerate(wnids):
        folder = split_dir / wnid
        if not folder.is_dir():
            continue
        found = sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS)
        paths += found
        labels += [label] * len(found)
    return paths, labels


def _decode(paths: list[Path], size: int) -> torch.Tensor:
    from PIL import Image, ImageOps

    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as img:
                img.draft("RGB", (size, size))  # JPEG decodes at 1/2, 1/4, 1/8 scale when that is enough
                img = ImageOps.fit(img.convert("RGB"), (size, size), Image.Resampling.BILINEAR)
                out[i] = np.asarray(img)
        except OSError as exc:
            raise UserError(f"cannot decode ImageNette image {path}: {exc}") from None
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _signature(paths: list[Path], size: int) -> str:
    digest = hashlib.sha1(str(size).encode())
    for p in paths:
        digest.update(f"{p.parent.name}/{p.name}:{os.stat(p).st_size}\n".encode())
    return digest.hexdigest()


def _download(root: Path) -> None:
    import torchvision

    try:
        torchvision.datasets.Imagenette(str(root), split="train", size="160px", download=True)
    except Exception as exc:  # network errors come in many types
        raise UserError(f"could not download ImageNette into {root}: {exc}".replace("\n", " ")) from None


def load_imagenette_pools(root: str | Path, size: int = 0, download: bool = False) -> tuple[Pool, Pool]:
    """(train pool, official val pool as test) decoded at `size` (64 when 0); UserError when missing."""
    root = Path(root).expanduser()
    size = size or DEFAULT_SIZE
    where = _find(root)
    if where is None and download:
        _download(root)
        where = _find(root)
    if where is None:
        looked = ", ".join(str(root / f) if f else str(root) for f in FOLDERS[:3])
        raise UserError(
            f"ImageNette not found: looked for train/ and val/ class folders in {looked}; "
            f"unpack {URL} there and point --set data.root=DIR at it, or fetch it with --set data.download=true"
        )
    wnids = [p.name for p in _class_dirs(where / "train")]
    classes = [WNID_NAMES.get(w, w) for w in wnids]
    train_paths, train_labels = _files(where / "train", wnids)
    test_paths, test_labels = _files(where / "val", wnids)
    signature = _signature(train_paths + test_paths, size)
    cache = where / f"battui-cache-{size}px.pt"
    if cache.is_file():
        try:
            saved = torch.load(cache, map_location="cpu", weights_only=True)
            if saved.get("signature") == signature:
                return (Pool(saved["train_images"], saved["train_labels"], classes),
                        Pool(saved["test_images"], saved["test_labels"], classes))
        except Exception:  # a stale or broken cache is rebuilt, never fatal
            pass
    train = Pool(_decode(train_paths, size), torch.tensor(train_labels, dtype=torch.long), classes)
    test = Pool(_decode(test_paths, size), torch.tensor(test_labels, dtype=torch.long), classes)
    saved = {"signature": signature, "train_images": train.images, "train_labels": train.labels,
             "test_images": test.images, "test_labels": test.labels}
    tmp = cache.with_suffix(".tmp")
    try:
        torch.save(saved, tmp)
        os.replace(tmp, cache)
    except OSError:  # read-only data folder: decode again next time
        tmp.unlink(missing_ok=True)
    return train, test
