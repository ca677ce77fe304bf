"""SQL verifier and SqlTask on the real Spider dev set in ../shared/data/spider (skips when absent)."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from pathlib import Path

import pytest

from rlvr.domains.format import format_answer
from rlvr.domains.sql.task import SqlTask, load_spider
from rlvr.domains.sql.verify import SQL_COMPONENTS, clear_caches, judge_sql


@pytest.fixture(scope="module")
def spider(shared_data: Path) -> Path:
    return shared_data / "spider"


@pytest.fixture(scope="module")
def dev(spider: Path) -> list[dict]:
    records, missing = load_spider(spider, "dev.json")
    assert dict(missing) == {"wta_1": 62}
    return records


def _hashes(spider: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(spider.glob("database/*/*.sqlite"))
    }


def test_every_dev_gold_query_matches_itself_and_no_database_changes(spider, dev):
    before = _hashes(spider)
    clear_caches()
    verdicts = {}
    for rec in dev:
        completion = format_answer("Gold.", f"```sql\n{rec['query']}\n```")
        judged = judge_sql(completion, {"db_path": rec["db_path"], "gold_sql": rec["query"]})
        verdicts[judged.verdict] = verdicts.get(judged.verdict, 0) + 1
    assert verdicts == {"correct": 972}
    assert _hashes(spider) == before


def _bare(db_path: str, sql: str) -> list:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _same_multiset(a: list, b: list) -> bool:
    key = lambda row: tuple((type(x).__name__, x) if x is not None else ("", 0) for x in row)  # noqa: E731
    return sorted(a, key=key) == sorted(b, key=key)


_WHERE = re.compile(r"\s+WHERE\s+.*$", re.IGNORECASE | re.DOTALL)


def test_wrong_queries_do_not_match(dev):
    """Dropping the WHERE clause (simple queries only) matches exactly when an independent check says the
    results are equal; most such mutations are wrong, and a different column is always caught here."""
    simple = [
        r
        for r in dev
        if re.search(r"\bWHERE\b", r["query"], re.I)
        and not re.search(
            r"\b(GROUP|ORDER|HAVING|LIMIT|UNION|INTERSECT|EXCEPT|JOIN|SELECT\b.*\bSELECT)\b",
            r["query"],
            re.I | re.S,
        )
    ]
    assert len(simple) > 100
    wrong = 0
    for rec in simple:
        mutated = _WHERE.sub("", rec["query"])
        ref = {"db_path": rec["db_path"], "gold_sql": rec["query"]}
        judged = judge_sql(format_answer("r", f"```sql\n{mutated}\n```"), ref)
        same = _same_multiset(_bare(rec["db_path"], mutated), _bare(rec["db_path"], rec["query"]))
        assert judged.verdict == ("correct" if same else "wrong_result"), (rec["query"], mutated)
        wrong += not same
    assert wrong > 0.9 * len(simple)
    ref = {"db_path": dev[0]["db_path"], "gold_sql": "SELECT Name FROM singer WHERE Age > 30"}
    assert (
        judge_sql(format_answer("r", "SELECT Country FROM singer WHERE Age > 30"), ref).verdict
        == "wrong_result"
    )
    assert judge_sql(format_answer("r", "SELECT name FROM singer WHERE age > 30"), ref).verdict == "correct"


def test_spider_task_splits_and_missing_databases(spider):
    task = SqlTask(source="spider", path=str(spider), sample_rows=1)
    train, val = task.examples("train"), task.examples("val")
    assert task.skipped_missing_db == {"dev.json": 62}
    assert (len(train), len(val)) == (777, 195)  # 972 dev questions with a database, every 5th is val
    assert not {e.uid for e in train} & {e.uid for e in val}
    assert {e.meta["db_id"] for e in val} == {e.meta["db_id"] for e in train}  # every database in both
    ex = val[0]
    json.dumps(ex.reference)
    assert ex.uid == "spider-dev-0" and "CREATE TABLE" in ex.messages[-1]["content"]
    assert "How many singers do we have?" in ex.messages[-1]["content"]
    assert task.score(ex.solution, ex.reference) == dict.fromkeys(SQL_COMPONENTS, 1.0)
    small = SqlTask(source="spider", path=str(spider), num_val=20)
    assert len(small.examples("val")) == 20 and len({e.meta["db_id"] for e in small.examples("val")}) > 10
