"""Seeded text-to-SQL generator: small SQLite databases plus template questions with gold SQL.

Every database is two tables of one domain (a parent and a child holding a foreign key to it), with a
random subset of the domain's optional columns and random rows. Questions come from templates at three
levels: 1 = filters, counts and look-ups on one table; 2 = aggregates, ORDER BY + LIMIT, GROUP BY,
DISTINCT; 3 = two-table joins. A template only emits a question whose gold query returns a non-empty,
unambiguous result (no ties at a LIMIT cut, no all-NULL rows): each candidate is executed on an in-memory
copy of the database and rejected otherwise.

Everything is a function of ``(seed, split, index)``: database ``j`` of a split and question ``i`` each
draw from their own :class:`random.Random` seeded with a string, so there is no hidden state and no
dependence on ``PYTHONHASHSEED``. Train and val use disjoint databases.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: bump when databases or questions change, so stale cache directories are not reused
GENERATOR_VERSION = 1

_PEOPLE = (
    "Ada Alan Anna Ben Carl Clara Dan Eva Finn Grace Hugo Ida Jack Kim Leo Lily Max Mia Nina Omar Paul Rosa"
)
_CITIES = "Berlin Cairo Delhi Lima London Madrid Oslo Paris Rome Seoul Tokyo Vienna"
_COUNTRIES = "Brazil Canada China Egypt France Germany India Italy Japan Kenya Mexico Spain"

#: an optional column: (name, SQL type, how to draw a value: ("int", lo, hi, step), ("real", lo, hi,
#: decimals) or ("pick", pool))
_Column = tuple[str, str, tuple[Any, ...]]


def _int(name: str, lo: int, hi: int, step: int = 1) -> _Column:
    return name, "INTEGER", ("int", lo, hi, step)


def _real(name: str, lo: float, hi: float, decimals: int) -> _Column:
    return name, "REAL", ("real", lo, hi, decimals)


def _text(name: str, pool: str) -> _Column:
    return name, "TEXT", ("pick", tuple(pool.split()))


@dataclass(frozen=True)
class _TableSpec:
    name: str  # plural table name, used in questions ("employees")
    entity: str  # singular ("employee"); the child's foreign key is "<parent entity>_id"
    label: str  # the column naming a row ("name", "title")
    pool: str  # label values, space-separated (parents draw them without replacement: unique labels)
    optional: tuple[_Column, ...]  # a random subset of >= 2 of these is used


#: (parent, child) per domain
_DOMAINS: tuple[tuple[_TableSpec, _TableSpec], ...] = (
    (
        _TableSpec(
            "departments", "department", "name", "Sales Finance Legal Research Support Design Marketing Training",
            (_text("city", _CITIES), _int("budget", 100, 900, 10), _int("floor", 1, 12)),
        ),
        _TableSpec(
            "employees", "employee", "name", _PEOPLE,
            (_int("age", 21, 64), _int("salary", 30000, 150000, 500), _text("title", "Manager Engineer Analyst Clerk"),
             _text("city", _CITIES), _int("hire_year", 2001, 2023)),
        ),
    ),
    (
        _TableSpec(
            "suppliers", "supplier", "name", "Acme Apex Delta Nova Orbit Prime Summit Vertex Zenith Atlas",
            (_text("country", _COUNTRIES), _int("rating", 1, 5), _int("founded", 1950, 2020)),
        ),
        _TableSpec(
            "products", "product", "name", "Lamp Chair Desk Mug Phone Clock Kettle Sofa Shelf Radio Fan Bag Pen",
            (_real("price", 1, 500, 2), _int("stock", 0, 400), _text("color", "red blue green black white"),
             _real("weight", 0, 30, 1)),
        ),
    ),
    (
        _TableSpec(
            "courses", "course", "title", "Algebra Biology Chemistry Drawing Economics Geometry History Music",
            (_text("teacher", _PEOPLE), _int("credits", 1, 6), _int("room", 100, 400)),
        ),
        _TableSpec(
            "students", "student", "name", _PEOPLE,
            (_int("age", 17, 30), _real("gpa", 1, 4, 1), _text("city", _CITIES), _int("year", 1, 4)),
        ),
    ),
    (
        _TableSpec(
            "authors", "author", "name", _PEOPLE,
            (_text("country", _COUNTRIES), _int("birth_year", 1900, 1995)),
        ),
        _TableSpec(
            "books", "book", "title", "Dawn Dusk Echo Ember Frost Harbor Island Meadow River Shadow Storm Tide",
            (_text("genre", "novel poetry history science travel"), _int("pages", 80, 900),
             _int("year", 1950, 2023), _real("price", 5, 60, 2)),
        ),
    ),
    (
        _TableSpec(
            "teams", "team", "name", "Lions Tigers Bears Wolves Eagles Sharks Hawks Bulls Foxes Owls",
            (_text("city", _CITIES), _int("founded", 1900, 2010), _int("stadium_size", 5000, 90000, 500)),
        ),
        _TableSpec(
            "players", "player", "name", _PEOPLE,
            (_int("age", 18, 38), _int("goals", 0, 40), _text("position", "keeper defender midfielder forward"),
             _int("height", 160, 210)),
        ),
    ),
)  # fmt: skip
_PARENT_ROWS, _CHILD_ROWS = (3, 7), (8, 30)


@dataclass(frozen=True)
class Table:
    """One generated table: ``columns[0]`` is ``id``, ``columns[1]`` the label, then the rest."""

    name: str
    entity: str
    columns: tuple[str, ...]
    types: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    parent: str | None = None  # referenced table of the foreign key column "<parent entity>_id"

    @property
    def label(self) -> str:
        return self.columns[1]

    def column(self, name: str) -> list[Any]:
        i = self.columns.index(name)
        return [r[i] for r in self.rows]

    def of_type(self, *sql_types: str) -> list[str]:
        """Non-key columns of the given SQL types (the label excluded)."""
        return [
            c for c, t in zip(self.columns[2:], self.types[2:]) if t in sql_types and not c.endswith("_id")
        ]


@dataclass(frozen=True)
class Database:
    """A generated database: a parent table and a child table referencing it."""

    name: str
    parent: Table
    child: Table

    def create_sql(self) -> list[str]:
        """CREATE TABLE statements, one line each (short prompts for small models)."""
        out = []
        for t in (self.parent, self.child):
            cols = ["id INTEGER PRIMARY KEY"] + [f"{c} {ty}" for c, ty in zip(t.columns[1:], t.types[1:])]
            if t.parent is not None:
                cols[-1] += f" REFERENCES {t.parent}(id)"
            out.append(f"CREATE TABLE {t.name} ({', '.join(cols)})")
        return out


def _draw(rng: random.Random, how: tuple[Any, ...]) -> Any:
    if how[0] == "int":
        return rng.randrange(how[1], how[2] + 1, how[3])
    if how[0] == "real":
        return round(rng.uniform(how[1], how[2]), how[3])
    return rng.choice(how[1])


def _make_table(rng: random.Random, spec: _TableSpec, parent: Table | None) -> Table:
    k = rng.randint(2, len(spec.optional))
    optional = sorted(rng.sample(range(len(spec.optional)), k))  # keep the spec's column order
    cols = [spec.optional[i] for i in optional]
    n = rng.randint(*(_PARENT_ROWS if parent is None else _CHILD_ROWS))
    pool = spec.pool.split()
    # Parent labels are unique (a join question names one parent); child labels may repeat.
    labels = rng.sample(pool, n) if parent is None else [rng.choice(pool) for _ in range(n)]
    rows = []
    for i in range(n):
        row = [i + 1, labels[i]] + [_draw(rng, how) for _, _, how in cols]
        if parent is not None:
            row.append(rng.randint(1, len(parent.rows)))
        rows.append(tuple(row))
    names = ["id", spec.label] + [c for c, _, _ in cols]
    types = ["INTEGER", "TEXT"] + [t for _, t, _ in cols]
    if parent is not None:
        names.append(f"{parent.entity}_id")
        types.append("INTEGER")
    return Table(
        spec.name, spec.entity, tuple(names), tuple(types), tuple(rows), parent.name if parent else None
    )


def make_database(seed: int, split: str, index: int) -> Database:
    """Database ``index`` of ``split``: a random domain, column subset and rows, fixed by the arguments."""
    rng = random.Random(f"sqlgen:{seed}:{split}:db:{index}")
    parent_spec, child_spec = _DOMAINS[rng.randrange(len(_DOMAINS))]
    parent = _make_table(rng, parent_spec, None)
    child = _make_table(rng, child_spec, parent)
    return Database(f"{split}_{index:03d}_{parent_spec.name}", parent, child)


def fill(conn: sqlite3.Connection, db: Database) -> None:
    """Create and fill ``db``'s tables on ``conn`` (committed)."""
    for stmt, table in zip(db.create_sql(), (db.parent, db.child)):
        conn.execute(stmt)
        marks = ", ".join("?" * len(table.columns))
        conn.executemany(f"INSERT INTO {table.name} VALUES ({marks})", table.rows)
    conn.commit()


def write_database(db: Database, path: Path) -> Path:
    """Write ``db`` to ``path`` atomically (a temp file in the same folder, then a rename); reuse if present.

    A crash leaves at most a stray ``*.tmp`` file, never a half-written database under the final name;
    concurrent writers (several ranks) each rename a complete, identical file.
    """
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp")
    os.close(fd)
    try:
        conn = sqlite3.connect(tmp)
        try:
            fill(conn, db)
        finally:
            conn.close()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def settings_hash(seed: int) -> str:
    """Short hash naming the cache folder of one generator setting (database ``j`` of a split depends on
    nothing else, so tasks differing only in counts share files)."""
    blob = json.dumps({"version": GENERATOR_VERSION, "seed": seed}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------- templates


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
