"""SVHN, STL-10, Tiny-ImageNet and image folders read from fixtures written in each real on-disk format
(tests/support/dataset_files.py): labels stay with their images, the format's quirks (SVHN's 10 = digit 0,
STL-10's column-major channels, Tiny-ImageNet's val annotations) are undone, a missing dataset is one line
saying how to get it, and a `folder` tree of generated PNGs trains end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from battui.data import build_datasets
from battui.errors import UserError
from tests.support.cli import run_many
from tests.support.dataset_files import (
    STL10_NAMES,
    label_value,
    write_image_folder,
    write_stl10,
    write_svhn,
    write_tiny_imagenet,
)
from tests.support.dataset_files import data_config as cfg


def top_row_labels(images: torch.Tensor, values: list[int]) -> torch.Tensor:
    """The label each image's top row encodes (red = label_value, green = 255 - red, across the whole row)."""
    red, green = images[:, 0, 0, :].long(), images[:, 1, 0, :].long()
    assert torch.equal(red + green, torch.full_like(red, 255)) and (red == red[:, :1]).all()
    lookup = {v: i for i, v in enumerate(values)}
    return torch.tensor([lookup[int(v)] for v in red[:, 0]])


def test_svhn_mat_files(tmp_path):
    write_svhn(tmp_path / "svhn", n_per_class=4, n_test_per_class=2)
    splits = build_datasets(cfg(name="svhn", root=str(tmp_path), val_per_class=1))
    assert splits.classes == [str(d) for d in range(10)]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (30, 10, 20)
    assert splits.train.images.dtype == torch.uint8 and splits.train.images.shape[1:] == (3, 32, 32)
    values = [label_value(d) for d in range(10)]
    for split in (splits.train, splits.val, splits.test):  # digit 0 (stored as 10) reads as class 0
        assert torch.equal(top_row_labels(split.images, values), split.labels)
    assert torch.equal(splits.test.class_counts(10), torch.full((10,), 2))


def test_stl10_binary_is_read_column_major(tmp_path):
    write_stl10(tmp_path, n_per_class=3, n_test_per_class=2)
    splits = build_datasets(cfg(name="stl10", root=str(tmp_path), val_per_class=1))
    assert splits.classes == STL10_NAMES and splits.train.images.shape[1:] == (3, 96, 96)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (20, 10, 20)
    values = [label_value(c) for c in range(10)]
    for split in (splits.train, splits.test):  # a transposed read would put the marks in column 0 instead
        assert torch.equal(top_row_labels(split.images, values), split.labels)
    small = build_datasets(cfg(name="stl10", root=str(tmp_path), val_per_class=0, image_size=64))
    assert small.image_size == 64 and small.train.images.shape[1:] == (3, 64, 64)


def test_tiny_imagenet_labels_val_from_its_annotations(tmp_path):
    write_tiny_imagenet(tmp_path, n_per_class=3, n_val_per_class=2, side=16)
    splits = build_datasets(cfg(name="tiny-imagenet", root=str(tmp_path), val_per_class=1, image_size=16))
    assert splits.classes == ["goldfish", "European fire salamander", "bullfrog", "tailed frog"]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (8, 4, 8)
    values = [label_value(3 * c) for c in range(4)]
    for split in (splits.train, splits.test):  # val files are shuffled: only the annotations pair them right
        assert torch.equal(top_row_labels(split.images, values), split.labels)
    assert (tmp_path / "tiny-imagenet-200" / "battui-cache-16px.pt").is_file()
    notes = tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    notes.write_text(notes.read_text() + "val_0.JPEG\tn00000000\t0\t0\t1\t1\n")
    with pytest.raises(UserError, match="line 9: expected"):
        build_datasets(cfg(name="tiny-imagenet", root=str(tmp_path), image_size=16))


def test_image_folder_names_classes_by_folder_and_resizes(tmp_path):
    write_image_folder(tmp_path / "a", classes=("frog", "cat", "dog"), test_dir="test", side=12)
    splits = build_datasets(cfg(name="folder", root=str(tmp_path / "a"), val_per_class=1, image_size=12))
    assert splits.classes == ["cat", "dog", "frog"]  # sorted folder names; write_image_folder labels in its order
    assert (len(splits.train), len(splits.val), len(splits.test)) == (9, 3, 6)
    written = {"frog": 0, "cat": 1, "dog": 2}
    values = [label_value(written[name]) for name in splits.classes]
    for split in (splits.train, splits.val, splits.test):
        assert torch.equal(top_row_labels(split.images, values), split.labels)
    assert build_datasets(cfg(name="folder", root=str(tmp_path / "a"), image_size=8)).image_size == 8
    assert (tmp_path / "a" / "battui-cache-8px.pt").is_file()
    (tmp_path / "a" / "test" / "owl").mkdir()
    with pytest.raises(UserError, match="class folders that train/ lacks: owl"):
        build_datasets(cfg(name="folder", root=str(tmp_path / "a")))


