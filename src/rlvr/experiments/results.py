"""The results directory of an experiment: tables, PNG charts and error-category shifts.

table.md / table.csv     a row per run: headline metric per benchmark (or the experiment's COLUMNS),
                         last validation accuracy and training curves' end points, wall times
curves.png               training curves of every fit, read from its TensorBoard event file
benchmarks.png           the headline metric per benchmark, a bar per run
delta_heatmap.png        (experiments with HEATMAP) each run's headline metric minus the base's
errors_shift.md / .csv   the share of each outcome category per benchmark, base vs each run
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlvr.eval.report import plot_metrics, primary_metric
from rlvr.eval.store import CATEGORIES, RunResult, load_run
from rlvr.experiments import experiment_module
from rlvr.experiments.plan import Run, run_dir

#: TensorBoard scalars drawn in curves.png (those a run logged) and whose last value goes in the table
CURVES = ("reward/total", "val/accuracy", "train/loss", "train/sft_weight", "rollout/completion_len",
          "train/entropy")  # fmt: skip
TABLE_SCALARS = ("val/accuracy", "reward/total", "rollout/completion_len")


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` of every scalar in the TensorBoard event files directly in ``log_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not any(log_dir.glob("events.out.tfevents.*")):
        return {}
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def completion_words(result: RunResult, bench: str) -> float | None:
    """Mean whitespace-separated words of the evaluated completions of ``bench``."""
    lengths = [len(s.completion.split()) for s in result.samples if s.benchmark == bench]
    return sum(lengths) / len(lengths) if lengths else None


def table_rows(
    runs: Sequence[Run],
    results: Mapping[str, RunResult],
    scalars: Mapping[str, dict],
    records: Mapping[str, dict],
    columns: Sequence[tuple[str, str]] | None,
) -> list[dict[str, Any]]:
    """A row per run: its metric columns, the last value of :data:`TABLE_SCALARS` and its wall times."""
    rows = []
    for run in runs:
        res = results[run.name]
        cols = columns or [(b, primary_metric(res, b) or "") for b in res.metrics]
        row: dict[str, Any] = {"run": run.name, "kind": run.kind}
        for bench, metric in cols:
            value = completion_words(res, bench) if metric == "completion_words" else res.metrics.get(bench, {}).get(metric)  # fmt: skip
            row[f"{bench}/{metric}"] = value
        for tag in TABLE_SCALARS:
            series = scalars.get(run.name, {}).get(tag)
            row[f"last {tag}"] = series[-1][1] if series else None
        rec = records[run.name]
        row["train_s"] = rec.get("fit_s", rec.get("merge_s"))
        row["eval_s"] = rec.get("eval_s")
        rows.append(row)
    return rows


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    keys = list(rows[0]) if rows else []
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_cell(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
        w.writeheader()
        w.writerows([{k: ("" if v is None else v) for k, v in r.items()} for r in rows])


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(scalars: Mapping[str, dict[str, list[tuple[int, float]]]], path: Path) -> Path | None:
    """One panel per tag of :data:`CURVES` that some run logged, one line per run."""
    tags = [t for t in CURVES if any(t in s for s in scalars.values())]
    if not tags:
        return None
    plt = _plt()
    cols = min(3, len(tags))
    rows = (len(tags) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    # One colour per run (tab20 holds 20; the default cycle repeats after 10 and sft_rl has 11 runs).
    colour = {name: plt.get_cmap("tab20")(i % 20) for i, name in enumerate(scalars)}
    for ax, tag in zip(axes.flat, tags):
        for name, s in scalars.items():
            if tag in s:
                steps, values = zip(*s[tag])
                ax.plot(
                    steps, values, label=name, color=colour[name], marker="." if len(steps) < 20 else None
                )
        ax.set_title(tag, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
    for ax in list(axes.flat)[len(tags) :]:
        ax.axis("off")
    handles = {label: h for ax in axes.flat for h, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(handles.values(), handles.keys(), fontsize=7, loc="lower center", ncol=min(6, len(handles)))
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def delta_matrix(
    results: Mapping[str, RunResult], base: str
) -> tuple[list[str], list[str], list[list[float | None]]]:
    """Rows (runs other than ``base``), columns (benchmarks) and headline metric minus the base's."""
    ref = results[base]
    benches = list(ref.metrics)
    names = [n for n in results if n != base]
    matrix = []
    for n in names:
        row = []
        for b in benches:
            m = primary_metric(ref, b)
            after, before = results[n].metrics.get(b, {}).get(m), ref.metrics.get(b, {}).get(m)
            row.append(None if after is None or before is None else after - before)
        matrix.append(row)
    return names, benches, matrix


