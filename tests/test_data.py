"""Datasets (digits, synthetic, CIFAR-10/100 and ImageNette fixtures), splits, class subsets, Batches."""

from __future__ import annotations

import pytest
import torch

from battui.data import ArraySplit, Batches, DataSplits, build_datasets, crop_flip
from battui.data import images as images_module
from battui.data.synthetic import make_synthetic_pool
from battui.errors import UserError
from tests.support.dataset_files import CIFAR10_NAMES, label_value, write_cifar10, write_cifar100, write_imagenette
from tests.support.dataset_files import data_config as cfg


def row_keys(images: torch.Tensor) -> torch.Tensor:
    """One float64 key per image (random projection), sorted: compares multisets of images."""
    flat = images.reshape(len(images), -1).double()
    w = torch.rand(flat.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return torch.sort(flat @ w)[0]


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return build_datasets(cfg(), seed=0)


# --- digits -------------------------------------------------------------------------------------


def test_digits_are_scikit_learns_load_digits_read_without_importing_it() -> None:
    from sklearn.datasets import load_digits

    from battui.data.digits import load_digits_pool

    pool, bunch = load_digits_pool(), load_digits()
    assert torch.equal(pool.images, torch.from_numpy(bunch.images).float().div(16.0).unsqueeze(1))
    assert torch.equal(pool.labels, torch.from_numpy(bunch.target).long())
    assert pool.classes == [str(int(t)) for t in bunch.target_names]


def test_digits_shapes_range_and_stratified_sizes(digits: DataSplits) -> None:
    assert (digits.num_classes, digits.in_channels, digits.image_size) == (10, 1, 8)
    assert digits.classes == [str(i) for i in range(10)]
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1147, 200, 450)
    for split in (digits.train, digits.val, digits.test):
        assert split.images.shape[1:] == (1, 8, 8) and split.labels.dtype == torch.long
        assert split.images.dtype == torch.float32
        assert split.images.min() >= 0 and split.images.max() <= 1
        assert torch.equal(split.labels.unique(), torch.arange(10))
    levels = digits.train.images * 16
    assert torch.allclose(levels, levels.round()), "17 grey levels scaled by 1/16"
    assert torch.equal(digits.val.class_counts(10), torch.full((10,), 20))
    test_counts = digits.test.class_counts(10)
    assert test_counts.min() >= 44 and test_counts.max() <= 46  # 25% of each class (174..183)


def test_digits_splits_are_disjoint_and_cover_the_dataset(digits: DataSplits) -> None:
    from sklearn.datasets import load_digits

    full = torch.from_numpy(load_digits().images).float() / 16
    parts = torch.cat([digits.train.images, digits.val.images, digits.test.images])
    assert torch.allclose(row_keys(parts), row_keys(full))


def test_splits_follow_the_seed(digits: DataSplits) -> None:
    again = build_datasets(cfg(), seed=0)
    assert torch.equal(again.test.images, digits.test.images) and torch.equal(again.val.labels, digits.val.labels)
    other = build_datasets(cfg(), seed=1)
    assert not torch.equal(other.test.images, digits.test.images)


def test_no_validation_split_when_val_per_class_is_zero() -> None:
    splits = build_datasets(cfg(val_per_class=0))
    assert len(splits.val) == 0 and splits.val.images.shape[1:] == (1, 8, 8)
    assert len(splits.train) == 1347


def test_class_subset_by_name_and_index_remaps_labels_in_order() -> None:
    splits = build_datasets(cfg(classes=[7, "3"]))
    assert splits.classes == ["7", "3"] and splits.num_classes == 2
    full = build_datasets(cfg())
    for split, ref in ((splits.train, full.train), (splits.val, full.val), (splits.test, full.test)):
        # Exactly the full dataset's images of classes 7 and 3 in each split, relabelled 7 -> 0, 3 -> 1.
        assert torch.equal(split.images, ref.images[(ref.labels == 7) | (ref.labels == 3)])
        assert torch.equal(split.labels, (ref.labels[(ref.labels == 7) | (ref.labels == 3)] == 3).long())


@pytest.mark.parametrize("classes, words", [([3, 42], "out of range"), (["cat"], "unknown class"), ([1], "two")])
def test_bad_class_subsets_are_user_errors(classes, words) -> None:
    with pytest.raises(UserError, match=words):
        build_datasets(cfg(classes=classes))


