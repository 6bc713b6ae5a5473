"""Checkpoints saved by other code: the standard CIFAR ResNet-18 layout, containers, wrapper prefixes,
TRADES' WideResNet names, battui's older names, normalisation outside the network, and the AutoAttack
authors' real CIFAR-10 ResNet-18 (`pyautoattack/examples/model_test.pt`) read by `battui eval`.

The reference networks below are written here from the public code's layout (not imported from battui).
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from battui.models import build_model
from battui.models.keymap import fit_state, unwrap_state
from battui.report.foreign import Foreign, open_for_eval
from tests.support.checkpoints import make_checkpoint, tiny_config
from tests.support.cli import assert_one_line_error, run_cli
from tests.support.dataset_files import write_cifar10


class PlainBlock(nn.Module):  # the standard CIFAR ResNet basic block (kuangliu / TRADES / AutoAttack example)
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class PlainResNet18(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for i, (cout, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)]):
            setattr(self, f"layer{i + 1}", nn.Sequential(PlainBlock(cin, cout, stride), PlainBlock(cout, cout, 1)))
            cin = cout
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(F.avg_pool2d(out, 4).flatten(1))


class TradesBlock(nn.Module):  # yaodongyu/TRADES models/wideresnet.py BasicBlock
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.equal = cin == cout
        self.convShortcut = None if self.equal else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

    def forward(self, x):
        act = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        return out + (x if self.equal else self.convShortcut(act))


class TradesNetworkBlock(nn.Module):
    def __init__(self, n: int, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(*[TradesBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1)
                                     for i in range(n)])

    def forward(self, x):
        return self.layer(x)


class TradesWideResNet(nn.Module):
    def __init__(self, depth: int = 34, widen: int = 10, num_classes: int = 10) -> None:
        super().__init__()
        n, w = (depth - 4) // 6, [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(3, w[0], 3, 1, 1, bias=False)
        self.block1 = TradesNetworkBlock(n, w[0], w[1], 1)
        self.sub_block1 = TradesNetworkBlock(n, w[0], w[1], 1)  # built, saved, never used in forward
        self.block2 = TradesNetworkBlock(n, w[1], w[2], 2)
        self.block3 = TradesNetworkBlock(n, w[2], w[3], 2)
        self.bn1, self.fc = nn.BatchNorm2d(w[3]), nn.Linear(w[3], num_classes)

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(F.avg_pool2d(F.relu(self.bn1(out)), 8).flatten(1))


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics, so a swapped or missing buffer changes the logits."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
    return model.eval()


def test_resnet18_has_the_standard_key_layout() -> None:
    ours, plain = build_model("resnet18", 10).state_dict(), PlainResNet18().state_dict()
    assert list(ours) == list(plain)
    assert all(ours[k].shape == plain[k].shape for k in ours)


def test_containers_prefixes_and_old_names_all_give_the_reference_logits() -> None:
    torch.manual_seed(0)
    ref = _randomise_bn(PlainResNet18())
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        want = ref(x)
    sd = ref.state_dict()
    old_battui = {re.sub(r"^layer(\d)\.", lambda m: f"layers.{int(m.group(1)) - 1}.", k): v for k, v in sd.items()}
    assert any(k.startswith("layers.3.") for k in old_battui)
    variants = {
        "bare": sd,
        "state_dict": {"state_dict": sd, "epoch": 99},
        "model": {"model": sd, "optimizer": {}},
        "net": {"net": sd, "acc": 0.5},
        "module.": {f"module.{k}": v for k, v in sd.items()},
        "_orig_mod.": {"state_dict": {f"_orig_mod.{k}": v for k, v in sd.items()}},
        "model.": {f"model.{k}": v for k, v in sd.items()},
        "module._orig_mod.": {"net": {f"module._orig_mod.{k}": v for k, v in sd.items()}},
        "battui layers.N (old)": {"format": "battui", "model": old_battui},
        "no num_batches_tracked": {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")},
    }
    outputs, model = {}, build_model("resnet18", 10).eval()
    for name, obj in variants.items():
        with torch.no_grad():
            for t in model.state_dict().values():
                t.zero_()  # nothing of the previous variant survives
        fit_state(model, unwrap_state(obj), name)
        with torch.no_grad():
            outputs[name] = model.eval()(x)
    assert torch.allclose(outputs["bare"], want, atol=1e-6)  # avg_pool2d(4) vs adaptive pooling: rounding only
    for name, logits in outputs.items():
        assert torch.equal(logits, outputs["bare"]), name


@pytest.mark.parametrize("depth", [28, 34])
def test_trades_wide_resnet_names(depth: int) -> None:
    torch.manual_seed(1)
    trades = _randomise_bn(TradesWideResNet(depth))
    model = build_model(f"wrn-{depth}-10", 10)
    fit_state(model, unwrap_state({"state_dict": {f"module.{k}": v for k, v in trades.state_dict().items()}}),
              "trades.pt")
    if depth == 28:  # one forward of the 36M-parameter network is enough to show the mapping is the architecture
        x = torch.rand(1, 3, 32, 32)
        with torch.no_grad():
            assert torch.allclose(model.eval()(x), trades(x), atol=1e-5, rtol=1e-4)


def test_a_file_that_does_not_fit_names_its_first_missing_and_unexpected_keys(tmp_path, capsys) -> None:
    cnn_state = build_model("cnn", 10, in_channels=3).state_dict()
    path = tmp_path / "cnn.pt"
    torch.save({"net": cnn_state}, path)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = run_cli(capsys, "eval", str(path), "--model", "resnet18", "--dataset", "synthetic")
    assert_one_line_error(code, err, "does not fit the configured model (resnet18)", "missing key conv1.weight",
                          f"unexpected key {next(iter(cnn_state))}")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    wrong_classes = tmp_path / "k100.pt"
    torch.save(build_model("cnn", 100, in_channels=3).state_dict(), wrong_classes)
    code, _, err = run_cli(capsys, "eval", str(wrong_classes), "--model", "cnn", "--dataset", "synthetic")
    assert_one_line_error(code, err, "classifier.3.weight has shape [100, 128] in the file, [10, 128] in the model")
    torch.save({"epoch": 3, "acc": 0.9}, tmp_path / "meta.pt")
    code, _, err = run_cli(capsys, "eval", str(tmp_path / "meta.pt"), "--model", "cnn", "--dataset", "synthetic")
    assert_one_line_error(code, err, "holds no state dict of tensors")
    code, _, err = run_cli(capsys, "eval", str(path), "--model", "cnn")
    assert_one_line_error(code, err, "--model and --dataset go together")
    code, _, err = run_cli(capsys, "eval", str(path), "--model", "cnn", "--dataset", "svhn")
    assert_one_line_error(code, err, "unknown dataset 'svhn'")
    code, _, err = run_cli(capsys, "eval", str(path), "--model", "cnn", "--dataset", "synthetic", "--normalize", "0.5")
    assert_one_line_error(code, err, "--normalize expects MEAN/STD")


def test_foreign_state_dict_gives_the_numbers_of_the_same_weights_as_a_battui_checkpoint(tmp_path, capsys) -> None:
    ours = make_checkpoint(tmp_path / "ours.pt", tiny_config(), seed=0, train_steps=20)
    state = torch.load(ours, weights_only=True)["model"]
    theirs = tmp_path / "theirs.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, theirs)
    records = {}
    # synthetic-tiny trains the 2-conv cnn; its depth is read from the weights, not from a preset
    foreign = ["--model", "cnn", "--dataset", "synthetic"]
    for name, extra in (("ours", []), ("theirs", foreign)):
        out = tmp_path / f"{name}.json"
        path = ours if name == "ours" else theirs
        code, _, err = run_cli(capsys, "eval", str(path), *extra, "-f", "json", "-o", str(out))
        assert code == 0, err
        assert "clean accuracy" in err
        records[name] = json.loads(out.read_text())
    for key in ("standard", "boundary", "robust", "adv_confusion", "step_hist"):
        assert records["ours"]["result"][key] == records["theirs"]["result"][key], key
    assert records["theirs"]["label"] == "theirs" and records["theirs"]["foreign"]["model"] == "cnn"
    assert records["theirs"]["attack"]["precision"] == "fp32"
    # compare takes foreign files the same way
    code, md, err = run_cli(capsys, "compare", str(ours), str(theirs), *foreign, "-f", "markdown")
    assert code == 0, err
    assert "A: pgd-at" in md and "B: theirs" in md


def test_normalisation_outside_the_network(tmp_path, capsys) -> None:
    """Weights trained on (x - mean) / std: --normalize gives the logits of normalising by hand."""
    base = make_checkpoint(tmp_path / "base.pt", tiny_config(), seed=0, train_steps=30)
    state = torch.load(base, weights_only=True)["model"]
    path = tmp_path / "normalised.pt"
    torch.save(state, path)
    mean, std = torch.tensor([0.3, 0.5, 0.7]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    norm = "0.3,0.5,0.7/0.2,0.25,0.3"
    opened = open_for_eval(path, Foreign(model="cnn", dataset="synthetic", normalize=norm, sets=("model.depth=2",)))
    plain = build_model("cnn", 10, in_channels=3, depth=2)  # synthetic-tiny's cnn
    plain.load_state_dict(state)
    x, y = opened.splits.test.float_images(), opened.splits.test.labels
    with torch.no_grad():
        by_hand = plain.eval()((x - mean) / std)
        assert torch.allclose(opened.model(x), by_hand, atol=1e-5)
    out = tmp_path / "eval.json"
    code, _, err = run_cli(capsys, "eval", str(path), "--model", "cnn", "--dataset", "synthetic", "--normalize", norm,
                           "--set", "model.depth=2", "--steps", "2", "-f", "json", "-o", str(out))
    assert code == 0, err
    result = json.loads(out.read_text())["result"]
    wrong = by_hand.argmax(1) != y
    assert result["standard"] == pytest.approx([100.0 * float(wrong[y == c].float().mean()) for c in range(10)])


def _model_test_pt() -> Path:
    spec = importlib.util.find_spec("pyautoattack")
    assert spec is not None and spec.submodule_search_locations
    return Path(list(spec.submodule_search_locations)[0]) / "examples" / "model_test.pt"


def test_the_autoattack_authors_cifar10_resnet18_loads_and_evaluates(tmp_path, capsys) -> None:
    """`battui eval model_test.pt --model resnet18 --dataset cifar10 --set data.root=DIR`, default options."""
    source = _model_test_pt()
    assert source.exists(), f"pyautoattack ships no {source}"
    link = tmp_path / "model_test.pt"  # a link, so the evaluation cache lands in tmp_path, not site-packages
    link.symlink_to(source)
    write_cifar10(tmp_path / "data", n_per_class=1, n_test_per_class=1)
    args = ["eval", str(link), "--model", "resnet18", "--dataset", "cifar10", "--set", f"data.root={tmp_path / 'data'}"]
    out = tmp_path / "aa.json"
    code, _, err = run_cli(capsys, *args, "-f", "json", "-o", str(out))
    assert code == 0, err
    record = json.loads(out.read_text())
    assert record["result"]["n"] == 10 and record["attack"]["name"] == "pgd" and record["attack"]["steps"] == 20
    assert record["attack"]["precision"] == "fp32" and record["dataset"]["name"] == "cifar10"

    reference = PlainResNet18().eval()
    reference.load_state_dict(torch.load(source, map_location="cpu", weights_only=True))
    opened = open_for_eval(link, Foreign(model="resnet18", dataset="cifar10", sets=(f"data.root={tmp_path / 'data'}",)))
    x, y = opened.splits.test.float_images(), opened.splits.test.labels
    with torch.no_grad():
        ours, theirs = opened.model(x), reference(x)
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-5)
    clean_error = 100.0 * (theirs.argmax(1) != y).float().mean().item()
    assert record["result"]["avg"]["standard"] == pytest.approx(clean_error)  # one image per class
    correct = int((theirs.argmax(1) == y).sum())
    assert f"clean accuracy {100.0 * correct / 10:.2f}% ({correct}/10 test images)" in err
