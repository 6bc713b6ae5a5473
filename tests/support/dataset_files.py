"""Tiny datasets written in the real on-disk formats, for tests (no download, ever).

    write_cifar10(tmp_path)        # tmp_path/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}
    write_cifar100(tmp_path)       # tmp_path/cifar-100-python/{train,test,meta}
    write_imagenette(tmp_path)     # tmp_path/imagenette2-160/{train,val}/<wnid>/*.JPEG
    write_fashion_mnist(tmp_path)  # tmp_path/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
    write_svhn(tmp_path)           # tmp_path/{train,test}_32x32.mat (scipy.io, torchvision's layout)
    write_stl10(tmp_path)          # tmp_path/stl10_binary/{train,test}_{X,y}.bin, class_names.txt
    write_tiny_imagenet(tmp_path)  # tmp_path/tiny-imagenet-200/{wnids.txt,words.txt,train/,val/}
    write_image_folder(tmp_path)   # tmp_path/{train,val}/<class>/*.png

Then `--set data.root=<tmp_path>` finds them. Every image encodes its label so a
test can check that images and labels stay paired: the red channel is
`label_value(label)` everywhere, the green channel 255 minus that, blue is noise (svhn, stl10,
tiny-imagenet and image folders: the top row carries the two colours, the rest is noise).
"""

from __future__ import annotations

import dataclasses
import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

from battui.config import DataConfig

IMAGENETTE_WNIDS = [
    "n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
    "n03394916", "n03417042", "n03425413", "n03445777", "n03888605",
]
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def label_value(label: int, num_classes: int = 10) -> int:
    """The red-channel value every image of class `label` carries."""
    return int(round(label * 250 / max(num_classes - 1, 1)))


