"""SQL verifier (executor guards, result comparison, scoring) and SqlTask on generated databases."""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rlvr.domains.base import DataError, Task
from rlvr.domains.format import format_answer
from rlvr.domains.sql import verify as v
from rlvr.domains.sql.databases import make_database, write_database
from rlvr.domains.sql.execute import execute_sql
from rlvr.domains.sql.generator import TEMPLATES
from rlvr.domains.sql.task import SQL_WEIGHTS, SqlTask, schema_text

FAST = 0.3  # timeout_s for hostile queries: each must come back well within a second


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """2,000 rows in ``t`` (enough for a cross join to explode) and a tiny ``u``."""
    path = tmp_path / "t.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, grp TEXT, val REAL)")
    conn.executemany("INSERT INTO t VALUES (?, ?, ?)", [(i, "ab"[i % 2], i / 3) for i in range(2000)])
    conn.execute("CREATE TABLE u (k INTEGER, name TEXT)")
    conn.executemany("INSERT INTO u VALUES (?, ?)", [(1, "x"), (2, "y"), (2, "y"), (3, None)])
    conn.commit()
    conn.close()
    return path


# ------------------------------------------------------------------------------------------------ executor

HOSTILE = [
    ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT x FROM c", "too_many_rows"),
    ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c", "timeout"),
    ("SELECT count(*) FROM t a, t b, t c", "timeout"),
    ("SELECT * FROM t a, t b", "too_many_rows"),
    ("SELECT zeroblob(90000) FROM t a, t b", "too_large"),
    ("ATTACH DATABASE '{tmp}/x.db' AS x", "denied"),
    ("DETACH DATABASE main", "denied"),
    ("DROP TABLE t", "denied"),
    ("PRAGMA writable_schema=1", "denied"),
    ("SELECT load_extension('x')", "denied"),
    ("INSERT INTO u VALUES (9, 'z')", "denied"),
    ("WITH a AS (SELECT 1) DELETE FROM u", "denied"),
    ("UPDATE u SET k = 0", "denied"),
    ("CREATE TABLE z (a)", "denied"),
    ("ALTER TABLE u ADD COLUMN c", "denied"),
    ("BEGIN IMMEDIATE", "denied"),
    ("VACUUM INTO '{tmp}/copy.db'", "denied"),
    ("SELECT * FROM pragma_table_info('t')", "denied"),
    ("SELECT printf('%.*c', 2000000000, 'x')", "denied"),
    ("SELECT 1; DROP TABLE t", "multiple_statements"),
    ("SELECT 1 ; SELECT 2", "multiple_statements"),
    ("SELECT randomblob(1000000000)", "runtime"),
    ("SELECT zeroblob(1000000000)", "runtime"),
    ("SELECT 'a\x00b'", "runtime"),
    ("SELECT * FROM u WHERE k = ?", "runtime"),
    ("SELECT " + "1+" * 5000 + "1", "too_long"),
    ("   ", "empty"),
    ("SELEC k FROM u", "syntax"),
    ("SELECT nope FROM u", "schema"),
    ("SELECT * FROM nope", "schema"),
]


@pytest.mark.parametrize("query,kind", HOSTILE, ids=[q[:40] for q, _ in HOSTILE])
def test_hostile_queries_get_a_clean_verdict_fast_and_leave_the_database_alone(db, query, kind):
    before = _sha(db)
    files = set(db.parent.iterdir())
    start = time.perf_counter()
    # a row cap of 1,000 (not the default 10,000) is reached well inside FAST even on a busy machine
    result = execute_sql(db, query.format(tmp=db.parent), timeout_s=FAST, max_rows=1_000)
    assert time.perf_counter() - start < FAST + 1.0
    assert (result.error, result.rows) == (kind, ()), result.message
    assert _sha(db) == before
    assert set(db.parent.iterdir()) == files  # no ATTACH target, no VACUUM INTO copy, no journal