@pytest.mark.parametrize("name, needles", [
    ("svhn", ("SVHN not found", "train_32x32.mat", "ufldl.stanford.edu", "data.download=true")),
    ("stl10", ("STL-10 not found", "stl10_binary", "cs.stanford.edu/~acoates/stl10", "data.download=true")),
    ("tiny-imagenet", ("Tiny-ImageNet not found", "val_annotations.txt", "tiny-imagenet-200.zip")),
    ("folder", ("no image-folder dataset", "train/<class>/", "val/")),
])
def test_missing_data_says_where_it_looked_and_how_to_get_it(tmp_path, name, needles):
    with pytest.raises(UserError) as err:
        build_datasets(cfg(name=name, root=str(tmp_path)))
    message = str(err.value)
    assert "\n" not in message and str(tmp_path) in message
    for needle in needles:
        assert needle in message


def test_broken_svhn_file_is_one_line(tmp_path):
    import scipy.io

    write_svhn(tmp_path)
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8)})
    with pytest.raises(UserError, match="SVHN files in .* are unreadable \\(no X and y arrays"):
        build_datasets(cfg(name="svhn", root=str(tmp_path)))


def test_a_folder_of_pngs_trains_end_to_end(tmp_path, one_thread):
    root = write_image_folder(tmp_path / "pngs", n_per_class=12, n_test_per_class=4, side=12)
    runs = tmp_path / "runs"
    [result] = run_many([["train", "--preset", "synthetic-tiny", "--headless", "--epochs", "1", "--run-name", "f",
                          "--set", "data.name=folder", "--set", f"data.root={root}", "--set", "data.image_size=8",
                          "--set", "data.val_per_class=2", "--set", f"run.root={runs}"]], cwd=tmp_path, tmp=tmp_path)
    assert result.code == 0, result.err[-2000:]
    events = [json.loads(line) for line in (runs / "f" / "events.jsonl").read_text().splitlines()]
    started = next(e for e in events if e["type"] == "run_started")
    assert started["classes"] == ["cat", "dog", "frog"] and started["dataset"] == "folder"
    assert [e["status"] for e in events if e["type"] == "run_finished"] == ["completed"]
    assert any(e["type"] == "eval" and e.get("split") == "test" for e in events)
    ckpt = torch.load(runs / "f" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["data_info"] == {"num_classes": 3, "in_channels": 3, "classes": ["cat", "dog", "frog"],
                                 "image_size": 8}


def test_paper_presets_follow_their_sources(tmp_path):
    from battui.config import load_config
    from battui.engine.setup import EpochSchedule

    write_stl10(tmp_path)
    write_svhn(tmp_path)
    stl = load_config("stl10-resnet18", [f"data.root={tmp_path}", "data.val_per_class=1"])
    dafa_lr = lambda e: 0.1 * (1 if e < 100 else 0.1 if e < 105 else 0.01)  # noqa: E731  rucy74/DAFA, 1-based
    stl_lr = EpochSchedule(stl.train)
    assert [stl.train.lr * stl_lr(e - 1) for e in range(1, 111)] == pytest.approx([dafa_lr(e) for e in range(1, 111)])
    assert (stl.attack.eps, stl.attack.step_size, stl.attack.steps, stl.train.weight_decay) == (0.031, 0.007, 10, 5e-4)
    assert build_datasets(stl.data, seed=0).image_size == 64
    svhn = load_config("svhn-resnet18", [f"data.root={tmp_path}", "data.val_per_class=1"])
    rice_lr = lambda t: 0.01 if t / 200 < 0.5 else 0.001 if t / 200 < 0.75 else 0.0001  # noqa: E731  train_svhn.py
    svhn_lr = EpochSchedule(svhn.train)
    assert [svhn.train.lr * svhn_lr(e) for e in range(200)] == pytest.approx([rice_lr(e) for e in range(200)])
    assert not svhn.data.augment and build_datasets(svhn.data, seed=0).num_classes == 10


def test_svhn_download_fetches_both_splits_through_torchvision(tmp_path, monkeypatch):
    import torchvision

    source = write_svhn(tmp_path / "source")
    calls = []

    def fake_svhn(root, split="train", download=False):  # writes where torchvision would
        calls.append((split, download))
        name = f"{split}_32x32.mat"
        Path(root).mkdir(parents=True, exist_ok=True)
        (Path(root) / name).write_bytes((source / name).read_bytes())

    monkeypatch.setattr(torchvision.datasets, "SVHN", fake_svhn)
    splits = build_datasets(cfg(name="svhn", root=str(tmp_path / "data"), download=True, val_per_class=0))
    assert calls == [("train", True), ("test", True)] and len(splits.test) == 20

    def offline(*args, **kwargs):
        raise OSError("network unreachable\nretry later")

    monkeypatch.setattr(torchvision.datasets, "SVHN", offline)
    with pytest.raises(UserError, match="could not download SVHN into .*: network unreachable retry later"):
        build_datasets(cfg(name="svhn", root=str(tmp_path / "empty"), download=True))