def _images(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [N, 3072] in CIFAR row layout: 1024 red, 1024 green, 1024 blue values."""
    red = np.array([label_value(int(c), num_classes) for c in labels], dtype=np.uint8)
    data = np.empty((len(labels), 3, 1024), dtype=np.uint8)
    data[:, 0] = red[:, None]
    data[:, 1] = 255 - red[:, None]
    data[:, 2] = rng.integers(0, 256, size=(len(labels), 1024), dtype=np.uint8)
    return data.reshape(len(labels), 3072)


def _labels(num_classes: int, per_class: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.repeat(np.arange(num_classes), per_class))


def _dump(obj: dict, path: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def write_cifar10(root: str | Path, n_per_class: int = 5, n_test_per_class: int = 2, seed: int = 0) -> Path:
    """A CIFAR-10 python release with `n_per_class` training images per class over 5 batches."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train = _labels(10, n_per_class, rng)
    for i, part in enumerate(np.array_split(np.arange(len(train)), 5), start=1):
        labels = train[part]
        _dump({b"batch_label": f"training batch {i} of 5".encode(), b"labels": labels.tolist(),
               b"data": _images(labels, 10, rng), b"filenames": [b"x.png"] * len(labels)},
              folder / f"data_batch_{i}")
    test = _labels(10, n_test_per_class, rng)
    _dump({b"batch_label": b"testing batch 1 of 1", b"labels": test.tolist(), b"data": _images(test, 10, rng),
           b"filenames": [b"x.png"] * len(test)}, folder / "test_batch")
    _dump({b"num_cases_per_batch": 10000, b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_vis": 3072},
          folder / "batches.meta")
    return folder


def write_cifar100(root: str | Path, n_per_class: int = 2, n_test_per_class: int = 1, seed: int = 0) -> Path:
    """A CIFAR-100 python release (`train`, `test`, `meta`) with fine labels `fine00`..`fine99`."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, per_class in (("train", n_per_class), ("test", n_test_per_class)):
        fine = _labels(100, per_class, rng)
        _dump({b"batch_label": name.encode(), b"fine_labels": fine.tolist(), b"coarse_labels": (fine // 5).tolist(),
               b"data": _images(fine, 100, rng), b"filenames": [b"x.png"] * len(fine)}, folder / name)
    _dump({b"fine_label_names": [f"fine{i:02d}".encode() for i in range(100)],
           b"coarse_label_names": [f"coarse{i:02d}".encode() for i in range(20)]}, folder / "meta")
    return folder


def write_imagenette(
    root: str | Path, n_train_per_class: int = 4, n_val_per_class: int = 2, size: tuple[int, int] = (48, 40),
    subdir: str = "imagenette2-160", seed: int = 0,
) -> Path:
    """JPEG class folders `train/<wnid>/`, `val/<wnid>/` as in fastai's imagenette2-160.tgz."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder = Path(root) / subdir
    w, h = size
    for split, count in (("train", n_train_per_class), ("val", n_val_per_class)):
        for label, wnid in enumerate(IMAGENETTE_WNIDS):
            (folder / split / wnid).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = np.empty((h, w, 3), dtype=np.uint8)
                pixels[..., 0] = label_value(label)
                pixels[..., 1] = 255 - label_value(label)
                pixels[..., 2] = rng.integers(100, 156)
                Image.fromarray(pixels).save(folder / split / wnid / f"{wnid}_{i}.JPEG", quality=95)
    return folder


FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding: 0, 0, type 0x08 (unsigned byte), ndim, each dimension a big-endian uint32, then the bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_fashion_mnist(root: str | Path, n_per_class: int = 6, n_test_per_class: int = 2, gz: bool = True,
                        size: int = 28, seed: int = 0) -> Path:
    """The four Fashion-MNIST IDX files in `root` (gzipped or plain). Image pixel [0, 0] is
    `label_value(label)` and the top row the same; the rest is noise."""
    rng = np.random.default_rng(seed)
    folder = Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, per_class in (("train", n_per_class), ("t10k", n_test_per_class)):
        labels = _labels(10, per_class, rng).astype(np.uint8)
        images = rng.integers(0, 256, size=(len(labels), size, size), dtype=np.uint8)
        images[:, 0, :] = np.array([label_value(int(c)) for c in labels], dtype=np.uint8)[:, None]
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            data = _idx_bytes(array)
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return folder


def _labelled_images(labels: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [N, 3, side, side]: the top row's red is `label_value(label)`, green 255 minus it; the rest noise."""
    images = rng.integers(0, 256, size=(len(labels), 3, side, side), dtype=np.uint8)
    red = np.array([label_value(int(c)) for c in labels], dtype=np.uint8)
    images[:, 0, 0, :] = red[:, None]
    images[:, 1, 0, :] = 255 - red[:, None]
    return images


def write_svhn(root: str | Path, n_per_class: int = 4, n_test_per_class: int = 2, seed: int = 0) -> Path:
    """`train_32x32.mat`, `test_32x32.mat` as torchvision stores them: X uint8 [32, 32, 3, N], y [N, 1] with digit 0
    stored as 10. Returns the folder; `label_value` marks each image's top row with its digit (0..9)."""
    import scipy.io

    rng = np.random.default_rng(seed)
    folder = Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    for name, per_class in (("train_32x32.mat", n_per_class), ("test_32x32.mat", n_test_per_class)):
        digits = _labels(10, per_class, rng)
        images = _labelled_images(digits, 32, rng)  # N, C, H, W
        stored = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(-1, 1)
        scipy.io.savemat(folder / name, {"X": np.transpose(images, (2, 3, 1, 0)), "y": stored})
    return folder


STL10_NAMES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


def write_stl10(root: str | Path, n_per_class: int = 3, n_test_per_class: int = 2, seed: int = 0) -> Path:
    """`stl10_binary/{train,test}_{X,y}.bin` + `class_names.txt`: 96x96 images, each channel written column-major
    (the release's layout), labels 1..10."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    for split, per_class in (("train", n_per_class), ("test", n_test_per_class)):
        labels = _labels(10, per_class, rng)
        images = _labelled_images(labels, 96, rng)
        (folder / f"{split}_X.bin").write_bytes(np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tobytes())
        (folder / f"{split}_y.bin").write_bytes((labels + 1).astype(np.uint8).tobytes())
    (folder / "class_names.txt").write_text("\n".join(STL10_NAMES) + "\n")
    return folder


def _save_png(images: np.ndarray, paths: list[Path], fmt: str = "PNG") -> None:
    from PIL import Image

    for image, path in zip(images, paths, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0))).save(path, format=fmt)


TINY_WNIDS = ["n01443537", "n01629819", "n01641577", "n01644900"]
TINY_WORDS = {"n01443537": "goldfish, Carassius auratus", "n01629819": "European fire salamander",
              "n01641577": "bullfrog, Rana catesbeiana", "n01644900": "tailed frog, bell toad"}


def write_tiny_imagenet(root: str | Path, n_per_class: int = 3, n_val_per_class: int = 2, side: int = 16,
                        seed: int = 0) -> Path:
    """`tiny-imagenet-200/` with wnids.txt, words.txt, train/<wnid>/images/*.JPEG and val/images/*.JPEG labelled by
    val/val_annotations.txt (val files in shuffled order, so labels can only come from the annotations). PNG data in
    .JPEG files keeps the label colours exact (PIL reads by content)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "tiny-imagenet-200"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    (folder / "words.txt").write_text("".join(f"{w}\t{n}\n" for w, n in TINY_WORDS.items()) + "n09999999\tunused\n")
    labels = np.repeat(np.arange(len(TINY_WNIDS)), n_per_class)
    _save_png(_labelled_images(labels * 3, side, rng),  # label_value of 3*label: 4 classes spread over 0..9
              [folder / "train" / TINY_WNIDS[c] / "images" / f"{TINY_WNIDS[c]}_{i}.JPEG" for i, c in enumerate(labels)])
    val = rng.permutation(np.repeat(np.arange(len(TINY_WNIDS)), n_val_per_class))
    names = [f"val_{i}.JPEG" for i in range(len(val))]
    _save_png(_labelled_images(val * 3, side, rng), [folder / "val" / "images" / n for n in names])
    (folder / "val" / "val_annotations.txt").write_text(
        "".join(f"{n}\t{TINY_WNIDS[c]}\t0\t0\t{side}\t{side}\n" for n, c in zip(names, val, strict=True)))
    return folder


def write_image_folder(root: str | Path, classes: tuple[str, ...] = ("cat", "dog", "frog"), n_per_class: int = 4,
                       n_test_per_class: int = 2, side: int = 12, test_dir: str = "val", seed: int = 0) -> Path:
    """`train/<class>/*.png` and `<test_dir>/<class>/*.png`; class `i` (sorted order) carries `label_value(i)`."""
    rng = np.random.default_rng(seed)
    folder = Path(root)
    for split, count in (("train", n_per_class), (test_dir, n_test_per_class)):
        labels = np.repeat(np.arange(len(classes)), count)
        _save_png(_labelled_images(labels, side, rng),
                  [folder / split / classes[c] / f"{i}.png" for i, c in enumerate(labels)])
    return folder


def data_config(**kw) -> DataConfig:
    """The default `data` section with `kw` replaced: the loaders' tests build configs with it."""
    return dataclasses.replace(DataConfig(), **kw)