def test_queries_run_and_trailing_semicolons_and_comments_are_fine(db):
    assert execute_sql(db, "SELECT k, name FROM u ORDER BY k;").rows == (
        (1, "x"),
        (2, "y"),
        (2, "y"),
        (3, None),
    )
    assert execute_sql(db, "-- count\nSELECT count(*) FROM t; -- done").rows == ((2000,),)
    assert execute_sql(db, "SELECT k FROM u WHERE k > 5").rows == ()  # empty is a result, not an error
    assert execute_sql(
        db, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 3) SELECT sum(x) FROM c"
    ).ok


def test_missing_database_is_a_verdict_not_an_exception(tmp_path):
    result = execute_sql(tmp_path / "absent.sqlite", "SELECT 1")
    assert result.error == "no_database"
    assert not (tmp_path / "absent.sqlite").exists()  # mode=ro never creates the file


def test_row_cap_is_exact(db):
    assert execute_sql(db, "SELECT id FROM t LIMIT 10", max_rows=10).ok
    assert execute_sql(db, "SELECT id FROM t LIMIT 11", max_rows=10).error == "too_many_rows"


def test_connection_is_reusable_after_an_aborted_query(db):
    assert execute_sql(db, "SELECT count(*) FROM t a, t b, t c", timeout_s=0.1).error == "timeout"
    assert execute_sql(db, "SELECT count(*) FROM u").rows == ((4,),)


def test_worker_threads_score_concurrently(db):
    ref = {"db_path": str(db), "gold_sql": "SELECT grp, count(*) FROM t GROUP BY grp"}
    good = format_answer("r", "```sql\nSELECT grp, count(*) FROM t GROUP BY grp\n```")
    bad = format_answer("r", "```sql\nSELECT grp FROM t GROUP BY grp\n```")
    with ThreadPoolExecutor(8) as pool:
        verdicts = list(pool.map(lambda c: v.judge_sql(c, ref).verdict, [good, bad] * 40))
    assert verdicts == ["correct", "wrong_result"] * 40


# ---------------------------------------------------------------------------------------------- comparison


@pytest.mark.parametrize(
    "pred,gold,ordered,match",
    [
        ([(1,), (2,)], [(2,), (1,)], False, True),  # multiset: order free
        ([(1,), (2,)], [(2,), (1,)], True, False),  # ordered gold: order matters
        ([(1,), (1,), (2,)], [(1,), (2,), (2,)], False, False),  # duplicates count
        ([(1,), (2,)], [(1,), (2,), (2,)], False, False),
        ([(1,)], [(1.0,)], True, True),  # int 1 == float 1.0
        ([(0.1 + 0.2,)], [(0.3,)], True, True),  # float noise
        ([(1 / 3,)], [(0.3333334,)], False, True),  # 6 significant digits
        ([(1 / 3,)], [(0.33334,)], False, False),
        ([("1",)], [(1,)], False, False),  # text is not a number
        ([(None,)], [(0,)], False, False),
        ([(1, "a")], [("a", 1)], False, False),  # column order as returned
        ([], [], True, True),
    ],
)
def test_results_match(pred, gold, ordered, match):
    assert v.results_match(pred, gold, ordered=ordered) is match


@pytest.mark.parametrize(
    "sql,ordered",
    [
        ("SELECT a FROM t ORDER BY a", True),
        ("select a from t order  by a desc limit 1", True),
        ("SELECT a FROM t", False),
        ("SELECT a FROM (SELECT a FROM t ORDER BY a) LIMIT 3", False),
        ("SELECT a, rank() OVER (ORDER BY b) FROM t", False),
        ("SELECT 'ORDER BY' FROM t", False),
        ("SELECT a FROM t -- ORDER BY a", False),
        ('SELECT "order" FROM t', False),
        ("SELECT a FROM t UNION SELECT b FROM u ORDER BY 1", True),
    ],
)
def test_top_level_order_by(sql, ordered):
    assert v.has_top_level_order_by(sql) is ordered