def test_unknown_dataset_lists_the_names() -> None:
    with pytest.raises(UserError, match="digits, synthetic, cifar10, cifar100, imagenette"):
        build_datasets(cfg(name="mnist"))


def test_resize_to_image_size() -> None:
    splits = build_datasets(cfg(image_size=16))
    assert splits.image_size == 16 and splits.train.images.shape[1:] == (1, 16, 16)
    assert splits.train.images.min() >= 0 and splits.train.images.max() <= 1


# --- synthetic ------------------------------------------------------------------------------------


def test_synthetic_any_size_and_channels_with_unequal_difficulty() -> None:
    splits = build_datasets(cfg(name="synthetic", image_size=12, channels=2, per_class=40, val_per_class=5))
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (10, 2, 12)
    assert splits.train.images.dtype == torch.uint8 and splits.train.images.shape[1:] == (2, 12, 12)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (250, 50, 100)
    x, y = splits.train.float_images(), splits.train.labels
    # Class 0 shows its pattern at full contrast, the last class at a quarter: much closer to grey.
    contrast = [(x[y == c].mean(0) - 0.5).abs().mean().item() for c in (0, 9)]
    assert contrast[0] > 2 * contrast[1]
    again = build_datasets(cfg(name="synthetic", image_size=12, channels=2, per_class=40, val_per_class=5), seed=3)
    assert torch.allclose(row_keys(torch.cat([again.train.images, again.val.images, again.test.images])),
                          row_keys(torch.cat([splits.train.images, splits.val.images, splits.test.images])))


def test_synthetic_contrast_scale_pulls_every_class_towards_grey() -> None:
    def spread(pool) -> list[float]:
        x = pool.images.float() / 255
        return [(x[pool.labels == c].mean(0) - 0.5).abs().mean().item() for c in (0, 9)]

    full = spread(make_synthetic_pool(per_class=50, size=16, seed=1))
    low = spread(make_synthetic_pool(per_class=50, size=16, seed=1, contrast_scale=0.3))
    # Same patterns, 0.3x the contrast (up to the pixel noise's clipping and rounding).
    assert low[0] == pytest.approx(0.3 * full[0], rel=0.15) and low[1] < 0.5 * full[1]
    with pytest.raises(ValueError, match="contrast_scale"):
        make_synthetic_pool(contrast_scale=0)


# --- CIFAR ------------------------------------------------------------------------------------------


def assert_paired(split: ArraySplit, classes: list[str], names: list[str], num_source: int) -> None:
    """Each image's red channel still encodes its (source) label."""
    source = torch.tensor([names.index(classes[i]) for i in split.labels.tolist()])
    expected = torch.tensor([label_value(int(s), num_source) for s in source], dtype=torch.uint8)
    assert torch.equal(split.images[:, 0, 0, 0], expected)
    assert torch.equal(split.images[:, 0].amin((1, 2)), split.images[:, 0].amax((1, 2)))


def test_cifar10_from_the_pickled_release(tmp_path) -> None:
    write_cifar10(tmp_path, n_per_class=6, n_test_per_class=3)
    splits = build_datasets(cfg(name="cifar10", root=str(tmp_path), val_per_class=2))
    assert splits.classes == CIFAR10_NAMES and (splits.in_channels, splits.image_size) == (3, 32)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (40, 20, 30)
    for split in (splits.train, splits.val, splits.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (3, 32, 32)
        assert torch.equal(split.labels.unique(), torch.arange(10))
        assert_paired(split, splits.classes, CIFAR10_NAMES, 10)


def test_cifar10_root_may_be_the_batches_folder_and_subset_by_name(tmp_path) -> None:
    folder = write_cifar10(tmp_path, n_per_class=4)
    splits = build_datasets(cfg(name="cifar10", root=str(folder), classes=["cat", "dog"], val_per_class=1))
    assert splits.classes == ["cat", "dog"] and splits.num_classes == 2
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6, 2, 4)
    assert_paired(splits.test, splits.classes, CIFAR10_NAMES, 10)


