"""Spider dev gold-vs-gold: the SQL verifier against a bare ``sqlite3`` execute-and-compare loop.

Usage: python benchmarks/bench_sql.py [--data-root ../shared/data] [--repeats 3] [--group-size 8]

Both loops score every dev question whose database is present by running its gold query as the
"prediction". The bare loop connects, executes the gold query twice and compares sorted results (no
sandboxing at all). The verifier is measured cold (gold cache and connections cleared, one completion per
question: every gold query runs once as gold and once as prediction) and as in training, G completions of a
prompt scored in a row (the gold result comes from the cache after the first). A second bare loop keeps
one connection per database open, to show the guards' own cost apart from connection caching. Goals: time ratio to the bare
loop <= 1.5, match rate 100%.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time
from pathlib import Path

from rlvr.domains.format import format_answer
from rlvr.domains.sql.verify import clear_caches, judge_sql

REPO = Path(__file__).resolve().parents[1]


def load_questions(spider: Path) -> list[tuple[str, str]]:
    """(db_path, gold_sql) of every dev question whose database file exists."""
    pairs = []
    for record in json.loads((spider / "dev.json").read_text()):
        db = spider / "database" / record["db_id"] / f"{record['db_id']}.sqlite"
        if db.is_file():
            pairs.append((str(db), record["query"]))
    return pairs


def _sort_key(row: tuple) -> tuple:
    # rows mix None, numbers and strings: sort by (type name, value) so Python can order them
    return tuple((type(v).__name__, v) if v is not None else ("", 0) for v in row)


def bare_loop(pairs: list[tuple[str, str]]) -> tuple[float, int]:
    """Seconds and matches of connect + execute gold twice + compare sorted results."""
    matches = 0
    start = time.perf_counter()
    for db, sql in pairs:
        conn = sqlite3.connect(db)
        gold = conn.execute(sql).fetchall()
        pred = conn.execute(sql).fetchall()
        conn.close()
        matches += sorted(gold, key=_sort_key) == sorted(pred, key=_sort_key)
    return time.perf_counter() - start, matches


def bare_loop_reused(pairs: list[tuple[str, str]]) -> tuple[float, int]:
    """The bare loop with one connection per database kept open (pure execution cost, no guards)."""
    conns: dict[str, sqlite3.Connection] = {}
    matches = 0
    start = time.perf_counter()
    for db, sql in pairs:
        conn = conns.get(db) or conns.setdefault(db, sqlite3.connect(db))
        gold = conn.execute(sql).fetchall()
        pred = conn.execute(sql).fetchall()
        matches += sorted(gold, key=_sort_key) == sorted(pred, key=_sort_key)
    elapsed = time.perf_counter() - start
    for conn in conns.values():
        conn.close()
    return elapsed, matches


def verifier_loop(pairs: list[tuple[str, str]], group_size: int) -> tuple[float, int, dict[str, int]]:
    """Seconds, matches and verdict counts of ``judge_sql`` on gold completions, caches cleared first."""
    completions = [format_answer("Gold query.", f"```sql\n{sql}\n```") for _, sql in pairs]
    clear_caches()
    matches = 0
    verdicts: dict[str, int] = {}
    start = time.perf_counter()
    for (db, sql), completion in zip(pairs, completions):
        reference = {"db_path": db, "gold_sql": sql}
        for _ in range(group_size):
            v = judge_sql(completion, reference)
            matches += v.verdict == "correct"
            verdicts[v.verdict] = verdicts.get(v.verdict, 0) + 1
    return time.perf_counter() - start, matches, verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timed runs")
    parser.add_argument("--group-size", type=int, default=8, help="completions per prompt (G)")
    args = parser.parse_args()

    pairs = load_questions(args.data_root / "spider")
    print(f"spider dev questions with a database: {len(pairs)}")
    bare = min(bare_loop(pairs) for _ in range(args.repeats))
    reused = min(bare_loop_reused(pairs) for _ in range(args.repeats))
    cold = min(verifier_loop(pairs, 1) for _ in range(args.repeats))
    group = min(verifier_loop(pairs, args.group_size) for _ in range(args.repeats))
    n = len(pairs)
    print(
        f"bare sqlite3 loop     : {bare[0]:.3f} s ({1e3 * bare[0] / n:.3f} ms/question), match {bare[1]}/{n}"
    )
    print(
        f"bare, conns reused   : {reused[0]:.3f} s ({1e3 * reused[0] / n:.3f} ms/question), match {reused[1]}/{n}"
    )
    print(
        f"verifier, cold, G=1   : {cold[0]:.3f} s ({1e3 * cold[0] / n:.3f} ms/question), match {cold[1]}/{n}"
        f" = {100 * cold[1] / n:.1f}%, ratio to bare {cold[0] / bare[0]:.2f}x (goal <= 1.5x)"
    )
    per_prompt = group[0] / n
    print(
        f"verifier, G={args.group_size:<2d}        : {group[0]:.3f} s ({1e3 * per_prompt:.3f} ms/prompt,"
        f" {1e3 * per_prompt / args.group_size:.3f} ms/completion), match {group[1]}/{n * args.group_size},"
        f" ratio to {args.group_size} bare loops {group[0] / (args.group_size * bare[0]):.2f}x"
    )
    print(f"verdicts (cold): {cold[2]}")


if __name__ == "__main__":
    main()
