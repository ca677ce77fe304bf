"""SQL verifier: run a query read-only on a SQLite file, compare result sets, score a completion.

Three layers, each usable alone:
  * :func:`~rlvr.domains.sql.execute.execute_sql` (:mod:`rlvr.domains.sql.execute`) runs one query
    read-only under an authorizer and time, row and size limits; it never raises.
  * :func:`results_match` compares two result sets: as multisets, or as ordered lists when the gold query
    has a top-level ``ORDER BY``; floats are rounded to 6 significant digits and ``1 == 1.0``.
  * :func:`judge_sql` / :func:`score_sql` turn a completion into the components of :data:`SQL_COMPONENTS`
    (plus a verdict string for error analysis). Gold results are cached, since a prompt is scored G times.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rlvr.domains.base import CORRECT, Judgement
from rlvr.domains.format import extract_answer, extract_fenced, soft_format, strict_format
from rlvr.domains.sql.execute import (
    DEFAULT_MAX_ROWS,
    DEFAULT_TIMEOUT_S,
    SQL_TOKEN,
    ExecResult,
    close_connections,
    execute_sql,
)

SQL_COMPONENTS = ("strict_format", "soft_format", "sql_extracted", "sql_executes", "sql_result_match")

#: verdicts of :func:`judge_sql`, from "nothing to run" to "right answer"
VERDICTS = tuple(
    "bad_reference no_sql too_long no_database denied multiple_statements syntax_error schema_error "
    "runtime_error timeout too_many_rows too_large gold_error wrong_result correct".split()
)
#: verdict -> outcome category of the cross-benchmark error analysis (:data:`rlvr.eval.store.CATEGORIES`)
CATEGORY_OF_VERDICT = {
    CORRECT: "correct", "wrong_result": "wrong_answer", "no_sql": "no_answer", "syntax_error": "syntax_error",
    "timeout": "timeout",
}  # fmt: skip


def category_of(verdict: str) -> str:
    """The outcome category of a :func:`judge_sql` verdict (schema, runtime, denied... are ``sql_error``)."""
    return CATEGORY_OF_VERDICT.get(verdict, "sql_error")


_VERDICT_OF_ERROR = {
    "empty": "no_sql",
    "syntax": "syntax_error",
    "schema": "schema_error",
    "runtime": "runtime_error",
}

_SQL_START = re.compile(r"(?:\s|--[^\n]*|/\*.*?\*/)*(?:SELECT|WITH)\b", re.IGNORECASE | re.DOTALL)


# --------------------------------------------------------------------------------------------- comparison


def has_top_level_order_by(sql: str) -> bool:
    """Whether ``sql`` ends in an ``ORDER BY`` outside any parentheses (so its row order is meaningful).

    Subquery and window ``ORDER BY`` clauses (inside parentheses), strings and comments are ignored.
    """
    depth = 0
    previous = ""
    for m in SQL_TOKEN.finditer(sql):
        if m.group(1):
            depth += 1
        elif m.group(2):
            depth = max(depth - 1, 0)
        elif m.group(3) and depth == 0:
            word = m.group(3).upper()
            if previous == "ORDER" and word == "BY":
                return True
            previous = word
    return False


def _canon(value: Any) -> Any:
    """Hashable comparison key of one value: integral floats become ints, others keep 6 significant digits."""
    if type(value) is float:
        if value.is_integer():
            return int(value)
        if math.isfinite(value):
            return float(f"{value:.6g}")
    return value


def canonical_rows(rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """Rows with every value replaced by its comparison key (see :func:`results_match`)."""
    return [tuple(_canon(v) for v in row) for row in rows]


def results_match(
    predicted: Sequence[Sequence[Any]], gold: Sequence[Sequence[Any]], *, ordered: bool
) -> bool:
    """Whether two result sets are equal: as ordered lists if ``ordered``, else as multisets of rows.

    Duplicates count; columns are compared in the order returned. Values are compared after
    normalisation: ``1 == 1.0``, non-integral floats rounded to 6 significant digits (≈1e-6 relative),
    strings and blobs exactly, ``NULL`` only equal to ``NULL``.
    """
    if len(predicted) != len(gold):
        return False
    if list(map(tuple, predicted)) == list(map(tuple, gold)):  # exact equality implies equal keys
        return True
    if ordered:
        return canonical_rows(predicted) == canonical_rows(gold)
    return Counter(canonical_rows(predicted)) == Counter(canonical_rows(gold))


# --------------------------------------------------------------------------------------------- gold cache


@dataclass(frozen=True)
class GoldResult:
    """A gold query's result plus how to compare against it (cached per database file and query)."""

    result: ExecResult
    ordered: bool


