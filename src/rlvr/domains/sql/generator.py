"""Seeded text-to-SQL generator: template questions with gold SQL on the databases of
:mod:`rlvr.domains.sql.databases`.

Templates come at three levels: 1 = filters, counts and look-ups on one table; 2 = aggregates, ORDER BY +
LIMIT, GROUP BY, DISTINCT; 3 = two-table joins. A template only emits a question whose gold query returns a
non-empty, unambiguous result (no ties at a LIMIT cut, no all-NULL rows): each candidate is executed on an
in-memory copy of the database and rejected otherwise. Question ``i`` of a split draws from its own
:class:`random.Random` seeded with ``(seed, split, i)``.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from rlvr.domains.sql.databases import Database, Table


@dataclass(frozen=True)
class Question:
    """A generated question with its gold query and a one-line reasoning for the SFT target."""

    question: str
    sql: str
    reasoning: str
    template: str
    level: int


#: what a template makes: (question, gold SQL, reasoning), or None when it does not apply to a database
_Made = tuple[str, str, str] | None
_Template = Callable[[random.Random, Database], _Made]


def _words(column: str) -> str:
    return column.replace("_", " ")


def _pick_table(rng: random.Random, db: Database) -> Table:
    return db.parent if rng.random() < 0.4 else db.child


def _text_value(rng: random.Random, t: Table) -> tuple[str, str] | None:
    cols = t.of_type("TEXT")
    if not cols:
        return None
    col = rng.choice(cols)
    return col, rng.choice(t.column(col))


def _count_all(rng: random.Random, db: Database) -> _Made:
    t = _pick_table(rng, db)
    return f"How many {t.name} are there?", f"SELECT COUNT(*) FROM {t.name}", f"Count the rows of {t.name}."


def _list_where_text(rng: random.Random, db: Database) -> _Made:
    t = _pick_table(rng, db)
    if (cv := _text_value(rng, t)) is None:
        return None
    col, v = cv
    return (
        f"List the {t.label} of {t.name} whose {_words(col)} is '{v}'.",
        f"SELECT {t.label} FROM {t.name} WHERE {col} = '{v}'",
        f"Filter {t.name} on {col} = '{v}' and select {t.label}.",
    )


def _list_where_num(rng: random.Random, db: Database) -> _Made:
    t = _pick_table(rng, db)
    cols = t.of_type("INTEGER", "REAL")
    if not cols:
        return None
    col = rng.choice(cols)
    v = rng.choice(t.column(col))
    op, word = rng.choice(((">", "greater than"), ("<", "less than")))
    return (
        f"List the {t.label} of {t.name} with {_words(col)} {word} {v}.",
        f"SELECT {t.label} FROM {t.name} WHERE {col} {op} {v}",
        f"Filter {t.name} on {col} {op} {v} and select {t.label}.",
    )


def _count_where(rng: random.Random, db: Database) -> _Made:
    t = _pick_table(rng, db)
    if (cv := _text_value(rng, t)) is None:
        return None
    col, v = cv
    return (
        f"How many {t.name} have {_words(col)} '{v}'?",
        f"SELECT COUNT(*) FROM {t.name} WHERE {col} = '{v}'",
        f"Count the {t.name} with {col} = '{v}'.",
    )


def _lookup(rng: random.Random, db: Database) -> _Made:
    t = db.parent  # parent labels are unique, so the look-up names one row
    cols = t.of_type("INTEGER", "REAL", "TEXT")
    col = rng.choice(cols)
    v = rng.choice(t.column(t.label))
    return (
        f"What is the {_words(col)} of the {t.entity} with {t.label} '{v}'?",
        f"SELECT {col} FROM {t.name} WHERE {t.label} = '{v}'",
        f"Find the {t.entity} with {t.label} = '{v}' and select {col}.",
    )


_AGGREGATES = (("average", "AVG"), ("maximum", "MAX"), ("minimum", "MIN"), ("total", "SUM"))


def _aggregate(rng: random.Random, db: Database) -> _Made:
    t = _pick_table(rng, db)
    cols = t.of_type("INTEGER", "REAL")
    if not cols:
        return None
    col = rng.choice(cols)
    word, fn = rng.choice(_AGGREGATES)
    return (
        f"What is the {word} {_words(col)} of all {t.name}?",
        f"SELECT {fn}({col}) FROM {t.name}",
        f"Take the {word} of {col} over {t.name}.",
    )


def _top_k(rng: random.Random, db: Database) -> _Made:
    t = _pick_table(rng, db)
    cols = t.of_type("INTEGER", "REAL")
    if not cols:
        return None
    col = rng.choice(cols)
    k = rng.randint(1, 3)
    word, order = rng.choice((("highest", "DESC"), ("lowest", "ASC")))
    ranked = sorted(t.column(col), reverse=order == "DESC")
    if len(ranked) <= k or ranked[k - 1] == ranked[k]:
        return None  # a tie at the cut would make several answers right
    return (
        f"List the {t.label} of the {k} {t.name} with the {word} {_words(col)}.",
        f"SELECT {t.label} FROM {t.name} ORDER BY {col} {order} LIMIT {k}",
        f"Sort {t.name} by {col} {order.lower()}ending and keep the first {k}.",
    )


def _sorted(rng: random.Random, db: Database) -> _Made:
    t = db.parent  # short tables keep the answer short
    cols = t.of_type("INTEGER", "REAL")
    if not cols:
        return None
    col = rng.choice(cols)
    if len(set(t.column(col))) < len(t.rows):
        return None  # ties would leave the order of equal rows open
    return (
        f"List the {t.label} of all {t.name} from lowest to highest {_words(col)}.",
        f"SELECT {t.label} FROM {t.name} ORDER BY {col} ASC",
        f"Sort {t.name} by {col} ascending and select {t.label}.",
    )


def _group_count(rng: random.Random, db: Database) -> _Made:
    t = db.child
    if (cv := _text_value(rng, t)) is None:
        return None
    col = cv[0]
    return (
        f"How many {t.name} are there for each {_words(col)}?",
        f"SELECT {col}, COUNT(*) FROM {t.name} GROUP BY {col}",
        f"Group {t.name} by {col} and count each group.",
    )


def _most_common(rng: random.Random, db: Database) -> _Made:
    t = db.child
    if (cv := _text_value(rng, t)) is None:
        return None
    col = cv[0]
    counts = sorted((t.column(col).count(v) for v in set(t.column(col))), reverse=True)
    if len(counts) > 1 and counts[0] == counts[1]:
        return None
    return (
        f"Which {_words(col)} is the most common among {t.name}?",
        f"SELECT {col} FROM {t.name} GROUP BY {col} ORDER BY COUNT(*) DESC LIMIT 1",
        f"Group {t.name} by {col}, order by the count and keep the largest.",
    )


def _distinct(rng: random.Random, db: Database) -> _Made:
    t = _pick_table(rng, db)
    if (cv := _text_value(rng, t)) is None:
        return None
    col = cv[0]
    return (
        f"List the different {_words(col)} values of {t.name}.",
        f"SELECT DISTINCT {col} FROM {t.name}",
        f"Select the distinct values of {col} in {t.name}.",
    )


def _aggregate_where(rng: random.Random, db: Database) -> _Made:
    t = db.child
    nums = t.of_type("INTEGER", "REAL")
    if not nums or (cv := _text_value(rng, t)) is None:
        return None
    col, v = cv
    num = rng.choice(nums)
    word, fn = rng.choice(_AGGREGATES)
    return (
        f"What is the {word} {_words(num)} of {t.name} whose {_words(col)} is '{v}'?",
        f"SELECT {fn}({num}) FROM {t.name} WHERE {col} = '{v}'",
        f"Filter {t.name} on {col} = '{v}' and take the {word} of {num}.",
    )


def _join_clause(db: Database) -> str:
    p, c = db.parent, db.child
    return f"FROM {c.name} AS T1 JOIN {p.name} AS T2 ON T1.{p.entity}_id = T2.id"


def _join_filter(rng: random.Random, db: Database) -> _Made:
    p, c = db.parent, db.child
    if (cv := _text_value(rng, p)) is None:
        return None
    col, v = cv
    return (
        f"List the {c.label} of {c.name} whose {p.entity} has {_words(col)} '{v}'.",
        f"SELECT T1.{c.label} {_join_clause(db)} WHERE T2.{col} = '{v}'",
        f"Join {c.name} with {p.name} and keep rows where {p.name}.{col} = '{v}'.",
    )


def _join_named(rng: random.Random, db: Database) -> _Made:
    p, c = db.parent, db.child
    v = rng.choice(p.column(p.label))
    return (
        f"List the {c.label} of {c.name} of the {p.entity} with {p.label} '{v}'.",
        f"SELECT T1.{c.label} {_join_clause(db)} WHERE T2.{p.label} = '{v}'",
        f"Join {c.name} with {p.name} and keep rows where {p.name}.{p.label} = '{v}'.",
    )


def _join_count(rng: random.Random, db: Database) -> _Made:
    p, c = db.parent, db.child
    return (
        f"For each {p.entity}, give its {p.label} and the number of its {c.name}.",
        f"SELECT T2.{p.label}, COUNT(*) {_join_clause(db)} GROUP BY T2.id",
        f"Join {c.name} with {p.name}, group by {p.entity} and count.",
    )


def _join_aggregate(rng: random.Random, db: Database) -> _Made:
    p, c = db.parent, db.child
    nums = c.of_type("INTEGER", "REAL")
    if not nums:
        return None
    num = rng.choice(nums)
    v = rng.choice(p.column(p.label))
    word, fn = rng.choice(_AGGREGATES)
    return (
        f"What is the {word} {_words(num)} of the {c.name} of the {p.entity} with {p.label} '{v}'?",
        f"SELECT {fn}(T1.{num}) {_join_clause(db)} WHERE T2.{p.label} = '{v}'",
        f"Join {c.name} with {p.name}, keep {p.label} = '{v}' and take the {word} of {num}.",
    )


#: (name, level, template), levels as in the module docstring
TEMPLATES: tuple[tuple[str, int, _Template], ...] = (
    ("count_all", 1, _count_all), ("list_where_text", 1, _list_where_text),
    ("list_where_num", 1, _list_where_num), ("count_where", 1, _count_where), ("lookup", 1, _lookup),
    ("aggregate", 2, _aggregate), ("top_k", 2, _top_k), ("sorted", 2, _sorted),
    ("group_count", 2, _group_count), ("most_common", 2, _most_common), ("distinct", 2, _distinct),
    ("aggregate_where", 2, _aggregate_where),
    ("join_filter", 3, _join_filter), ("join_named", 3, _join_named), ("join_count", 3, _join_count),
    ("join_aggregate", 3, _join_aggregate),
)  # fmt: skip


def make_question(
    seed: int, split: str, index: int, db: Database, conn: sqlite3.Connection, max_level: int
) -> Question:
    """Question ``index`` of ``split`` on ``db`` (filled into ``conn``): a template of level <= ``max_level``
    whose gold query returns a non-empty result without an all-NULL row."""
    rng = random.Random(f"sqlgen:{seed}:{split}:q:{index}")
    templates = [t for t in TEMPLATES if t[1] <= max_level]
    for _ in range(100):
        name, level, template = rng.choice(templates)
        made = template(rng, db)
        if made is None:
            continue
        rows = conn.execute(made[1]).fetchall()
        if rows and all(any(v is not None for v in row) for row in rows):
            return Question(made[0], made[1], made[2], name, level)
    # count_all always applies and returns one row, so this is unreachable for valid databases
    raise RuntimeError(f"no template produced a non-empty query for {db.name}")
