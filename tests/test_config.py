"""Config: presets, round trip, overrides and the one-line errors they give."""

from __future__ import annotations

import pytest

from battui.config import (
    Config,
    list_presets,
    load_config,
    read_config,
    save_config,
)
from battui.errors import UserError

REQUIRED_PRESETS = {
    "digits-cnn",
    "synthetic-tiny",
    "cifar10-resnet18",
    "cifar100-resnet18",
    "imagenette-resnet18",
    "cifar10-wrn28-10",
    "fmnist-cnn",
    "fmnist-cnn-small",
}


def test_all_required_presets_exist_and_load():
    assert REQUIRED_PRESETS <= set(list_presets())
    for name in REQUIRED_PRESETS:
        cfg = load_config(name)
        assert cfg.preset == name
        assert cfg.description


def test_paper_hyper_parameters_in_cifar_preset():
    cfg = load_config("cifar10-resnet18")
    assert cfg.attack.eps == pytest.approx(8 / 255)
    assert cfg.attack.step_size == pytest.approx(2 / 255)
    assert cfg.attack.steps == 10
    assert (cfg.train.lr, cfg.train.momentum, cfg.train.weight_decay, cfg.train.batch_size) == (0.1, 0.9, 2e-4, 128)
    assert cfg.data.augment is True
    assert cfg.eval.steps == 20


def test_round_trip_through_yaml(tmp_path):
    cfg = load_config("digits-cnn", ["method.name=trades", "method.beta=1", "train.epochs=3", "data.classes=[0, 3]"])
    save_config(cfg, tmp_path / "config.yaml")
    again = read_config(tmp_path / "config.yaml")
    assert again == cfg
    assert again.method.params == {"beta": 1.0}
    assert isinstance(again.method.params["beta"], float)
    assert again.data.classes == [0, 3]


def test_overrides_are_typed():
    cfg = load_config("digits-cnn", ["train.lr=1", "train.epochs=7", "data.augment=true", "run.device=cpu"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 7
    assert cfg.data.augment is True
    assert cfg.run.device == "cpu"


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", "did you mean 'epochs'"),
        ("trian.epochs=3", "did you mean 'train'"),
        ("train.epochs=three", "train.epochs must be int"),
        ("train.epochs=2.5", "train.epochs must be int"),
        ("data.augment=7", "data.augment must be bool"),
        ("method.name=batt", "did you mean 'bat'"),
        ("method.stepz=2", "did you mean 'steps'"),
        ("train.epochs", "expects section.key=value"),
    ],
)
def test_bad_overrides_raise_one_line_user_errors(override, message):
    with pytest.raises(UserError) as info:
        load_config("digits-cnn", [override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_method_param_type_checked_against_default():
    with pytest.raises(UserError, match="method.beta must be float"):
        load_config("digits-cnn", ["method.name=trades", "method.beta=abc"])


def test_unknown_preset_suggests():
    with pytest.raises(UserError, match="did you mean 'digits-cnn'"):
        load_config("digit-cnn")


def test_malformed_yaml_names_its_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  name: digits\ntrain:\n  epochs: [1, 2\n  lr: 0.1\n")
    with pytest.raises(UserError) as info:
        load_config(str(bad))
    assert "malformed YAML" in str(info.value) and "line" in str(info.value)


def test_defaults_are_a_valid_config():
    assert Config().to_dict()["method"]["name"] == "pgd-at"


def test_yaml_quirks_in_overrides():
    cfg = load_config("digits-cnn", ["train.lr=1e30", "train.amp=true", "train.channels_last=false"])
    assert cfg.train.lr == 1e30
    assert (cfg.train.amp, cfg.train.channels_last) == ("true", "false")


def test_validate_config_checks_and_changes_nothing():
    import copy

    from battui.validate import validate_config

    cfg = load_config("synthetic-tiny", ["data.classes=0,1,2", "train.schedule=multistep"])
    assert cfg.data.classes == [0, 1, 2]  # normalised where it is set, not by the check
    before = copy.deepcopy(cfg.to_dict())
    validate_config(cfg)
    assert cfg.to_dict() == before
    cfg.data.classes = "0,1,2"  # a value that skipped the config's normalisation is refused, not rewritten
    with pytest.raises(UserError, match="data.classes must be a list"):
        validate_config(cfg)
    assert cfg.data.classes == "0,1,2"
    with pytest.raises(UserError, match="train.milestones must be fractions of the epochs"):
        load_config("synthetic-tiny", ["train.epochs=2", "train.schedule=multistep", "train.milestones=[3]"])


def test_a_config_holding_the_retired_data_on_device_still_loads_and_resumes_unchanged():
    from battui.config import config_from_dict
    from battui.validate import config_changes

    old = load_config("synthetic-tiny").to_dict()
    old["data"]["on_device"] = "auto"  # what config.yaml and last.pt's config held before it was retired
    cfg = config_from_dict(old)
    assert "on_device" not in cfg.to_dict()["data"]
    assert config_changes(old, cfg.to_dict()) == []  # a resume sees no change of the data section
    with pytest.raises(UserError, match="unknown config key 'data.on_device'"):
        load_config("synthetic-tiny", ["data.on_device=true"])
