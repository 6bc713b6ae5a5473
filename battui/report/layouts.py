"""Report layouts: evaluation records -> `Section`s in the paper's table format.

    sections = eval_sections(record, eval_intervals(record))   # `battui eval`: Table 1 row + per-class detail
    sections = compare_sections([rec_a, rec_b], paired_sections([rec_a, rec_b])[0])  # side by side, bars, B - A
    sections = table_sections(rows, title=...)    # `battui table`: mean ± std over seeds
    sections += seed_sections(rows, labels, baseline=0)   # `battui table`: intervals, differences to a row

The 95% intervals and tests come from `battui.report.stats`; a record without them (or a
caller that passes none) gets the plain numbers.

Table 1 columns are the paper's: Avg./Worst standard, boundary and robust error
(%), the lowest of each column in bold.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

from battui.engine.rundir import RunDir
from battui.errors import UserError
from battui.report import stats
from battui.report.formats import MARK, Bar, Estimate, MeanStd, Section, lowest_bold

METRICS = (
    ("avg", "standard", "Avg. Std."),
    ("worst", "standard", "Worst Std."),
    ("avg", "boundary", "Avg. Bndy."),
    ("worst", "boundary", "Worst Bndy."),
    ("avg", "robust", "Avg. Rob."),
    ("worst", "robust", "Worst Rob."),
)
METRIC_COLUMNS = [label for _, _, label in METRICS]
METRIC_KEYS = [f"{agg}_{kind}" for agg, kind, _ in METRICS]


def table1_values(result: dict) -> list[float]:
    """The six Table 1 numbers of one `evaluate` result, in column order."""
    return [float(result[agg][kind]) for agg, kind, _ in METRICS]


def describe_attack(attack: dict, limit: int = 0) -> str:
    """`PGD-20 CE (eps 0.2, step 0.05, 1 restart, seed 0), fp32` or `AutoAttack standard (pyautoattack ...)`."""
    eps = attack["eps"]
    eps_text = f"{eps:.4g}" + (f" = {round(eps * 255):d}/255" if abs(eps * 255 - round(eps * 255)) < 1e-6 else "")
    if attack["name"] == "autoattack":
        text = (f"AutoAttack standard ({attack.get('implementation', 'pyautoattack')}: APGD-CE, APGD-T, FAB-T, "
                f"Square; eps {eps_text}, seed {attack['seed']})")
    else:
        restarts = attack["restarts"]
        text = (
            f"PGD-{attack['steps']} CE (eps {eps_text}, step {attack['step_size']:.4g}, "
            f"{restarts} restart{'s' if restarts != 1 else ''}, seed {attack['seed']})"
        )
    text += f", {attack.get('precision', 'fp32')}"
    return text + (f", first {limit} test images" if limit else "")


def autoattack_section(records: list[dict], letters: list[str] | None = None) -> Section | None:
    """AutoAttack's per-attack breakdown (robust accuracy after each attack), one column per record."""
    from battui.attacks.autoattack import breakdown_rows

    parts = [r["result"].get("autoattack") for r in records]
    if not parts or any(p is None for p in parts):
        return None
    tables = [breakdown_rows(p) for p in parts]
    names = [f"{letter}: {r['label']}" for letter, r in zip(letters, records)] if letters else ["Robust acc. (%)"]
    rows = [[stage[0], *(table[i][2] for table in tables)] for i, stage in enumerate(tables[0])]
    first = parts[0]
    notes = [f"{first['implementation']}, version=\"{first['version']}\", run once over all {first['n']} images; "
             "each attack runs on the images the previous ones left robust, so the accuracy never rises"]
    notes += [f"pyautoattack warned: {w}" for p in parts for w in p.get("warnings", [])]
    return Section(title="AutoAttack per attack — robust accuracy (%)", columns=["Stage", *names], rows=rows,
                   notes=notes)


def short_path(path: str) -> str:
    """`<run dir>/<file>` for a checkpoint inside a run's checkpoints/ folder, else the file name."""
    p = Path(path)
    if p.parent == RunDir(p.parent.parent).checkpoints:
        return f"{p.parent.parent.name}/{p.name}"
    return p.name


