"""Uncertainty of the report's numbers, from the per-image outcomes the evaluation cache keeps.

    iv = eval_intervals(record)                  # `battui eval`: per class Wilson, Avg./Worst bootstrap
    iv["robust"][3], iv["worst"]["robust"]       # (low, high) in %
    pair = paired_difference(rec_a, rec_b)       # `battui compare`: B - A per class and Avg./Worst
    holm([0.01, 0.04, 0.03])                     # Holm-adjusted p-values, in the order given
    diff = seed_difference(row_records, base_records)   # `battui table --baseline`: paired by seed
    seeds_needed(std=4.0, delta=2.0)             # seeds for 80% power of a paired t-test

The methods (scipy.stats throughout, except where noted):
- a class's error: the Wilson 95% interval of k errors in n images (`binomtest`);
- Avg. and Worst of one evaluation: a percentile bootstrap over test images stratified by
  class (`bootstrap` with one sample per class, each resampled within itself); the
  worst class is a maximum, which has no binomial interval, hence the bootstrap;
- a paired difference B - A on the same images: the same stratified bootstrap over image
  pairs (each image's two outcomes resampled together), and the exact McNemar test, a
  two-sided binomial test of the discordant pairs (`binomtest`; p = 1 with none); the
  worst-class difference has no exact test: its p-value is the bootstrap's (twice the
  smaller tail at 0, counted (k + 1) / (B + 1), so never below 2 / (B + 1));
- over seeds: the t interval of the mean (`ttest_1samp`), the paired t-test of a row
  against the baseline, seed by seed (`ttest_rel`), and a hierarchical bootstrap of the
  difference (seeds resampled, then images within each seed, stratified by class). scipy
  has no nested bootstrap: `hierarchical_difference` draws it with numpy's Generator
  (resampling n_c images of a class with replacement is a multinomial draw over the
  class's joint outcomes), and only the resampling is written here;
- Holm's step-down correction (statsmodels is not a dependency; it is six lines);
- seeds needed: the smallest n whose paired t-test (two-sided, alpha 0.05) has 80% power
  against a difference `delta`, with the difference's seed-to-seed std (noncentral t).

Every bootstrap is seeded (`SEED`) with `RESAMPLES` resamples, so reports are reproducible.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

from battui.errors import UserError

RESAMPLES = 2000
SEED = 0
LEVEL = 0.95
ALPHA = 0.05
KINDS = ("standard", "boundary", "robust")
METRICS = [(agg, kind) for kind in KINDS for agg in ("avg", "worst")]  # Table 1's column order


def describe_bootstrap() -> str:
    return f"percentile bootstrap ({RESAMPLES} resamples, seed {SEED})"


def outcomes(record: dict) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(labels, {kind: 0/1 error of each image}) of an evaluation record."""
    out = record["result"].get("outcomes")
    if out is None:
        raise UserError(f"{record['checkpoint']}: its evaluation has no per-image outcomes; evaluate it again "
                        "(without --no-cache's older files) to get intervals")
    label = np.asarray(out["label"], dtype=np.int64)
    clean = np.asarray(out["clean_correct"], dtype=np.int8)
    adv = np.asarray(out["adv_correct"], dtype=np.int8)
    errors = {"standard": 1 - clean, "boundary": clean * (1 - adv), "robust": 1 - clean * adv}
    return label, errors


def wilson(errors: int, n: int) -> tuple[float, float] | None:
    """The Wilson 95% interval (%) of `errors` in `n` images; None without images."""
    if n == 0:
        return None
    ci = stats.binomtest(int(errors), int(n)).proportion_ci(confidence_level=LEVEL, method="wilson")
    return 100.0 * ci.low, 100.0 * ci.high


def _present(label: np.ndarray, num_classes: int) -> list[int]:
    return [c for c in range(num_classes) if np.any(label == c)]


