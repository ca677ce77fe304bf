"""SQL verifier: run a query read-only on a SQLite file, compare result sets, score a completion.

Three layers, each usable alone:
  * :func:`execute_sql` runs one query under a read-only connection with an authorizer that allows reads
    only, a wall-time limit, a row cap, a result-size cap and per-value size limits. It never raises: it
    returns an :class:`ExecResult` holding either the rows or an error kind from :data:`ERROR_KINDS`.
  * :func:`results_match` compares two result sets: as multisets, or as ordered lists when the gold query
    has a top-level ``ORDER BY``; floats are rounded to 6 significant digits and ``1 == 1.0``.
  * :func:`judge_sql` / :func:`score_sql` turn a completion into the components of :data:`SQL_COMPONENTS`
    (plus a verdict string for error analysis). Gold results are cached, since a prompt is scored G times.
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlvr.domains.base import CORRECT, Judgement
from rlvr.domains.format import extract_answer, extract_fenced, soft_format, strict_format

SQL_COMPONENTS = ("strict_format", "soft_format", "sql_extracted", "sql_executes", "sql_result_match")

DEFAULT_TIMEOUT_S = 2.0
DEFAULT_MAX_ROWS = 10_000
#: longest query text accepted (characters); a real answer is a few hundred
MAX_SQL_CHARS = 8_000
#: total bytes of str/blob values a result may hold before it is refused (memory guard)
MAX_RESULT_BYTES = 32 * 2**20
#: largest string/blob SQLite may build or read (randomblob(1e9)-style bombs fail with "string or blob
#: too big"). Small because some functions are quadratic in it within one VM step (instr on 1 MB took 6.6 s,
#: on 100 kB ~70 ms); Spider's longest value is 60 characters.
MAX_VALUE_BYTES = 100_000
#: most columns in a result (and in any table definition SQLite parses on this connection)
MAX_COLUMNS = 256
#: VM instructions between two wall-clock checks (each check is a Python call, ~0.2 µs)
_PROGRESS_EVERY = 1_000
#: open read-only connections kept per thread (an LRU keyed by file identity)
_CONNS_PER_THREAD = 32

#: error kinds of :class:`ExecResult` (``None`` means the query ran)
ERROR_KINDS = tuple(
    "empty too_long no_database denied multiple_statements syntax schema runtime timeout too_many_rows "
    "too_large".split()
)
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
_VERDICT_OF_ERROR = {
    "empty": "no_sql",
    "syntax": "syntax_error",
    "schema": "schema_error",
    "runtime": "runtime_error",
}

# Authorizer allow-list: everything else (writes, DDL, ATTACH, PRAGMA, transactions, ANALYZE...) is denied.
_ALLOWED_ACTIONS = frozenset(
    {
        sqlite3.SQLITE_SELECT,
        sqlite3.SQLITE_READ,
        sqlite3.SQLITE_FUNCTION,
        getattr(sqlite3, "SQLITE_RECURSIVE", 33),
    }
)
# Functions with side effects or raw-pointer access (load_extension is also off at the C level: we never
# call enable_load_extension), plus printf/format, whose C loop for `%.*c` runs for seconds per call
# (precision 2e9 took 14 s) without reaching the progress handler. No Spider gold query uses them.
_DENIED_FUNCTIONS = frozenset(
    {"load_extension", "fts3_tokenizer", "readfile", "writefile", "edit", "printf", "format"}
)
# First keywords of statements that are never an answer. VACUUM and REINDEX are checked here because the
# authorizer sees no action of its own for them (VACUUM INTO would write a new file).
_DENIED_FIRST_WORDS = frozenset(
    "INSERT UPDATE DELETE REPLACE UPSERT CREATE DROP ALTER ATTACH DETACH PRAGMA VACUUM REINDEX ANALYZE "
    "BEGIN COMMIT END ROLLBACK SAVEPOINT RELEASE EXPLAIN".split()
)
# SQL tokens that matter for a shallow scan: quoted strings/identifiers and comments (skipped as a whole),
# parentheses (nesting depth) and bare words.
_TOKEN = re.compile(
    r"""'(?:[^']|'')*'?|"(?:[^"]|"")*"?|`[^`]*`?|\[[^\]]*\]?|--[^\n]*|/\*.*?(?:\*/|\Z)|(\()|(\))|([A-Za-z_][\w$]*)""",
    re.DOTALL,
)
_SQL_START = re.compile(r"(?:\s|--[^\n]*|/\*.*?\*/)*(?:SELECT|WITH)\b", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one query.

    Attributes:
        rows: result rows as returned by ``sqlite3`` (column order as selected); empty on error.
        error: ``None`` when the query ran, else one of :data:`ERROR_KINDS`.
        message: the SQLite error message (or why the query was refused), for logs.
    """

    rows: tuple[tuple[Any, ...], ...] = ()
    error: str | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


# ----------------------------------------------------------------------------------------------- executor


class _Guarded:
    """A read-only connection and the deadline its progress handler enforces."""

    __slots__ = ("conn", "deadline", "timed_out")

    def __init__(self, path: str) -> None:
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        # isolation_level=None: never open implicit transactions; check_same_thread is moot (one per thread)
        self.conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=1.0)
        self.deadline = math.inf
        self.timed_out = False
        if hasattr(self.conn, "setlimit"):  # Python >= 3.11; older versions run without the size limits
            self.conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
            self.conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, MAX_SQL_CHARS * 4)  # UTF-8 bytes
            self.conn.setlimit(sqlite3.SQLITE_LIMIT_COLUMN, MAX_COLUMNS)
            self.conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        self.conn.set_authorizer(_authorize)
        self.conn.set_progress_handler(self._progress, _PROGRESS_EVERY)

    def _progress(self) -> int:
        if time.perf_counter() > self.deadline:
            self.timed_out = True
            return 1  # non-zero aborts the statement with SQLITE_INTERRUPT
        return 0


def _authorize(action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None) -> int:
    if action not in _ALLOWED_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


_local = threading.local()


def _connection(path: str) -> _Guarded:
    """This thread's cached connection to ``path``; a replaced or rewritten file gets a fresh one."""
    st = os.stat(path)
    # The pid is part of the key so a forked worker never reuses its parent's connection.
    key = (path, st.st_ino, st.st_mtime_ns, st.st_size, os.getpid())
    conns: OrderedDict[tuple, _Guarded] | None = getattr(_local, "conns", None)
    if conns is None:
        conns = _local.conns = OrderedDict()
    guarded = conns.get(key)
    if guarded is None:
        guarded = conns[key] = _Guarded(path)
        while len(conns) > _CONNS_PER_THREAD:
            conns.popitem(last=False)[1].conn.close()
    else:
        conns.move_to_end(key)
    return guarded


def _first_word(sql: str) -> str:
    for m in _TOKEN.finditer(sql):
        if m.group(3):
            return m.group(3).upper()
        if m.group(1) or m.group(2):
            return ""
    return ""


def _fetch(cursor: sqlite3.Cursor, max_rows: int) -> ExecResult:
    """Step through the rows (the progress handler keeps running) within the row and byte caps."""
    rows: list[tuple[Any, ...]] = []
    size = 0
    for row in cursor:
        rows.append(row)
        if len(rows) > max_rows:
            return ExecResult(error="too_many_rows", message=f"more than {max_rows} rows")
        for v in row:
            if type(v) is str or type(v) is bytes:
                size += len(v)
        if size > MAX_RESULT_BYTES:
            return ExecResult(error="too_large", message=f"result holds more than {MAX_RESULT_BYTES} bytes")
    return ExecResult(rows=tuple(rows))


def _classify(exc: BaseException, timed_out: bool) -> ExecResult:
    """Map a ``sqlite3`` exception to an error kind."""
    msg = str(exc)
    low = msg.lower()
    code = getattr(exc, "sqlite_errorcode", None)
    if timed_out:
        kind = "timeout"
    elif "one statement at a time" in low:
        kind = "multiple_statements"
    elif (
        code in (sqlite3.SQLITE_AUTH, sqlite3.SQLITE_READONLY) or "not authorized" in low or "readonly" in low
    ):
        kind = "denied"
    elif "syntax error" in low or "incomplete input" in low or "unrecognized token" in low:
        kind = "syntax"
    elif low.startswith(("no such table", "no such column", "ambiguous column")):
        kind = "schema"
    else:
        kind = "runtime"
    return ExecResult(error=kind, message=msg[:300])


def execute_sql(
    db_path: str | os.PathLike,
    sql: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> ExecResult:
    """Run one read-only query on the SQLite file ``db_path``; never raises, never writes.

    The database is opened with ``mode=ro`` and an authorizer allowing only SELECT, column reads, function
    calls (not ``load_extension``) and recursive CTEs; ATTACH is disabled by limit. The query is aborted
    after ``timeout_s`` seconds of execution, refused beyond ``max_rows`` rows or :data:`MAX_RESULT_BYTES`
    bytes, and must be a single statement of at most :data:`MAX_SQL_CHARS` characters. Connections are
    cached per (file, thread, process), so this is safe and cheap to call from worker threads.
    """
    if not isinstance(sql, str) or not sql.strip():
        return ExecResult(error="empty", message="no query")
    if len(sql) > MAX_SQL_CHARS:
        return ExecResult(error="too_long", message=f"query longer than {MAX_SQL_CHARS} characters")
    word = _first_word(sql)
    if word in _DENIED_FIRST_WORDS:
        return ExecResult(error="denied", message=f"{word} statements are not allowed; only queries")
    try:
        guarded = _connection(os.fspath(db_path))
    except (OSError, sqlite3.Error) as e:
        return ExecResult(error="no_database", message=f"cannot open {db_path}: {e}")
    guarded.timed_out = False
    guarded.deadline = time.perf_counter() + timeout_s
    cursor = None
    try:
        cursor = guarded.conn.execute(sql)
        return _fetch(cursor, max_rows)
    except (sqlite3.Error, sqlite3.Warning) as e:  # Python 3.10 raises Warning for several statements
        return _classify(e, guarded.timed_out)
    except (
        Exception
    ) as e:  # NUL characters (ValueError), lone surrogates (UnicodeEncodeError), MemoryError...
        return ExecResult(error="runtime", message=f"{type(e).__name__}: {str(e)[:200]}")
    finally:
        guarded.deadline = math.inf
        if cursor is not None:
            cursor.close()  # resets the statement so an aborted query holds no read lock


# --------------------------------------------------------------------------------------------- comparison


def has_top_level_order_by(sql: str) -> bool:
    """Whether ``sql`` ends in an ``ORDER BY`` outside any parentheses (so its row order is meaningful).

    Subquery and window ``ORDER BY`` clauses (inside parentheses), strings and comments are ignored.
    """
    depth = 0
    previous = ""
    for m in _TOKEN.finditer(sql):
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
    for guarded in getattr(_local, "conns", {}).values():
        guarded.conn.close()
    _local.conns = OrderedDict()


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