def _header(record: dict) -> str:
    data = record["dataset"]
    return (
        f"{record['label']} — {short_path(record['checkpoint'])} (epoch {record.get('epoch')}); "
        f"{data['name']} test split, {record['result']['n']} images; "
        f"{describe_attack(record['attack'], record['limit'])}"
    )


def _shown(record: dict, c: int, value: Any) -> Any:
    """A per-class number, or None ("–") for a class with no evaluated images."""
    return value if record["result"]["counts"][c] else None


def _steps(record: dict, c: int) -> Any:
    """Mean steps to flip, or None where the attack reports no steps (AutoAttack) or the class had no images."""
    return None if record["attack"]["name"] == "autoattack" else _shown(record, c, record["mean_steps"][c])


def coverage_note(record: dict) -> str:
    """Which classes Avg./Worst are over: those with evaluated images."""
    counts = record["result"]["counts"]
    present = sum(1 for n in counts if n)
    note = f"Avg./Worst over the {present} classes with evaluated images ({record['result']['n']} images)"
    if present < len(counts):
        where = f"the first {record['limit']} test images" if record["limit"] else "the test split"
        note += f"; {len(counts) - present} class(es) had none in {where} (shown as –)"
    return note


def _with(value: Any, interval: tuple[float, float] | None) -> Any:
    """A number with its interval as an `Estimate`, or the number alone."""
    if value is None or interval is None:
        return value
    return Estimate(float(value), interval[0], interval[1])


def interval_notes() -> list[str]:
    return ["[low, high] = 95% intervals: a class's error, Wilson (binomial, its n images); Avg. and Worst, a "
            f"{stats.describe_bootstrap()} over the test images, stratified by class (Worst is a maximum over "
            "classes, which has no binomial interval, so its interval comes from the bootstrap)"]


def per_class_section(record: dict, title: str | None = None, intervals: dict | None = None) -> Section:
    """One checkpoint's per-class errors (with their Wilson intervals, if given), mean steps to flip and
    target share."""
    res = record["result"]
    iv = intervals or {}
    classes = record["dataset"]["classes"] or [str(i) for i in range(len(res["counts"]))]
    target = record["target"]["distribution"]
    rows = []
    for c, name in enumerate(classes):
        rows.append([
            name,
            res["counts"][c],
            *(_with(_shown(record, c, res[kind][c]), iv[kind][c] if iv else None) for kind in stats.KINDS),
            _steps(record, c),
            _shown(record, c, record["never_flipped"][c]),
            100.0 * target[c],
        ])
    for name, agg in (("Avg.", "avg"), ("Worst", "worst")):
        rows.append([name, None, *(_with(res[agg][kind], iv[agg][kind] if iv else None) for kind in stats.KINDS),
                     None, None, None])
    kl = record["target"]["kl_to_uniform"]
    steps_note = ("Steps = mean attack steps to the first misclassification (flipped samples); "
                  if record["attack"]["name"] != "autoattack" else "Steps: AutoAttack reports no per-step record; ")
    return Section(
        title=title or f"Per class — {record['label']}",
        columns=["Class", "n", "Std.", "Bndy.", "Rob.", "Steps", "Never", "Target"],
        rows=rows,
        notes=[
            "errors in %: Std. = clean prediction wrong; Bndy. = clean right but adversarial wrong; "
            "Rob. = Std. + Bndy.",
            steps_note + "Never = % never flipped; Target = % of flipped samples predicted as this class",
            coverage_note(record),
            f"target distribution KL to uniform: {kl:.4f} (0 = flips land evenly on all classes)",
            *(["AutoAttack keeps no per-step record: Steps is its budget for every broken image"]
              if record["attack"]["name"] == "autoattack" else []),
            *(["[low, high]: 95% Wilson interval of the class's error (its n images)"] if iv else []),
        ],
    )


def _timing(record: dict) -> str:
    if record.get("cached"):
        return "cached evaluation"
    return f"evaluated in {record['seconds']:.1f} s" + (f" ({record['reevaluated']})" if record.get("reevaluated")
                                                         else "")