def _bootstrap(samples: list[np.ndarray], statistic) -> Any:
    """scipy's seeded percentile bootstrap, each sample resampled within itself (a class of one image is
    passed twice: resampling it gives that image either way, and scipy wants two)."""
    samples = [np.repeat(s, 2) if len(s) == 1 else s for s in samples]
    return stats.bootstrap(samples, statistic, n_resamples=RESAMPLES, method="percentile", vectorized=True,
                           confidence_level=LEVEL, rng=np.random.default_rng(SEED))


def _avg_worst(*class_samples: np.ndarray, axis: int = -1) -> np.ndarray:
    means = np.stack([s.mean(axis=axis) for s in class_samples])
    return 100.0 * np.stack([means.mean(axis=0), means.max(axis=0)])


def eval_intervals(record: dict) -> dict[str, Any]:
    """Per class Wilson intervals of each kind of error, and bootstrap intervals of Avg. and Worst."""
    label, errors = outcomes(record)
    k = len(record["result"]["counts"])
    present = _present(label, k)
    out: dict[str, Any] = {"avg": {}, "worst": {}, "resamples": RESAMPLES, "seed": SEED, "level": LEVEL}
    for kind, err in errors.items():
        out[kind] = [wilson(int(err[label == c].sum()), int((label == c).sum())) for c in range(k)]
        if not present:
            out["avg"][kind] = out["worst"][kind] = None
            continue
        ci = _bootstrap([err[label == c] for c in present], _avg_worst).confidence_interval
        out["avg"][kind] = (float(ci.low[0]), float(ci.high[0]))
        out["worst"][kind] = (float(ci.low[1]), float(ci.high[1]))
    return out


def mcnemar(a_err: np.ndarray, b_err: np.ndarray) -> float:
    """Exact two-sided McNemar p-value of paired 0/1 outcomes (1 when no pair disagrees)."""
    only_a = int(np.sum((a_err == 1) & (b_err == 0)))
    only_b = int(np.sum((a_err == 0) & (b_err == 1)))
    if only_a + only_b == 0:
        return 1.0
    return float(stats.binomtest(only_b, only_a + only_b, 0.5).pvalue)


def bootstrap_p(distribution: np.ndarray) -> float:
    """Two-sided p-value of a zero difference from a bootstrap distribution: twice its smaller tail at 0,
    counted as (k + 1) / (B + 1) (Davison & Hinkley 1997, 4.4): B resamples cannot show a p below
    2 / (B + 1), so a distribution wholly on one side of 0 gives that floor, never 0."""
    tail = min(np.count_nonzero(distribution <= 0), np.count_nonzero(distribution >= 0))
    return float(min(1.0, 2.0 * (tail + 1) / (distribution.size + 1)))


PAIR_HINT = "use --unpaired for a side-by-side report"


def check_paired(records: list[dict], hint: str = PAIR_HINT) -> None:
    """Refuse to pair evaluations that are not of the same images under the same attack."""
    first = records[0]
    for other in records[1:]:
        why = None
        if other.get("images") is None or first.get("images") is None:
            why = "one of them was evaluated before battui recorded which images it used"
        elif other["images"] != first["images"]:
            seeds = (first["dataset"]["split_seed"], other["dataset"]["split_seed"])
            why = (f"they were evaluated on different test images (test splits of train.seed {seeds[0]} and "
                   f"{seeds[1]}" + (", or other data settings or --limit" if seeds[0] == seeds[1] else "") + ")")
        elif other["attack"] != first["attack"]:
            why = "they were attacked with different settings or attack seeds"
        if why:
            raise UserError(f"cannot pair {first['checkpoint']} with {other['checkpoint']}: {why}, so their "
                            f"per-image outcomes do not pair up; {hint}")


