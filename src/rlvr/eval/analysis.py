"""Error analysis of one run and the comparison of two runs, from their per-sample results."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rlvr.eval.store import CATEGORIES, RunResult, SampleResult

#: characters of a completion kept in an example (the full text is in samples.jsonl)
EXAMPLE_CHARS = 400


def error_summary(
    samples: Iterable[SampleResult], n_examples: int = 3
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{benchmark: {category: {"count": int, "examples": [...]}}}`` over every sample.

    Categories are listed in :data:`CATEGORIES` order (``correct`` included, so counts add up to the number
    of samples); examples are the first ``n_examples`` samples of each error category, completion cut to
    :data:`EXAMPLE_CHARS` characters.
    """
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for s in samples:
        cats = out.setdefault(s.benchmark, {})
        entry = cats.setdefault(s.category, {"count": 0, "examples": []})
        entry["count"] += 1
        if s.category != "correct" and len(entry["examples"]) < n_examples:
            entry["examples"].append(_example(s))
    rank = {c: i for i, c in enumerate(CATEGORIES)}
    return {b: dict(sorted(c.items(), key=lambda kv: rank.get(kv[0], len(rank)))) for b, c in out.items()}


def _example(s: SampleResult) -> dict[str, Any]:
    text = s.completion if len(s.completion) <= EXAMPLE_CHARS else s.completion[:EXAMPLE_CHARS] + " …"
    detail = {k: v for k, v in s.detail.items() if isinstance(v, (str, int, float, bool)) or v is None}
    return {"id": s.id, "sample": s.sample, "completion": text, **detail}


def per_item_scores(samples: Iterable[SampleResult]) -> dict[tuple[str, str], float]:
    """Mean correctness over each item's samples, keyed by ``(benchmark, id)``."""
    sums: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for s in samples:
        acc = sums[(s.benchmark, s.id)]
        acc[0] += s.correct
        acc[1] += 1
    return {k: total / n for k, (total, n) in sums.items()}


@dataclass
class Comparison:
    """Metric deltas and per-item flips between a ``before`` and an ``after`` run.

    Attributes:
        deltas: rows ``(benchmark, metric, before, after, after - before)``; a side missing a value is None.
        fixed: items wrong before (score < 0.5) and right after (>= 0.5): ``(benchmark, id, before, after)``.
        broken: items right before and wrong after.
        common: number of items scored in both runs, per benchmark.
    """

    deltas: list[tuple[str, str, float | None, float | None, float | None]]
    fixed: list[tuple[str, str, float, float]] = field(default_factory=list)
    broken: list[tuple[str, str, float, float]] = field(default_factory=list)
    common: dict[str, int] = field(default_factory=dict)


def compare_runs(before: RunResult, after: RunResult) -> Comparison:
    """Deltas of every metric the two runs share a benchmark for, and the items that flipped."""
    deltas = []
    for bench in sorted(set(before.metrics) | set(after.metrics)):
        b, a = before.metrics.get(bench, {}), after.metrics.get(bench, {})
        for metric in _ordered_keys(b, a):
            vb, va = _number(b.get(metric)), _number(a.get(metric))
            deltas.append((bench, metric, vb, va, None if vb is None or va is None else va - vb))
    sb, sa = per_item_scores(before.samples), per_item_scores(after.samples)
    comp = Comparison(deltas)
    for key in sorted(set(sb) & set(sa), key=_item_order):
        comp.common[key[0]] = comp.common.get(key[0], 0) + 1
        was, now = sb[key] >= 0.5, sa[key] >= 0.5
        if was != now:
            (comp.fixed if now else comp.broken).append((key[0], key[1], sb[key], sa[key]))
    return comp


def flip_examples(
    flips: Sequence[tuple[str, str, float, float]], before: RunResult, after: RunResult, limit: int = 5
) -> list[dict[str, Any]]:
    """The first ``limit`` flipped items of each benchmark with the first sample's completion on both sides."""
    first_b = _first_samples(before.samples)
    first_a = _first_samples(after.samples)
    out, seen = [], defaultdict(int)
    for bench, uid, sb, sa in flips:
        if seen[bench] >= limit:
            continue
        seen[bench] += 1
        b, a = first_b.get((bench, uid)), first_a.get((bench, uid))
        out.append({
            "benchmark": bench, "id": uid, "before": sb, "after": sa,
            "before_category": b.category if b else None, "after_category": a.category if a else None,
            "before_completion": _cut(b.completion) if b else "", "after_completion": _cut(a.completion) if a else "",
        })  # fmt: skip
    return out


def _first_samples(samples: Iterable[SampleResult]) -> dict[tuple[str, str], SampleResult]:
    out: dict[tuple[str, str], SampleResult] = {}
    for s in samples:
        key = (s.benchmark, s.id)
        if key not in out or s.sample < out[key].sample:
            out[key] = s
    return out


def _cut(text: str, n: int = EXAMPLE_CHARS) -> str:
    return text if len(text) <= n else text[:n] + " …"


def _ordered_keys(*dicts: dict[str, Any]) -> list[str]:
    keys: list[str] = []
    for d in dicts:
        keys += [k for k in d if k not in keys]
    return keys


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _item_order(key: tuple[str, str]) -> tuple[str, int, str]:
    bench, uid = key  # numeric ids sort as numbers (0, 1, 2, ... 10), others as text
    return (bench, int(uid), "") if uid.isdigit() else (bench, -1, uid)
