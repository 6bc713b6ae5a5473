"""Tiny-ImageNet (Le and Yang 2015): 200 ImageNet classes at 64x64, in its release's folder layout.

Looks for `tiny-imagenet-200/` (the unpacked tiny-imagenet-200.zip) in `data.root`, or for
its contents in `data.root` itself:

    wnids.txt                      the 200 class ids (n01443537, ...), one a line: the class order
    words.txt                      optional: "<wnid>\t<names, comma-separated>"; a class shows its first name
    train/<wnid>/images/*.JPEG     500 per class
    val/images/*.JPEG              50 per class, labelled by
    val/val_annotations.txt        "<file>\t<wnid>\t<x0>\t<y0>\t<x1>\t<y1>" per line

The official val split is battui's test split (the release's test/ has no labels);
battui's val is held out of train. Images are decoded once (at `data.image_size`, 64
when 0) and cached as `battui-cache-<size>px.pt` next to the data, like ImageNette.

    train, test = load_tiny_imagenet_pools("data")
    train.images.shape    # [100000, 3, 64, 64] uint8
"""

from __future__ import annotations

from pathlib import Path

from battui.data.fetch import first_folder
from battui.data.images import decoded_pools, image_files
from battui.data.splits import Pool
from battui.errors import UserError

FOLDERS = ("tiny-imagenet-200", "")
DEFAULT_SIZE = 64
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


def _find(root: Path) -> Path | None:
    return first_folder(root, FOLDERS, lambda where: (where / "wnids.txt").is_file() and (where / "train").is_dir()
                        and (where / "val" / "val_annotations.txt").is_file())


def _names(where: Path, wnids: list[str]) -> list[str]:
    words: dict[str, str] = {}
    path = where / "words.txt"
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            wnid, _, names = line.partition("\t")
            words[wnid.strip()] = names.split(",")[0].strip()
    return [words.get(w) or w for w in wnids]


def _val_files(where: Path, index: dict[str, int]) -> tuple[list[Path], list[int]]:
    paths, labels = [], []
    for n, line in enumerate((where / "val" / "val_annotations.txt").read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise UserError(f"{where / 'val' / 'val_annotations.txt'} line {n}: expected '<file>\\t<wnid>\\t...' with "
                            f"a wnid from wnids.txt, got {line[:80]!r}")
        path = where / "val" / "images" / fields[0]
        if not path.is_file():
            raise UserError(f"Tiny-ImageNet: {path} is listed in val_annotations.txt but missing")
        paths.append(path)
        labels.append(index[fields[1]])
    return paths, labels


def load_tiny_imagenet_pools(root: str | Path, size: int = 0) -> tuple[Pool, Pool]:
    """(train pool, official val pool as test) decoded at `size` (64 when 0); UserError when missing."""
    root = Path(root).expanduser()
    size = size or DEFAULT_SIZE
    where = _find(root)
    if where is None:
        raise UserError(f"Tiny-ImageNet not found: looked for wnids.txt, train/ and val/val_annotations.txt in "
                        f"{root / FOLDERS[0]} and {root}; download and unzip {URL} there "
                        "and point --set data.root=DIR at it")
    wnids = [w.strip() for w in (where / "wnids.txt").read_text().splitlines() if w.strip()]
    classes = _names(where, wnids)
    train_paths, train_labels = [], []
    for label, wnid in enumerate(wnids):
        folder = where / "train" / wnid / "images"
        found = image_files(folder) if folder.is_dir() else []
        train_paths += found
        train_labels += [label] * len(found)
    test_paths, test_labels = _val_files(where, {w: i for i, w in enumerate(wnids)})
    return decoded_pools(where, size, "Tiny-ImageNet", classes, (train_paths, train_labels),
                         (test_paths, test_labels))