def eval_sections(record: dict, intervals: dict | None = None) -> list[Section]:
    """`battui eval`: the Table 1 row and the per-class detail, with 95% intervals if given
    (`stats.eval_intervals`)."""
    values = table1_values(record["result"])
    if intervals:
        values = [_with(v, intervals[agg][kind]) for v, (agg, kind, _) in zip(values, METRICS)]
    notes = [f"{_header(record)}; {_timing(record)}", *(interval_notes() if intervals else [])]
    summary = Section(title="Table 1", columns=["Method", *METRIC_COLUMNS], rows=[[record["label"], *values]],
                      notes=notes)
    breakdown = autoattack_section([record])
    return [summary, *([breakdown] if breakdown else []),
            per_class_section(record, title="Per class", intervals=intervals)]


def _letters(records: list[dict]) -> list[str]:
    return [string.ascii_uppercase[i] if i < 26 else str(i + 1) for i in range(len(records))]


def compare_sections(records: list[dict], paired: Section | None = None) -> list[Section]:
    """`battui compare`: Table 1 side by side, then the paired differences against the first (if given,
    `paired_sections`), per-class bars with deltas against the first."""
    letters = _letters(records)
    rows = [[f"{letter}: {rec['label']}", *table1_values(rec["result"])] for letter, rec in zip(letters, records)]
    first = records[0]
    notes = [f"{letter} = {rec['checkpoint']}" for letter, rec in zip(letters, records)]
    notes.append(f"{first['dataset']['name']} test split; {describe_attack(first['attack'], first['limit'])}; "
                 "bold = lowest (best) in its column")
    notes += [f"{letter}: {rec['reevaluated']}" for letter, rec in zip(letters, records) if rec.get("reevaluated")]
    seeds = {rec["dataset"]["split_seed"] for rec in records}
    if len(seeds) > 1:
        notes.append("note: the checkpoints were trained with different seeds, so each is evaluated on its own "
                     "held-out test split (same dataset, different images)")
    table = Section(title="Table 1 — side by side", columns=["Method", *METRIC_COLUMNS], rows=rows,
                    bold=lowest_bold(rows, range(1, 7)), notes=notes)
    classes = first["dataset"]["classes"] or [str(i) for i in range(len(first["result"]["counts"]))]
    header = ["Class", *(f"{letter}: {rec['label']}" for letter, rec in zip(letters, records))]
    breakdown = autoattack_section(records, letters)
    sections = [table, *([paired] if paired else []), *([breakdown] if breakdown else [])]
    for kind, title in (("robust", "robust error"), ("standard", "standard error"), ("boundary", "boundary error")):
        bar_rows = []
        for c, name in enumerate(classes):
            ref = _shown(first, c, first["result"][kind][c])
            bar_rows.append([name, *(None if not rec["result"]["counts"][c] else
                                     Bar(rec["result"][kind][c],
                                         None if i == 0 or ref is None else rec["result"][kind][c] - ref)
                                     for i, rec in enumerate(records))])
        sections.append(Section(title=f"Per-class {title} (%), delta against A", columns=header, rows=bar_rows))
    fair_rows = []
    for c, name in enumerate(classes):
        fair_rows.append([name, *(_steps(rec, c) for rec in records)])
    fair_rows.append(["Target KL to uniform", *(rec["target"]["kl_to_uniform"] for rec in records)])
    sections.append(Section(title="Mean attack steps to flip per class, and target-class KL to uniform",
                            columns=header, rows=fair_rows,
                            notes=["fewer steps = the class is pushed over the boundary more easily; "
                                   "KL 0 = flipped samples land evenly on all classes"]))
    return sections