def paired_difference(a: dict, b: dict) -> dict[str, Any]:
    """B - A on the same images: per class and Avg./Worst for each kind of error (points), with a 95%
    stratified paired bootstrap interval and a p-value (McNemar per class and for Avg.; bootstrap for Worst)."""
    check_paired([a, b])
    label, err_a = outcomes(a)
    _, err_b = outcomes(b)
    k = len(a["result"]["counts"])
    present = _present(label, k)
    out: dict[str, Any] = {"resamples": RESAMPLES, "seed": SEED, "level": LEVEL}
    for kind in KINDS:
        # one sample per class of codes 2 * a + b: each image's pair is resampled together
        codes = [2 * err_a[kind][label == c] + err_b[kind][label == c] for c in present]

        def statistic(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
            ea = np.stack([(s // 2).mean(axis=axis) for s in samples])
            eb = np.stack([(s % 2).mean(axis=axis) for s in samples])
            return 100.0 * np.concatenate([eb - ea, [eb.mean(axis=0) - ea.mean(axis=0)],
                                           [eb.max(axis=0) - ea.max(axis=0)]])

        observed = statistic(*codes)
        res = _bootstrap(codes, statistic)
        low, high = res.confidence_interval
        per_class: list[dict | None] = [None] * k
        for i, c in enumerate(present):
            mask = label == c
            per_class[c] = {"diff": float(observed[i]), "low": float(low[i]), "high": float(high[i]),
                            "p": mcnemar(err_a[kind][mask], err_b[kind][mask]), "test": "McNemar"}
        n = len(present)
        out[kind] = {
            "classes": per_class,
            "avg": {"diff": float(observed[n]), "low": float(low[n]), "high": float(high[n]),
                    "p": mcnemar(err_a[kind], err_b[kind]), "test": "McNemar"},
            "worst": {"diff": float(observed[n + 1]), "low": float(low[n + 1]), "high": float(high[n + 1]),
                      "p": bootstrap_p(res.bootstrap_distribution[n + 1]), "test": "paired bootstrap"},
        }
    return out


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def seed_interval(values: list[float]) -> tuple[float, float] | None:
    """The 95% t interval of the mean over seeds; None for fewer than 2 seeds."""
    if len(values) < 2:
        return None
    if np.ptp(values) == 0:
        return float(values[0]), float(values[0])
    ci = stats.ttest_1samp(values, 0.0).confidence_interval(confidence_level=LEVEL)
    return float(ci.low), float(ci.high)


def paired_t(row: list[float], base: list[float]) -> float:
    """Paired t-test p-value over seeds; a difference that never varies: 1 if it is 0, else 0."""
    d = np.asarray(row, dtype=float) - np.asarray(base, dtype=float)
    if np.ptp(d) == 0:
        return 1.0 if d[0] == 0 else 0.0
    return float(stats.ttest_rel(row, base).pvalue)


def _joint_counts(row: dict, base: dict, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class: n_c and the counts of the 9 joint states (row state * 3 + base state), state 0 = clean
    wrong, 1 = boundary error, 2 = robust right."""
    check_paired([base, row], hint="a row paired with the baseline needs the same data settings")
    label, er = outcomes(row)
    _, eb = outcomes(base)
    state_r = 2 - er["standard"] - er["robust"]  # clean wrong: 0, boundary: 1, right: 2
    state_b = 2 - eb["standard"] - eb["robust"]
    joint = 3 * state_r.astype(np.int64) + state_b
    counts = np.zeros((k, 9), dtype=np.int64)
    np.add.at(counts, (label, joint), 1)
    return counts.sum(axis=1), counts


def _table_metrics(counts: np.ndarray, n: np.ndarray, which: int) -> np.ndarray:
    """The six Table 1 numbers (METRICS order) of the row (`which` 0) or the baseline (1), from joint
    state counts (..., k, 9); classes without images are left out."""
    states = counts.reshape(*counts.shape[:-1], 3, 3).sum(axis=-1 - which)  # (..., k, 3)
    denom = np.maximum(n, 1)[..., None]
    share = 100.0 * states / denom
    errors = {"standard": share[..., 0], "boundary": share[..., 1], "robust": share[..., 0] + share[..., 1]}
    present = n > 0
    out = []
    for agg, kind in METRICS:
        e = errors[kind]
        if agg == "avg":
            out.append(np.where(present, e, 0).sum(axis=-1) / np.maximum(present.sum(axis=-1), 1))
        else:
            out.append(np.where(present, e, -np.inf).max(axis=-1))
    return np.stack(out, axis=-1)


def hierarchical_difference(rows: list[dict], bases: list[dict]) -> np.ndarray:
    """Bootstrap distribution (RESAMPLES, 6) of row - baseline mean over seeds: seeds resampled (the
    same seeds for both), then each drawn seed's images, stratified by class, pairs kept together."""
    k = len(bases[0]["result"]["counts"])
    parts = [_joint_counts(r, b, k) for r, b in zip(rows, bases)]
    n = np.stack([p[0] for p in parts])  # (S, k)
    freq = np.stack([p[1] / np.maximum(p[0], 1)[:, None] for p in parts])  # (S, k, 9)
    freq[n == 0] = np.eye(9)[0]  # a class without images: any distribution, it draws 0 images
    rng = np.random.default_rng(SEED)
    seeds = rng.integers(0, len(rows), size=(RESAMPLES, len(rows)))
    drawn = rng.multinomial(n[seeds], freq[seeds])  # (B, S, k, 9)
    diff = _table_metrics(drawn, n[seeds], 0) - _table_metrics(drawn, n[seeds], 1)  # (B, S, 6)
    return diff.mean(axis=1)


def seed_difference(rows: list[dict], bases: list[dict]) -> list[dict[str, Any]]:
    """Per Table 1 metric: row - baseline mean over seeds, its hierarchical-bootstrap 95% interval and
    the paired t-test p-value over seeds (unadjusted; `holm` over the rows compared)."""
    if len(rows) != len(bases) or len(rows) < 2:
        raise UserError("a paired test over seeds needs at least 2 seeds of each row")
    distribution = hierarchical_difference(rows, bases)
    lows = np.quantile(distribution, (1 - LEVEL) / 2, axis=0)
    highs = np.quantile(distribution, 1 - (1 - LEVEL) / 2, axis=0)
    out = []
    for i, (agg, kind) in enumerate(METRICS):
        r = [float(rec["result"][agg][kind]) for rec in rows]
        b = [float(rec["result"][agg][kind]) for rec in bases]
        out.append({"diff": float(np.mean(r) - np.mean(b)), "low": float(lows[i]), "high": float(highs[i]),
                    "p": paired_t(r, b), "test": "paired t over seeds"})
    return out


def pooled_std(groups: list[list[float]]) -> tuple[float, int] | None:
    """Pooled within-group sample std and its degrees of freedom (None without any)."""
    df = sum(len(g) - 1 for g in groups if len(g) > 1)
    if df == 0:
        return None
    ss = sum(float(np.sum((np.asarray(g) - np.mean(g)) ** 2)) for g in groups if len(g) > 1)
    return math.sqrt(ss / df), df


def seeds_needed(std: float, delta: float, power: float = 0.8, limit: int = 1000) -> int | None:
    """Smallest number of seeds n >= 2 at which a two-sided paired t-test at ALPHA detects a true difference
    `delta` with `power`, when one method's result varies by `std` between seeds (the difference of two
    independently trained methods by std * sqrt(2)); None beyond `limit`."""
    sd = std * math.sqrt(2.0)
    if sd == 0:
        return 2
    for n in range(2, limit + 1):
        t = stats.t.ppf(1 - ALPHA / 2, n - 1)
        nc = delta / (sd / math.sqrt(n))
        if stats.nct.sf(t, n - 1, nc) + stats.nct.cdf(-t, n - 1, nc) >= power:
            return n
    return None
