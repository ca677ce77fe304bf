"""Run one SQL query read-only on a SQLite file, under limits; the executor of :mod:`rlvr.domains.sql.verify`.

:func:`execute_sql` opens the file with ``mode=ro`` and an authorizer that allows reads only, aborts the
query after a wall-time limit (a progress handler), and caps rows, result bytes, value sizes and columns. It
never raises: it returns an :class:`ExecResult` holding either the rows or an error kind from
:data:`ERROR_KINDS`. Connections are cached per (file, thread, process).
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
#: SQL tokens that matter for a shallow scan: quoted strings/identifiers and comments (skipped as a whole),
#: parentheses (nesting depth) and bare words.
SQL_TOKEN = re.compile(
    r"""'(?:[^']|'')*'?|"(?:[^"]|"")*"?|`[^`]*`?|\[[^\]]*\]?|--[^\n]*|/\*.*?(?:\*/|\Z)|(\()|(\))|([A-Za-z_][\w$]*)""",
    re.DOTALL,
)


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
    for m in SQL_TOKEN.finditer(sql):
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


def close_connections() -> None:
    """Close this thread's cached connections (for benchmarks and tests)."""
    for guarded in getattr(_local, "conns", {}).values():
        guarded.conn.close()
    _local.conns = OrderedDict()
