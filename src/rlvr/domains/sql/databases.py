"""Seeded SQLite databases for the text-to-SQL generator (:mod:`rlvr.domains.sql.generator`).

Every database is two tables of one domain (a parent and a child holding a foreign key to it), with a
random subset of the domain's optional columns and random rows. Database ``j`` of a split is a function of
``(seed, split, j)`` alone (its own :class:`random.Random`, seeded with a string: no hidden state, no
dependence on ``PYTHONHASHSEED``); train and val use disjoint databases.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import tempfile
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
