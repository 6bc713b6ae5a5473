"""`battui figures`: what each figure plots equals the numbers in the event streams and records."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from matplotlib.container import BarContainer

from battui.figures.curves import curves_figure
from battui.figures.per_class import per_class_figure
from battui.figures.sources import group, load_sources
from battui.figures.steps import steps_figure
from battui.figures.targets import confusion_figure, pooled_confusion, target_figure
from tests.support.checkpoints import make_checkpoint, tiny_config
from tests.support.cli import assert_one_line_error, run_cli
from tests.support.events import CIFAR10, generate_events, write_events

FMNIST = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def no_eval(path: str) -> dict:
    raise AssertionError(f"no checkpoint should be evaluated here ({path})")


@pytest.fixture()
def runs(tmp_path) -> dict[str, Path]:
    """Two BAT seeds and one PGD-AT run, 4 epochs each, CIFAR-10 class names."""
    out = {}
    for key, method, seed in (("bat0", "bat", 0), ("bat1", "bat", 1), ("pgd", "pgd-at", 2)):
        write_events(tmp_path / key / "events.jsonl", generate_events(method=method, seed=seed, epochs=4))
        out[key] = tmp_path / key
    return out


def last_eval(run: Path) -> dict:
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    return [e for e in events if e["type"] == "eval"][-1]


def evals(run: Path) -> list[dict]:
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    return [e for e in events if e["type"] == "eval"]


def bars(ax, label: str) -> BarContainer:
    found = [c for c in ax.containers if isinstance(c, BarContainer) and c.get_label() == label]
    assert len(found) == 1, [c.get_label() for c in ax.containers]
    return found[0]


def heights(container: BarContainer) -> list[float]:
    return [p.get_height() for p in container.patches]


def whisker_lengths(container: BarContainer) -> list[float]:
    segments = container.errorbar.lines[2][0].get_segments()
    return [abs(seg[1][1] - seg[0][1]) for seg in segments]


def test_per_class_bars_are_the_per_class_errors_with_seed_spread(runs) -> None:
    loaded = load_sources([str(runs["bat0"]), str(runs["bat1"]), str(runs["pgd"])], no_eval)
    groups = group(loaded.results)
    assert [(label, len(members)) for label, members in groups] == [("BAT", 2), ("PGD-AT", 1)]
    fig = per_class_figure(groups)
    clean_ax, robust_ax = fig.axes[:2]
    e0, e1, ep = last_eval(runs["bat0"]), last_eval(runs["bat1"]), last_eval(runs["pgd"])
    for ax, kind in ((clean_ax, "standard"), (robust_ax, "robust")):
        bat = bars(ax, "BAT")
        assert heights(bat) == pytest.approx([statistics.mean(p) for p in zip(e0[kind], e1[kind])])
        # two seeds: the 95% t interval of the mean, 2 * t(0.975, 1) * s / sqrt(2) long
        t = scipy.stats.t.ppf(0.975, 1)
        assert whisker_lengths(bat) == pytest.approx([2 * t * statistics.stdev(p) / 2 ** 0.5
                                                      for p in zip(e0[kind], e1[kind])])
        assert heights(bars(ax, "PGD-AT")) == pytest.approx(ep[kind])
        # one seed: the Wilson interval of the class's k errors in n images, written out
        z = scipy.stats.norm.ppf(0.975)
        wilson = []
        for e, row in zip(ep[kind], ep["step_hist"]):
            n = sum(row)
            k = round(e * n / 100)
            wilson.append(100 * 2 * z / (n + z * z) * (k * (n - k) / n + z * z / 4) ** 0.5)
        assert whisker_lengths(bars(ax, "PGD-AT")) == pytest.approx(wilson)
    assert [t.get_text() for t in robust_ax.get_xticklabels()] == CIFAR10
    colors = {tuple(bars(robust_ax, m).patches[0].get_facecolor()) for m in ("BAT", "PGD-AT")}
    assert len(colors) == 2


def test_steps_to_flip_bars_are_mean_steps_of_pooled_histograms(runs) -> None:
    loaded = load_sources([str(runs["bat0"]), str(runs["bat1"])], no_eval)
    fig = steps_figure(group(loaded.results))
    h0, h1 = last_eval(runs["bat0"])["step_hist"], last_eval(runs["bat1"])["step_hist"]
    container = bars(fig.axes[0], "BAT")
    for c, (bar, err) in enumerate(zip(heights(container), whisker_lengths(container))):
        counts = np.array(h0[c][:-1]) + np.array(h1[c][:-1])  # never-flipped column left out
        samples = np.repeat(np.arange(len(counts)), counts)
        assert bar == pytest.approx(samples.mean())
        assert err == pytest.approx(2 * samples.std())


def test_target_distribution_and_confusion_heat_map(runs) -> None:
    loaded = load_sources([str(runs["pgd"])], no_eval)
    groups = group(loaded.results)
    conf = np.array(last_eval(runs["pgd"])["adv_confusion"], dtype=float)
    off = conf - np.diag(np.diag(conf))
    fig = target_figure(groups)
    target = fig.axes[0].containers[0]
    assert target.get_label().startswith("PGD-AT (KL ")
    assert heights(target) == pytest.approx(100 * off.sum(axis=0) / off.sum())

    heat = confusion_figure(pooled_confusion(groups[0][1]), CIFAR10, "PGD-AT")
    shown = heat.axes[0].images[0].get_array()
    expected = 100 * conf / conf.sum(axis=1, keepdims=True)
    assert np.array_equal(shown.mask, np.eye(10, dtype=bool))  # diagonal blank
    assert np.allclose(shown.filled(np.nan)[~np.eye(10, dtype=bool)], expected[~np.eye(10, dtype=bool)])
    assert [t.get_text() for t in heat.axes[0].get_yticklabels()] == CIFAR10


def test_robust_error_curves_mean_and_band_over_seeds(runs) -> None:
    loaded = load_sources([str(runs["bat0"]), str(runs["bat1"]), str(runs["pgd"])], no_eval)
    fig = curves_figure(group(loaded.curves))
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    for which, name in (("avg", "avg"), ("worst", "worst class")):
        per_seed = np.array([[e[which]["robust"] for e in evals(runs[k])] for k in ("bat0", "bat1")])
        line = lines[f"BAT, {name}"]
        assert list(line.get_xdata()) == [1, 2, 3, 4]
        assert np.allclose(line.get_ydata(), per_seed.mean(axis=0))
        assert np.allclose(lines[f"PGD-AT, {name}"].get_ydata(), [e[which]["robust"] for e in evals(runs["pgd"])])
        std = per_seed.std(axis=0, ddof=1)
        band = [c for c in ax.collections if c.get_label() == "_band"][0 if which == "avg" else 1]
        ys = band.get_paths()[0].vertices[:, 1]
        for m, s in zip(per_seed.mean(axis=0), std):
            assert np.isclose(ys, m - s).any() and np.isclose(ys, m + s).any()
    assert len([c for c in ax.collections if c.get_label() == "_band"]) == 2  # none for the single PGD-AT seed


def test_cli_writes_png_pdf_svg_from_runs_and_report_json(runs, tmp_path, capsys, monkeypatch) -> None:
    out = tmp_path / "figs"
    code, stdout, err = run_cli(capsys, "figures", str(runs["bat0"]), str(runs["pgd"] / "events.jsonl"), "-o",
                                str(out), "--format", "png,pdf,svg")
    assert code == 0, err
    written = [Path(line) for line in stdout.split()]
    names = {p.name for p in written}
    for stem in ("per_class", "steps_to_flip", "target_classes", "confusion-bat", "confusion-pgd-at",
                 "robust_error_curves"):
        assert {f"{stem}.png", f"{stem}.pdf", f"{stem}.svg"} <= names
    assert all(p.exists() for p in written) and len(written) == 18
    assert (out / "per_class.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pdf = (out / "per_class.pdf").read_bytes()
    assert pdf[:5] == b"%PDF-" and b"/FontFile2" in pdf and b"/Subtype /Image" not in pdf  # vector, fonts embedded
    assert b"<svg" in (out / "per_class.svg").read_bytes()[:400]

    # Default options: png and pdf into ./figures
    monkeypatch.chdir(tmp_path)
    code, stdout, err = run_cli(capsys, "figures", str(runs["pgd"]))
    assert code == 0, err
    assert sorted(Path(p).suffix for p in stdout.split()) == [".pdf"] * 5 + [".png"] * 5  # 4 figures + 1 heat map
    assert (tmp_path / "figures" / "robust_error_curves.pdf").exists()


def test_figures_from_checkpoint_and_eval_json(tmp_path, capsys) -> None:
    cfg = tiny_config()
    ckpt = make_checkpoint(tmp_path / "m.pt", cfg, seed=0, train_steps=20)
    record_path = tmp_path / "eval.json"
    code, _, err = run_cli(capsys, "eval", str(ckpt), "--limit", "60", "-f", "json", "-o", str(record_path))
    assert code == 0, err
    record = json.loads(record_path.read_text())
    code, stdout, err = run_cli(capsys, "figures", str(ckpt), str(record_path), "-o", str(tmp_path / "f"),
                                "-f", "png", "--limit", "60", "--only", "per_class")
    assert code == 0, err
    assert stdout.split() == [str(tmp_path / "f" / "per_class.png")]
    loaded = load_sources([str(record_path)], no_eval)
    assert loaded.results[0].robust == record["result"]["robust"] and loaded.results[0].label == "PGD-AT"
    assert loaded.results[0].classes == record["dataset"]["classes"]


def test_fashion_mnist_names_and_same_seed_runs_kept_apart(tmp_path) -> None:
    a = write_events(tmp_path / "a" / "events.jsonl", generate_events(classes=FMNIST, seed=0, dataset="fmnist"))
    b = write_events(tmp_path / "b" / "events.jsonl", generate_events(classes=FMNIST, seed=0, dataset="fmnist"))
    groups = group(load_sources([str(a.parent), str(b.parent)], no_eval).results)
    assert [label for label, _ in groups] == ["BAT [a]", "BAT [b]"]
    fig = per_class_figure(groups)
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == FMNIST


def test_bad_input_is_one_line_and_exit_2(runs, tmp_path, capsys) -> None:
    cases = [
        (["figures", str(tmp_path / "missing"), "-o", str(tmp_path / "o")], "does not exist"),
        (["figures", str(tmp_path), "-o", str(tmp_path / "o")], "no events.jsonl"),
        (["figures", str(runs["pgd"]), "-f", "png,gif", "-o", str(tmp_path / "o")], "unknown figure format 'gif'"),
        (["figures", str(runs["pgd"]), "--only", "pie", "-o", str(tmp_path / "o")], "unknown figure 'pie'"),
    ]
    not_ours = tmp_path / "x.json"
    not_ours.write_text('{"hello": 1}')
    cases.append((["figures", str(not_ours), "-o", str(tmp_path / "o")], "not a JSON of `battui eval`"))
    other = write_events(tmp_path / "c100" / "events.jsonl", generate_events(classes=[f"c{i}" for i in range(5)]))
    cases.append((["figures", str(runs["pgd"]), str(other.parent), "-o", str(tmp_path / "o")], "different class"))
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep me")
    cases.append((["figures", str(runs["pgd"]), "-o", str(a_file)], "is a file"))
    for args, needle in cases:
        code, _, err = run_cli(capsys, *args)
        assert_one_line_error(code, err, needle)
    assert a_file.read_text() == "keep me" and not (tmp_path / "o").exists()
