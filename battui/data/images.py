"""Image files decoded once into uint8 tensors and cached next to the data (ImageNette, Tiny-ImageNet, folder).

    images = decode_images(paths, 64, "ImageNette")    # uint8 [N, 3, 64, 64]: shorter side resized, centre crop
    train, test = decoded_pools(where, 64, "ImageNette", classes, (paths, labels), (test_paths, test_labels))
                                                       # through where/battui-cache-64px.pt

The cache is one `torch.save` of the pools' tensors with a signature of the file list
(names and sizes) and the size, so it is rebuilt whenever the files change; a stale or
broken cache is rebuilt, a read-only data folder decodes again next time.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from battui.data.splits import Pool
from battui.errors import UserError

EXTENSIONS = (".jpg", ".jpeg", ".png")


def image_files(folder: Path) -> list[Path]:
    """The images in `folder` (not its sub-folders), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS and p.is_file())


def class_folders(split_dir: Path) -> list[Path]:
    """The class sub-folders of a split folder (hidden ones left out), sorted by name."""
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def labelled_files(split_dir: Path, names: list[str]) -> tuple[list[Path], list[int]]:
    """The images of `split_dir/<name>/` for each class name, labelled by the name's index (missing folders: none)."""
    paths, labels = [], []
    for label, name in enumerate(names):
        folder = split_dir / name
        if folder.is_dir():
            found = image_files(folder)
            paths += found
            labels += [label] * len(found)
    return paths, labels


def as_labels(labels: list[int]) -> torch.Tensor:
    return torch.tensor(labels, dtype=torch.long)


def decode_images(paths: list[Path], size: int, what: str) -> torch.Tensor:
    """RGB uint8 [N, 3, size, size]: each image's shorter side resized to `size`, then centre-cropped."""
    from PIL import Image, ImageOps

    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as img:
                img.draft("RGB", (size, size))  # JPEG decodes at 1/2, 1/4, 1/8 scale when that is enough
                img = ImageOps.fit(img.convert("RGB"), (size, size), Image.Resampling.BILINEAR)
                out[i] = np.asarray(img)
        except OSError as exc:
            raise UserError(f"cannot decode {what} image {path}: {exc}") from None
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _signature(paths: list[Path], size: int) -> str:
    digest = hashlib.sha1(str(size).encode())
    for p in paths:
        digest.update(f"{p.parent.name}/{p.name}:{os.stat(p).st_size}\n".encode())
    return digest.hexdigest()


def decoded_pools(folder: Path, size: int, what: str, classes: list[str], train: tuple[list[Path], list[int]],
                  test: tuple[list[Path], list[int]]) -> tuple[Pool, Pool]:
    """The (train, test) pools of `(paths, labels)` decoded at `size`, through the cache in `folder`."""
    def build() -> tuple[Pool, Pool]:
        return (Pool(decode_images(train[0], size, what), as_labels(train[1]), classes),
                Pool(decode_images(test[0], size, what), as_labels(test[1]), classes))

    return _cached(folder / f"battui-cache-{size}px.pt", _signature(train[0] + test[0], size), build)


def _cached(cache: Path, sig: str, build: Callable[[], tuple[Pool, Pool]]) -> tuple[Pool, Pool]:
    """(train, test) from `cache` when its signature is `sig`, else `build()` and save it there."""
    if cache.is_file():
        try:
            saved = torch.load(cache, map_location="cpu", weights_only=True)
            if saved.get("signature") == sig:
                return (Pool(saved["train_images"], saved["train_labels"], list(saved["classes"])),
                        Pool(saved["test_images"], saved["test_labels"], list(saved["classes"])))
        except Exception:  # a stale or broken cache is rebuilt, never fatal
            pass
    train, test = build()
    saved = {"signature": sig, "classes": list(train.classes), "train_images": train.images,
             "train_labels": train.labels, "test_images": test.images, "test_labels": test.labels}
    tmp = cache.with_suffix(".tmp")
    try:
        torch.save(saved, tmp)
        os.replace(tmp, cache)
    except OSError:  # read-only data folder: decode again next time
        tmp.unlink(missing_ok=True)
    return train, test
