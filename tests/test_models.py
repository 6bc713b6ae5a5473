"""Every model family: logits shape for its input sizes, channels and classes; build_model's contract."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from battui.models import MODELS, Normalized, build_model


def test_model_names_are_the_documented_ones() -> None:
    assert MODELS == ("cnn", "resnet18", "preact-resnet18", "wrn-28-10", "wrn-34-10")


def test_unknown_model_is_a_value_error_listing_the_names() -> None:
    with pytest.raises(ValueError, match="cnn, resnet18, preact-resnet18, wrn-28-10, wrn-34-10"):
        build_model("resnet50", 10)


@pytest.mark.parametrize("size, channels, classes", [(8, 1, 10), (28, 3, 7), (9, 2, 2)])
def test_cnn_any_size_small_and_differentiable(size: int, channels: int, classes: int) -> None:
    torch.manual_seed(0)
    model = build_model("cnn", classes, in_channels=channels)
    assert 50_000 < sum(p.numel() for p in model.parameters()) < 200_000
    x = torch.rand(5, channels, size, size, requires_grad=True)
    logits = model(x)
    assert logits.shape == (5, classes)
    logits.sum().backward()  # attacks need input gradients
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_cnn_is_three_convolutions_and_depth_2_keeps_the_older_network() -> None:
    from battui.models import SmallCNN

    convs = lambda m: [c for c in m.modules() if isinstance(c, nn.Conv2d)]  # noqa: E731
    deep, old = build_model("cnn", 10, in_channels=1), SmallCNN(10, 1, depth=2)
    assert [c.out_channels for c in convs(deep)] == [16, 32, 64] and [c.out_channels for c in convs(old)] == [32, 64]
    # 16*9+16 + 16*32*9+32 + 32*64*9+64 + 1024*128+128 + 128*10+10, and the two-conv count likewise
    assert sum(p.numel() for p in deep.parameters()) == 160 + 4640 + 18496 + 131200 + 1290
    assert sum(p.numel() for p in old.parameters()) == 320 + 18496 + 131200 + 1290
    with pytest.raises(ValueError, match="depth must be 2 or 3"):
        SmallCNN(10, 1, depth=4)
    seen = []
    deep.features.register_forward_hook(lambda module, inputs, output: seen.append(tuple(inputs[0].shape[-2:])))
    for size in (8, 15, 16, 28):
        deep(torch.rand(2, 1, size, size))
    assert seen == [(8, 8), (15, 15), (8, 8), (14, 14)]  # pooled once more from 16 px up


def test_cnn_depth_and_width_are_read_from_weights_where_the_config_leaves_them_at_0() -> None:
    from battui.config import load_config
    from battui.models import SmallCNN, model_options

    cfg = load_config("digits-cnn", ["model.depth=0", "model.width=0", "model.normalize="]).model
    for depth, width in ((2, 32), (3, 32), (3, 24), (2, 16)):
        state = Normalized(SmallCNN(10, 1, width=width, depth=depth), [0.5], [0.5]).state_dict()  # "model." prefix
        options = model_options(cfg, state)
        assert options == {"depth": depth, "width": width}
        trained = SmallCNN(10, 1, width=width, depth=depth).state_dict()
        build_model("cnn", 10, in_channels=1, **options).load_state_dict(trained)
    # what the config says wins; no weights, no guess
    assert model_options(load_config("digits-cnn", ["model.depth=3", "model.width=0", "model.normalize="]).model,
                         SmallCNN(10, 1, depth=2).state_dict()) == {"depth": 3, "width": 32}
    assert model_options(cfg) == {}


def test_model_normalize_puts_mean_and_std_inside_the_network() -> None:
    from battui.config import load_config
    from battui.models import model_options

    cfg = load_config("digits-cnn", ["model.normalize=0.25/0.5"]).model
    assert model_options(cfg)["mean"] == [0.25] and model_options(cfg)["std"] == [0.5]
    torch.manual_seed(0)
    model = build_model("cnn", 10, in_channels=1, **model_options(cfg)).eval()
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model(x), model.model((x - 0.25) / 0.5))
    # a state saved from it rebuilds from the same config (depth and width read through the "model." prefix)
    again = build_model("cnn", 10, in_channels=1, **model_options(cfg, model.state_dict())).eval()
    again.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    with pytest.raises(ValueError, match="1 values per statistic; the data has 3 channel"):
        build_model("cnn", 10, in_channels=3, **model_options(cfg))


@pytest.mark.parametrize("name", ["resnet18", "preact-resnet18"])
def test_resnets_logits_for_cifar_and_small_inputs(name: str) -> None:
    model = build_model(name, 10)
    assert isinstance(model.conv1, nn.Conv2d) and model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules()), "CIFAR stem: no max-pool"
    assert 11_000_000 < sum(p.numel() for p in model.parameters()) < 11_300_000
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
        assert model(torch.rand(1, 3, 8, 8)).shape == (1, 10)
    grey = build_model(name, 100, in_channels=1).train()
    assert grey(torch.rand(2, 1, 16, 16)).shape == (2, 100)


@pytest.mark.parametrize("name, params", [("wrn-28-10", 36_479_194), ("wrn-34-10", 46_160_474)])
def test_wide_resnets_match_the_reference_size_and_give_logits(name: str, params: int) -> None:
    model = build_model(name, 10).eval()
    assert sum(p.numel() for p in model.parameters()) == params  # TRADES' WideResNet, 10 classes
    with torch.no_grad():
        assert model(torch.rand(1, 3, 32, 32)).shape == (1, 10)


def test_wide_resnet_other_classes_and_channels() -> None:
    model = build_model("wrn-28-10", 5, in_channels=1)
    assert model.linear.out_features == 5 and model.conv1.in_channels == 1


def test_normalisation_lives_inside_the_model_when_asked() -> None:
    torch.manual_seed(0)
    model = build_model("cnn", 3, in_channels=3, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.25)).eval()
    assert isinstance(model, Normalized)
    x = torch.rand(4, 3, 8, 8)
    mean = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.2, 0.2, 0.25]).view(1, 3, 1, 1)
    assert torch.allclose(model(x), model.model((x - mean) / std))
    assert set(model.state_dict()) >= {"mean", "std"}
    assert not isinstance(build_model("cnn", 3), Normalized)


def test_data_and_models_never_import_textual() -> None:
    code = "import sys, battui.data, battui.models; print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
