"""Score given completions (``--predictions FILE.jsonl``) with no model.

Each line is ``{"benchmark": name, "id": ..., "completion": "..."}``. Ids: gsm8k the 0-based index in the test
split; math500 ``unique_id``; humaneval and mbpp ``task_id``; spider the 0-based index in ``dev.json``;
arc_challenge the question ``id``; hellaswag the 0-based index in the validation file. For arc_challenge and
hellaswag the completion is the chosen option's label (``"A"``.., ``"0"``..). Several lines with one id are
that item's samples (pass@k). Lines naming an unknown benchmark or id, or that are not valid JSON objects,
are counted and reported, never fatal.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from rlvr.domains.base import DataError
from rlvr.domains.format import strict_format
from rlvr.eval.analysis import error_summary
from rlvr.eval.benchmarks import BENCHMARKS, get_benchmark
from rlvr.eval.multiple_choice import ChoiceQuestion
from rlvr.eval.runner import load_benchmarks, summarize
from rlvr.eval.spec import Benchmark, Loaded, Verdict
from rlvr.eval.store import RunResult, SampleResult


def read_predictions(path: str | Path) -> tuple[dict[str, list[tuple[str, str]]], Counter[str]]:
    """``{benchmark: [(id, completion), ...]}`` in file order, and counts of unusable lines by reason."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"predictions file not found: {p}")
    by_bench: dict[str, list[tuple[str, str]]] = defaultdict(list)
    problems: Counter[str] = Counter()
    with open(p, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                problems["malformed_lines"] += 1
                continue
            if not isinstance(rec, dict) or "benchmark" not in rec or "id" not in rec:
                problems["malformed_lines"] += 1
                continue
            completion = rec.get("completion")
            by_bench[str(rec["benchmark"])].append(
                (str(rec["id"]), "" if completion is None else str(completion))
            )
    return dict(by_bench), problems


def score_predictions(
    path: str | Path, data_root: str | Path | None, names: list[str] | None = None
) -> RunResult:
    """Metrics, per-sample results and errors of the completions in ``path``.

    Only benchmarks present in the file are scored (restricted to ``names`` when given); metrics are over
    the items that have predictions. ``run.info`` records unknown benchmarks and unusable lines.
    """
    by_bench, problems = read_predictions(path)
    unknown = {b: len(v) for b, v in by_bench.items() if b not in BENCHMARKS}
    wanted = [b for b in BENCHMARKS if b in by_bench and (names is None or b in names)]
    loaded = load_benchmarks(wanted, data_root)
    metrics, samples = {}, []
    for name in wanted:
        spec, data = get_benchmark(name), loaded[name]
        start = time.perf_counter()
        got, counts = _score_benchmark(spec, data, by_bench[name])
        n_items = len({s.id for s in got})
        metrics[name] = summarize(spec, got, data, n_items, time.perf_counter() - start)
        metrics[name].update(counts)
        samples += got
    info: dict[str, Any] = {
        "predictions": str(path),
        "primary": {n: get_benchmark(n).primary for n in wanted},
    }
    info.update(problems)
    if unknown:
        info["unknown_benchmarks"] = unknown
    return RunResult(metrics, samples, error_summary(samples), info)


def _score_benchmark(
    spec: Benchmark, data: Loaded, preds: list[tuple[str, str]]
) -> tuple[list[SampleResult], dict[str, int]]:
    """Score one benchmark's lines; returns the samples and counts of lines naming an unknown id
    (``unknown_ids``) or an item that cannot be scored, e.g. its database is missing (``skipped_predictions``)."""
    by_id = {item.uid: item for item in data.items}
    seen: Counter[str] = Counter()
    rows: list[tuple[Any, str, int, str]] = []  # item, id, sample index, completion
    unknown_ids = unusable = 0
    for uid, completion in preds:
        item = by_id.get(uid)
        if item is None:
            unusable += uid in data.unusable_ids
            unknown_ids += uid not in data.unusable_ids
            continue
        rows.append((item, uid, seen[uid], completion))
        seen[uid] += 1
    if spec.kind == "choice":
        verdicts = [choose(item, completion) for item, _, _, completion in rows]
    else:
        normalize = spec.normalize or (lambda c, _: c)
        verdicts = spec.judge([normalize(c, it) for it, _, _, c in rows], [it for it, *_ in rows])

    def detail(v: Verdict, completion: str) -> dict:
        return v.detail if spec.kind == "choice" else {**v.detail, "strict_format": strict_format(completion)}

    out = [SampleResult(spec.name, uid, s, completion, v.correct, v.category, detail(v, completion))
           for (_, uid, s, completion), v in zip(rows, verdicts)]  # fmt: skip
    return out, {"unknown_ids": unknown_ids, "skipped_predictions": unusable}


def choose(question: ChoiceQuestion, completion: str) -> Verdict:
    """The verdict of a given option label (``"B"``, ``"(b)"``, ``"2"``) on a multiple-choice question."""
    text = completion.strip().strip("().:").strip().upper()
    labels = [label.upper() for label in question.labels]
    if text not in labels:
        return Verdict(
            0.0, "no_answer", {"acc": 0.0, "acc_norm": 0.0, "gold": question.labels[question.gold]}
        )
    ok = float(labels.index(text) == question.gold)
    detail = {"acc": ok, "acc_norm": ok, "gold": question.labels[question.gold]}
    return Verdict(ok, "correct" if ok else "wrong_answer", detail)