def test_cifar100_fine_labels(tmp_path) -> None:
    write_cifar100(tmp_path, n_per_class=3, n_test_per_class=1)
    splits = build_datasets(cfg(name="cifar100", root=str(tmp_path), val_per_class=1, image_size=16))
    assert splits.num_classes == 100 and splits.classes[:2] == ["fine00", "fine01"]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (200, 100, 100)
    assert splits.train.images.shape[1:] == (3, 16, 16) and splits.train.images.dtype == torch.uint8
    assert torch.equal(splits.test.labels.sort()[0], torch.arange(100))
    names = [f"fine{i:02d}" for i in range(100)]
    assert_paired(splits.test, splits.classes, names, 100)


@pytest.mark.parametrize("name, folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_missing_cifar_says_where_it_looked_and_how_to_get_it(tmp_path, name, folder) -> None:
    with pytest.raises(UserError) as info:
        build_datasets(cfg(name=name, root=str(tmp_path / "nowhere")))
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "nowhere" / folder) in message
    assert "--set data.root=" in message and "--set data.download=true" in message


def test_failed_download_is_a_user_error(tmp_path, monkeypatch) -> None:
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(UserError, match="could not download CIFAR-10.*unreachable"):
        build_datasets(cfg(name="cifar10", root=str(tmp_path), download=True))


def test_corrupt_cifar_is_a_user_error(tmp_path) -> None:
    folder = write_cifar10(tmp_path, n_per_class=1)
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="unreadable"):
        build_datasets(cfg(name="cifar10", root=str(tmp_path)))


# --- ImageNette ---------------------------------------------------------------------------------


def test_imagenette_folders_readable_names_resize_and_cache(tmp_path, monkeypatch) -> None:
    write_imagenette(tmp_path, n_train_per_class=4, n_val_per_class=2, size=(48, 40))
    config = cfg(name="imagenette", root=str(tmp_path), image_size=32, val_per_class=1)
    splits = build_datasets(config)
    assert splits.classes[:3] == ["tench", "English springer", "cassette player"]
    assert splits.classes[-1] == "parachute" and splits.num_classes == 10
    assert (len(splits.train), len(splits.val), len(splits.test)) == (30, 10, 20)
    assert splits.train.images.dtype == torch.uint8 and splits.train.images.shape[1:] == (3, 32, 32)
    assert torch.equal(splits.test.class_counts(10), torch.full((10,), 2))
    red = splits.test.images[:, 0].float().mean((1, 2))
    expected = torch.tensor([label_value(int(c)) for c in splits.test.labels], dtype=torch.float)
    assert (red - expected).abs().max() < 6  # JPEG keeps flat colours within a few levels

    cache = tmp_path / "imagenette2-160" / "battui-cache-32px.pt"
    assert cache.is_file()

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although a valid cache exists")

    monkeypatch.setattr(images_module, "decode_images", no_decoding)
    cached = build_datasets(config)
    assert torch.equal(cached.train.images, splits.train.images)
    # A changed file list invalidates the cache.
    write_imagenette(tmp_path, n_train_per_class=5, n_val_per_class=2, size=(48, 40))
    with pytest.raises(AssertionError, match="decoded although"):
        build_datasets(config)


def test_imagenette_default_size_and_subset(tmp_path) -> None:
    write_imagenette(tmp_path, n_train_per_class=2, n_val_per_class=1, subdir="imagenette2")
    splits = build_datasets(cfg(name="imagenette", root=str(tmp_path), classes=["golf ball", 0], val_per_class=0))
    assert splits.image_size == 64 and splits.classes == ["golf ball", "tench"]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (4, 0, 2)


def test_missing_imagenette_says_where_it_looked_and_how_to_get_it(tmp_path) -> None:
    with pytest.raises(UserError) as info:
        build_datasets(cfg(name="imagenette", root=str(tmp_path)))
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "imagenette2-160") in message
    assert "--set data.root=" in message and "imagenette2-160.tgz" in message


# --- Batches ----------------------------------------------------------------------------------------


