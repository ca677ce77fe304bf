"""One entry point over the three verifiers: components, a short verdict and an error, for a batch.

Used by the offline scoring CLI and by error analysis. Code is checked concurrently in the sandbox pool,
SQL in threads; math runs inline (its own deadline bounds each check).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from rlvr.verifiers.code import check_code_batch
from rlvr.verifiers.math import extract_math_answer, score_math
from rlvr.verifiers.sql import judge_sql

TASKS = ("math", "sql", "code")
REQUIRED = {"math": ("answer",), "sql": ("db_path", "gold_sql"), "code": ()}


@dataclass(frozen=True)
class Judgement:
    components: dict[str, float]
    verdict: str  # e.g. correct | wrong_answer | no_answer | syntax_error | timeout | invalid_input
    error: str | None = None


def judge_math(completion: str, reference: Mapping[str, Any]) -> Judgement:
    comps = score_math(completion, reference)
    answer, how = extract_math_answer(completion)
    if answer is None:
        return Judgement(comps, "no_answer")
    if comps["correctness"] == 1.0:
        return Judgement(comps, "correct" if how == "answer_tag" else f"correct_via_{how}")
    return Judgement(comps, "wrong_answer", f"extracted {answer[:80]!r} ({how})")


def judge_batch(
    tasks: Sequence[str],
    completions: Sequence[Any],
    references: Sequence[Mapping[str, Any]],
    *,
    threads: int = 4,
) -> list[Judgement]:
    """Judge every (task, completion, reference); never raises: bad input becomes verdict invalid_input."""
    out: list[Judgement | None] = [None] * len(tasks)
    code_idx: list[int] = []
    sql_jobs = []
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for i, (task, completion, ref) in enumerate(zip(tasks, completions, references)):
            problem = invalid_input(task, completion, ref)
            if problem:
                out[i] = Judgement({}, "invalid_input", problem)
            elif task == "math":
                out[i] = judge_math(completion, ref)
            elif task == "sql":
                sql_jobs.append((i, pool.submit(judge_sql, completion, ref)))
            else:
                code_idx.append(i)
        if code_idx:
            checks = check_code_batch([completions[i] for i in code_idx], [references[i] for i in code_idx])
            for i, c in zip(code_idx, checks):
                out[i] = Judgement(
                    c.components, "correct" if c.verdict == "passed" else c.verdict, c.detail or None
                )
        for i, fut in sql_jobs:
            v = fut.result()
            out[i] = Judgement(v.components, v.verdict, v.message or None)
    return out  # type: ignore[return-value]


def invalid_input(task: Any, completion: Any, reference: Mapping[str, Any]) -> str | None:
    """Why a line cannot be scored (one line), or ``None``."""
    if task not in TASKS:
        return f"unknown task {task!r}: use one of {list(TASKS)}"
    if not isinstance(completion, str):
        return "'completion' must be a string"
    missing = [k for k in REQUIRED[task] if not isinstance(reference.get(k), str)]
    if missing:
        return f"{task} line needs string field(s) {missing}"
    if task == "code":
        has_humaneval = isinstance(reference.get("test"), str) and isinstance(
            reference.get("entry_point"), str
        )
        tests = reference.get("tests")
        has_mbpp = isinstance(tests, list) and tests and all(isinstance(t, str) for t in tests)
        if not (has_humaneval or has_mbpp):
            return (
                "code line needs 'test' + 'entry_point' (HumanEval style) or 'tests': [asserts] (MBPP style)"
            )
    return None