def test_gold_results_are_cached_and_timeouts_are_not(db):
    v.clear_caches()
    first = v.gold_result(db, "SELECT k FROM u")
    assert v.gold_result(db, "SELECT k FROM u") is first
    slow = "SELECT count(*) FROM t a, t b, t c"
    assert v.gold_result(db, slow, timeout_s=0.05) is not v.gold_result(db, slow, timeout_s=0.05)


# ------------------------------------------------------------------------------------------------- scoring

GOLD = "SELECT name FROM u WHERE k = 2"
F = "```sql\n{}\n```"
SCORE_CASES = [
    # (completion, strict, soft, extracted, executes, match, verdict)
    (format_answer("r", F.format(GOLD)), 1, 1, 1, 1, 1, "correct"),
    (format_answer("r", GOLD), 1, 1, 1, 1, 1, "correct"),  # bare SELECT in the answer
    (
        format_answer("r", "/* q */ WITH x AS (SELECT 2 AS k) SELECT name FROM u JOIN x USING (k)"),
        1,
        1,
        1,
        1,
        1,
        "correct",
    ),
    (F.format(GOLD), 0, 0, 1, 1, 1, "correct"),  # no tags, fence only
    ("<reasoning>r</reasoning> <answer>" + F.format(GOLD) + "</answer>", 0, 1, 1, 1, 1, "correct"),
    (format_answer(F.format("SELECT 1"), F.format(GOLD)), 1, 1, 1, 1, 1, "correct"),  # answer beats a draft
    (format_answer("r", "SELECT name FROM u WHERE k = 2 ORDER BY name"), 1, 1, 1, 1, 1, "correct"),
    (format_answer("r", "SELECT DISTINCT name FROM u WHERE k = 2"), 1, 1, 1, 1, 0, "wrong_result"),
    (format_answer("r", "SELECT name FROM u WHERE k = 9"), 1, 1, 1, 1, 0, "wrong_result"),
    (format_answer("r", "I do not know."), 1, 1, 0, 0, 0, "no_sql"),
    (format_answer("r", "```sql\nSELECT name FROM u"), 1, 1, 0, 0, 0, "no_sql"),  # unterminated fence
    ("", 0, 0, 0, 0, 0, "no_sql"),
    (format_answer("r", "SELECT name FRM u"), 1, 1, 1, 0, 0, "syntax_error"),
    (format_answer("r", "SELECT nam FROM u"), 1, 1, 1, 0, 0, "schema_error"),
    (format_answer("r", "SELECT abs(-9223372036854775808)"), 1, 1, 1, 0, 0, "runtime_error"),
    (format_answer("r", F.format("DROP TABLE u")), 1, 1, 1, 0, 0, "denied"),
    (format_answer("r", F.format(GOLD + "; DELETE FROM u")), 1, 1, 1, 0, 0, "multiple_statements"),
]


@pytest.mark.parametrize("completion,strict,soft,extracted,executes,match,verdict", SCORE_CASES)
def test_score_components(db, completion, strict, soft, extracted, executes, match, verdict):
    ref = {"db_path": str(db), "gold_sql": GOLD}
    judged = v.judge_sql(completion, ref, timeout_s=FAST)
    assert judged.verdict == verdict, judged.error
    expected = dict(zip(v.SQL_COMPONENTS, map(float, (strict, soft, extracted, executes, match))))
    assert judged.components == expected
    assert v.score_sql(completion, ref, timeout_s=FAST) == expected
    assert judged.verdict in v.VERDICTS


def test_scoring_never_raises(db):
    rng = random.Random(0)
    alphabet = "SELECT FROM WHERE ()*;'\"`[]-/\n\x00\ud800<answer></answer>```sql"
    refs = [
        {"db_path": str(db), "gold_sql": GOLD},
        {},
        {"db_path": 3, "gold_sql": None},
        {"db_path": str(db), "gold_sql": "SELECT broken"},
    ]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        for ref in refs:
            assert set(v.score_sql(text, ref, timeout_s=FAST)) == set(v.SQL_COMPONENTS)
    assert v.judge_sql(format_answer("r", GOLD), refs[1]).verdict == "bad_reference"
    assert v.judge_sql(format_answer("r", GOLD), refs[3]).verdict == "gold_error"
    assert v.judge_sql(None, refs[0]).verdict == "no_sql"  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------- generated task


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> SqlTask:
    return SqlTask(
        seed=3,
        num_train=300,
        num_val=60,
        num_databases=12,
        num_val_databases=4,
        cache_dir=str(tmp_path_factory.mktemp("sqlcache")),
    )