def mean_std(values: list[float]) -> MeanStd:
    """Mean and sample standard deviation (n - 1; 0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return MeanStd(mean, var**0.5, n)


def aggregate(records: list[dict]) -> dict[str, Any]:
    """Mean ± std over seeds of the six Table 1 numbers and of every per-class error."""
    values = [table1_values(r["result"]) for r in records]
    out: dict[str, Any] = {key: mean_std([v[i] for v in values]) for i, key in enumerate(METRIC_KEYS)}
    k = len(records[0]["result"]["counts"])
    for kind in ("standard", "boundary", "robust"):  # over the seeds whose evaluation had images of the class
        per = [[r["result"][kind][c] for r in records if r["result"]["counts"][c]] for c in range(k)]
        out[f"per_class_{kind}"] = [mean_std(values) if values else None for values in per]
    out["target_kl"] = mean_std([r["target"]["kl_to_uniform"] for r in records])
    return out


def table_sections(rows: list[dict], *, title: str, lead_columns: list[str], notes: list[str]) -> list[Section]:
    """`battui table`: one row per method (or ablation variant), mean ± std over seeds.

    Each row dict has `cells` (the lead columns) and `stats` (from `aggregate`).
    """
    body = [[*row["cells"], *(row["stats"][key] for key in METRIC_KEYS)] for row in rows]
    lead = len(lead_columns)
    table = Section(title=title, columns=[*lead_columns, *METRIC_COLUMNS], rows=body,
                    bold=lowest_bold(body, range(lead, lead + 6)), notes=notes)
    return [table]


def _p_text(p: float) -> str:
    """p for a table cell; an exact test's p can underflow to 0.0, so below 1e-300 it is shown as that bound."""
    if p < 1e-300:
        return "<1e-300"
    return f"{p:.2g}" if p < 0.01 else f"{p:.3f}"


def _holm_rows(tests: list[list[dict]]) -> list[list[dict]]:
    """`tests[j][i]`: metric i of comparison j; each metric's p-values Holm-adjusted over the comparisons
    (`p_holm`, `significant` added)."""
    out = [[dict(t) for t in row] for row in tests]
    for i in range(len(tests[0]) if tests else 0):
        adjusted = stats.holm([row[i]["p"] for row in tests])
        for row, p in zip(out, adjusted):
            row[i].update(p_holm=p, significant=p < stats.ALPHA)
    return out


def _diff_cell(t: dict) -> Estimate:
    return Estimate(t["diff"], t["low"], t["high"], p=t["p_holm"], significant=t["significant"], signed=True)


def paired_sections(records: list[dict]) -> tuple[Section, list[dict]]:
    """`battui compare`: per-class robust error and the six Table 1 numbers of each checkpoint minus the
    first's, on the same images (`stats.paired_difference`), p-values Holm-corrected over the pairs;
    returns the section and the JSON-ready tests."""
    letters = _letters(records)
    first = records[0]
    k = len(first["result"]["counts"])
    classes = first["dataset"]["classes"] or [str(i) for i in range(k)]
    names = [f"{c} (Rob.)" for c in classes] + METRIC_COLUMNS
    tests = []
    for rec in records[1:]:
        diff = stats.paired_difference(first, rec)
        per_class = [diff["robust"]["classes"][c] for c in range(k)]
        tests.append([*per_class, *(diff[kind][agg] for agg, kind, _ in METRICS)])
    present = [i for i in range(len(names)) if all(t[i] is not None for t in tests)]
    tests = [[t[i] for i in present] for t in tests]
    names = [names[i] for i in present]
    tests = _holm_rows(tests)
    columns = ["Error", *(f"{letter} − A [95%]" for letter in letters[1:]), *(f"{letter} p" for letter in letters[1:])]
    rows = [[name, *(_diff_cell(t[i]) for t in tests), *(_p_text(t[i]["p_holm"]) for t in tests)]
            for i, name in enumerate(names)]
    m = len(records) - 1
    holm_text = f"Holm-corrected over the {m} pairs compared" if m > 1 else "one pair, so no correction"
    notes = [f"{MARK} significant at {stats.ALPHA} after Holm correction; differences in points, same images and "
             "attack seed for every checkpoint",
             f"[low, high]: 95% {stats.describe_bootstrap()} over image pairs, stratified by class",
             "p: exact McNemar test on the per-image outcomes (per class and Avg., the latter over all images); "
             f"Worst: paired bootstrap (a maximum has no exact test); {holm_text}"]
    section = Section(title="Paired differences against A (points)", columns=columns, rows=rows, notes=notes)
    data = [{"a": first["checkpoint"], "b": rec["checkpoint"], "tests": dict(zip(names, t))}
            for rec, t in zip(records[1:], tests)]
    return section, data