def plot_heatmap(results: Mapping[str, RunResult], base: str, path: Path) -> Path:
    """The transfer / interference matrix: runs x benchmarks, headline metric delta vs ``base``."""
    plt = _plt()
    names, benches, matrix = delta_matrix(results, base)
    values = [[0.0 if v is None else v for v in row] for row in matrix]
    span = max([abs(v) for row in values for v in row] + [0.01])
    fig, ax = plt.subplots(figsize=(1.2 * len(benches) + 2, 0.55 * len(names) + 1.5))
    im = ax.imshow(values, cmap="RdBu", vmin=-span, vmax=span, aspect="auto")
    ax.set_xticks(range(len(benches)), benches, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(j, i, "–" if v is None else f"{v:+.2f}", ha="center", va="center", fontsize=7)
    ax.set_title(f"headline metric minus {base}", fontsize=9)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def error_shift_rows(results: Mapping[str, RunResult], base: str) -> list[dict[str, Any]]:
    """Per (run, benchmark, category): the base's and the run's share of samples (from errors.json)."""

    def shares(r: RunResult, bench: str) -> dict[str, float]:
        cats = r.errors.get(bench, {})
        total = sum(c["count"] for c in cats.values()) or 1
        return {c: v["count"] / total for c, v in cats.items()}

    rows = []
    for bench in results[base].errors:
        # Categories seen in any run, so a run with none of them shows 0%, not a missing cell.
        seen = {c for r in results.values() for c in r.errors.get(bench, {})}
        for name, res in results.items():
            if name == base:
                continue
            before, after = shares(results[base], bench), shares(res, bench)
            for cat in [c for c in CATEGORIES if c in seen]:
                b, a = before.get(cat, 0.0), after.get(cat, 0.0)
                rows.append({"run": name, "benchmark": bench, "category": cat, "base": b, "after": a,
                             "delta": a - b})  # fmt: skip
    return rows


def errors_markdown(rows: Sequence[Mapping[str, Any]], base: str) -> str:
    """Per benchmark, a table of category shares: the base, then each run (delta vs the base)."""
    out = [f"# Error-category shifts: {base} vs each run\n", "Share of samples per outcome category.\n"]
    for bench in dict.fromkeys(r["benchmark"] for r in rows):
        mine = [r for r in rows if r["benchmark"] == bench]
        runs = list(dict.fromkeys(r["run"] for r in mine))
        cats = list(dict.fromkeys(r["category"] for r in mine))
        out += [f"## {bench}\n", "| category | " + base + " | " + " | ".join(runs) + " |", "|---|" + "---:|" * (len(runs) + 1)]  # fmt: skip
        for cat in cats:
            cell = {r["run"]: r for r in mine if r["category"] == cat}
            first = next(iter(cell.values()))["base"]
            parts = [f"{cell[n]['after']:.0%} ({cell[n]['delta']:+.0%})" if n in cell else "–" for n in runs]
            out.append(f"| {cat} | {first:.0%} | " + " | ".join(parts) + " |")
        out.append("")
    return "\n".join(out) + "\n"


def write_results(out: Path, exp: str, runs: Sequence[Run], records: Mapping[str, dict]) -> Path:
    """Every file of the results directory ``out`` (see the module docstring); returns ``out/table.md``."""
    mod = experiment_module(exp)
    results = {r.name: load_run(run_dir(out, r) / "eval") for r in runs}
    scalars = {r.name: read_scalars(run_dir(out, r)) for r in runs if r.kind == "fit"}
    scalars = {n: s for n, s in scalars.items() if s}
    rows = table_rows(runs, results, scalars, records, getattr(mod, "COLUMNS", None))
    write_csv(rows, out / "table.csv")
    charts = [plot_curves(scalars, out / "curves.png"), plot_metrics(results, out / "benchmarks.png")]
    base = runs[0].name
    if mod.HEATMAP:
        charts.append(plot_heatmap(results, base, out / "delta_heatmap.png"))
        names, benches, matrix = delta_matrix(results, base)
        (out / "delta.json").write_text(json.dumps({"base": base, "runs": names, "benchmarks": benches,
                                                    "delta": matrix}, indent=2) + "\n")  # fmt: skip
    shift = error_shift_rows(results, base)
    write_csv(shift, out / "errors_shift.csv")
    (out / "errors_shift.md").write_text(errors_markdown(shift, base))
    text = [f"# Experiment {exp}\n", markdown_table(rows)]
    text += [f"![{c.stem}]({c.name})\n" for c in charts if c is not None]
    text.append("Error-category shifts vs the base: [errors_shift.md](errors_shift.md)\n")
    (out / "table.md").write_text("\n".join(text))
    return out / "table.md"