def test_task_protocol_and_config(task):
    assert isinstance(task, Task)
    assert task.name == "sql" and task.accuracy_component == "sql_result_match"
    assert task.components == v.SQL_COMPONENTS and task.weights == SQL_WEIGHTS
    with pytest.raises(ValueError, match="source"):
        SqlTask(source="bird")
    with pytest.raises(DataError, match="path"):
        SqlTask(source="spider")
    with pytest.raises(ValueError, match="unknown component"):
        SqlTask(weights={"sql_correct": 1.0})
    with pytest.raises(ValueError, match="difficulty"):
        SqlTask(difficulty=4)
    with pytest.raises(ValueError, match="split"):
        task.examples("test")


def test_every_generated_gold_query_executes_non_empty_and_its_solution_scores_full(task):
    for split, n in (("train", 300), ("val", 60)):
        examples = task.examples(split)
        assert len(examples) == n
        for ex in examples:
            json.dumps(ex.reference)  # references travel through workers and logs
            result = execute_sql(ex.reference["db_path"], ex.reference["gold_sql"])
            assert result.ok and result.rows, (ex.uid, ex.reference)
            assert task.score(ex.solution, ex.reference) == dict.fromkeys(v.SQL_COMPONENTS, 1.0)
            assert ex.messages[0]["role"] == "system" and "CREATE TABLE" in ex.messages[-1]["content"]
    assert {t for t, _, _ in TEMPLATES} == {ex.meta["template"] for ex in task.examples("train")}


def test_generator_is_deterministic_and_splits_use_disjoint_databases(task, tmp_path):
    again = SqlTask(
        seed=3, num_train=300, num_val=60, num_databases=12, num_val_databases=4, cache_dir=str(tmp_path)
    )
    for split in ("train", "val"):
        a, b = task.examples(split), again.examples(split)
        assert [(e.messages, e.reference["gold_sql"], e.solution) for e in a] == [
            (e.messages, e.reference["gold_sql"], e.solution) for e in b
        ]
        assert [_sha(Path(e.reference["db_path"])) for e in a[:12]] == [
            _sha(Path(e.reference["db_path"])) for e in b[:12]
        ]
    other = SqlTask(seed=4, num_train=50, num_val=10, cache_dir=str(tmp_path))
    assert [e.messages for e in other.examples("train")] != [e.messages for e in task.examples("train")[:50]]
    train_dbs = {e.reference["db_path"] for e in task.examples("train")}
    val_dbs = {e.reference["db_path"] for e in task.examples("val")}
    assert len(train_dbs) == 12 and len(val_dbs) == 4 and not train_dbs & val_dbs


def test_difficulty_limits_templates(tmp_path):
    easy = SqlTask(num_train=100, num_val=10, difficulty=1, cache_dir=str(tmp_path))
    assert {e.meta["level"] for e in easy.examples("train")} == {1}
    assert "JOIN" not in " ".join(e.reference["gold_sql"] for e in easy.examples("train"))


def test_databases_are_written_atomically_and_reused(tmp_path):
    db = make_database(0, "train", 0)
    path = write_database(db, tmp_path / "a.sqlite")
    assert [p.name for p in tmp_path.iterdir()] == ["a.sqlite"]  # no temp file left behind
    mtime = path.stat().st_mtime_ns
    assert write_database(db, path).stat().st_mtime_ns == mtime


def test_sample_rows_in_schema(task):
    path = task.examples("val")[0].reference["db_path"]
    assert "rows of" not in schema_text(path)
    shown = schema_text(path, 2)
    assert shown.count("/* 2 rows of") == 2 and shown.count("CREATE TABLE") == 2