def numbered(n: int) -> ArraySplit:
    """Images whose every pixel is their own index (uint8 0..n-1), labels = index % 3."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    return ArraySplit(images, torch.arange(n) % 3)


def seen(batches: Batches) -> torch.Tensor:
    return torch.cat([torch.zeros(0, dtype=torch.long)] + [(x[:, 0, 0, 0] * 255).round().long() for x, _ in batches])


def test_batches_yield_float_images_and_labels_in_order() -> None:
    batches = Batches(numbered(10), 4)
    out = list(batches)
    assert len(batches) == 3 and [len(y) for _, y in out] == [4, 4, 2]
    x, y = out[0]
    assert x.dtype == torch.float32 and y.dtype == torch.long and x.shape == (4, 1, 4, 4)
    assert torch.equal(seen(batches), torch.arange(10)) and torch.equal(y, torch.arange(4) % 3)
    dropped = Batches(numbered(10), 4, drop_last=True)
    assert len(dropped) == 2 and len(list(dropped)) == 2
    assert len(Batches(numbered(0), 4)) == 0 and list(Batches(numbered(0), 4)) == []


def test_shuffle_is_a_permutation_fixed_per_seed_and_epoch() -> None:
    rng_before = torch.get_rng_state()
    a = Batches(numbered(50), 8, shuffle=True, seed=1)
    first = seen(a)
    assert torch.equal(first.sort()[0], torch.arange(50)) and not torch.equal(first, torch.arange(50))
    assert torch.equal(seen(a), first)
    a.set_epoch(1)
    second = seen(a)
    assert not torch.equal(second, first)
    b = Batches(numbered(50), 8, shuffle=True, seed=1)
    b.set_epoch(1)
    assert torch.equal(seen(b), second)
    assert torch.equal(torch.get_rng_state(), rng_before), "global RNG must stay untouched"


@pytest.mark.parametrize("n", [10, 11, 3])
def test_evaluation_shards_cover_the_split_exactly_once(n: int) -> None:
    parts = [seen(Batches(numbered(n), 2, shuffle=True, rank=r, world_size=4)) for r in range(4)]
    assert torch.equal(torch.cat(parts).sort()[0], torch.arange(n))


def test_training_shards_are_padded_to_equal_length() -> None:
    shards = [Batches(numbered(10), 2, shuffle=True, seed=5, rank=r, world_size=4, pad_shards=True) for r in range(4)]
    parts = [seen(s) for s in shards]
    assert [len(p) for p in parts] == [3, 3, 3, 3] and all(len(s) == 2 for s in shards)
    assert set(torch.cat(parts).tolist()) == set(range(10))


def reference_crop_flip(x: torch.Tensor, seed: int, pad: int = 4) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    b, _, h, w = x.shape
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    flip = torch.rand(b, generator=gen) < 0.5
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])
    return torch.where(flip.view(-1, 1, 1, 1), out.flip(-1), out)


def test_crop_flip_equals_pad_crop_then_flip() -> None:
    x = torch.rand(64, 3, 8, 8)
    out = crop_flip(x, torch.Generator().manual_seed(3))
    assert torch.equal(out, reference_crop_flip(x, 3))
    assert (out == 0).any(), "shifted crops bring in zero padding"


def test_augmentation_is_deterministic_per_seed_and_epoch() -> None:
    split = ArraySplit(torch.rand(40, 3, 8, 8), torch.zeros(40, dtype=torch.long))
    plain = torch.cat([x for x, _ in Batches(split, 16)])

    def run(seed: int, epoch: int) -> torch.Tensor:
        batches = Batches(split, 16, augment=True, seed=seed)
        batches.set_epoch(epoch)
        return torch.cat([x for x, _ in batches])

    a = run(0, 0)
    assert a.shape == plain.shape and not torch.equal(a, plain)
    assert torch.equal(a, run(0, 0))
    assert not torch.equal(a, run(0, 1)) and not torch.equal(a, run(1, 0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_batches_on_cuda_match_cpu() -> None:
    split = ArraySplit((torch.rand(40, 3, 8, 8) * 255).to(torch.uint8), torch.arange(40) % 4)
    cpu = Batches(split, 16, shuffle=True, augment=True, seed=2)
    gpu = Batches(split, 16, shuffle=True, augment=True, seed=2, device="cuda")
    assert gpu.images.is_cuda
    for (xc, yc), (xg, yg) in zip(cpu, gpu, strict=True):
        assert xg.is_cuda and torch.equal(xg.cpu(), xc) and torch.equal(yg.cpu(), yc)
