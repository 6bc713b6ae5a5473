"""Fashion-MNIST: IDX fixtures (gz and plain), Debian's location, download, errors, `data.train_per_class`."""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from battui.cli import main
from battui.config import DataConfig
from battui.data import build_datasets
from battui.data import fashion_mnist as fm
from battui.errors import UserError
from tests.support.dataset_files import FASHION_FILES, label_value, write_fashion_mnist

NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def cfg(root, **kw) -> DataConfig:
    return dataclasses.replace(DataConfig(), name="fashion-mnist", root=str(root), **kw)


@pytest.fixture
def no_system_copy(tmp_path, monkeypatch) -> None:
    """Hide Debian's copy, so only what a test writes can be found."""
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "not-installed")


def assert_paired(images: torch.Tensor, labels: torch.Tensor) -> None:
    expected = torch.tensor([label_value(int(c)) for c in labels], dtype=torch.uint8)
    assert torch.equal(images[:, 0, 0, :], expected[:, None].expand(-1, images.shape[-1]))


def test_gzipped_idx_files_official_split_names_and_stratified_val(tmp_path, no_system_copy) -> None:
    write_fashion_mnist(tmp_path, n_per_class=6, n_test_per_class=3)
    splits = build_datasets(cfg(tmp_path, val_per_class=2), seed=0)
    assert splits.classes == NAMES and (splits.num_classes, splits.in_channels, splits.image_size) == (10, 1, 28)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (40, 20, 30)
    assert torch.equal(splits.val.class_counts(10), torch.full((10,), 2))
    assert torch.equal(splits.test.class_counts(10), torch.full((10,), 3))  # all of t10k, nothing cut from it
    for split in (splits.train, splits.val, splits.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (1, 28, 28)
        assert_paired(split.images, split.labels)


def test_plain_idx_files_in_torchvisions_folder_read_the_same(tmp_path, no_system_copy) -> None:
    write_fashion_mnist(tmp_path / "gz", seed=4)
    write_fashion_mnist(tmp_path / "plain" / "FashionMNIST" / "raw", gz=False, seed=4)
    assert not list((tmp_path / "plain").rglob("*.gz"))
    a, b = (build_datasets(cfg(tmp_path / name), seed=1) for name in ("gz", "plain"))
    for x, y in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
        assert torch.equal(x.images, y.images) and torch.equal(x.labels, y.labels)


def test_read_idx_against_the_format_written_by_hand(tmp_path) -> None:
    array = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    raw = bytes([0, 0, 8, 3]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + (5).to_bytes(4, "big")
    (tmp_path / "a").write_bytes(raw + array.tobytes())
    (tmp_path / "a.gz").write_bytes(gzip.compress(raw + array.tobytes()))
    for name in ("a", "a.gz"):
        assert np.array_equal(fm.read_idx(tmp_path / name), array)
    (tmp_path / "short").write_bytes(raw + array.tobytes()[:-1])
    with pytest.raises(ValueError, match="bytes follow"):
        fm.read_idx(tmp_path / "short")
    (tmp_path / "int").write_bytes(bytes([0, 0, 0x0C, 1]) + (1).to_bytes(4, "big") + bytes(4))
    with pytest.raises(ValueError, match="unsigned bytes"):
        fm.read_idx(tmp_path / "int")


def test_train_per_class_keeps_a_stratified_seeded_subset_of_the_training_split(tmp_path, no_system_copy) -> None:
    write_fashion_mnist(tmp_path, n_per_class=12)
    full = build_datasets(cfg(tmp_path, val_per_class=2), seed=3)
    sub = build_datasets(cfg(tmp_path, val_per_class=2, train_per_class=4), seed=3)
    assert torch.equal(sub.train.class_counts(10), torch.full((10,), 4))
    assert torch.equal(sub.val.images, full.val.images) and torch.equal(sub.test.images, full.test.images)
    keys = {bytes(img.numpy()) for img in full.train.images}
    assert all(bytes(img.numpy()) in keys for img in sub.train.images)  # drawn from the training split only
    assert_paired(sub.train.images, sub.train.labels)
    other = build_datasets(cfg(tmp_path, val_per_class=2, train_per_class=4), seed=4)
    assert not torch.equal(other.train.images, sub.train.images)
    again = build_datasets(cfg(tmp_path, val_per_class=2, train_per_class=4), seed=3)
    assert torch.equal(again.train.images, sub.train.images)
    more = build_datasets(cfg(tmp_path, val_per_class=2, train_per_class=50), seed=3)  # more than a class has
    assert len(more.train) == len(full.train)
    pair = build_datasets(cfg(tmp_path, val_per_class=2, train_per_class=3, classes=["Bag", "Coat"]), seed=3)
    assert pair.classes == ["Bag", "Coat"] and torch.equal(pair.train.class_counts(2), torch.tensor([3, 3]))
    with pytest.raises(UserError, match="train_per_class must be >= 0"):
        build_datasets(cfg(tmp_path, train_per_class=-1))


def test_debian_location_is_the_default_when_data_root_has_none(tmp_path, monkeypatch) -> None:
    system = write_fashion_mnist(tmp_path / "usr-share", n_per_class=3, n_test_per_class=1)
    monkeypatch.setattr(fm, "SYSTEM_DIR", system)
    splits = build_datasets(cfg(tmp_path / "empty", val_per_class=1))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (20, 10, 10)
    write_fashion_mnist(tmp_path / "mine", n_per_class=5, n_test_per_class=1)
    assert len(build_datasets(cfg(tmp_path / "mine", val_per_class=1)).train) == 40  # data.root comes first


def test_missing_data_names_both_ways_to_get_it(tmp_path, no_system_copy, capsys) -> None:
    with pytest.raises(UserError) as info:
        build_datasets(cfg(tmp_path))
    text = str(info.value)
    assert "dataset-fashion-mnist" in text and "--set data.download=true" in text and str(tmp_path) in text
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--headless", "--preset", "fmnist-cnn-small", "--set", f"data.root={tmp_path}",
              "--set", f"run.root={tmp_path / 'runs'}"])
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert exit_info.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "dataset-fashion-mnist" in lines[0] and "data.download=true" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_download_goes_through_torchvision(tmp_path, no_system_copy, monkeypatch) -> None:
    import torchvision

    calls = []

    def fake_fashion_mnist(root, train=True, download=False):  # writes where torchvision would
        calls.append((root, train, download))
        write_fashion_mnist(Path(root) / "FashionMNIST" / "raw", n_per_class=2, n_test_per_class=1)

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", fake_fashion_mnist)
    splits = build_datasets(cfg(tmp_path, val_per_class=0, download=True))
    assert calls == [(str(tmp_path), True, True)] and (len(splits.train), len(splits.test)) == (20, 10)

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried http://, got [Errno -3]")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(UserError, match="could not download Fashion-MNIST") as info:
        build_datasets(cfg(tmp_path / "elsewhere", download=True))
    assert "\n" not in str(info.value)


