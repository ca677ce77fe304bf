"""Spider dev as a benchmark: execution accuracy on the real SQLite databases.

Prompts and scoring are the SQL task's (:mod:`rlvr.domains.sql.task`, :func:`rlvr.domains.sql.verify.judge_sql`).
Questions whose database file is missing (``wta_1`` in shared/data) are skipped and counted. Spider needs
``--data-root``: the hub carries the questions but not the databases a query must run on.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rlvr.domains.base import DataError, Example
from rlvr.domains.format import DEFAULT_SYSTEM_PROMPT
from rlvr.domains.sql.task import build_messages, load_spider, schema_text
from rlvr.domains.sql.verify import category_of, extract_sql, judge_sql
from rlvr.eval.spec import Benchmark, GenItem, Loaded, Verdict, local_file, mean
from rlvr.eval.store import SampleResult


def load(data_root: Path | None) -> Loaded:
    """Spider dev questions whose database exists; ``uid`` is the 0-based index in ``dev.json``."""
    if data_root is None:
        raise DataError(
            "spider needs --data-root DIR holding spider/dev.json and spider/database/ (the hub has no databases)"
        )
    root = local_file(data_root, "spider")
    local_file(data_root, "spider/dev.json")
    records, missing = load_spider(root, "dev.json")
    items = [
        GenItem(
            uid=str(rec["index"]),
            example=Example(
                task="sql",
                messages=build_messages(schema_text(rec["db_path"]), rec["question"], DEFAULT_SYSTEM_PROMPT),
                reference={"db_path": rec["db_path"], "gold_sql": rec["query"].strip()},
                uid=f"spider-dev-{rec['index']}",
                meta={"db_id": rec["db_id"]},
            ),
        )
        for rec in records
    ]
    total = len(records) + sum(missing.values())
    unusable = frozenset(str(i) for i in range(total)) - {it.uid for it in items}
    return Loaded(items, {"missing_db": sum(missing.values())}, unusable)


def judge(completions: Sequence[str], items: Sequence[GenItem]) -> list[Verdict]:
    """Execute each completion's query and compare result sets with the gold query's."""
    out = []
    for text, item in zip(completions, items):
        j = judge_sql(text, item.example.reference)
        category = category_of(j.verdict)
        detail = {"verdict": j.verdict, "sql": j.detail.get("sql"), "db_id": item.example.meta.get("db_id")}
        if j.error:
            detail["message"] = j.error[:200]
        out.append(Verdict(j.components["sql_result_match"], category, detail))
    return out


def normalize(completion: str, item: GenItem) -> str:
    """A given answer that is bare SQL (no answer tags, no fence) is read as the query itself."""
    if extract_sql(completion) is None and completion.strip():
        return f"```sql\n{completion.strip()}\n```"
    return completion


def metrics(samples: Sequence[SampleResult]) -> dict[str, float]:
    return {
        "execution_accuracy": mean([s.correct for s in samples]),
        "executes": mean([float(s.category in ("correct", "wrong_answer")) for s in samples]),
    }


SPIDER = Benchmark(
    name="spider", kind="generate", primary="execution_accuracy", load=load, judge=judge, metrics=metrics,
    max_new_tokens=256, normalize=normalize,
)  # fmt: skip
