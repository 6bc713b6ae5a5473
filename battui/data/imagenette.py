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

from pathlib import Path

from battui.data.fetch import find_or_fetch, first_folder
from battui.data.images import class_folders, decoded_pools, labelled_files
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
DEFAULT_SIZE = 64
URL = "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz"


def _find(root: Path) -> Path | None:
    return first_folder(root, FOLDERS, lambda where: (where / "train").is_dir() and (where / "val").is_dir()
                        and bool(class_folders(where / "train")))


def load_imagenette_pools(root: str | Path, size: int = 0, download: bool = False) -> tuple[Pool, Pool]:
    """(train pool, official val pool as test) decoded at `size` (64 when 0); UserError when missing."""
    root = Path(root).expanduser()
    size = size or DEFAULT_SIZE
    where = find_or_fetch(root, _find, download, "ImageNette", "Imagenette", {"split": "train", "size": "160px"})
    if where is None:
        looked = ", ".join(str(root / f) if f else str(root) for f in FOLDERS[:3])
        raise UserError(
            f"ImageNette not found: looked for train/ and val/ class folders in {looked}; "
            f"unpack {URL} there and point --set data.root=DIR at it, or fetch it with --set data.download=true"
        )
    wnids = [p.name for p in class_folders(where / "train")]
    classes = [WNID_NAMES.get(w, w) for w in wnids]
    train_paths, train_labels = labelled_files(where / "train", wnids)
    test_paths, test_labels = labelled_files(where / "val", wnids)
    return decoded_pools(where, size, "ImageNette", classes, (train_paths, train_labels),
                         (test_paths, test_labels))