def seed_sections(rows: list[dict], labels: list[str], baseline: int | None) -> tuple[list[Section], dict]:
    """`battui table` with several seeds: the 95% t interval of each row's means, and (`baseline` a row
    index) every other row's difference to it, paired by seed (`stats.seed_difference`), Holm over the rows;
    returns the sections and their JSON-ready data. Each row dict has `records` (one per seed, in seed order)."""
    seeds = len(rows[0]["records"])
    data: dict[str, Any] = {"level": stats.LEVEL, "resamples": stats.RESAMPLES, "bootstrap_seed": stats.SEED}
    body, intervals = [], []
    for label, row in zip(labels, rows):
        values = [table1_values(r["result"]) for r in row["records"]]
        per_metric = [[v[i] for v in values] for i in range(len(METRICS))]
        iv = [stats.seed_interval(v) for v in per_metric]
        intervals.append(dict(zip(METRIC_KEYS, iv)))
        body.append([label, *(_with(sum(v) / len(v), i) for v, i in zip(per_metric, iv))])
    data["intervals"] = intervals
    section = Section(title=f"95% interval of the mean over {seeds} seeds (t)", columns=["Row", *METRIC_COLUMNS],
                      rows=body, notes=["[low, high]: Student t interval of the mean over seeds"])
    sections = [section]
    pooled = stats.pooled_std([[r["result"]["worst"]["robust"] for r in row["records"]] for row in rows])
    if pooled:
        std, df = pooled
        need = {delta: stats.seeds_needed(std, delta) for delta in (2.0, 5.0)}
        data["seeds_needed"] = {"worst_robust_std": std, "df": df, **{f"{d:g}": n for d, n in need.items()}}
        said = ", ".join(f"{d:g} points: {n if n else 'more than 1000'} seeds" for d, n in need.items())
        section.notes.append(f"seeds needed to detect a worst-class robust error difference with 80% power (paired "
                             f"t-test, alpha {stats.ALPHA}; seed-to-seed std {std:.2f} points pooled over "
                             f"{len(rows)} row(s), {df} df; a difference of two methods varies by std × √2): {said}")
    if baseline is None or len(rows) < 2:
        return sections, data
    others, tests, unpaired = [], [], []
    for i in range(len(rows)):
        if i == baseline:
            continue
        try:  # a --sweep of data settings gives rows other test images: no pairs, said under the table
            tests.append(stats.seed_difference(rows[i]["records"], rows[baseline]["records"]))
            others.append(i)
        except UserError as exc:
            unpaired.append(f"{labels[i]}: not compared ({exc})")
    if not others:
        sections[0].notes += unpaired
        return sections, data
    tests = _holm_rows(tests)
    diff_rows = [[labels[i], *(_diff_cell(t) for t in row)] for i, row in zip(others, tests)]
    m = len(others)
    notes = [*unpaired, f"{MARK} significant at {stats.ALPHA} after Holm correction over the {m} row(s) compared",
             f"[low, high]: 95% hierarchical bootstrap (seeds resampled, then images within each seed, stratified "
             f"by class, rows paired by seed and image; {stats.RESAMPLES} resamples, seed {stats.SEED})",
             "p: paired t-test over seeds (same split and seed for both rows), Holm-corrected"]
    sections.append(Section(title=f"Difference to {labels[baseline]}, paired by seed (points)",
                            columns=["Row", *METRIC_COLUMNS], rows=diff_rows, notes=notes))
    data["baseline"] = labels[baseline]
    data["vs_baseline"] = [{"row": labels[i], **dict(zip(METRIC_KEYS, row))} for i, row in zip(others, tests)]
    return sections, data
