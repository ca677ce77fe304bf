"""Text-to-SQL task: questions over SQLite databases, rewarded by executing the answer query.

Sources: ``"generated"`` (offline default; seeded small databases and template questions, see
:mod:`rlvr.domains.sql.databases` and :mod:`rlvr.domains.sql.generator`) or ``"spider"`` (a local Spider directory). The prompt shows the database schema
as its CREATE TABLE statements and asks for one query in a ```sql block inside the answer tags; the
verifier is :func:`rlvr.domains.sql.verify.score_sql`.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sqlite3
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlvr.domains.base import DataError, Example, Judgement, merge_weights, spread
from rlvr.domains.format import DEFAULT_SYSTEM_PROMPT, format_answer
from rlvr.domains.sources import cache_root, read_json_records, require_fields
from rlvr.domains.sql.databases import fill, make_database, settings_hash, write_database
from rlvr.domains.sql.generator import make_question
from rlvr.domains.sql.verify import DEFAULT_MAX_ROWS, DEFAULT_TIMEOUT_S, SQL_COMPONENTS, judge_sql

log = logging.getLogger(__name__)

SQL_WEIGHTS: dict[str, float] = {
    "sql_result_match": 2.0,
    "sql_executes": 0.5,
    "sql_extracted": 0.25,
    "strict_format": 0.25,
    "soft_format": 0.25,
}
INSTRUCTION = "Write one SQLite query that answers the question, in a ```sql block inside the answer tags."
SOURCES = ("generated", "spider")


# ------------------------------------------------------------------------------------------------- prompts


def _connect_ro(db_path: str) -> sqlite3.Connection:
    return sqlite3.connect(Path(db_path).resolve().as_uri() + "?mode=ro", uri=True)


@functools.lru_cache(maxsize=512)
def schema_text(db_path: str, sample_rows: int = 0) -> str:
    """The database's CREATE TABLE statements (from ``sqlite_master``), whitespace tidied, in file order.

    With ``sample_rows > 0`` each statement is followed by a comment holding up to that many rows,
    ``col | col`` header first. Cached: every question on a database shares one schema text.
    """
    conn = _connect_ro(db_path)
    try:
        tables = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "AND sql IS NOT NULL ORDER BY rowid"
        ).fetchall()
        parts = []
        for name, sql in tables:
            lines = [re.sub(r"[ \t]+", " ", line).strip() for line in sql.splitlines()]
            text = "\n".join(line for line in lines if line) + ";"
            if sample_rows > 0:
                cur = conn.execute(f'SELECT * FROM "{name}" LIMIT {int(sample_rows)}')
                rows = [" | ".join(str(d[0]) for d in cur.description)]
                rows += [" | ".join("NULL" if v is None else str(v) for v in row) for row in cur.fetchall()]
                text += f"\n/* {len(rows) - 1} rows of {name}:\n" + "\n".join(rows) + "\n*/"
            parts.append(text)
    finally:
        conn.close()
    return "\n\n".join(parts)


@functools.lru_cache(maxsize=512)
def table_names(db_path: str) -> tuple[str, ...]:
    """Names of the tables of a database (for the gold reasoning of Spider questions)."""
    conn = _connect_ro(db_path)
    try:
        rows = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
        return tuple(r[0] for r in rows)
    finally:
        conn.close()


def build_messages(schema: str, question: str, system_prompt: str) -> list[dict[str, str]]:
    """Chat messages: the system prompt (omitted when empty), then schema, question and instruction."""
    user = f"Database schema:\n{schema}\n\nQuestion: {question}\n{INSTRUCTION}"
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": user}]


def gold_completion(sql: str, reasoning: str) -> str:
    """The SFT target: ``reasoning`` and the gold query in a ```sql fence, in the strict format."""
    return format_answer(reasoning, f"```sql\n{sql.strip()}\n```")


# -------------------------------------------------------------------------------------------------- Spider


def spider_db_path(root: Path, db_id: str) -> Path:
    """Where Spider keeps a database: ``<root>/database/<db_id>/<db_id>.sqlite``."""
    return root / "database" / db_id / f"{db_id}.sqlite"


def load_spider(root: str | os.PathLike, file: str) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Records of a Spider question file whose database exists, and skipped-question counts per db_id.

    Each kept record gains ``db_path`` (str) and ``index`` (its position in the file).
    """
    root = Path(root)
    records = read_json_records(root / file)
    kept, missing = [], Counter()
    for i, rec in enumerate(records):
        require_fields(rec, ("db_id", "question", "query"), f"{root / file} record {i}")
        db = spider_db_path(root, rec["db_id"])
        if db.is_file():
            kept.append({**rec, "db_path": str(db.resolve()), "index": i})
        else:
            missing[rec["db_id"]] += 1
    return kept, missing


# ---------------------------------------------------------------------------------------------------- task


class SqlTask:
    """Text-to-SQL with execution reward on SQLite (Task protocol).

    Spider splits: "val" is ``dev.json``. "train" is ``train_spider.json`` when the directory has it;
    otherwise (as in ``../shared/data/spider``) dev is split deterministically: of the dev questions whose
    database exists, taken in file order, every ``val_every``-th (positions 0, k, 2k...) is val and the rest
    train, so train and val never overlap and both cover every database. Questions whose database file is
    missing are skipped, counted in :attr:`skipped_missing_db` (file name -> count) and logged.

    Args:
        source: ``"generated"`` (seeded offline generator) or ``"spider"`` (local directory ``path``).
        path: Spider directory holding ``dev.json`` (+ ``train_spider.json``) and
            ``database/<db_id>/<db_id>.sqlite``. Required for ``"spider"``; hub ids are not supported
            because execution needs the database files.
        seed: seed of the generator (databases and questions are functions of seed, split and index).
        num_train: number of train questions; ``None`` = 2000 generated / all of Spider's (an evenly
            spaced subset when smaller).
        num_val: number of val questions; ``None`` = 200 generated / all of Spider's.
        num_databases: generated databases behind the train questions.
        num_val_databases: generated databases behind the val questions (disjoint from train's).
        difficulty: highest generated template level: 1 single-table filters and counts, 2 adds
            aggregates, ORDER BY + LIMIT and GROUP BY, 3 adds two-table joins.
        cache_dir: folder for generated databases (default ``<rlvr cache>/sql``, see
            :func:`rlvr.domains.sources.cache_root`); each setting gets a sub-folder named by its hash.
        sample_rows: rows per table shown under each CREATE TABLE statement (0 = schema only).
        val_every: Spider without ``train_spider.json``: every ``val_every``-th dev question is val.
        system_prompt: system message; empty = none.
        weights: component -> weight in the total reward, merged over :data:`SQL_WEIGHTS`.
        timeout_s: wall-time limit of one query execution, seconds.
        max_rows: result rows above which a query's verdict is ``too_many_rows``.
    """

    name = "sql"
    components = SQL_COMPONENTS
    accuracy_component = "sql_result_match"

    def __init__(
        self,
        source: str = "generated",
        path: str | None = None,
        seed: int = 0,
        num_train: int | None = None,
        num_val: int | None = None,
        num_databases: int = 24,
        num_val_databases: int = 8,
        difficulty: int = 3,
        cache_dir: str | None = None,
        sample_rows: int = 0,
        val_every: int = 5,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        weights: Mapping[str, float] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_rows: int = DEFAULT_MAX_ROWS,
    ) -> None:
        if source not in SOURCES:
            raise ValueError(f"SqlTask source must be one of {SOURCES}, got {source!r}")
        if source == "spider" and (path is None or not (Path(path).expanduser() / "dev.json").is_file()):
            raise DataError(
                f"SqlTask(source='spider') needs path= a Spider directory with dev.json; got {path!r}"
            )
        if difficulty not in (1, 2, 3):
            raise ValueError(f"SqlTask difficulty must be 1, 2 or 3, got {difficulty}")
        if num_databases < 1 or num_val_databases < 1:
            raise ValueError("SqlTask num_databases and num_val_databases must be >= 1")
        if sample_rows < 0 or val_every < 2 or timeout_s <= 0 or max_rows < 1:
            raise ValueError(
                "SqlTask needs sample_rows >= 0, val_every >= 2, timeout_s > 0 and max_rows >= 1"
            )
        self.source = source
        self.path = Path(path).expanduser() if path is not None else None
        self.seed = seed
        self.num = {"train": num_train, "val": num_val}
        self.num_databases = {"train": num_databases, "val": num_val_databases}
        self.difficulty = difficulty
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else cache_root() / "sql"
        self.sample_rows = sample_rows
        self.val_every = val_every
        self.system_prompt = system_prompt
        self.weights = merge_weights("sql", SQL_WEIGHTS, weights, SQL_COMPONENTS)
        self.timeout_s = timeout_s
        self.max_rows = max_rows
        #: Spider question file -> number of its questions skipped because their database is missing
        self.skipped_missing_db: dict[str, int] = {}
        self._cache: dict[str, list[Example]] = {}
        self._records: dict[str, list[dict[str, Any]]] = {}

    def examples(self, split: str) -> Sequence[Example]:
        """Prompts of ``split`` ("train" or "val"); built on first use, then cached."""
        if split not in ("train", "val"):
            raise ValueError(f"SqlTask split must be 'train' or 'val', got {split!r}")
        if split not in self._cache:
            build = self._spider if self.source == "spider" else self._generated
            self._cache[split] = build(split)
        return self._cache[split]

    def score(self, completion: str, reference: Mapping[str, Any]) -> dict[str, float]:
        """Components of :data:`SQL_COMPONENTS`; never raises (see :func:`rlvr.domains.sql.verify.judge_sql`)."""
        return self.judge(completion, reference).components

    def judge(self, completion: str, reference: Mapping[str, Any]) -> Judgement:
        """Components, verdict and the extracted query (see :func:`rlvr.domains.sql.verify.judge_sql`)."""
        return judge_sql(completion, reference, timeout_s=self.timeout_s, max_rows=self.max_rows)

    def check_reference(self, reference: Mapping[str, Any]) -> str | None:
        """Why ``reference`` cannot be scored (one line), or ``None``."""
        missing = [k for k in ("db_path", "gold_sql") if not isinstance(reference.get(k), str)]
        return f"sql needs string field(s) {missing}" if missing else None

    # ------------------------------------------------------------------------------------------- sources

    def _load(self, file: str) -> list[dict[str, Any]]:
        if file in self._records:
            return self._records[file]
        records, missing = load_spider(self.path, file)
        self._records[file] = records
        self.skipped_missing_db[file] = sum(missing.values())
        if missing:
            log.warning(
                "spider %s: skipped %d questions whose database is missing (%s)",
                file,
                sum(missing.values()),
                ", ".join(f"{k}: {v}" for k, v in sorted(missing.items())),
            )
        return records

    def _spider(self, split: str) -> list[Example]:
        has_train = (self.path / "train_spider.json").is_file()
        if split == "train" and has_train:
            records = self._load("train_spider.json")
        else:
            records = self._load("dev.json")
            if not has_train:
                in_val = split == "val"
                records = [r for p, r in enumerate(records) if (p % self.val_every == 0) == in_val]
        stem = "train" if split == "train" and has_train else "dev"
        return [self._spider_example(r, stem) for r in spread(records, self.num[split])]

    def _spider_example(self, rec: dict[str, Any], stem: str) -> Example:
        db_path, sql = rec["db_path"], rec["query"].strip()
        words = set(re.findall(r"\w+", sql.lower()))
        used = [t for t in table_names(db_path) if t.lower() in words]
        reasoning = (
            f"The question is answered from the table{'s' if len(used) > 1 else ''} {', '.join(used)}."
        )
        return Example(
            task=self.name,
            messages=build_messages(
                schema_text(db_path, self.sample_rows), rec["question"], self.system_prompt
            ),
            reference={"db_path": db_path, "gold_sql": sql},
            solution=gold_completion(sql, reasoning),
            uid=f"spider-{stem}-{rec['index']}",
            meta={"db_id": rec["db_id"]},
        )

    def _generated(self, split: str) -> list[Example]:
        n = self.num[split] if self.num[split] is not None else (2000 if split == "train" else 200)
        folder = self.cache_dir / settings_hash(self.seed)
        dbs = [make_database(self.seed, split, j) for j in range(self.num_databases[split])]
        paths = [str(write_database(db, folder / f"{db.name}.sqlite").resolve()) for db in dbs]
        # Questions are checked against in-memory copies: no file handles held, no reads of the cache.
        conns = []
        for db in dbs:
            conns.append(sqlite3.connect(":memory:"))
            fill(conns[-1], db)
        out = []
        try:
            for i in range(n):
                j = i % len(dbs)
                q = make_question(self.seed, split, i, dbs[j], conns[j], self.difficulty)
                out.append(
                    Example(
                        task=self.name,
                        messages=build_messages(
                            schema_text(paths[j], self.sample_rows), q.question, self.system_prompt
                        ),
                        reference={"db_path": paths[j], "gold_sql": q.sql},
                        solution=gold_completion(q.sql, q.reasoning),
                        uid=f"sqlgen-{split}-{i}",
                        meta={"db_id": dbs[j].name, "template": q.template, "level": q.level},
                    )
                )
        finally:
            for conn in conns:
                conn.close()
        return out
