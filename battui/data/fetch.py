"""Finding a dataset on disk, and fetching it through torchvision when `data.download=true`.

    where = find_or_fetch(root, _find, download, "SVHN", "SVHN", {"split": "train"}, {"split": "test"})

`find(root)` returns the folder holding the files or None; when it is None and `download`
is on, each `torchvision.datasets.<dataset>(root, download=True, **call)` runs and `find`
looks again. A failed download (network errors come in many types) is one UserError line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from battui.errors import UserError


def first_folder(root: Path, folders: Iterable[str], holds: Callable[[Path], bool]) -> Path | None:
    """The first `root / folder` (folder "" is `root` itself) that `holds` the dataset's files, else None."""
    return next((where for where in (root / folder for folder in folders) if holds(where)), None)


def find_or_fetch(root: Path, find: Callable[[Path], Path | None], download: bool, pretty: str, dataset: str,
                  *calls: dict[str, Any]) -> Path | None:
    where = find(root)
    if where is not None or not download:
        return where
    import torchvision

    try:
        for call in calls or ({},):
            getattr(torchvision.datasets, dataset)(str(root), download=True, **call)
    except Exception as exc:  # network errors come in many types
        raise UserError(f"could not download {pretty} into {root}: {exc}".replace("\n", " ")) from None
    return find(root)
