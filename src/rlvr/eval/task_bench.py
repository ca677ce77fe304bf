"""A training task's held-out split as a benchmark: ``gen_math``, ``gen_sql``, ``gen_code``.

The tiny model learns the generated tasks long before it scores anything on GSM8K or HumanEval, so the
research runs on it (``rlvr experiment ... --preset tiny``) need a benchmark where runs can differ. These are
the same held-out problems training validates on (never trained on), at the levels the default configs train
(math 1, SQL 1, code 3), scored by the task's own verifier. Their ``accuracy`` is the task's accuracy
component (the lenient reading); ``format_rate`` is the share in the required format and the runner
adds ``strict_accuracy`` (correct and in that format).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from rlvr.domains.base import judge_all
from rlvr.eval.spec import Benchmark, GenItem, Loaded, Verdict, mean
from rlvr.eval.store import SampleResult


def task_benchmark(
    name: str, make_task: Callable[[], Any], max_new_tokens: int, category_of: Callable[[str], str]
) -> Benchmark:
    """``make_task()``'s ``val`` split as a generate benchmark named ``name``, judged by the task itself;
    ``category_of`` maps the task's verdicts to outcome categories (:data:`rlvr.eval.store.CATEGORIES`)."""
    task_of = cache(make_task)  # one task (and one set of generated databases) per process

    def load(data_root: Path | None) -> Loaded:  # generated: nothing to read
        return Loaded([GenItem(ex.uid or str(i), ex) for i, ex in enumerate(task_of().examples("val"))])

    def judge(completions: Sequence[str], items: Sequence[GenItem]) -> list[Verdict]:
        task = task_of()
        judged = judge_all(task, completions, [it.example.reference for it in items])
        return [
            Verdict(
                float(float(j.components.get(task.accuracy_component, 0.0)) >= 1.0),
                category_of(j.verdict),
                {**j.detail, "verdict": j.verdict},
            )
            for j in judged
        ]

    def metrics(samples: Sequence[SampleResult]) -> dict[str, float]:
        return {"accuracy": mean([s.correct for s in samples]),
                "format_rate": mean([float(s.detail.get("strict_format", 0.0)) for s in samples])}  # fmt: skip

    return Benchmark(name=name, kind="generate", primary="accuracy", load=load, judge=judge,
                     metrics=metrics, max_new_tokens=max_new_tokens)  # fmt: skip


def _math() -> Any:
    from rlvr.domains.math import MathTask

    return MathTask(source="generated", difficulty=1)


def _sql() -> Any:
    from rlvr.domains.sql import SqlTask

    return SqlTask(source="generated", difficulty=1)


def _code() -> Any:
    from rlvr.domains.code import CodeTask

    return CodeTask(source="generated", difficulty=3)


def _math_category(verdict: str) -> str:
    return verdict  # math's verdicts are outcome categories already


def _sql_category(verdict: str) -> str:
    from rlvr.domains.sql.verify import category_of

    return category_of(verdict)


def _code_category(verdict: str) -> str:
    from rlvr.domains.code.verify import category_of

    return category_of(verdict)


GEN_MATH = task_benchmark("gen_math", _math, max_new_tokens=64, category_of=_math_category)
GEN_SQL = task_benchmark("gen_sql", _sql, max_new_tokens=128, category_of=_sql_category)
GEN_CODE = task_benchmark("gen_code", _code, max_new_tokens=128, category_of=_code_category)