def test_corrupt_file_is_a_user_error(tmp_path, no_system_copy) -> None:
    write_fashion_mnist(tmp_path)
    path = tmp_path / f"{FASHION_FILES[1]}.gz"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(UserError, match="unreadable"):
        build_datasets(cfg(tmp_path))


def test_train_runs_end_to_end_on_fixture_files(tmp_path, no_system_copy, capsys, one_thread) -> None:
    write_fashion_mnist(tmp_path / "data", n_per_class=8, n_test_per_class=2)
    try:
        main(["train", "--headless", "--preset", "fmnist-cnn-small", "--epochs", "1",
              "--set", f"data.root={tmp_path / 'data'}", "--set", "data.val_per_class=2",
              "--set", f"run.root={tmp_path / 'runs'}"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    out = capsys.readouterr().out
    assert "pgd-at on fashion-mnist" in out and "train 60 / eval 20 images" in out, out
    assert "eval test epoch 1 (20 images" in out and "run completed" in out, out


@pytest.mark.skipif(not (DEBIAN / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_the_real_debian_files() -> None:
    train, test = fm.load_fashion_mnist_pools("no-such-folder")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert torch.equal(torch.bincount(train.labels), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(test.labels), torch.full((10,), 1000))
    assert train.classes == NAMES and int(train.images.max()) == 255
