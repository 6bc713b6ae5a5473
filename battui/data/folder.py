"""`folder`: any image-folder tree, one sub-folder per class, with a training and a test split.

    <data.root>/train/<class>/*.png|jpg|jpeg
    <data.root>/val/<class>/...   (or test/: the split battui tests on)

The class names are the folder names under train/, sorted (a test folder of a class train/
lacks is refused). Images are decoded once as RGB, resized (shorter side) and centre-cropped
to `data.image_size` (32 when 0) and cached as `battui-cache-<size>px.pt` in `data.root`,
rebuilt whenever the files change. battui's val split is held out of train/.

    train, test = load_folder_pools("my-images", size=32)
    train.classes         # ["cat", "dog", ...]
"""

from __future__ import annotations

from pathlib import Path

from battui.data.images import class_folders, decoded_pools, labelled_files
from battui.data.splits import Pool
from battui.errors import UserError

DEFAULT_SIZE = 32
TEST_FOLDERS = ("val", "test")


def load_folder_pools(root: str | Path, size: int = 0) -> tuple[Pool, Pool]:
    """(train/ pool, val/ or test/ pool) decoded at `size` (32 when 0); UserError when the tree is not there."""
    root = Path(root).expanduser()
    size = size or DEFAULT_SIZE
    test_dir = next((root / f for f in TEST_FOLDERS if (root / f).is_dir()), None)
    train_dir = root / "train"
    classes = [p.name for p in class_folders(train_dir)] if train_dir.is_dir() else []
    if not classes or test_dir is None:
        raise UserError(f"no image-folder dataset in {root}: expected train/<class>/ folders of images and val/ "
                        "(or test/) with the same class folders; point --set data.root=DIR at such a tree")
    extra = sorted(set(p.name for p in class_folders(test_dir)) - set(classes))
    if extra:
        raise UserError(f"{test_dir} has class folders that train/ lacks: {', '.join(extra[:5])}")
    train_paths, train_labels = labelled_files(train_dir, classes)
    test_paths, test_labels = labelled_files(test_dir, classes)
    if not train_paths or not test_paths:
        empty = train_dir if not train_paths else test_dir
        raise UserError(f"no .png/.jpg/.jpeg images in the class folders of {empty}")
    return decoded_pools(root, size, "folder", classes, (train_paths, train_labels),
                         (test_paths, test_labels))
