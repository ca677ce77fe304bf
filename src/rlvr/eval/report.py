"""Markdown tables and PNG charts from evaluation result directories."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlvr.eval.analysis import Comparison
from rlvr.eval.store import CATEGORIES, RunResult

#: one colour per outcome category, the same in every chart
_COLORS = {
    "correct": "#2ca02c", "format_error": "#ff7f0e", "no_answer": "#7f7f7f", "wrong_answer": "#d62728",
    "sql_error": "#9467bd", "runtime_error": "#8c564b", "syntax_error": "#e377c2", "timeout": "#bcbd22",
}  # fmt: skip
#: bookkeeping entries of metrics.json shown with no decimals
_COUNTS = ("n", "samples", "unknown_ids", "skipped_predictions", "missing_db")


def _fmt(metric: str, v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and v != v:  # NaN
        return "–"
    if metric in _COUNTS or isinstance(v, int):
        return str(int(v))
    if metric.endswith("_per_s"):
        return f"{v:.1f}"
    return f"{v:.3f}"


def metrics_table(runs: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """One markdown table: a row per (benchmark, metric), a column per run."""
    names = list(runs)
    lines = ["| benchmark | metric | " + " | ".join(names) + " |", "|---|---|" + "---:|" * len(names)]
    benches: list[str] = []
    for m in runs.values():
        benches += [b for b in m if b not in benches]
    for bench in benches:
        metrics: list[str] = []
        for m in runs.values():
            metrics += [k for k in m.get(bench, {}) if k not in metrics]
        for metric in metrics:
            cells = [_fmt(metric, runs[r].get(bench, {}).get(metric)) for r in names]
            lines.append(f"| {bench} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def errors_markdown(errors: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """Per benchmark: a count per outcome category and a few examples of each error."""
    out = ["## Error analysis\n"]
    for bench, cats in errors.items():
        total = sum(c["count"] for c in cats.values()) or 1
        counts = ", ".join(f"{cat} {c['count']} ({c['count'] / total:.0%})" for cat, c in cats.items())
        out.append(f"### {bench}\n\n{counts}\n")
        for cat, c in cats.items():
            for ex in c.get("examples", []):
                text = str(ex.get("completion", "")).replace("\n", " ⏎ ").replace("|", "\\|")[:200]
                extra = ", ".join(
                    f"{k}={v}" for k, v in ex.items() if k not in ("id", "sample", "completion")
                )
                out.append(f"- **{cat}** `{ex.get('id')}`: {text}" + (f" ({extra[:200]})" if extra else ""))
        out.append("")
    return "\n".join(out) + "\n"


def run_report(run: RunResult, title: str = "Evaluation") -> str:
    """The markdown of one run: what was evaluated, the metrics table, the error section."""
    head = [f"# {title}\n"]
    for key in ("model", "adapter", "predictions", "n_samples", "limit", "data_root"):
        if run.info.get(key) not in (None, ""):
            head.append(f"- {key}: `{run.info[key]}`")
    unmatched = run.info.get("unknown_benchmarks")
    if unmatched:
        head.append(f"- prediction lines for unknown benchmarks (ignored): {unmatched}")
    return (
        "\n".join(head) + "\n\n" + metrics_table({"value": run.metrics}) + "\n" + errors_markdown(run.errors)
    )


def compare_markdown(
    comp: Comparison, fixed: Sequence[dict], broken: Sequence[dict], names: tuple[str, str]
) -> str:
    """Deltas table plus the items that flipped each way, with their completions."""
    b, a = names
    lines = [
        f"# Comparison: `{b}` → `{a}`\n",
        "| benchmark | metric | before | after | delta |",
        "|---|---|---:|---:|---:|",
    ]
    for bench, metric, vb, va, d in comp.deltas:
        delta = "–" if d is None else (f"{d:+.1f}" if metric.endswith("_per_s") else f"{d:+.3f}")
        lines.append(f"| {bench} | {metric} | {_fmt(metric, vb)} | {_fmt(metric, va)} | {delta} |")
    lines.append("")
    for label, flips, examples in (
        ("fixed (wrong → right)", comp.fixed, fixed),
        ("broken (right → wrong)", comp.broken, broken),
    ):
        per_bench: dict[str, int] = {}
        for bench, *_ in flips:
            per_bench[bench] = per_bench.get(bench, 0) + 1
        summary = ", ".join(f"{k} {v}" for k, v in per_bench.items()) or "none"
        lines.append(f"## {label}: {len(flips)} ({summary})\n")
        for ex in examples:
            lines.append(
                f"- **{ex['benchmark']}** `{ex['id']}` {ex['before']:.2f} → {ex['after']:.2f} "
                f"({ex['before_category']} → {ex['after_category']})"
            )
            for side in ("before", "after"):
                text = ex[f"{side}_completion"].replace("\n", " ⏎ ")[:200]
                lines.append(f"  - {side}: {text}")
        lines.append("")
    return "\n".join(lines) + "\n"


def primary_metric(run: RunResult, bench: str) -> str | None:
    """The headline metric of ``bench`` in ``run`` (recorded in run.json, else the first one listed)."""
    named = run.info.get("primary", {}).get(bench)
    metrics = run.metrics.get(bench, {})
    if named in metrics:
        return named
    return next((k for k, v in metrics.items() if isinstance(v, float) and k not in _COUNTS), None)


def plot_metrics(runs: Mapping[str, RunResult], path: Path) -> Path:
    """Grouped bars: each benchmark's headline metric, one bar per run."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    benches: list[str] = []
    for r in runs.values():
        benches += [b for b in r.metrics if b not in benches]
    width = 0.8 / max(len(runs), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(benches)), 4))
    for j, (name, run) in enumerate(runs.items()):
        values = []
        for b in benches:
            m = primary_metric(run, b)
            v = run.metrics.get(b, {}).get(m) if m else None
            values.append(v if isinstance(v, (int, float)) and v == v else 0.0)
        xs = [i + j * width for i in range(len(benches))]
        ax.bar(xs, values, width, label=name)
    labels = [f"{b}\n{primary_metric(next(iter(runs.values())), b) or ''}" for b in benches]
    ax.set_xticks([i + width * (len(runs) - 1) / 2 for i in range(len(benches))], labels, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_errors(run: RunResult, path: Path, title: str) -> Path:
    """Stacked bars: the share of each outcome category per benchmark for one run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = list(run.errors)
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(benches)), 4))
    bottom = [0.0] * len(benches)
    for cat in CATEGORIES:
        shares = []
        for b in benches:
            total = sum(c["count"] for c in run.errors[b].values()) or 1
            shares.append(run.errors[b].get(cat, {}).get("count", 0) / total)
        if any(shares):
            ax.bar(benches, shares, bottom=bottom, label=cat, color=_COLORS.get(cat))
            bottom = [x + y for x, y in zip(bottom, shares)]
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.set_ylabel("share of samples")
    ax.tick_params(axis="x", labelsize=8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(runs: Mapping[str, RunResult], out: str | Path) -> Path:
    """``out/report.md`` with a metrics table across runs, charts ``metrics.png`` and ``errors_<i>.png``
    (one per run), and each run's error section. Returns ``out/report.md``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plot_metrics(runs, out / "metrics.png")
    parts = [
        "# Evaluation report\n",
        metrics_table({n: r.metrics for n, r in runs.items()}),
        "![metrics](metrics.png)\n",
    ]
    for i, (name, run) in enumerate(runs.items()):
        chart = f"errors_{i}.png"
        plot_errors(run, out / chart, name)
        parts.append(f"\n# {name}\n\n![errors]({chart})\n\n" + errors_markdown(run.errors))
    path = out / "report.md"
    path.write_text("\n".join(parts))
    return path