_GOLD_CACHE: OrderedDict[tuple, GoldResult] = OrderedDict()
_GOLD_CACHE_SIZE = 8_192
_GOLD_LOCK = threading.Lock()


def gold_result(
    db_path: str | os.PathLike,
    gold_sql: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> GoldResult:
    """Execute ``gold_sql`` once per (file version, query, limits); an LRU serves the other G-1 calls.

    A gold query that timed out is not cached: on a loaded machine the next call may succeed.
    """
    path = os.fspath(db_path)
    try:
        st = os.stat(path)
        key: tuple = (path, st.st_mtime_ns, st.st_size, gold_sql, timeout_s, max_rows)
    except OSError:
        key = (path, None, None, gold_sql, timeout_s, max_rows)
    with _GOLD_LOCK:
        hit = _GOLD_CACHE.get(key)
        if hit is not None:
            _GOLD_CACHE.move_to_end(key)
            return hit
    gold = GoldResult(
        execute_sql(path, gold_sql, timeout_s=timeout_s, max_rows=max_rows), has_top_level_order_by(gold_sql)
    )
    if gold.result.error != "timeout":
        with _GOLD_LOCK:
            _GOLD_CACHE[key] = gold
            while len(_GOLD_CACHE) > _GOLD_CACHE_SIZE:
                _GOLD_CACHE.popitem(last=False)
    return gold


def clear_caches() -> None:
    """Forget cached gold results and this thread's open connections (for benchmarks and tests)."""
    with _GOLD_LOCK:
        _GOLD_CACHE.clear()
    close_connections()


# ---------------------------------------------------------------------------------------------- scoring


def extract_sql(completion: str) -> str | None:
    """The query a completion commits to; ``None`` when there is none.

    Looked for, in order: a ```sql (or untagged) fenced block inside the ``<answer>`` block; the answer
    text itself when it starts with SELECT or WITH (comments allowed before it); a fenced block anywhere
    in the completion (answer tags missing or holding prose). The answer block comes first because it is
    what the model committed to: a draft fence in the reasoning must not override it.
    """
    answer = extract_answer(completion)
    if answer is not None:
        fenced = extract_fenced(answer, "sql")
        if fenced:
            return fenced
        if _SQL_START.match(answer):
            return answer
    fenced = extract_fenced(completion, "sql")
    return fenced or None


def judge_sql(
    completion: str,
    reference: Mapping[str, Any],
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> Judgement:
    """Score ``completion`` against ``reference`` (``db_path``, ``gold_sql``) and say why; never raises.

    ``sql_executes`` is 1.0 when the extracted query runs (an empty result counts), ``sql_result_match``
    when its result equals the gold result (see :func:`results_match`). A gold query that fails gives the
    verdict ``"gold_error"`` and no match. ``detail["sql"]`` is the extracted query (or ``None``).
    """
    comps = dict.fromkeys(SQL_COMPONENTS, 0.0)
    if not isinstance(completion, str):
        return _verdict(comps, "no_sql")
    comps["strict_format"] = strict_format(completion)
    comps["soft_format"] = soft_format(completion)
    db_path, gold_sql = reference.get("db_path"), reference.get("gold_sql")
    if not isinstance(db_path, (str, os.PathLike)) or not isinstance(gold_sql, str):
        return _verdict(comps, "bad_reference", message="reference needs str 'db_path' and 'gold_sql'")
    sql = extract_sql(completion)
    if sql is None:
        return _verdict(comps, "no_sql")
    comps["sql_extracted"] = 1.0
    pred = execute_sql(db_path, sql, timeout_s=timeout_s, max_rows=max_rows)
    if not pred.ok:
        return _verdict(comps, _VERDICT_OF_ERROR.get(pred.error, pred.error), sql, pred.message)
    comps["sql_executes"] = 1.0
    gold = gold_result(db_path, gold_sql, timeout_s=timeout_s, max_rows=max_rows)
    if not gold.result.ok:
        return _verdict(
            comps, "gold_error", sql, f"gold query failed ({gold.result.error}): {gold.result.message}"
        )
    if not results_match(pred.rows, gold.result.rows, ordered=gold.ordered):
        return _verdict(comps, "wrong_result", sql, "result set differs from the gold query's")
    comps["sql_result_match"] = 1.0
    return _verdict(comps, CORRECT, sql)


def _verdict(comps: dict[str, float], verdict: str, sql: str | None = None, message: str = "") -> Judgement:
    return Judgement(comps, verdict, message or None, {"sql": sql})


def score_sql(
    completion: str,
    reference: Mapping[str, Any],
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> dict[str, float]:
    """Reward components of :data:`SQL_COMPONENTS` for one completion (see :func:`judge_sql`)."""
    return judge_sql(completion, reference, timeout_s=timeout_s, max_rows=max_rows).components
